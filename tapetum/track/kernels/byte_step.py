"""One compiled frame of ByteTrack and BoT-SORT.

The frame is the one described in :mod:`tapetum.track.bytetrack` (steps 1-6 there), and
:func:`byte_step` reads as it: one call per step, each a compiled function named after
it, in frame order:

1. ``_split_tracks``: the pool (confirmed and lost tracks) and the unconfirmed ones.
2. ``_predict``: Kalman prediction of the pool; BoT-SORT's camera warp of every track.
3. ``_split_detections``: high-score and low-score detections (``_iou_distance`` first
   gives every track's ``1 - IoU`` with every detection).
4. ``_associate_high``: the pool against the high-score detections (IoU fused with the
   score; BoT-SORT: or the gated appearance distance, :func:`_high_cost`).
5. ``_associate_low``: the pool's unmatched tracked tracks against the low-score
   detections on IoU; the ones left over become lost.
6. ``_associate_unconfirmed``: the unconfirmed tracks against the high-score detections
   left over.
7. ``_update_matched``: Kalman correction of every match, in association order (BoT-SORT:
   the high-score matches update the embedding average, ``_update_embedding``).
8. ``_remove_stale``: unconfirmed tracks left unmatched, tracks lost for too long.
9. ``_start_new_tracks``: from the confident high-score detections nobody claimed.
10. ``_remove_duplicates``: of a tracked and a lost track overlapping, the younger one.
11. ``_compact`` drops the rows steps 8 and 10 removed; ``_report`` gives each
    detection its track id.

BoT-SORT adds its ``x, y, w, h`` filter, the camera warp and the appearance cost; the rest
is shared. The steps are inlined into :func:`byte_step` when it compiles
(:func:`~tapetum.track.kernels.jit.njit_step`): naming them costs about half a
microsecond per frame.

State lives in a :class:`ByteState` (structure of arrays with spare capacity) owned by
the tracker; :func:`byte_step` rewrites its first ``n`` rows in place and returns the new
count; the steps receive its columns as one :data:`Tracks` tuple. Indices into the params
vectors are the ``P_*`` and ``I_*`` constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np

from tapetum._types import BoolArray, Float32Array, Float64Array, Int8Array, IntArray
from tapetum.track.kernels import kalman8
from tapetum.track.kernels.jit import njit, njit_step
from tapetum.track.kernels.lsa import thresholded_matching

TRACKED = 1
LOST = 2

# Float parameters (``params``).
P_TRACK_THRESH = 0  # high-score detections: score > this
P_LOW_THRESH = 1  # low-score detections: low < score < high
P_NEW_TRACK_THRESH = 2  # starting a track: score >= this
P_MATCH = 3  # cost limit, first association
P_LOW_MATCH = 4  # cost limit, second association (1 - IoU)
P_UNCONFIRMED_MATCH = 5  # cost limit, unconfirmed tracks
P_DUPLICATE_IOU = 6  # tracked/lost pairs overlapping more than this are duplicates
P_PROXIMITY = 7  # appearance counts only where 1 - IoU <= this
P_APPEARANCE = 8  # appearance counts only where its distance <= this
P_EMA = 9  # weight of a track's past embedding
P_STD_POSITION = 10  # Kalman position noise per pixel
P_STD_VELOCITY = 11  # Kalman velocity noise per pixel
N_PARAMS = 12

# Integer parameters (``flags``).
I_MOTION = 0  # kalman8.MOTION_XYAH or MOTION_XYWH
I_MAX_FRAMES_LOST = 1
I_FUSE_SCORE = 2  # 1: high-score cost is 1 - IoU * score
I_APPEARANCE = 3  # 1: gated appearance cost in the high-score associations
N_FLAGS = 4


#: The :class:`ByteState` columns as the compiled steps pass them (numba has no
#: dataclasses): mean, cov, track_id, state, activated, class_id, start_frame, last_frame,
#: det_index, features.
Tracks = tuple[
    Float64Array,
    Float64Array,
    IntArray,
    Int8Array,
    BoolArray,
    IntArray,
    IntArray,
    IntArray,
    IntArray,
    Float32Array,
]
#: One frame's detections: xyxy (N, 4) float64, score (N,) float32, class (N,) int64,
#: features (N, D) float32.
Dets = tuple[Float64Array, Float32Array, IntArray, Float32Array]


@dataclass(slots=True)
class ByteState:
    """Tracks of one ByteTrack/BoT-SORT tracker; rows ``[:n]`` are live.

    Attributes:
        mean: (C, 8) Kalman means.
        cov: (C, 8, 8) Kalman covariances.
        track_id: (C,) identities.
        state: (C,) ``TRACKED`` or ``LOST``.
        activated: (C,) False for a track born after frame 1 until its second detection.
        class_id: (C,) class of the last matched detection.
        start_frame: (C,) frame the track was born on.
        last_frame: (C,) frame of the last matched detection.
        det_index: (C,) detection row matched on the last frame, -1 if none.
        features: (C, D) unit moving-average embeddings (D = 0 without appearance).
        n: number of live tracks.
    """

    mean: Float64Array
    cov: Float64Array
    track_id: IntArray
    state: Int8Array
    activated: BoolArray
    class_id: IntArray
    start_frame: IntArray
    last_frame: IntArray
    det_index: IntArray
    features: Float32Array
    n: int = 0

    @classmethod
    def empty(cls, capacity: int = 64, feature_dim: int = 0) -> Self:
        """No tracks, room for ``capacity``."""
        return cls(
            mean=np.zeros((capacity, 8)),
            cov=np.zeros((capacity, 8, 8)),
            track_id=np.zeros(capacity, np.int64),
            state=np.zeros(capacity, np.int8),
            activated=np.zeros(capacity, np.bool_),
            class_id=np.zeros(capacity, np.int64),
            start_frame=np.zeros(capacity, np.int64),
            last_frame=np.zeros(capacity, np.int64),
            det_index=np.zeros(capacity, np.int64),
            features=np.zeros((capacity, feature_dim), np.float32),
        )

    @property
    def capacity(self) -> int:
        """Rows allocated."""
        return int(self.track_id.shape[0])

    def reserve(self, rows: int) -> None:
        """Make room for at least ``rows`` tracks (doubling), keeping the live ones."""
        if rows <= self.capacity:
            return
        capacity = max(rows, 2 * self.capacity)
        for name in self.__slots__:
            if name == "n":
                continue
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def set_feature_dim(self, dim: int) -> None:
        """Change the embedding length; only while no track is alive."""
        if self.n:
            raise ValueError("cannot change the embedding length while tracks are alive")
        self.features = np.zeros((self.capacity, dim), np.float32)


@njit
def _iou32(a: Float64Array, b: Float64Array) -> np.float32:
    """IoU of two xyxy boxes in float32 arithmetic (``tapetum.core.boxes.box_iou``)."""
    iw = min(np.float32(a[2]), np.float32(b[2])) - max(np.float32(a[0]), np.float32(b[0]))
    ih = min(np.float32(a[3]), np.float32(b[3])) - max(np.float32(a[1]), np.float32(b[1]))
    iw = max(iw, np.float32(0.0))
    ih = max(ih, np.float32(0.0))
    inter = iw * ih
    area_a = max(np.float32(a[2]) - np.float32(a[0]), np.float32(0.0)) * max(
        np.float32(a[3]) - np.float32(a[1]), np.float32(0.0)
    )
    area_b = max(np.float32(b[2]) - np.float32(b[0]), np.float32(0.0)) * max(
        np.float32(b[3]) - np.float32(b[1]), np.float32(0.0)
    )
    union = area_a + area_b - inter
    iou: np.float32 = inter / max(union, np.float32(1e-12))
    return iou


@njit
def _high_cost(  # noqa: PLR0917
    dist: Float64Array,
    appearance: Float64Array,
    det_score: Float32Array,
    params: Float64Array,
    flags: IntArray,
    rows: IntArray,
    cols: IntArray,
) -> Float64Array:
    """Cost of the first and the unconfirmed association: ``1 - IoU`` (times the score
    when fused), the smaller of it and the gated appearance distance with ReID."""
    out = np.empty((rows.shape[0], cols.shape[0]))
    for a in range(rows.shape[0]):
        i = rows[a]
        for b in range(cols.shape[0]):
            j = cols[b]
            d = dist[i, j]
            motion = 1.0 - (1.0 - d) * det_score[j] if flags[I_FUSE_SCORE] else d
            if flags[I_APPEARANCE]:
                app = appearance[i, j]
                if app > params[P_APPEARANCE] or d > params[P_PROXIMITY]:
                    app = 1.0
                motion = min(motion, app)
            out[a, b] = motion
    return out


@njit
def _unmatched(index: IntArray, row_to: IntArray) -> IntArray:
    """The entries of ``index`` whose position ``row_to`` left unmatched, in order."""
    count = 0
    for k in range(row_to.shape[0]):
        if row_to[k] < 0:
            count += 1
    out = np.empty(count, np.int64)
    count = 0
    for k in range(row_to.shape[0]):
        if row_to[k] < 0:
            out[count] = index[k]
            count += 1
    return out


@njit
def byte_step(  # noqa: PLR0917
    mean: Float64Array,
    cov: Float64Array,
    track_id: IntArray,
    state: Int8Array,
    activated: BoolArray,
    class_id: IntArray,
    start_frame: IntArray,
    last_frame: IntArray,
    det_index: IntArray,
    features: Float32Array,
    n: int,
    next_id: int,
    frame_id: int,
    det_xyxy: Float64Array,
    det_score: Float32Array,
    det_class: IntArray,
    det_features: Float32Array,
    appearance: Float64Array,
    affine: Float64Array,
    params: Float64Array,
    flags: IntArray,
    out_ids: IntArray,
) -> tuple[int, int]:
    """Run one frame over the live rows ``[:n]``; capacity must hold ``n + N`` rows.

    Args:
        mean, cov, ..., features: the :class:`ByteState` columns, updated in place.
        n: live tracks before the frame.
        next_id: the id the next new track gets.
        frame_id: this frame's number (1 for the first).
        det_xyxy: (N, 4) detection corners (float64 of the detector's float32).
        det_score: (N,) confidences.
        det_class: (N,) classes.
        det_features: (N, D) unit embeddings (D = 0 without appearance).
        appearance: (n, N) embedding distance of each live track to each detection
            (ignored unless ``flags[I_APPEARANCE]``).
        affine: (2, 3) camera warp applied after prediction, or an empty (0, 0) array.
        params: float parameters (``P_*``).
        flags: integer parameters (``I_*``).
        out_ids: (N,) filled with the track id of each detection, -1 where none is
            reported (unactivated, unmatched or low-score detections).

    Returns:
        The number of live tracks and the next free id.
    """
    tracks = (
        mean, cov, track_id, state, activated, class_id, start_frame, last_frame, det_index,
        features,
    )  # fmt: skip
    dets = (det_xyxy, det_score, det_class, det_features)
    motion = flags[I_MOTION]
    with_features = features.shape[1] > 0 and det_features.shape[1] > 0
    z = np.empty(4)  # measurement scratch, shared by the steps

    pool, unconfirmed, was_lost = _split_tracks(tracks, n)
    _predict(tracks, n, pool, was_lost, affine, motion, params)
    dist = _iou_distance(tracks, n, det_xyxy, motion)
    high, low = _split_detections(det_score, params)

    pool_to, high_to = _associate_high(dist, appearance, det_score, params, flags, pool, high)
    leftover, left_to = _associate_low(dist, state, pool, pool_to, low, params[P_LOW_MATCH])
    remaining = _unmatched(high, high_to)
    unconfirmed_to, remaining_to = _associate_unconfirmed(
        dist, appearance, det_score, params, flags, unconfirmed, remaining
    )

    # Every match, in association order; only high-score ones feed the embedding average.
    _update_matched(tracks, dets, pool, pool_to, high, frame_id, with_features, motion, params, z)
    _update_matched(tracks, dets, leftover, left_to, low, frame_id, False, motion, params, z)
    _update_matched(
        tracks, dets, unconfirmed, unconfirmed_to, remaining, frame_id, with_features, motion,
        params, z,
    )  # fmt: skip

    # New tracks go after the old rows; one compaction at the end removes the rows the
    # stale and duplicate steps unmark in ``keep``.
    keep = np.ones(n + remaining.shape[0], np.bool_)
    _remove_stale(
        keep, tracks, n, was_lost, unconfirmed, unconfirmed_to, frame_id,
        flags[I_MAX_FRAMES_LOST],
    )  # fmt: skip
    n, next_id = _start_new_tracks(
        tracks, dets, n, next_id, frame_id, remaining, remaining_to, with_features, motion,
        params, z,
    )  # fmt: skip
    _remove_duplicates(tracks, keep[:n], motion, params[P_DUPLICATE_IOU])
    n = _compact(tracks, keep[:n])
    _report(tracks, n, out_ids)
    return n, next_id


# --- The steps, in frame order ------------------------------------------------------------


@njit_step
def _split_tracks(tracks: Tracks, n: int) -> tuple[IntArray, IntArray, BoolArray]:
    """The pool (confirmed and lost tracks) and the unconfirmed tracked ones, as row
    indices in table order, and which rows were lost before this frame; clears every
    track's ``det_index``."""
    _, _, _, state, activated, _, _, _, det_index, _ = tracks
    was_lost = np.zeros(n, np.bool_)
    n_pool = 0
    n_unconfirmed = 0
    for i in range(n):
        det_index[i] = -1
        if state[i] == LOST:
            was_lost[i] = True
            n_pool += 1
        elif activated[i]:
            n_pool += 1
        else:
            n_unconfirmed += 1
    pool = np.empty(n_pool, np.int64)
    unconfirmed = np.empty(n_unconfirmed, np.int64)
    n_pool = 0
    n_unconfirmed = 0
    for i in range(n):
        if state[i] == LOST or activated[i]:
            pool[n_pool] = i
            n_pool += 1
        else:
            unconfirmed[n_unconfirmed] = i
            n_unconfirmed += 1
    return pool, unconfirmed, was_lost


@njit_step
def _predict(  # noqa: PLR0917
    tracks: Tracks,
    n: int,
    pool: IntArray,
    was_lost: BoolArray,
    affine: Float64Array,
    motion: int,
    params: Float64Array,
) -> None:
    """Kalman prediction of the pool, a lost track's size velocities zeroed first (as the
    reference does); then BoT-SORT's camera warp of every track, unconfirmed included."""
    mean, cov, _, _, _, _, _, _, _, _ = tracks
    pos = params[P_STD_POSITION]
    vel = params[P_STD_VELOCITY]
    for k in range(pool.shape[0]):
        i = pool[k]
        if was_lost[i]:
            mean[i, 7] = 0.0
            if motion == kalman8.MOTION_XYWH:
                mean[i, 6] = 0.0
        kalman8.predict(mean[i], cov[i], motion, pos, vel)
    if affine.shape[0] == 2:
        for i in range(n):
            kalman8.warp(mean[i], cov[i], affine)


@njit_step
def _iou_distance(tracks: Tracks, n: int, det_xyxy: Float64Array, motion: int) -> Float64Array:
    """(n, N) ``1 - IoU`` of every predicted track box with every detection."""
    mean, _, _, _, _, _, _, _, _, _ = tracks
    n_det = det_xyxy.shape[0]
    boxes = np.empty((n, 4))
    for i in range(n):
        kalman8.to_corners(mean[i], motion, boxes[i])
    dist = np.empty((n, n_det))
    for i in range(n):
        for j in range(n_det):
            dist[i, j] = 1.0 - _iou32(boxes[i], det_xyxy[j])
    return dist


@njit_step
def _split_detections(det_score: Float32Array, params: Float64Array) -> tuple[IntArray, IntArray]:
    """High-score (``> track_thresh``) and low-score (``low_thresh < s < track_thresh``)
    detection rows; strict inequalities as the reference, in float32 as numpy compares a
    float32 array with a Python float."""
    hi = np.float32(params[P_TRACK_THRESH])
    lo = np.float32(params[P_LOW_THRESH])
    n_det = det_score.shape[0]
    n_high = 0
    n_low = 0
    for j in range(n_det):
        if det_score[j] > hi:
            n_high += 1
        elif det_score[j] > lo and det_score[j] < hi:
            n_low += 1
    high = np.empty(n_high, np.int64)
    low = np.empty(n_low, np.int64)
    n_high = 0
    n_low = 0
    for j in range(n_det):
        if det_score[j] > hi:
            high[n_high] = j
            n_high += 1
        elif det_score[j] > lo and det_score[j] < hi:
            low[n_low] = j
            n_low += 1
    return high, low


@njit_step
def _associate_high(  # noqa: PLR0917
    dist: Float64Array,
    appearance: Float64Array,
    det_score: Float32Array,
    params: Float64Array,
    flags: IntArray,
    pool: IntArray,
    high: IntArray,
) -> tuple[IntArray, IntArray]:
    """First association: the pool against the high-score detections on
    :func:`_high_cost`. Returns the matched position in ``high`` of each pool track and
    the matched position in ``pool`` of each high detection (-1: none)."""
    cost = _high_cost(dist, appearance, det_score, params, flags, pool, high)
    return thresholded_matching(cost, params[P_MATCH])


@njit_step
def _associate_low(  # noqa: PLR0917
    dist: Float64Array,
    state: Int8Array,
    pool: IntArray,
    pool_to: IntArray,
    low: IntArray,
    cost_limit: float,
) -> tuple[IntArray, IntArray]:
    """Second association: the pool tracks the first left unmatched and tracked on the
    last frame against the low-score detections, on ``1 - IoU``; the ones left over
    become lost. Returns those tracks and the matched position in ``low`` of each."""
    free_pool = _unmatched(pool, pool_to)
    n_left = 0
    for k in range(free_pool.shape[0]):
        if state[free_pool[k]] == TRACKED:
            n_left += 1
    leftover = np.empty(n_left, np.int64)
    n_left = 0
    for k in range(free_pool.shape[0]):
        if state[free_pool[k]] == TRACKED:
            leftover[n_left] = free_pool[k]
            n_left += 1
    cost = np.empty((n_left, low.shape[0]))
    for a in range(n_left):
        for b in range(low.shape[0]):
            cost[a, b] = dist[leftover[a], low[b]]
    left_to, _ = thresholded_matching(cost, cost_limit)
    for a in range(n_left):
        if left_to[a] < 0:
            state[leftover[a]] = LOST
    return leftover, left_to


@njit_step
def _associate_unconfirmed(  # noqa: PLR0917
    dist: Float64Array,
    appearance: Float64Array,
    det_score: Float32Array,
    params: Float64Array,
    flags: IntArray,
    unconfirmed: IntArray,
    remaining: IntArray,
) -> tuple[IntArray, IntArray]:
    """Third association: the unconfirmed tracks against the high-score detections
    nobody took, on :func:`_high_cost`; returns both sides' matches (-1: none)."""
    cost = _high_cost(dist, appearance, det_score, params, flags, unconfirmed, remaining)
    return thresholded_matching(cost, params[P_UNCONFIRMED_MATCH])


@njit_step
def _update_matched(  # noqa: PLR0917
    tracks: Tracks,
    dets: Dets,
    rows: IntArray,
    row_to: IntArray,
    cols: IntArray,
    frame_id: int,
    with_features: bool,
    motion: int,
    params: Float64Array,
    z: Float64Array,
) -> None:
    """Kalman correction of each track ``rows[a]`` matched to detection
    ``cols[row_to[a]]``, in order: it becomes tracked and activated, takes the
    detection's class and, ``with_features``, its embedding into the moving average."""
    mean, cov, _, state, activated, class_id, _, last_frame, det_index, features = tracks
    det_xyxy, _, det_class, det_features = dets
    pos = params[P_STD_POSITION]
    alpha = np.float32(params[P_EMA])
    beta = np.float32(1.0 - params[P_EMA])
    for a in range(rows.shape[0]):
        if row_to[a] < 0:
            continue
        i = rows[a]
        j = cols[row_to[a]]
        kalman8.to_measurement(det_xyxy[j], motion, z)
        kalman8.update(mean[i], cov[i], z, motion, pos)
        state[i] = TRACKED
        activated[i] = True
        class_id[i] = det_class[j]
        last_frame[i] = frame_id
        det_index[i] = j
        if with_features:
            _update_embedding(features[i], det_features[j], alpha, beta)


@njit_step
def _update_embedding(
    feature: Float32Array, det_feature: Float32Array, alpha: np.float32, beta: np.float32
) -> None:
    """``feature = unit(alpha * feature + beta * det_feature)`` in float32, in place."""
    norm2 = np.float32(0.0)
    for d in range(feature.shape[0]):
        f = alpha * feature[d] + beta * det_feature[d]
        feature[d] = f
        norm2 += f * f
    norm = max(np.float32(np.sqrt(norm2)), np.float32(1e-12))
    for d in range(feature.shape[0]):
        feature[d] = feature[d] / norm


@njit_step
def _remove_stale(  # noqa: PLR0917
    keep: BoolArray,
    tracks: Tracks,
    n: int,
    was_lost: BoolArray,
    unconfirmed: IntArray,
    unconfirmed_to: IntArray,
    frame_id: int,
    max_frames_lost: int,
) -> None:
    """Unmark in ``keep`` the unconfirmed tracks that found no detection, and the tracks
    lost before this frame and unmatched for more than ``max_frames_lost`` frames."""
    _, _, _, state, _, _, _, last_frame, _, _ = tracks
    for a in range(unconfirmed.shape[0]):
        if unconfirmed_to[a] < 0:
            keep[unconfirmed[a]] = False
    for i in range(n):
        if was_lost[i] and state[i] == LOST and frame_id - last_frame[i] > max_frames_lost:
            keep[i] = False


@njit_step
def _start_new_tracks(  # noqa: PLR0917
    tracks: Tracks,
    dets: Dets,
    n: int,
    next_id: int,
    frame_id: int,
    remaining: IntArray,
    remaining_to: IntArray,
    with_features: bool,
    motion: int,
    params: Float64Array,
    z: Float64Array,
) -> tuple[int, int]:
    """Append a track for each high-score detection nobody claimed that scores at least
    ``new_track_thresh``, in detection order; only on frame 1 is it activated at birth.
    Returns the new number of rows and the next free id."""
    (
        mean, cov, track_id, state, activated, class_id, start_frame, last_frame, det_index,
        features,
    ) = tracks  # fmt: skip
    det_xyxy, det_score, det_class, det_features = dets
    pos = params[P_STD_POSITION]
    vel = params[P_STD_VELOCITY]
    for b in range(remaining.shape[0]):
        j = remaining[b]
        if remaining_to[b] >= 0 or det_score[j] < np.float32(params[P_NEW_TRACK_THRESH]):
            continue
        kalman8.to_measurement(det_xyxy[j], motion, z)
        kalman8.initiate(z, motion, pos, vel, mean[n], cov[n])
        track_id[n] = next_id
        next_id += 1
        state[n] = TRACKED
        activated[n] = frame_id == 1
        class_id[n] = det_class[j]
        start_frame[n] = frame_id
        last_frame[n] = frame_id
        det_index[n] = j
        if with_features:
            features[n] = det_features[j]
        elif features.shape[1] > 0:
            features[n] = np.float32(0.0)
        n += 1
    return n, next_id


@njit_step
def _remove_duplicates(tracks: Tracks, keep: BoolArray, motion: int, duplicate_iou: float) -> None:
    """Of each kept tracked/lost pair overlapping more than ``duplicate_iou``, unmark the
    younger track in ``keep`` (the tracked one on equal age)."""
    mean, _, _, state, _, _, start_frame, last_frame, _, _ = tracks
    n = keep.shape[0]
    boxes = np.empty((n, 4))
    for i in range(n):
        kalman8.to_corners(mean[i], motion, boxes[i])
    alive = keep.copy()  # the rows the pairs are drawn from
    for p in range(n):
        if not alive[p] or state[p] != TRACKED:
            continue
        for q in range(n):
            if not alive[q] or state[q] != LOST:
                continue
            if _iou32(boxes[p], boxes[q]) <= np.float32(duplicate_iou):
                continue
            if last_frame[p] - start_frame[p] > last_frame[q] - start_frame[q]:
                keep[q] = False
            else:
                keep[p] = False


@njit_step
def _compact(tracks: Tracks, keep: BoolArray) -> int:
    """Move the kept rows to the front, in order; returns their number."""
    (
        mean, cov, track_id, state, activated, class_id, start_frame, last_frame, det_index,
        features,
    ) = tracks  # fmt: skip
    w = 0
    for i in range(keep.shape[0]):
        if not keep[i]:
            continue
        if w != i:
            mean[w] = mean[i]
            cov[w] = cov[i]
            track_id[w] = track_id[i]
            state[w] = state[i]
            activated[w] = activated[i]
            class_id[w] = class_id[i]
            start_frame[w] = start_frame[i]
            last_frame[w] = last_frame[i]
            det_index[w] = det_index[i]
            features[w] = features[i]
        w += 1
    return w


@njit_step
def _report(tracks: Tracks, n: int, out_ids: IntArray) -> None:
    """``out_ids[j]``: the id of the activated, tracked track matched to detection ``j``
    on this frame; -1 where there is none."""
    _, _, track_id, state, activated, _, _, _, det_index, _ = tracks
    out_ids[:] = -1
    for i in range(n):
        if state[i] == TRACKED and activated[i]:
            out_ids[det_index[i]] = track_id[i]


def make_params(
    *,
    track_thresh: float,
    low_thresh: float,
    new_track_thresh: float,
    match_thresh: float,
    low_match_thresh: float,
    unconfirmed_match_thresh: float,
    duplicate_iou: float,
    std_weight_position: float,
    std_weight_velocity: float,
    proximity_thresh: float = 1.0,
    appearance_thresh: float = 1.0,
    ema_alpha: float = 0.9,
) -> Float64Array:
    """The ``P_*`` float parameters of :func:`byte_step`."""
    params = np.empty(N_PARAMS, np.float64)
    params[P_TRACK_THRESH] = track_thresh
    params[P_LOW_THRESH] = low_thresh
    params[P_NEW_TRACK_THRESH] = new_track_thresh
    params[P_MATCH] = match_thresh
    params[P_LOW_MATCH] = low_match_thresh
    params[P_UNCONFIRMED_MATCH] = unconfirmed_match_thresh
    params[P_DUPLICATE_IOU] = duplicate_iou
    params[P_PROXIMITY] = proximity_thresh
    params[P_APPEARANCE] = appearance_thresh
    params[P_EMA] = ema_alpha
    params[P_STD_POSITION] = std_weight_position
    params[P_STD_VELOCITY] = std_weight_velocity
    return params


def make_flags(
    *, motion: int, max_frames_lost: int, fuse_score: bool, appearance: bool
) -> IntArray:
    """The ``I_*`` integer parameters of :func:`byte_step`."""
    flags = np.empty(N_FLAGS, np.int64)
    flags[I_MOTION] = motion
    flags[I_MAX_FRAMES_LOST] = max_frames_lost
    flags[I_FUSE_SCORE] = int(fuse_score)
    flags[I_APPEARANCE] = int(appearance)
    return flags


class ByteCore:
    """The Python side of :func:`byte_step`: state, parameters, ids and frame count.

    Args:
        params: the ``P_*`` float parameters.
        flags: the ``I_*`` integer parameters.
        feature_dim: embedding length kept per track (0 without appearance).
    """

    def __init__(self, params: Float64Array, flags: IntArray, feature_dim: int = 0) -> None:
        if params.shape != (N_PARAMS,) or flags.shape != (N_FLAGS,):
            raise ValueError(f"need {N_PARAMS} params and {N_FLAGS} flags")
        self.params = np.ascontiguousarray(params, np.float64)
        self.flags = np.ascontiguousarray(flags, np.int64)
        self.state = ByteState.empty(feature_dim=feature_dim)
        self.next_id = 1
        self._no_affine = np.empty((0, 0))
        self._no_features = np.empty((0, 0), np.float32)
        # Load the compiled frame now (from the disk cache, or compile it) rather than on
        # the stream's first frame: an empty frame changes nothing.
        self.step(0, np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int64))

    def reset(self, feature_dim: int | None = None) -> None:
        """Drop every track; ids restart at 1."""
        dim = self.state.features.shape[1] if feature_dim is None else feature_dim
        self.state = ByteState.empty(feature_dim=dim)
        self.next_id = 1

    def step(
        self,
        frame_id: int,
        xyxy: Float32Array,
        score: Float32Array,
        class_id: IntArray,
        *,
        det_features: Float32Array | None = None,
        appearance: Float64Array | None = None,
        affine: Float64Array | None = None,
    ) -> IntArray:
        """Run one frame; returns the (N,) track id of each detection, -1 where none."""
        s = self.state
        s.reserve(s.n + xyxy.shape[0])
        out_ids = np.empty(xyxy.shape[0], np.int64)
        s.n, self.next_id = byte_step(
            s.mean,
            s.cov,
            s.track_id,
            s.state,
            s.activated,
            s.class_id,
            s.start_frame,
            s.last_frame,
            s.det_index,
            s.features,
            s.n,
            self.next_id,
            frame_id,
            xyxy.astype(np.float64),
            np.ascontiguousarray(score, np.float32),
            np.ascontiguousarray(class_id, np.int64),
            self._no_features if det_features is None else det_features,
            self._no_affine if appearance is None else appearance,
            self._no_affine if affine is None else affine,
            self.params,
            self.flags,
            out_ids,
        )
        return out_ids
