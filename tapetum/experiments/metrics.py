"""The metrics an experiment measures per arm, by name: what rules and guardrails may name.

Online metrics come from live traffic (the pipeline or the server), offline metrics from a
labelled set. Each has a direction (``goal``: which way is better), so a rule need not
say it, and a unit for reports. Pure data: no numpy.

Example:
    >>> METRICS["latency_p99_ms"].goal.value, METRICS["map_50_95"].scope.value
    ('decrease', 'offline')
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["AGREEMENT_IOU", "METRICS", "Goal", "MetricInfo", "Scope", "metric_names"]

#: IoU at which a variant's box agrees with a control box of the same class.
AGREEMENT_IOU = 0.5


class Goal(StrEnum):
    """Which way a metric improves."""

    INCREASE = "increase"
    DECREASE = "decrease"


class Scope(StrEnum):
    """Where a metric is measured: live traffic, or a labelled set."""

    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """One metric.

    Attributes:
        name: the name rules, guardrails and reports use.
        scope: online (windows of live traffic are the units) or offline (images).
        goal: the direction that is better.
        unit: for reports (``ms``, ``fps``, ``fraction``…).
        description: one line for reports.
        shadow_only: defined only where the variant saw the control's frames (agreement).
    """

    name: str
    scope: Scope
    goal: Goal
    unit: str
    description: str
    shadow_only: bool = False


def _m(
    name: str, scope: Scope, goal: Goal, unit: str, description: str, *, shadow: bool = False
) -> tuple[str, MetricInfo]:
    return name, MetricInfo(name, scope, goal, unit, description, shadow)


_ON, _OFF = Scope.ONLINE, Scope.OFFLINE
_UP, _DOWN = Goal.INCREASE, Goal.DECREASE

#: Every metric by name, online first, in report order.
METRICS: dict[str, MetricInfo] = dict(
    [
        _m("fps", _ON, _UP, "fps", "frames processed per second of wall time, per stream"),
        _m(
            "capacity_fps",
            _ON,
            _UP,
            "fps",
            "1000 / the arm's own compute per frame (inference, decoding, tracking)",
        ),
        _m("latency_p50_ms", _ON, _DOWN, "ms", "end-to-end latency, median"),
        _m("latency_p95_ms", _ON, _DOWN, "ms", "end-to-end latency, 95th percentile"),
        _m("latency_p99_ms", _ON, _DOWN, "ms", "end-to-end latency, 99th percentile"),
        _m("detections_per_frame", _ON, _UP, "boxes", "tracked boxes emitted per frame"),
        _m("mean_confidence", _ON, _UP, "score", "mean confidence of the emitted boxes"),
        _m("tracks_per_window", _ON, _DOWN, "tracks", "distinct track ids per stream window"),
        _m("track_length_frames", _ON, _UP, "frames", "frames a track is emitted in, mean"),
        _m(
            "fragments_per_track",
            _ON,
            _DOWN,
            "breaks",
            "times a track disappears and comes back, per track",
        ),
        _m("error_rate", _ON, _DOWN, "fraction", "frames that failed (inference or decoding)"),
        _m(
            "agreement_precision",
            _ON,
            _UP,
            "fraction",
            "variant boxes matching a control box of the same class at IoU 0.5",
            shadow=True,
        ),
        _m(
            "agreement_recall",
            _ON,
            _UP,
            "fraction",
            "control boxes matched by a variant box of the same class at IoU 0.5",
            shadow=True,
        ),
        _m(
            "agreement_f1",
            _ON,
            _UP,
            "fraction",
            "harmonic mean of agreement precision and recall",
            shadow=True,
        ),
        _m("map_50_95", _OFF, _UP, "AP", "COCO mAP@[.5:.95] on the labelled set"),
        _m("map_50", _OFF, _UP, "AP", "COCO mAP@.5 on the labelled set"),
        _m("recall_50", _OFF, _UP, "fraction", "recall at IoU 0.5 (100 boxes per image)"),
        _m("recall_75", _OFF, _UP, "fraction", "recall at IoU 0.75 (100 boxes per image)"),
        _m("hota", _OFF, _UP, "fraction", "HOTA on the MOTChallenge sequences (TrackEval)"),
        _m("idf1", _OFF, _UP, "fraction", "IDF1 on the MOTChallenge sequences (TrackEval)"),
    ]
)


def metric_names(scope: Scope | None = None) -> list[str]:
    """Names of the metrics of ``scope`` (all when None), in report order."""
    return [name for name, info in METRICS.items() if scope is None or info.scope is scope]
