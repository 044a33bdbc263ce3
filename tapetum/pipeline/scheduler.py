"""Detection intervals under a latency budget: which streams skip the detector, and when.

The detector is the cost of a frame. A stream with *interval* k sends every k-th frame
to the detector and lets the tracker carry its tracks through the frames in between
(``PredictingTracker.predict``: the motion model alone, outputs marked ``predicted``).
When the machine falls behind, raising k on some streams sheds detector load far more
gently than dropping frames: every frame still gets boxes, the slow-moving scenes lose
almost nothing, and no queue grows.

Two parts, kept apart so that the decisions can be tested without threads or clocks:

- :class:`MotionMonitor` (one per stream, fed by the stream's tracking thread) turns the
  tracker's outputs into what the policy needs to know about the scene: how fast the
  motion model's predictions go wrong, per frame of interval, and how much of what the
  detector sees the tracker does not carry yet (objects entering, or lost).
- :class:`IntervalPolicy` is a pure function of those observations and the measured
  latencies → the next interval of every stream, with the reason for each change.

The policy, at every tick (``SchedulerConfig.tick_s``)::

    load = max over streams of max(recent p95 end-to-end, age of the oldest queued
           frame) / budget
    behind (load > behind_load):
        raise k by one on one stream, and on more until the detector's predicted
        utilisation is at most max_utilisation (unmeasured: on
        ceil(n * (load - behind_load) / behind_load) streams):
          first those below their motion cap (slow motion, nobody entering), by
          priority (low first), then slowest motion; only when none is left, streams
          at their cap (fast motion, objects entering) up to max_interval, high
          priority last. Frames are dropped only when every stream is at max_interval.
    otherwise, one stream per tick, if the predicted utilisation stays within
    max_utilisation:
        lower k by one on the stream furthest above its motion cap (its objects sped
        up or started entering); with headroom (load < headroom_load) for calm_ticks
        ticks in a row, also on streams within their cap, by priority (high first),
        then the largest interval, then fastest motion.

The utilisation prediction (:class:`DetectorDemand`) is what keeps the policy from
oscillating: latency stays low until the detector is nearly always busy, so headroom in
latency alone would lower intervals straight back into the overload they ended.

The motion cap of a stream is the largest k whose predicted boxes stay within
``motion_error`` box heights of where the detector will find them, from the measured
error per frame of interval (the prediction residual on detector frames, divided by the
gap); a scene whose *entering* share reaches ``entering_share`` is capped at 1: the share
of new tracks, tracks at the border and confident detections that no reported track
claims, among the reported tracks and those detections. The last term is what keeps a
tracker that loses its objects at a long interval from looking like a calm scene: its
surviving tracks are the slow ones, and a tracker that reports nothing (OC-SORT confirms
a track only after several observations in a row) shows no motion at all. A stream
with nothing to track has no cap below ``max_interval``: the first confident detections
to appear are all unclaimed, which pins it to 1 until their motion is measured.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from tapetum._types import Float32Array, IntArray
from tapetum.core.boxes import box_iou
from tapetum.core.detections import Detections
from tapetum.errors import ConfigError

__all__ = [
    "DetectorDemand",
    "IntervalChange",
    "IntervalDecision",
    "IntervalPolicy",
    "Load",
    "MotionMonitor",
    "Priority",
    "SchedulerConfig",
    "StreamObservation",
    "parse_priorities",
]


class Priority(enum.IntEnum):
    """How readily a stream gives up detector frames: ``LOW`` first, ``HIGH`` last."""

    LOW = 0
    NORMAL = 1
    HIGH = 2

    @classmethod
    def parse(cls, value: str | Priority) -> Priority:
        if isinstance(value, Priority):
            return value
        try:
            return cls[value.strip().upper()]
        except KeyError:
            known = ", ".join(p.name.lower() for p in cls)
            raise ConfigError(f"unknown priority {value!r}; use one of: {known}") from None


def parse_priorities(items: list[str] | tuple[str, ...]) -> dict[str, Priority]:
    """``["cam1=high", "lobby=low"]`` → ``{"cam1": Priority.HIGH, "lobby": Priority.LOW}``.

    Raises:
        ConfigError: an item is not ``STREAM=PRIORITY``, names an unknown priority, or a
            stream twice.
    """
    out: dict[str, Priority] = {}
    for item in items:
        stream, sep, level = item.partition("=")
        if not sep or not stream.strip() or not level.strip():
            raise ConfigError(f"priority {item!r} is not STREAM=PRIORITY (e.g. cam1=high)")
        name = stream.strip()
        if name in out:
            raise ConfigError(f"stream {name!r} is given a priority twice")
        out[name] = Priority.parse(level)
    return out


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """The latency-aware scheduler of detection intervals.

    Attributes:
        latency_budget_ms: end-to-end latency the scheduler keeps streams under, in
            milliseconds (the SLO's p99).
        max_interval: the largest interval k: at least one detector frame every k frames.
        behind_load: load (latency over budget) above which intervals are raised.
        headroom_load: load below which intervals are lowered again.
        calm_ticks: ticks in a row with headroom before an interval is lowered.
        tick_s: seconds between decisions.
        motion_error: the largest expected error of a predicted box, in box heights,
            that the motion cap allows.
        entering_share: an entering share (new or border tracks and unclaimed confident
            detections, :class:`MotionMonitor`) at which a stream stays at 1.
        max_utilisation: the detector's busy fraction the intervals aim at: an interval
            is lowered only if the predicted utilisation stays at or below it, and while
            behind, intervals are raised until it is predicted to be.
        backoff: when behind, the *ceiling* (detector frames a second the intervals may
            ask for) becomes this share of what the machine delivered (the smaller of
            the demand and the detector frames it finished); intervals are raised until
            the demand is under it, and lowered only while it stays under.
        probe_ticks: ticks in a row with headroom after which a lowering the ceiling
            holds back is let through anyway, the ceiling rising to allow it: one
            stream's step at a time, so capacity that returns (a calmer scene, a
            neighbour process gone) is found again, and a probe that overshoots costs a
            small overload that the next tick backs off from.
        priorities: per-stream priority; streams not named are ``NORMAL``.
    """

    latency_budget_ms: float = 100.0
    max_interval: int = 4
    behind_load: float = 0.75
    headroom_load: float = 0.45
    calm_ticks: int = 4
    tick_s: float = 0.5
    motion_error: float = 0.05
    entering_share: float = 0.25
    max_utilisation: float = 0.8
    backoff: float = 0.85
    probe_ticks: int = 16
    priorities: Mapping[str, Priority] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.latency_budget_ms > 0:
            raise ConfigError(f"latency budget must be > 0 ms, got {self.latency_budget_ms}")
        if self.max_interval < 1:
            raise ConfigError(f"max_interval must be ≥ 1 frame, got {self.max_interval}")
        if not 0 < self.headroom_load < self.behind_load:
            raise ConfigError(
                f"need 0 < headroom_load ({self.headroom_load}) < behind_load ({self.behind_load})"
            )
        if self.calm_ticks < 1:
            raise ConfigError(f"calm_ticks must be ≥ 1, got {self.calm_ticks}")
        if not self.tick_s > 0:
            raise ConfigError(f"tick_s must be > 0 s, got {self.tick_s}")
        if not self.motion_error > 0:
            raise ConfigError(f"motion_error must be > 0 box heights, got {self.motion_error}")
        if not 0 < self.entering_share <= 1:
            raise ConfigError(f"entering_share must be in (0, 1], got {self.entering_share}")
        if not 0 < self.max_utilisation <= 1:
            raise ConfigError(f"max_utilisation must be in (0, 1], got {self.max_utilisation}")
        if not 0 < self.backoff < 1:
            raise ConfigError(f"backoff must be in (0, 1), got {self.backoff}")
        if self.probe_ticks < 1:
            raise ConfigError(f"probe_ticks must be ≥ 1, got {self.probe_ticks}")

    def check_streams(self, stream_ids: list[str]) -> None:
        """Raises ConfigError if a priority names a stream that is not among ``stream_ids``."""
        unknown = sorted(set(self.priorities) - set(stream_ids))
        if unknown:
            raise ConfigError(
                f"unknown stream {unknown[0]!r} in the priorities; streams: "
                + ", ".join(stream_ids)
            )


@dataclass(frozen=True, slots=True)
class StreamObservation:
    """What the scheduler sees of one stream at a tick.

    Attributes:
        interval: the stream's current interval k.
        latency_p95_ms: p95 end-to-end latency of the frames finished since the last
            tick (NaN if none finished).
        queue_age_ms: age of the oldest frame waiting for the detector (0 if none).
        motion_rate: expected error of a predicted box per frame of interval, in box
            heights (None until measured: no tracks yet).
        entering: share of what the stream's recent detector frames showed that the
            tracker did not carry yet: new or border tracks, and confident detections no
            reported track claims (:class:`MotionMonitor`).
        priority: the stream's priority.
        fps: frames the stream delivered per second since the last tick (NaN: unknown).
        detector_fps: the stream's frames the detector finished per second since the
            last tick (NaN: unknown).
    """

    interval: int
    latency_p95_ms: float
    queue_age_ms: float
    motion_rate: float | None = None
    entering: float = 0.0
    priority: Priority = Priority.NORMAL
    fps: float = float("nan")
    detector_fps: float = float("nan")


class Load(enum.Enum):
    """How the machine keeps up at a tick."""

    BEHIND = "behind"
    STEADY = "steady"
    HEADROOM = "headroom"


@dataclass(frozen=True, slots=True)
class IntervalChange:
    """One stream's interval changed, and why.

    ``reason``: ``raise_within_cap`` (slow motion, shed detector load), ``raise_over_cap``
    (every stream was at its cap: last resort before dropping frames),
    ``lower_over_cap`` (not behind: back towards the motion cap), ``lower_headroom``.
    """

    stream: str
    old: int
    new: int
    reason: str


@dataclass(frozen=True, slots=True)
class IntervalDecision:
    """The policy's answer at one tick.

    Attributes:
        intervals: the next interval of every stream.
        load: the measured load (latency over budget) and its class.
        changes: the changes made, in the order the policy chose them.
        calm_ticks: consecutive ticks with headroom so far (carry it to the next tick).
        saturated: behind with every stream at ``max_interval``: only dropping frames is
            left.
        ceiling: detector frames a second the intervals may ask for, learnt from the
            last time the machine fell behind (None: never behind yet, or the demand is
            unknown); carry it to the next tick.
    """

    intervals: dict[str, int]
    load: float
    state: Load
    changes: tuple[IntervalChange, ...]
    calm_ticks: int
    saturated: bool
    ceiling: float | None = None


class IntervalPolicy:
    """The scheduler's decisions as a pure function of what it observes (module docs).

    Example:
        >>> policy = IntervalPolicy(SchedulerConfig(latency_budget_ms=100))
        >>> seen = {
        ...     "lobby": StreamObservation(1, 95.0, 40.0, motion_rate=0.01),
        ...     "road": StreamObservation(1, 90.0, 30.0, motion_rate=0.06),
        ... }
        >>> decision = policy.decide(seen)
        >>> decision.state.value, decision.intervals
        ('behind', {'lobby': 2, 'road': 1})
    """

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config

    def motion_cap(self, seen: StreamObservation) -> int:
        """The largest interval whose predicted boxes stay within ``motion_error``."""
        cfg = self.config
        if seen.entering >= cfg.entering_share:
            return 1
        rate = seen.motion_rate
        if rate is None or rate * cfg.max_interval <= cfg.motion_error:
            return cfg.max_interval
        return max(1, math.floor(cfg.motion_error / rate))

    def load(self, streams: Mapping[str, StreamObservation]) -> float:
        """Worst stream's latency (recent p95, or its oldest queued frame) over budget."""
        worst = 0.0
        for seen in streams.values():
            for value in (seen.latency_p95_ms, seen.queue_age_ms):
                if math.isfinite(value):
                    worst = max(worst, value)
        return worst / self.config.latency_budget_ms

    def decide(
        self,
        streams: Mapping[str, StreamObservation],
        calm_ticks: int = 0,
        utilisation: float | None = None,
        ceiling: float | None = None,
    ) -> IntervalDecision:
        """The next interval of every stream.

        Args:
            streams: this tick's observation of each stream, by stream id.
            calm_ticks: the previous decision's ``calm_ticks`` (0 at the start).
            utilisation: the detector's busy fraction since the last tick (inference
                time over wall time and workers), if measured: it predicts what a change
                of intervals will do (see :class:`DetectorDemand`).
            ceiling: the previous decision's ``ceiling`` (None at the start).
        """
        cfg = self.config
        intervals = {sid: min(max(1, s.interval), cfg.max_interval) for sid, s in streams.items()}
        caps = {sid: self.motion_cap(s) for sid, s in streams.items()}
        demand = DetectorDemand(streams, intervals, utilisation)
        load = self.load(streams)
        changes: list[IntervalChange] = []
        saturated = False

        def fits() -> bool:
            within = ceiling is None or demand.demand() <= ceiling
            return within and demand.utilisation() <= cfg.max_utilisation

        if load > cfg.behind_load:
            state, calm_ticks = Load.BEHIND, 0
            # What the machine delivered while falling behind is what it can take now.
            delivered = demand.delivered()
            if delivered is not None:
                learnt = cfg.backoff * delivered
                ceiling = learnt if ceiling is None else min(ceiling, learnt)
            # With a measured utilisation, one step and as many more as the detector (and
            # the ceiling) needs (latency lags while a backlog drains: scaling by it would
            # overshoot); without, as many as the latency is over the threshold.
            wanted = 1
            if utilisation is None and ceiling is None:
                wanted = math.ceil(len(streams) * (load - cfg.behind_load) / cfg.behind_load)
            for change in self._raise_order(streams, intervals, caps):
                if len(changes) >= wanted and fits():
                    break
                changes.append(change)
                demand.set(change.stream, change.new)
            saturated = not changes and all(k >= cfg.max_interval for k in intervals.values())
        else:
            headroom = load < cfg.headroom_load
            state = Load.HEADROOM if headroom else Load.STEADY
            calm_ticks = calm_ticks + 1 if headroom else 0
            lower = self._lower(streams, intervals, caps, calm_ticks >= cfg.calm_ticks)
            if lower is not None:
                demand.set(lower.stream, lower.new)
                probe = (
                    ceiling is not None
                    and calm_ticks >= cfg.probe_ticks
                    and demand.demand() > ceiling
                    and demand.utilisation() <= cfg.max_utilisation
                )
                if probe:  # long calm under the ceiling: try one step over it
                    ceiling = demand.demand()
                if fits():
                    changes.append(lower)
                    if probe or lower.reason == "lower_headroom":
                        calm_ticks = 0
        for c in changes:
            intervals[c.stream] = c.new
        return IntervalDecision(
            intervals, load, state, tuple(changes), calm_ticks, saturated, ceiling
        )

    def _raise_order(
        self,
        streams: Mapping[str, StreamObservation],
        intervals: dict[str, int],
        caps: dict[str, int],
    ) -> list[IntervalChange]:
        """Every stream that may give up detector frames, one step each, in the order it
        should: below its motion cap first, then over it; low priority, slow motion and a
        small interval first within each."""

        def order(sid: str) -> tuple[int, float, int]:
            seen = streams[sid]
            rate = seen.motion_rate if seen.motion_rate is not None else 0.0
            return (int(seen.priority), rate, intervals[sid])

        within = sorted((s for s in streams if intervals[s] < caps[s]), key=order)
        over = sorted(
            (s for s in streams if caps[s] <= intervals[s] < self.config.max_interval), key=order
        )
        chosen = [(s, "raise_within_cap") for s in within]
        chosen += [(s, "raise_over_cap") for s in over]
        return [
            IntervalChange(sid, intervals[sid], intervals[sid] + 1, reason)
            for sid, reason in chosen
        ]

    def _lower(
        self,
        streams: Mapping[str, StreamObservation],
        intervals: dict[str, int],
        caps: dict[str, int],
        calm: bool,
    ) -> IntervalChange | None:
        over = [s for s in streams if intervals[s] > caps[s]]
        if over:
            # The stream furthest over its cap, high priority first among equals.
            sid = max(over, key=lambda s: (intervals[s] - caps[s], int(streams[s].priority)))
            return IntervalChange(sid, intervals[sid], intervals[sid] - 1, "lower_over_cap")
        if not calm:
            return None
        raised = [s for s in streams if intervals[s] > 1]
        if not raised:
            return None

        def order(sid: str) -> tuple[int, int, float]:
            seen = streams[sid]
            return (int(seen.priority), intervals[sid], seen.motion_rate or 0.0)

        sid = max(raised, key=order)
        return IntervalChange(sid, intervals[sid], intervals[sid] - 1, "lower_headroom")


