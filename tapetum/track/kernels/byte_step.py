"""One compiled frame of ByteTrack and BoT-SORT.

The frame is the one described in :mod:`tapetum.track.bytetrack`: predict confirmed and
lost tracks, match them to the high-score detections, the leftover tracked ones to the
low-score detections, the unconfirmed ones to the high-score detections left over;
correct every match, drop stale tracks, start new ones, drop tracked/lost duplicates.
BoT-SORT adds its ``x, y, w, h`` filter, the camera warp after prediction and the gated
appearance cost in the high-score associations.

State lives in a :class:`ByteState` (structure of arrays with spare capacity) owned by
the tracker; :func:`byte_step` rewrites its first ``n`` rows in place and returns the new
count. Indices into the params vectors are the ``P_*`` and ``I_*`` constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np

from tapetum._types import BoolArray, Float32Array, Float64Array, Int8Array, IntArray
from tapetum.track.kernels import kalman8
from tapetum.track.kernels.jit import njit
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
    n_det = det_xyxy.shape[0]
    motion = flags[I_MOTION]
    pos = params[P_STD_POSITION]
    vel = params[P_STD_VELOCITY]
    has_features = features.shape[1] > 0 and det_features.shape[1] > 0

    # Groups: unconfirmed tracked tracks, and the pool of confirmed + lost ones.
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

    # Predict the pool (a lost track's size velocities zeroed), then the camera warp.
    for k in range(n_pool):
        i = pool[k]
        if was_lost[i]:
            mean[i, 7] = 0.0
            if motion == kalman8.MOTION_XYWH:
                mean[i, 6] = 0.0
        kalman8.predict(mean[i], cov[i], motion, pos, vel)
    if affine.shape[0] == 2:
        for i in range(n):
            kalman8.warp(mean[i], cov[i], affine)

    # 1 - IoU of every track with every detection.
    boxes = np.empty((n, 4))
    for i in range(n):
        kalman8.to_corners(mean[i], motion, boxes[i])
    dist = np.empty((n, n_det))
    for i in range(n):
        for j in range(n_det):
            dist[i, j] = 1.0 - _iou32(boxes[i], det_xyxy[j])

    # Split detections by score (strict inequalities, as the reference), in float32 like
    # numpy compares a float32 array with a Python float.
    hi = np.float32(params[P_TRACK_THRESH])
    lo = np.float32(params[P_LOW_THRESH])
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

    # First association: pool x high.
    cost = _high_cost(dist, appearance, det_score, params, flags, pool, high)
    pool_to, high_to = thresholded_matching(cost, params[P_MATCH])
    # Second association: pool tracks tracked last frame and unmatched x low, on IoU.
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
    cost = np.empty((n_left, n_low))
    for a in range(n_left):
        for b in range(n_low):
            cost[a, b] = dist[leftover[a], low[b]]
    left_to, _ = thresholded_matching(cost, params[P_LOW_MATCH])
    for a in range(n_left):
        if left_to[a] < 0:
            state[leftover[a]] = LOST
    # Third: unconfirmed x high detections nobody took.
    remaining = _unmatched(high, high_to)
    cost = _high_cost(dist, appearance, det_score, params, flags, unconfirmed, remaining)
    unconf_to, remaining_to = thresholded_matching(cost, params[P_UNCONFIRMED_MATCH])

    # Correct every match, in association order (embeddings: high-score matches only).
    z = np.empty(4)
    alpha = np.float32(params[P_EMA])
    beta = np.float32(1.0 - params[P_EMA])
    for stage in range(3):
        if stage == 0:
            rows, to, cols = pool, pool_to, high
        elif stage == 1:
            rows, to, cols = leftover, left_to, low
        else:
            rows, to, cols = unconfirmed, unconf_to, remaining
        for a in range(rows.shape[0]):
            if to[a] < 0:
                continue
            i = rows[a]
            j = cols[to[a]]
            kalman8.to_measurement(det_xyxy[j], motion, z)
            kalman8.update(mean[i], cov[i], z, motion, pos)
            state[i] = TRACKED
            activated[i] = True
            class_id[i] = det_class[j]
            last_frame[i] = frame_id
            det_index[i] = j
            if has_features and stage != 1:
                norm2 = np.float32(0.0)
                for d in range(features.shape[1]):
                    f = alpha * features[i, d] + beta * det_features[j, d]
                    features[i, d] = f
                    norm2 += f * f
                norm = max(np.float32(np.sqrt(norm2)), np.float32(1e-12))
                for d in range(features.shape[1]):
                    features[i, d] = features[i, d] / norm

    # Drop unconfirmed tracks that found nothing and tracks lost for too long; new tracks
    # go after the old rows, and one compaction at the end removes every dropped row.
    keep = np.ones(n + remaining.shape[0], np.bool_)
    for a in range(unconfirmed.shape[0]):
        if unconf_to[a] < 0:
            keep[unconfirmed[a]] = False
    for i in range(n):
        if was_lost[i] and state[i] == LOST and frame_id - last_frame[i] > flags[I_MAX_FRAMES_LOST]:
            keep[i] = False

    # Start tracks from confident high-score detections nobody claimed.
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
        if has_features:
            features[n] = det_features[j]
        elif features.shape[1] > 0:
            features[n] = np.float32(0.0)
        n += 1

    _drop_duplicates(
        mean, state, start_frame, last_frame, keep[:n], motion, params[P_DUPLICATE_IOU]
    )
    n = _compact(
        mean,
        cov,
        track_id,
        state,
        activated,
        class_id,
        start_frame,
        last_frame,
        det_index,
        features,
        keep[:n],
    )

    out_ids[:] = -1
    for i in range(n):
        if state[i] == TRACKED and activated[i]:
            out_ids[det_index[i]] = track_id[i]
    return n, next_id


@njit
def _compact(  # noqa: PLR0917
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
    keep: BoolArray,
) -> int:
    """Move the kept rows to the front, in order; returns their number."""
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


@njit
def _drop_duplicates(  # noqa: PLR0917
    mean: Float64Array,
    state: Int8Array,
    start_frame: IntArray,
    last_frame: IntArray,
    keep: BoolArray,
    motion: int,
    duplicate_iou: float,
) -> None:
    """Of each kept tracked/lost pair overlapping more than ``duplicate_iou``, unmark the
    younger track in ``keep`` (the tracked one on equal age)."""
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
