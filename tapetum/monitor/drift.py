"""Live drift monitoring: each stream's sliding windows scored against its profile.

:class:`DriftMonitor` is a pipeline sink (it runs in its own thread behind a bounded
queue, so the detector never waits for it). For each stream it keeps every signal's
observations of the last ``window_s`` seconds of video (:mod:`~tapetum.monitor.drift_features`),
and every ``check_every_s`` seconds scores each calibrated signal: ``score = statistic /
threshold``, so 1.0 is the line for every signal alike.

A score over the line does not raise an alarm by itself: a :class:`Hysteresis` enters the
*drift* state after ``enter_checks`` consecutive checks at or over 1.0, and leaves it after
``exit_checks`` consecutive checks under ``exit_ratio``, so a flicker (a bus crossing the
view, one dark second) does not page anyone and a recovering signal does not flap. Each
change of state is a :class:`DriftEvent`, logged (a warning on drift, info on recovery)
and handed to every ``on_event`` callable (:class:`DriftEventWriter` appends them to a
JSONL file). Scores, states and event counts are also Prometheus metrics: the monitor is a
collector (register it on a registry).

Example:
    >>> profile = DriftProfile.load("cam1.json")                       # doctest: +SKIP
    >>> drift = DriftMonitor(profile, on_event=[DriftEventWriter("drift.jsonl")])  # doctest: +SKIP
    >>> Pipeline([open_source("rtsp://cam1/s")], detector, sinks=[drift]).start()  # doctest: +SKIP
    >>> drift.snapshot()["cam1"]["brightness"].score                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy.typing as npt

from tapetum.core.result import FrameResult
from tapetum.errors import ConfigError
from tapetum.monitor.drift_features import FeatureExtractor
from tapetum.monitor.drift_profile import DriftProfile
from tapetum.monitor.drift_signals import SignalReference, score_window

__all__ = [
    "DriftConfig",
    "DriftEvent",
    "DriftEventWriter",
    "DriftMonitor",
    "Hysteresis",
    "SignalStatus",
]

log = logging.getLogger("tapetum.monitor.drift")

Payload = npt.NDArray[Any]
DriftStateName = Literal["ok", "drift"]


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """How often windows are scored and how eager the alarm is.

    Attributes:
        check_every_s: seconds of video between two checks of a stream.
        enter_checks: consecutive checks with score ≥ 1 that enter the drift state.
        exit_checks: consecutive checks with score < ``exit_ratio`` that leave it.
        exit_ratio: the score a drifted signal must fall under to count towards leaving.
    """

    check_every_s: float = 1.0
    enter_checks: int = 2
    exit_checks: int = 3
    exit_ratio: float = 0.7

    def __post_init__(self) -> None:
        if self.check_every_s <= 0:
            raise ConfigError(f"check_every_s must be > 0, got {self.check_every_s}")
        if self.enter_checks < 1 or self.exit_checks < 1:
            raise ConfigError("enter_checks and exit_checks must be ≥ 1")
        if not 0 < self.exit_ratio <= 1:
            raise ConfigError(f"exit_ratio must be in (0, 1], got {self.exit_ratio}")


class Hysteresis:
    """Two thresholds and two streaks between a score and an alarm.

    ``update(score)`` returns True when the state changed. A check that could not score
    (None: too few values in the window) breaks both streaks and keeps the state.

    Example:
        >>> h = Hysteresis(enter_checks=2, exit_checks=2, exit_ratio=0.5)
        >>> [h.update(s) for s in (1.2, 0.9, 1.1, 1.3, 0.6, 0.4, 0.3)]
        [False, False, False, True, False, False, True]
    """

    def __init__(self, enter_checks: int = 2, exit_checks: int = 3, exit_ratio: float = 0.7):
        self.enter_checks = enter_checks
        self.exit_checks = exit_checks
        self.exit_ratio = exit_ratio
        self.drifting = False
        self._streak = 0

    def update(self, score: float | None) -> bool:
        if score is None:
            self._streak = 0
            return False
        towards = score < self.exit_ratio if self.drifting else score >= 1.0
        self._streak = self._streak + 1 if towards else 0
        needed = self.exit_checks if self.drifting else self.enter_checks
        if self._streak >= needed:
            self.drifting = not self.drifting
            self._streak = 0
            return True
        return False


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """A signal of a stream entered (``drift``) or left (``ok``) the drift state.

    Attributes:
        source_id: the stream.
        signal: the signal's name; ``family`` its family.
        state: the state entered.
        score: statistic / threshold at that check.
        statistic: the test's value; ``threshold`` its calibrated threshold.
        t_s: seconds of video into the stream; ``frame_index`` the frame checked.
        wall_time: Unix time of the check.
    """

    source_id: str
    signal: str
    family: str
    state: DriftStateName
    score: float
    statistic: float
    threshold: float
    t_s: float
    frame_index: int
    wall_time: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "signal": self.signal,
            "family": self.family,
            "state": self.state,
            "score": round(self.score, 4),
            "statistic": round(self.statistic, 6),
            "threshold": round(self.threshold, 6),
            "t_s": round(self.t_s, 3),
            "frame_index": self.frame_index,
            "wall_time": round(self.wall_time, 3),
        }


@dataclass(frozen=True, slots=True)
class SignalStatus:
    """The latest check of one signal of one stream (``score`` None: not scored yet),
    and a tally of all checks so far.

    Attributes:
        checks: checks that scored the signal; ``over``: of those, how many at or over
            the line; ``max_score``: the highest score seen (None before the first).
        onsets: times the signal entered the drift state.
    """

    signal: str
    family: str
    score: float | None
    statistic: float | None
    threshold: float
    drifting: bool
    onsets: int
    checks: int = 0
    over: int = 0
    max_score: float | None = None


class DriftEventWriter:
    """Appends each event as one JSON line to ``path`` (an ``on_event`` callable)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def __call__(self, event: DriftEvent) -> None:
        line = json.dumps(event.as_dict(), separators=(",", ":")) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)


