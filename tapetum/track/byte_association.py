"""ByteTrack's per-frame association steps, shared by ByteTrack and BoT-SORT.

Both trackers keep their tracks in a structure-of-arrays table with the columns of
:class:`ByteTable` and run the same frame: predict the confirmed and lost tracks, match
them to the high-score detections, match the leftover tracked ones to the low-score
detections, match the unconfirmed tracks to the leftover high-score detections, correct
every matched track in one batched Kalman update, drop unconfirmed and expired tracks,
start tracks from unclaimed confident detections and drop tracked/lost duplicates. What
differs (the Kalman state layout, BoT-SORT's camera warp, appearance cost and embedding
average) stays in the trackers and plugs in between these steps.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypedDict, TypeVar

import numpy as np
import numpy.typing as npt

from tapetum.core.boxes import box_iou
from tapetum.core.detections import Detections
from tapetum.track.assignment import linear_assignment
from tapetum.track.kalman import KalmanFilter
from tapetum.track.table import ColumnTable

Float64Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class TrackState(enum.IntEnum):
    """Life-cycle state of a track; removed tracks are deleted from the table."""

    TRACKED = 1
    LOST = 2


# Plain numpy scalars for the per-frame comparisons: an enum member costs an attribute
# lookup through the enum machinery on every use, which adds up at ~20 uses per frame.
_TRACKED = np.int8(TrackState.TRACKED)
_LOST = np.int8(TrackState.LOST)


@dataclass(slots=True)
class ByteTrackTable(ColumnTable):
    """The track-table columns the shared steps read and write, one row per track.

    Each tracker subclasses it with its Kalman state layout (``boxes``) and any extra
    columns.

    Attributes:
        mean: (T, 8) Kalman state: box and velocities.
        covariance: (T, 8, 8) Kalman covariance.
        track_id: (T,) positive identity.
        state: (T,) ``TrackState`` values.
        activated: (T,) False for a track born after frame 1 until its second detection.
        score: (T,) confidence of the last associated detection.
        class_id: (T,) class of the last associated detection.
        start_frame: (T,) frame number the track was born on.
        last_frame: (T,) frame number of the last associated detection.
        det_index: (T,) row of this frame's detections associated to the track, -1 if none.
    """

    mean: Float64Array
    covariance: Float64Array
    track_id: IntArray
    state: npt.NDArray[np.int8]
    activated: BoolArray
    score: npt.NDArray[np.float32]
    class_id: IntArray
    start_frame: IntArray
    last_frame: IntArray
    det_index: IntArray

    @classmethod
    def empty(cls, **extra: npt.NDArray[Any]) -> Self:
        """A table with no tracks; ``extra`` gives a subclass's additional columns."""
        return cls(
            mean=np.empty((0, 8), np.float64),
            covariance=np.empty((0, 8, 8), np.float64),
            track_id=np.empty(0, np.int64),
            state=np.empty(0, np.int8),
            activated=np.empty(0, np.bool_),
            score=np.empty(0, np.float32),
            class_id=np.empty(0, np.int64),
            start_frame=np.empty(0, np.int64),
            last_frame=np.empty(0, np.int64),
            det_index=np.empty(0, np.int64),
            **extra,
        )

    def boxes(self) -> Float64Array:
        """(T, 4) xyxy boxes of the Kalman means, in pixels."""
        raise NotImplementedError


class ByteParams(Protocol):
    """The configuration values the shared steps read (both trackers' configs have them)."""

    @property
    def match_thresh(self) -> float: ...
    @property
    def low_match_thresh(self) -> float: ...
    @property
    def unconfirmed_match_thresh(self) -> float: ...
    @property
    def new_track_thresh(self) -> float: ...
    @property
    def max_frames_lost(self) -> int: ...
    @property
    def duplicate_iou(self) -> float: ...


TableT = TypeVar("TableT", bound=ByteTrackTable)

#: ``(track_rows, det_rows) -> cost`` of a high-score association.
HighCost = Callable[[IntArray, IntArray], Float64Array]


@dataclass(frozen=True, slots=True)
class TrackGroups:
    """Which tracks take part in which association this frame.

    Attributes:
        was_lost: (T,) True for tracks lost before this frame.
        unconfirmed: rows of tracked tracks not yet activated (born last frame).
        pool: rows of activated tracked tracks and lost tracks.
    """

    was_lost: BoolArray
    unconfirmed: IntArray
    pool: IntArray