class DetectorDemand:
    """The detector's load as a function of the intervals: each stream asks for
    ``fps / k`` inferences a second, and the measured utilisation ``u`` scales with the
    sum, so new intervals predict ``u * demand_new / demand_now``.

    Latency alone cannot say how close to saturation a detector is (queues stay short
    until it is nearly busy all the time, then grow without bound); this is what keeps
    the policy from lowering an interval into an overload it has just left. Without a
    measured utilisation (or stream rates) every prediction is 0: latency decides alone.
    """

    def __init__(
        self,
        streams: Mapping[str, StreamObservation],
        intervals: Mapping[str, int],
        utilisation: float | None,
    ) -> None:
        self._fps = {
            sid: s.fps if math.isfinite(s.fps) and s.fps > 0 else 0.0 for sid, s in streams.items()
        }
        finished = [s.detector_fps for s in streams.values()]
        self._finished = (
            sum(finished) if finished and all(math.isfinite(f) for f in finished) else None
        )
        self._intervals = dict(intervals)
        self._now = self._total(self._intervals)
        self._utilisation = utilisation if utilisation is not None else 0.0

    def _total(self, intervals: Mapping[str, int]) -> float:
        return sum(self._fps[sid] / k for sid, k in intervals.items())

    def demand(self) -> float:
        """Detector frames a second the intervals set so far ask for."""
        return self._total(self._intervals)

    def delivered(self) -> float | None:
        """Detector frames a second the machine gave at the current intervals: the
        demand, or what the detector finished if that is less (it fell behind); None
        when the stream rates are unknown."""
        if self._now <= 0:
            return None
        if self._finished is None:
            return self._now
        return min(self._now, self._finished)

    def utilisation(self) -> float:
        """Predicted utilisation at the intervals set so far."""
        if self._now <= 0:
            return 0.0
        return self._utilisation * self._total(self._intervals) / self._now

    def set(self, stream: str, interval: int) -> None:
        self._intervals[stream] = interval