@dataclass(slots=True)
class _SignalState:
    ref: SignalReference
    window: deque[tuple[float, Payload]] = field(default_factory=deque)
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    score: float | None = None
    statistic: float | None = None
    onsets: int = 0
    checks: int = 0
    over: int = 0
    max_score: float | None = None


class _StreamDrift:
    """One stream's windows and states."""

    def __init__(
        self,
        source_id: str,
        profile: DriftProfile,
        fps: float,
        config: DriftConfig,
        only: Collection[str] | None = None,
    ):
        self.source_id = source_id
        self.config = config
        self.extractor = FeatureExtractor(fps, profile.image_hz)
        self.signals = {
            r.spec.name: _SignalState(
                r, hysteresis=Hysteresis(config.enter_checks, config.exit_checks, config.exit_ratio)
            )
            for r in profile.scored()
            if only is None or r.spec.name in only
        }
        self.started_s: float | None = None
        self.next_check_s = 0.0
        self.checks = 0

    def observe(self, result: FrameResult) -> list[DriftEvent]:
        t = self.extractor.time_s(result)
        if self.started_s is None:
            self.started_s = t
            self.next_check_s = t + self.config.check_every_s
        for name, payload in self.extractor.observe(result).items():
            st = self.signals.get(name)
            if st is not None:
                st.window.append((t, payload))
        if t < self.next_check_s:
            return []
        self.next_check_s = t + self.config.check_every_s
        return self._check(t, result.frame.index)

    def _check(self, t: float, frame_index: int) -> list[DriftEvent]:
        self.checks += 1
        assert self.started_s is not None
        elapsed = t - self.started_s
        events: list[DriftEvent] = []
        for name, st in self.signals.items():
            window_s = st.ref.spec.window_s
            while st.window and st.window[0][0] <= t - window_s:
                st.window.popleft()
            if elapsed < window_s:  # a partial window at start-up is not scored
                continue
            statistic = score_window(st.ref, [p for _, p in st.window], window_s)
            threshold = st.ref.threshold
            assert threshold is not None
            st.statistic = statistic
            st.score = None if statistic is None else statistic / threshold
            if st.score is not None:
                st.checks += 1
                st.over += st.score >= 1.0
                st.max_score = max(st.score, st.max_score or 0.0)
            if st.hysteresis.update(st.score):
                state: DriftStateName = "drift" if st.hysteresis.drifting else "ok"
                st.onsets += state == "drift"
                events.append(
                    DriftEvent(
                        self.source_id,
                        name,
                        st.ref.spec.family,
                        state,
                        st.score or 0.0,
                        statistic or 0.0,
                        threshold,
                        t,
                        frame_index,
                        time.time(),
                    )
                )
        return events

    def status(self) -> dict[str, SignalStatus]:
        return {
            name: SignalStatus(
                name,
                st.ref.spec.family,
                st.score,
                st.statistic,
                st.ref.threshold or 0.0,
                st.hysteresis.drifting,
                st.onsets,
                st.checks,
                st.over,
                st.max_score,
            )
            for name, st in self.signals.items()
        }


