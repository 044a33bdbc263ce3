"""Online metrics of each arm from its record, per (stream, window) unit, with bootstrap
replicates (see :mod:`tapetum.experiments.stats`).

Windows are cut on each stream's own clock (frame timestamps), from the stream's first
frame as any arm saw it, so a shadow variant's frames fall in the same units as the
control's. Every metric is a ratio of per-unit sums or a percentile of pooled values,
built with ``bincount`` over the columns of :class:`~tapetum.experiments.record.ArmData`;
nothing loops over frames or boxes in Python.

Tracks: a track's length is the number of the arm's frames it is emitted in, a fragment
one break in that run (it disappears for at least one processed frame and comes back); a
track counts in the unit where it first appears.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tapetum._types import Float64Array, IntArray
from tapetum.experiments.record import ArmData
from tapetum.experiments.stats import (
    Estimate,
    histogram_percentile,
    latency_histograms,
    ratio_estimate,
)

__all__ = ["UnitIndex", "UnitTable", "online_estimates", "unit_index", "unit_table"]

_WINDOW_SPAN = 1 << 32


@dataclass(frozen=True, slots=True)
class UnitIndex:
    """The units shared by every arm of a run.

    Attributes:
        streams: stream ids across all arms.
        start_s: (S,) each stream's first timestamp (any arm).
        window_s: window length in seconds.
        keys: (U,) int64 sorted unit keys, ``stream * 2**32 + window``.
    """

    streams: tuple[str, ...]
    start_s: Float64Array
    window_s: float
    keys: IntArray

    @property
    def units(self) -> int:
        return int(self.keys.shape[0])

    def unit_of(self, arm: ArmData) -> IntArray:
        """(F,) unit of each of ``arm``'s frames."""
        return np.searchsorted(self.keys, _frame_keys(self, arm)).astype(np.int64)

    def first_unit(self, stream: str) -> int:
        """The unit of the stream's first window (for counts known per stream only)."""
        key = self.streams.index(stream) * _WINDOW_SPAN
        return int(np.searchsorted(self.keys, key))

    def describe(self) -> dict[str, object]:
        windows = self.keys % _WINDOW_SPAN
        return {
            "streams": len(self.streams),
            "window_s": self.window_s,
            "units": self.units,
            "windows_per_stream_max": int(windows.max()) + 1 if self.units else 0,
        }


def _global_stream(index: UnitIndex, arm: ArmData) -> IntArray:
    lookup = np.asarray([index.streams.index(s) for s in arm.streams], np.int64)
    return lookup[arm.stream] if arm.frames else np.empty(0, np.int64)


def _frame_keys(index: UnitIndex, arm: ArmData) -> IntArray:
    g = _global_stream(index, arm)
    window = np.floor((arm.timestamp_s - index.start_s[g]) / index.window_s).astype(np.int64)
    return g * _WINDOW_SPAN + np.clip(window, 0, _WINDOW_SPAN - 1)


def unit_index(arms: Sequence[ArmData], window_s: float) -> UnitIndex:
    """The units of a run: every (stream, window) any arm has a frame in, plus the first
    window of streams known only by their failures."""
    streams = sorted({s for arm in arms for s in arm.streams})
    start = np.full(len(streams), np.inf)
    for arm in arms:
        if arm.frames:
            g = np.asarray([streams.index(s) for s in arm.streams], np.int64)[arm.stream]
            np.minimum.at(start, g, arm.timestamp_s)
    start[~np.isfinite(start)] = 0.0
    index = UnitIndex(tuple(streams), start, window_s, np.empty(0, np.int64))
    keys = [_frame_keys(index, arm) for arm in arms]
    keys.append(np.arange(len(streams), dtype=np.int64) * _WINDOW_SPAN)
    return UnitIndex(tuple(streams), start, window_s, np.unique(np.concatenate(keys)))