class MotionMonitor:
    """One stream's motion, as the scheduler needs it, from the tracker's outputs.

    Fed every frame's tracked detections in order (:meth:`observe`). On each detector
    frame it compares where each track was *expected* (the straight-line extrapolation of
    its two previous outputs, detected or predicted) with where the detector found it:

    ``error = |centre offset| / height + |log(height ratio)|``

    The median over tracks, divided by the frames since the previous detector frame,
    is the *motion rate*: the expected error of a predicted box per frame of interval
    (kept as an exponential moving average over detector frames). Objects entering are
    counted on the same frames: tracks with an id above every id seen before, tracks with
    a box within ``border`` of the picture's left or right edge, and the detections
    scoring at least ``confidence`` that no reported track claims (IoU at least 0.5):
    objects the tracker has not confirmed yet, or has lost. The *entering* share is
    their number over the reported tracks plus those detections.

    Args:
        border: margin of the picture's width that counts as its border.
        smoothing: weight of a new detector frame in the moving averages.
        confidence: the score from which an unclaimed detection counts (0.6: where the
            default ByteTrack, OC-SORT and BoT-SORT start tracks; lower-scoring ones are
            often clutter no tracker follows).
    """

    def __init__(
        self, border: float = 0.02, smoothing: float = 0.3, confidence: float = 0.6
    ) -> None:
        self.border = border
        self.smoothing = smoothing
        self.confidence = confidence
        self.motion_rate: float | None = None
        self.entering = 0.0
        self._max_id = 0
        self._last_detected = -1
        self._last: tuple[int, IntArray, Float32Array] | None = None
        self._prev: tuple[int, IntArray, Float32Array] | None = None

    def observe(
        self,
        frame_index: int,
        tracked: Detections,
        detected: bool,
        width_px: int,
        detections: Detections | None = None,
    ) -> None:
        """Record one frame's output (``detected``: the detector ran on it).

        Args:
            frame_index: the frame's index in its stream.
            tracked: the tracker's output on the frame.
            detected: the detector ran on the frame.
            width_px: the picture's width.
            detections: on a detector frame, what the detector found (the tracker's
                input); without them only the reported tracks count as entering.
        """
        if detected:
            self._measure(frame_index, tracked, width_px, detections)
            self._last_detected = frame_index
        self._prev = self._last
        self._last = (frame_index, tracked.tracker_id.copy(), tracked.xyxy.copy())

    def _unclaimed(self, tracked: Detections, detections: Detections | None) -> int:
        """Confident detections that no reported track claims."""
        if detections is None or not len(detections):
            return 0
        boxes = detections.xyxy[detections.confidence >= self.confidence]
        if not len(tracked) or not boxes.shape[0]:
            return int(boxes.shape[0])
        claimed = box_iou(boxes, tracked.xyxy).max(axis=1) >= 0.5
        return int(np.count_nonzero(~claimed))

    def _measure(
        self, frame_index: int, tracked: Detections, width_px: int, detections: Detections | None
    ) -> None:
        n = len(tracked)
        a = self.smoothing
        unclaimed = self._unclaimed(tracked, detections)
        if n + unclaimed:
            new = edge = 0
            if n:
                new = int(np.count_nonzero(tracked.tracker_id > self._max_id))
                self._max_id = max(self._max_id, int(tracked.tracker_id.max()))
                x1, x2 = tracked.xyxy[:, 0], tracked.xyxy[:, 2]
                margin = self.border * width_px
                edge = int(np.count_nonzero((x1 <= margin) | (x2 >= width_px - margin)))
            share = (new + edge + unclaimed) / (n + unclaimed)
            self.entering = (1 - a) * self.entering + a * min(1.0, share)
        if self._last is None or self._prev is None or self._last_detected < 0 or not n:
            return
        (t1, ids1, box1), (t0, ids0, box0) = self._last, self._prev
        both, i1, i0 = np.intersect1d(ids1, ids0, assume_unique=True, return_indices=True)
        if not both.size or t1 == t0:
            return
        _, j1, jnow = np.intersect1d(
            both, tracked.tracker_id, assume_unique=True, return_indices=True
        )
        if not j1.size:
            return
        last, before = box1[i1[j1]], box0[i0[j1]]
        expected = last + (last - before) * ((frame_index - t1) / (t1 - t0))
        rate = float(np.median(_box_error(expected, tracked.xyxy[jnow]))) / max(
            1, frame_index - self._last_detected
        )
        self.motion_rate = (
            rate if self.motion_rate is None else (1 - a) * self.motion_rate + a * rate
        )


def _box_error(expected: Float32Array, found: Float32Array) -> Float32Array:
    """(N,) ``|centre offset| / height + |log(height ratio)|`` of two (N, 4) box sets."""
    h_found = np.maximum(found[:, 3] - found[:, 1], 1.0)
    h_expected = np.maximum(expected[:, 3] - expected[:, 1], 1.0)
    offset = (expected[:, :2] + expected[:, 2:] - found[:, :2] - found[:, 2:]) * 0.5
    error: Float32Array = (
        np.hypot(offset[:, 0], offset[:, 1]) / h_found + np.abs(np.log(h_expected / h_found))
    ).astype(np.float32)
    return error