class DriftMonitor:
    """Scores every stream's windows against its profile; a pipeline sink and a
    Prometheus collector.

    Args:
        profiles: one profile for every stream, or one per source id (a stream without
            one is not monitored).
        fps: the streams' nominal frame rates (one for all, or per source id; 25 where
            unknown): time is ``frame.index / fps``.
        config: check period and hysteresis.
        on_event: called with each :class:`DriftEvent`, in the sink's thread.
        signals: score only these signals (None: every calibrated signal of the profile;
            e.g. the image signals alone when no model runs).
    """

    def __init__(
        self,
        profiles: DriftProfile | Mapping[str, DriftProfile],
        *,
        fps: float | Mapping[str, float] = 25.0,
        config: DriftConfig | None = None,
        on_event: Sequence[Callable[[DriftEvent], None]] = (),
        signals: Collection[str] | None = None,
    ) -> None:
        self.config = config or DriftConfig()
        self._only = None if signals is None else frozenset(signals)
        self._profiles = profiles
        self._fps = fps
        self._on_event = list(on_event)
        self._streams: dict[str, _StreamDrift | None] = {}
        self._lock = threading.Lock()
        self.events: deque[DriftEvent] = deque(maxlen=1000)

    def _stream(self, source_id: str) -> _StreamDrift | None:
        if source_id in self._streams:
            return self._streams[source_id]
        profile = (
            self._profiles
            if isinstance(self._profiles, DriftProfile)
            else self._profiles.get(source_id)
        )
        fps = self._fps if isinstance(self._fps, int | float) else self._fps.get(source_id, 25.0)
        stream = _StreamDrift(source_id, profile, fps, self.config, self._only) if profile else None
        with self._lock:
            self._streams[source_id] = stream
        return stream

    # ------------------------------------------------------------------ sink
    def write(self, result: FrameResult) -> None:
        stream = self._stream(result.source_id)
        if stream is None:
            return
        with self._lock:
            events = stream.observe(result)
        for event in events:
            self._emit(event)

    def close(self) -> None:
        """Nothing to flush (the sink protocol)."""

    def _emit(self, event: DriftEvent) -> None:
        self.events.append(event)
        if event.state == "drift":
            log.warning(
                "drift on %s: %s (%s) score %.2f (statistic %.4g, threshold %.4g) at %.1f s, "
                "frame %d",
                event.source_id,
                event.signal,
                event.family,
                event.score,
                event.statistic,
                event.threshold,
                event.t_s,
                event.frame_index,
            )
        else:
            log.info(
                "drift over on %s: %s score %.2f at %.1f s, frame %d",
                event.source_id,
                event.signal,
                event.score,
                event.t_s,
                event.frame_index,
            )
        for callback in self._on_event:
            try:
                callback(event)
            except Exception as exc:  # an event consumer must not stop the monitor
                log.error("drift event consumer %r failed: %s", callback, exc)

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> dict[str, dict[str, SignalStatus]]:
        """The latest check of every monitored stream and signal."""
        with self._lock:
            return {sid: s.status() for sid, s in self._streams.items() if s is not None}

    def drifting(self, source_id: str) -> bool:
        """True if any signal of ``source_id`` is in the drift state."""
        status = self.snapshot().get(source_id, {})
        return any(s.drifting for s in status.values())

    # ------------------------------------------------------------------ prometheus
    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        score = GaugeMetricFamily(
            "tapetum_drift_score",
            "Drift score of a signal's latest window: statistic / calibrated threshold "
            "(1 is the line). Absent until the window has enough data.",
            labels=["source", "signal"],
        )
        state = GaugeMetricFamily(
            "tapetum_drift_state",
            "1 while a signal is in the drift state (after hysteresis), else 0.",
            labels=["source", "signal"],
        )
        active = GaugeMetricFamily(
            "tapetum_drift_active", "1 while any signal of the stream drifts.", labels=["source"]
        )
        onsets = CounterMetricFamily(
            "tapetum_drift_events",
            "Times a signal entered the drift state.",
            labels=["source", "signal"],
        )
        checks = CounterMetricFamily(
            "tapetum_drift_checks", "Drift checks of the stream's windows.", labels=["source"]
        )
        with self._lock:
            streams = [(sid, s.status(), s.checks) for sid, s in self._streams.items() if s]
        for sid, status, n_checks in streams:
            for name, st in status.items():
                if st.score is not None:
                    score.add_metric([sid, name], st.score)
                state.add_metric([sid, name], float(st.drifting))
                onsets.add_metric([sid, name], st.onsets)
            active.add_metric([sid], float(any(s.drifting for s in status.values())))
            checks.add_metric([sid], n_checks)
        yield from (score, state, active, onsets, checks)