@dataclass(frozen=True, slots=True)
class Association:
    """Matches of one frame's three associations.

    Attributes:
        tracks: matched track rows of the high, low and unconfirmed association.
        dets: the detection rows they matched, in the same order.
        dropped_unconfirmed: unconfirmed track rows that found no detection.
        unclaimed_high: high-score detection rows no track took.
    """

    tracks: tuple[IntArray, IntArray, IntArray]
    dets: tuple[IntArray, IntArray, IntArray]
    dropped_unconfirmed: IntArray
    unclaimed_high: IntArray


def split_by_score(
    scores: npt.NDArray[np.floating], high_thresh: float, low_thresh: float
) -> tuple[IntArray, IntArray]:
    """Rows of the high- and the low-score detections.

    Strict inequalities as in the reference: a score of exactly ``high_thresh`` joins
    neither association.
    """
    high = np.flatnonzero(scores > high_thresh)
    low = np.flatnonzero((scores > low_thresh) & (scores < high_thresh))
    return high, low


def group_tracks(t: ByteTrackTable) -> TrackGroups:
    """Clear last frame's detection rows and group the tracks for this frame."""
    t.det_index[:] = -1
    was_lost = t.state == _LOST
    unconfirmed = np.flatnonzero((t.state == _TRACKED) & ~t.activated)
    pool = np.flatnonzero(((t.state == _TRACKED) & t.activated) | was_lost)
    return TrackGroups(was_lost, unconfirmed, pool)


def predict_pool(
    t: ByteTrackTable, kalman: KalmanFilter, groups: TrackGroups, size_velocity: tuple[int, ...]
) -> None:
    """Predict confirmed and lost tracks in place.

    A lost track's size velocities (state columns ``size_velocity``) are zeroed so its box
    does not run away while unobserved. Unconfirmed tracks are not predicted (as in the
    reference).
    """
    pool = groups.pool
    pool_mean = t.mean[pool]
    pool_mean[np.ix_(groups.was_lost[pool], np.array(size_velocity, np.intp))] = 0.0
    t.mean[pool], t.covariance[pool] = kalman.predict(pool_mean, t.covariance[pool])


def associate(
    t: ByteTrackTable,
    groups: TrackGroups,
    kalman: KalmanFilter,
    *,
    params: ByteParams,
    iou_dist: Float64Array,
    high: IntArray,
    low: IntArray,
    high_cost: HighCost,
    measurements: Float64Array,
    detections: Detections,
    frame_id: int,
) -> Association:
    """ByteTrack's three associations, then one Kalman correction of every match.

    Tracked tracks left unmatched become lost.

    Args:
        t: the tracks, predicted.
        groups: from :func:`group_tracks`.
        iou_dist: (T, N) ``1 - IoU`` of every track with every detection; the low-score
            association uses its block alone.
        high: high-score detection rows.
        low: low-score detection rows.
        high_cost: cost of the first and the unconfirmed association.
        params: the match thresholds.
        measurements: (N, 4) detections in the Kalman filter's measurement space.
        detections: this frame's detections.
        frame_id: this frame's number.
    """
    pool, unconfirmed = groups.pool, groups.unconfirmed
    # First association: confirmed + lost tracks with high-score detections.
    matches_1, free_pool, free_high = linear_assignment(high_cost(pool, high), params.match_thresh)

    # Second association: tracks that were tracked last frame with low-score detections.
    leftover = pool[free_pool]
    leftover = leftover[t.state[leftover] == _TRACKED]
    cost = iou_dist[leftover][:, low]
    matches_2, free_leftover, _ = linear_assignment(cost, params.low_match_thresh)
    t.state[leftover[free_leftover]] = _LOST

    # Unconfirmed tracks (born last frame) with the high-score detections left over.
    remaining_high = high[free_high]
    matches_3, free_unconfirmed, free_remaining = linear_assignment(
        high_cost(unconfirmed, remaining_high), params.unconfirmed_match_thresh
    )
    assoc = Association(
        tracks=(
            pool[matches_1[:, 0]],
            leftover[matches_2[:, 0]],
            unconfirmed[matches_3[:, 0]],
        ),
        dets=(high[matches_1[:, 1]], low[matches_2[:, 1]], remaining_high[matches_3[:, 1]]),
        dropped_unconfirmed=unconfirmed[free_unconfirmed],
        unclaimed_high=remaining_high[free_remaining],
    )
    _correct_matched(t, kalman, assoc, measurements, detections, frame_id)
    return assoc


