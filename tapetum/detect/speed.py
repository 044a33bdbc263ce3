"""Model speed: latency percentiles and throughput of one inference call at a batch size.

Example:
    >>> import numpy as np
    >>> report = measure_speed(lambda x: x * 2, np.zeros((4, 3, 8, 8), np.float32), runs=20)
    >>> report.batch, report.runs
    (4, 20)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class SpeedReport:
    """Timing of ``runs`` back-to-back calls on one batch.

    Attributes:
        batch: images per call.
        p50_ms / p95_ms / p99_ms: call latency percentiles (the whole batch).
        per_frame_p50_ms: ``p50_ms / batch``: what batching costs or saves per image.
        fps: images per second over the timed runs (``batch * runs / wall time``).
    """

    batch: int
    runs: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    per_frame_p50_ms: float
    fps: float

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def measure_speed(
    run: Callable[[npt.NDArray[np.float32]], Any],
    batch: npt.NDArray[np.float32],
    *,
    runs: int = 100,
    warmup: int = 10,
) -> SpeedReport:
    """Call ``run(batch)`` ``warmup`` times untimed, then ``runs`` times timed."""
    if runs < 1:
        raise ValueError(f"runs must be ≥ 1, got {runs}")
    for _ in range(warmup):
        run(batch)
    times_ms = np.empty(runs)
    start = time.perf_counter()
    for i in range(runs):
        t0 = time.perf_counter()
        run(batch)
        times_ms[i] = (time.perf_counter() - t0) * 1e3
    wall_s = time.perf_counter() - start
    p50, p95, p99 = np.percentile(times_ms, [50, 95, 99])
    n = int(batch.shape[0])
    return SpeedReport(
        batch=n,
        runs=runs,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        per_frame_p50_ms=float(p50) / n,
        fps=n * runs / wall_s,
    )


__all__ = ["SpeedReport", "measure_speed"]
