"""Latency samples and percentiles, thread-safe and bounded in memory."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of one stage's latency in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


class LatencyRecorder:
    """Keeps the most recent ``capacity`` samples of one stage (a ring buffer).

    Samples are float32 milliseconds (7 significant digits). The buffer is written through
    once when created (``np.full``, not ``np.zeros``, whose pages the OS maps only when
    first written): its memory is resident from the start and stays level, instead of
    growing by 4 bytes a sample until the ring wraps, which on a long run reads as a leak.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._buf = np.full(capacity, 0.0, np.float32)
        self._n = 0
        self._lock = threading.Lock()

    def add_ms(self, value_ms: float) -> None:
        with self._lock:
            self._buf[self._n % self._buf.shape[0]] = value_ms
            self._n += 1

    @property
    def count(self) -> int:
        return self._n

    def summary(self, last: int | None = None) -> LatencySummary:
        """Percentiles over all kept samples, or over the most recent ``last`` of them."""
        with self._lock:
            n = min(self._n, self._buf.shape[0])
            if last is not None:
                n = min(n, last)
            end = self._n % self._buf.shape[0]
            idx = (np.arange(end - n, end)) % self._buf.shape[0]
            values = self._buf[idx].copy()
            total = self._n
        if values.size == 0:
            return LatencySummary(total, float("nan"), float("nan"), float("nan"), float("nan"))
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return LatencySummary(total, float(p50), float(p95), float(p99), float(values.max()))


#: Samples kept per stage of a pipeline: the most recent 65,536 frames (44 min at 25 FPS),
#: 256 KB a stage, resident from the pipeline's start.
STAGE_SAMPLES = 65_536


class StageTimers:
    """One :class:`LatencyRecorder` of ``capacity`` samples per named stage, created on
    first use."""

    def __init__(self, capacity: int = STAGE_SAMPLES) -> None:
        self._capacity = capacity
        self._recorders: dict[str, LatencyRecorder] = {}
        self._lock = threading.Lock()

    def recorder(self, stage: str) -> LatencyRecorder:
        rec = self._recorders.get(stage)
        if rec is None:
            with self._lock:
                rec = self._recorders.get(stage)
                if rec is None:
                    rec = self._recorders[stage] = LatencyRecorder(self._capacity)
        return rec

    def add_ms(self, stage: str, value_ms: float) -> None:
        self.recorder(stage).add_ms(value_ms)

    def summaries(self, last: int | None = None) -> dict[str, LatencySummary]:
        with self._lock:
            items = list(self._recorders.items())
        return {name: rec.summary(last) for name, rec in items}