def _correct_matched(  # noqa: PLR0917
    t: ByteTrackTable,
    kalman: KalmanFilter,
    assoc: Association,
    measurements: Float64Array,
    detections: Detections,
    frame_id: int,
) -> None:
    """Correct every matched track in one batched Kalman update and mark it tracked."""
    rows = np.concatenate(assoc.tracks)
    det_rows = np.concatenate(assoc.dets)
    t.mean[rows], t.covariance[rows] = kalman.update(
        t.mean[rows], t.covariance[rows], measurements[det_rows]
    )
    t.state[rows] = _TRACKED
    t.activated[rows] = True
    t.score[rows] = detections.confidence[det_rows]
    t.class_id[rows] = detections.class_id[det_rows]
    t.last_frame[rows] = frame_id
    t.det_index[rows] = det_rows


def finish_frame(
    t: TableT,
    groups: TrackGroups,
    assoc: Association,
    *,
    params: ByteParams,
    scores: npt.NDArray[np.floating],
    frame_id: int,
    start_tracks: Callable[[IntArray], TableT],
) -> tuple[TableT, IntArray, IntArray]:
    """Drop stale tracks, start new ones, drop duplicates; pick the rows to report.

    Args:
        t: the tracks after :func:`associate`.
        groups: from :func:`group_tracks`.
        assoc: from :func:`associate`.
        params: the track life-cycle thresholds.
        scores: (N,) detection confidences.
        frame_id: this frame's number.
        start_tracks: builds the table of tracks started from the given detection rows.

    Returns:
        The new table; the detection rows of its activated, tracked tracks in input
        order; and their track ids.
    """
    # Drop unconfirmed tracks that found no detection and tracks lost for too long.
    remove = np.zeros(len(t), np.bool_)
    remove[assoc.dropped_unconfirmed] = True
    remove |= (
        groups.was_lost & (t.state == _LOST) & (frame_id - t.last_frame > params.max_frames_lost)
    )
    t = t.select(~remove)

    # Start tracks from confident high-score detections nobody claimed.
    new = assoc.unclaimed_high
    t = t.concat(start_tracks(new[scores[new] >= params.new_track_thresh]))

    t = _remove_duplicates(t, params.duplicate_iou)

    out_mask = (t.state == _TRACKED) & t.activated
    out_rows = t.det_index[out_mask]
    order = np.argsort(out_rows, kind="stable")
    return t, out_rows[order], t.track_id[out_mask][order].copy()


class NewTrackColumns(TypedDict):
    """The state columns of newly started tracks (keyword arguments of a track table)."""

    state: npt.NDArray[np.int8]
    activated: BoolArray
    score: npt.NDArray[np.float32]
    class_id: IntArray
    start_frame: IntArray
    last_frame: IntArray
    det_index: IntArray


def new_track_columns(det_rows: IntArray, detections: Detections, frame_id: int) -> NewTrackColumns:
    """The state columns of tracks started from ``det_rows`` on frame ``frame_id``."""
    n = int(det_rows.shape[0])
    return {
        "state": np.full(n, _TRACKED, np.int8),
        # Only on the first frame is a track reported before its second detection.
        "activated": np.full(n, frame_id == 1, np.bool_),
        "score": detections.confidence[det_rows],
        "class_id": detections.class_id[det_rows],
        "start_frame": np.full(n, frame_id, np.int64),
        "last_frame": np.full(n, frame_id, np.int64),
        "det_index": det_rows.astype(np.int64, copy=True),
    }


def _remove_duplicates(t: TableT, duplicate_iou: float) -> TableT:
    """Of each tracked/lost pair with IoU above ``duplicate_iou`` drop the younger one."""
    tracked = np.flatnonzero(t.state == _TRACKED)
    lost = np.flatnonzero(t.state == _LOST)
    if tracked.size == 0 or lost.size == 0:
        return t
    boxes = t.boxes()
    pairs = box_iou(boxes[tracked], boxes[lost]) > duplicate_iou
    if not pairs.any():
        return t
    age = t.last_frame - t.start_frame
    tracked_older = age[tracked][:, None] > age[lost][None, :]
    remove = np.zeros(len(t), np.bool_)
    remove[tracked[(pairs & ~tracked_older).any(axis=1)]] = True
    remove[lost[(pairs & tracked_older).any(axis=0)]] = True
    return t.select(~remove)