@dataclass(frozen=True, slots=True)
class UnitTable:
    """One arm's per-unit sums (each (U,), per class (U, C)) and latency histograms."""

    frames: Float64Array
    attempted: Float64Array
    failed: Float64Array
    has_frames: Float64Array
    boxes: Float64Array
    confidence: Float64Array
    gaps: Float64Array
    gap_s: Float64Array
    compute_s: Float64Array
    tracks_seen: Float64Array
    tracks_started: Float64Array
    track_frames: Float64Array
    track_breaks: Float64Array
    tp: Float64Array
    n_variant: Float64Array
    n_control: Float64Array
    latency_hist: Float64Array
    class_tp: Float64Array
    class_n_variant: Float64Array
    class_n_control: Float64Array


def unit_table(arm: ArmData, index: UnitIndex) -> UnitTable:
    """Sum ``arm``'s columns into ``index``'s units."""
    u_count = index.units
    classes = len(arm.class_names)
    unit = index.unit_of(arm)
    ok = ~arm.failed

    def per_unit(
        weights: Float64Array | None = None, where: IntArray | None = None
    ) -> Float64Array:
        at = unit if where is None else where
        return np.bincount(at, weights=weights, minlength=u_count).astype(np.float64)

    frames = per_unit(ok.astype(np.float64))
    failed = per_unit(arm.failed.astype(np.float64))
    for stream, count in arm.failed_by_stream.items():
        failed[index.first_unit(stream)] += count
    box_unit = unit[arm.box_frame]
    gaps, gap_s = _gaps(arm, unit, u_count)
    started, track_frames, breaks, seen = _tracks(arm, unit, u_count)
    agree_unit = unit[arm.agree_frame]
    return UnitTable(
        frames=frames,
        attempted=frames + failed,
        failed=failed,
        has_frames=(frames > 0).astype(np.float64),
        boxes=per_unit(None, box_unit) if arm.box_frame.size else np.zeros(u_count),
        confidence=per_unit(arm.box_confidence.astype(np.float64), box_unit),
        gaps=gaps,
        gap_s=gap_s,
        compute_s=per_unit(np.where(ok, arm.compute_ms, 0.0).astype(np.float64) / 1e3),
        tracks_seen=seen,
        tracks_started=started,
        track_frames=track_frames,
        track_breaks=breaks,
        tp=per_unit(arm.agree_tp.astype(np.float64), agree_unit),
        n_variant=per_unit(arm.agree_n_variant.astype(np.float64), agree_unit),
        n_control=per_unit(arm.agree_n_control.astype(np.float64), agree_unit),
        latency_hist=latency_histograms(unit[ok], arm.latency_ms[ok].astype(np.float64), u_count),
        class_tp=_per_class(agree_unit, arm.agree_class, arm.agree_tp, u_count, classes),
        class_n_variant=_per_class(
            agree_unit, arm.agree_class, arm.agree_n_variant, u_count, classes
        ),
        class_n_control=_per_class(
            agree_unit, arm.agree_class, arm.agree_n_control, u_count, classes
        ),
    )


def _per_class(
    unit: IntArray,
    cls: npt.NDArray[np.integer[Any]],
    values: npt.NDArray[np.integer[Any]],
    units: int,
    classes: int,
) -> Float64Array:
    flat = np.bincount(
        unit * classes + cls, weights=values.astype(np.float64), minlength=units * classes
    )
    return flat.reshape(units, classes).astype(np.float64)


def _gaps(arm: ArmData, unit: IntArray, units: int) -> tuple[Float64Array, Float64Array]:
    """Time between consecutive results of a stream, credited to the later frame's unit:
    ``fps = Σgaps / Σgap_s``."""
    order = np.lexsort((arm.done_s, arm.stream))
    same = arm.stream[order][1:] == arm.stream[order][:-1]
    later = order[1:][same]
    gap = np.diff(arm.done_s[order])[same]
    return (
        np.bincount(unit[later], minlength=units).astype(np.float64),
        np.bincount(unit[later], weights=gap, minlength=units).astype(np.float64),
    )


def _tracks(
    arm: ArmData, unit: IntArray, units: int
) -> tuple[Float64Array, Float64Array, Float64Array, Float64Array]:
    """Per unit: tracks started, their frames, their breaks; distinct tracks seen."""
    zeros = np.zeros(units)
    tracked = arm.box_track >= 0
    if not tracked.any():
        return zeros, zeros.copy(), zeros.copy(), zeros.copy()
    # Position of each frame among its stream's frames, in frame order.
    order = np.lexsort((arm.frame_index, arm.stream))
    first_of_stream = np.r_[True, arm.stream[order][1:] != arm.stream[order][:-1]]
    starts = np.maximum.accumulate(np.where(first_of_stream, np.arange(order.size), 0))
    position = np.empty(arm.frames, np.int64)
    position[order] = np.arange(order.size) - starts
    frame = arm.box_frame[tracked]
    stream = arm.stream[frame].astype(np.int64)
    track = arm.box_track[tracked]
    pos = position[frame]
    by_track = np.lexsort((pos, track, stream))
    stream, track, pos, frame = stream[by_track], track[by_track], pos[by_track], frame[by_track]
    new = np.r_[True, (stream[1:] != stream[:-1]) | (track[1:] != track[:-1])]
    first = np.flatnonzero(new)
    length = np.diff(np.r_[first, pos.size]).astype(np.float64)
    jumps = np.r_[False, (np.diff(pos) > 1) & ~new[1:]]
    breaks = np.add.reduceat(jumps.astype(np.float64), first)
    home = unit[frame[first]]
    pair = unit[frame] * (np.int64(1) << 40) + stream * (np.int64(1) << 32) + track
    seen_units = np.unique(pair) >> 40
    return (
        np.bincount(home, minlength=units).astype(np.float64),
        np.bincount(home, weights=length, minlength=units).astype(np.float64),
        np.bincount(home, weights=breaks, minlength=units).astype(np.float64),
        np.bincount(seen_units, minlength=units).astype(np.float64),
    )


def online_estimates(
    arm: ArmData,
    table: UnitTable,
    weights: Float64Array | None,
    *,
    self_agreement: bool = False,
) -> dict[str, Estimate]:
    """Every online metric of one arm with replicates under ``weights`` (B, U).

    With ``self_agreement`` (the control of a shadow run) the agreement metrics are 1 in
    every resample, so a variant's agreement compares against perfect agreement.
    """
    t = table
    ok = ~arm.failed
    latency = arm.latency_ms[ok].astype(np.float64)
    out: dict[str, Estimate] = {
        "fps": ratio_estimate(t.gaps, t.gap_s, weights),
        "capacity_fps": ratio_estimate(t.frames, t.compute_s, weights),
    }
    for q in (50, 95, 99):
        exact = float(np.percentile(latency, q)) if latency.size else math.nan
        out[f"latency_p{q}_ms"] = histogram_percentile(t.latency_hist, q, weights, exact)
    out |= {
        "detections_per_frame": ratio_estimate(t.boxes, t.frames, weights),
        "mean_confidence": ratio_estimate(t.confidence, t.boxes, weights),
        "tracks_per_window": ratio_estimate(t.tracks_seen, t.has_frames, weights),
        "track_length_frames": ratio_estimate(t.track_frames, t.tracks_started, weights),
        "fragments_per_track": ratio_estimate(t.track_breaks, t.tracks_started, weights),
        "error_rate": ratio_estimate(t.failed, t.attempted, weights),
    }
    if self_agreement:
        b = weights.shape[0] if weights is not None else 0
        for name in ("agreement_precision", "agreement_recall", "agreement_f1"):
            out[name] = Estimate.constant(1.0, b) if b else Estimate(1.0)
    elif arm.has_agreement:
        out |= {
            "agreement_precision": ratio_estimate(t.tp, t.n_variant, weights),
            "agreement_recall": ratio_estimate(t.tp, t.n_control, weights),
            "agreement_f1": ratio_estimate(2 * t.tp, t.n_variant + t.n_control, weights),
        }
    return out
