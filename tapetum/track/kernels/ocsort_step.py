"""OC-SORT's frame as one compiled call (see ``tapetum/track/ocsort.py`` for the method).

The tracker's state is a fixed-capacity structure of arrays owned by ``OCSortTracker``;
rows ``[0, n_tracks)`` are the live tracks, in the order the numpy implementation kept
them (survivors in birth order, newborns appended). :func:`ocsort_step` advances it by one
frame in place, one call per step of the method (steps 1-5 of ``ocsort.py``), each a
compiled function named after it:

1. ``_predict`` every track; ``_remove_unreal_predictions`` drops a track whose predicted
   box is not finite.
2. ``_direction_references``: each track's observation ``delta_t`` frames back, where the
   direction of motion OCM compares starts.
3. ``_associate_ocm``: the first round, IoU plus direction consistency, on the
   high-score detections (``_high_detections``).
4. ``_associate_byte`` (``use_byte``): the tracks left over against the low-score
   detections (``_low_detections``) on IoU.
5. ``_associate_ocr``: the tracks still left over, by last observed box, against the
   high-score detections still left over.
6. ``_freeze_newly_lost``: a track missing for the first time keeps its prediction.
7. ``_update_matched``: ORU (``_re_update``) of a re-found track, then Kalman correction
   and the observation history of every matched track.
8. ``_start_new_tracks`` from the high-score detections nobody claimed.
9. ``_report`` the tracks with enough hits in a row (ids handed out here).
10. ``_remove_expired``: tracks unobserved for more than ``max_frames_lost`` frames.

The steps receive the state columns as one :data:`Tracks` tuple and are inlined into
:func:`ocsort_step` when it compiles (:func:`~tapetum.track.kernels.jit.njit_step`):
naming them costs about half a microsecond per frame.

**Bit-for-bit equal to the numpy tracker** on the CPUs checked (numpy's OpenBLAS picks
its kernels by CPU; elsewhere the two agree to rounding). The Kalman filter here
reproduces the exact floating-point operations ``KalmanFilterXYSR`` performs through
numpy's BLAS and LAPACK (OpenBLAS), so every state, cost and decision equals the numpy
one:

- ``A @ B`` on the 7 x 7 (and 7 x 4) matrices is OpenBLAS ``dgemm``, whose kernels sum
  each entry as one chain of fused multiply-adds in ``k`` order: :func:`_fma` chains here.
- ``np.linalg.solve`` for the gain is LAPACK ``dgesv``: OpenBLAS's left-looking ``getf2``
  LU with partial pivoting (plain multiply and add, sub-diagonal scaled by the pivot's
  reciprocal), then the two triangular solves, the upper one multiplying by reciprocal
  diagonals. Reproduced step for step.
- ``einsum("nij,nj->ni")`` sums its four products left to right without fusing.
- ``box_iou`` works in float32: so does :func:`_iou32`.

A degenerate box divides by zero: as in numpy this gives inf or NaN, never an exception
(numpy's error model, :func:`tapetum.track.kernels.jit.njit`).

The tests compare the compiled filter with ``KalmanFilterXYSR`` on random states and
covariances.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from numba import types
from numba.extending import intrinsic

from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray
from tapetum.track.kernels.jit import njit, njit_step
from tapetum.track.kernels.lsa import min_cost_matching

#: ``history_age`` of an empty slot in the observation ring; older than any window start.
NO_OBSERVATION = int(np.iinfo(np.int64).min // 2)

#: The state columns as the compiled steps pass them (numba has no dataclasses): mean,
#: cov, frozen_mean, frozen_cov, last_box, hist_box, hist_age, velocity, track_id, age,
#: since_update, hit_streak (``_TrackState`` in ``ocsort.py`` documents them).
Tracks = tuple[
    Float64Array,
    Float64Array,
    Float64Array,
    Float64Array,
    Float64Array,
    Float64Array,
    IntArray,
    Float64Array,
    IntArray,
    IntArray,
    IntArray,
    IntArray,
]
#: Boxes as ``box_iou`` sees them: (N, 4) float32 corners and (N,) float32 areas.
Boxes32 = tuple[Float32Array, Float32Array]
#: One frame's detections: xyxy (N, 4) float64, score (N,) float64, and their
#: :data:`Boxes32`.
Dets = tuple[Float64Array, Float64Array, Float32Array, Float32Array]

_R = np.array([1.0, 1.0, 10.0, 10.0])
_Q = np.array([1.0, 1.0, 1.0, 1.0, 1e-2, 1e-2, 1e-4])
_P0 = np.array([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])
_ZERO32 = np.float32(0.0)
_EPS32 = np.float32(1e-12)
_HALF_PI = 0.5 * np.pi
_PI = np.pi


def _fma_typer(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """``a * b + c`` rounded once (LLVM's ``llvm.fma.f64``)."""
    del typingctx
    if not all(isinstance(x, types.Float) for x in (a, b, c)):
        return None
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        del context, signature
        return builder.fma(args[0], args[1], args[2])

    return sig, codegen


_fma = cast(Callable[[float, float, float], float], intrinsic(_fma_typer))


# --- Kalman filter on (x, y, s, r, vx, vy, vs) ---------------------------------------------


@njit
def kalman_initiate(mean: Float64Array, cov: Float64Array, box: Float64Array) -> None:
    """Start a track from an xyxy ``box``: ``KalmanFilterXYSR.initiate(xyxy_to_xysr(box))``."""
    w = box[2] - box[0]
    h = box[3] - box[1]
    mean[0] = box[0] + 0.5 * w
    mean[1] = box[1] + 0.5 * h
    mean[2] = w * h
    mean[3] = np.divide(w, h + 1e-6)
    for i in range(4, 7):
        mean[i] = 0.0
    for i in range(7):
        for j in range(7):
            cov[i, j] = 0.0
        cov[i, i] = _P0[i]


@njit
def kalman_predict(mean: Float64Array, cov: Float64Array) -> None:
    """One frame of ``KalmanFilterXYSR.predict``, in place on a (7,) mean and (7, 7) cov.

    ``F`` has one or two unit entries per row, so each BLAS chain of ``F P F^T`` reduces
    to the same one or two rounded additions done here.
    """
    mean[0] = mean[0] + mean[4]
    mean[1] = mean[1] + mean[5]
    mean[2] = mean[2] + mean[6]
    for i in range(3):  # F P: rows x, y, s gain their velocity rows
        for j in range(7):
            cov[i, j] = cov[i, j] + cov[i + 4, j]
    for i in range(7):  # (F P) F^T: columns x, y, s gain their velocity columns
        for j in range(3):
            cov[i, j] = cov[i, j] + cov[i, j + 4]
    for i in range(7):
        for j in range(7):
            cov[i, j] = cov[i, j] + (_Q[i] if i == j else 0.0)


@njit
def _matmul_fma(  # noqa: PLR0917 (compiled: positional only)
    a: Float64Array, b: Float64Array, out: Float64Array, n: int, m: int, p: int, b_t: bool
) -> None:
    """``out[:n, :p] = a[:n, :m] @ (b[:p, :m].T if b_t else b[:m, :p])`` as OpenBLAS sums it."""
    for r in range(n):
        for c in range(p):
            out[r, c] = 0.0
        for k in range(m):
            ark = a[r, k]
            if b_t:
                for c in range(p):
                    out[r, c] = _fma(ark, b[c, k], out[r, c])
            else:
                for c in range(p):
                    out[r, c] = _fma(ark, b[k, c], out[r, c])


@njit
def kalman_update(
    mean: Float64Array, cov: Float64Array, z: Float64Array, work: Float64Array, ipiv: IntArray
) -> None:
    """``KalmanFilterXYSR.update`` of one track with measurement ``z`` (4,), in place.

    ``work`` is (5, 7, 7) float64 scratch and ``ipiv`` (4,) int64 scratch.
    """
    lu = work[0]
    x = work[1]  # (4, 7): S^-1 (P H^T)^T, i.e. the gain transposed
    ikh = work[2]
    t1 = work[3]
    t2 = work[4]
    for r in range(4):
        for c in range(4):
            lu[r, c] = cov[r, c] + (_R[r] if r == c else 0.0)
    # LAPACK getf2 (OpenBLAS, left-looking): column j gets the earlier row swaps, its U
    # part by forward substitution, its L part by a matrix-vector product, then pivots.
    for j in range(4):
        for i in range(j):
            ip = ipiv[i]
            if ip != i:
                tmp = lu[i, j]
                lu[i, j] = lu[ip, j]
                lu[ip, j] = tmp
        for i in range(1, j):
            acc = 0.0
            for k in range(i):
                acc = acc + lu[i, k] * lu[k, j]
            lu[i, j] = lu[i, j] - acc
        for r in range(j, 4):
            acc = 0.0
            for k in range(j):
                acc = acc + lu[r, k] * lu[k, j]
            lu[r, j] = lu[r, j] - acc
        jp = j
        best = abs(lu[j, j])
        for r in range(j + 1, 4):
            if abs(lu[r, j]) > best:
                best = abs(lu[r, j])
                jp = r
        ipiv[j] = jp
        pivot = lu[jp, j]
        if pivot != 0.0:
            if jp != j:
                for c in range(j + 1):
                    tmp = lu[j, c]
                    lu[j, c] = lu[jp, c]
                    lu[jp, c] = tmp
            inv = 1.0 / pivot
            for r in range(j + 1, 4):
                lu[r, j] = lu[r, j] * inv
    # getrs: row swaps, unit-lower then upper triangular solve of S X = (P H^T)^T.
    for r in range(4):
        for c in range(7):
            x[r, c] = cov[c, r]
    for i in range(4):
        ip = ipiv[i]
        if ip != i:
            for c in range(7):
                tmp = x[i, c]
                x[i, c] = x[ip, c]
                x[ip, c] = tmp
    for c in range(7):
        for i in range(4):
            xi = x[i, c]
            for k in range(i + 1, 4):
                x[k, c] = x[k, c] - xi * lu[k, i]
        for i in range(3, -1, -1):
            xi = x[i, c] * (1.0 / lu[i, i])
            x[i, c] = xi
            for k in range(i):
                x[k, c] = x[k, c] - xi * lu[k, i]
    # Mean: einsum's left-to-right sum of gain times innovation.
    i0 = z[0] - mean[0]
    i1 = z[1] - mean[1]
    i2 = z[2] - mean[2]
    i3 = z[3] - mean[3]
    for r in range(7):
        acc = 0.0
        acc = acc + x[0, r] * i0
        acc = acc + x[1, r] * i1
        acc = acc + x[2, r] * i2
        acc = acc + x[3, r] * i3
        mean[r] = mean[r] + acc
    # Joseph form: (I - K H) P (I - K H)^T + (K R) K^T, each product a BLAS gemm.
    for r in range(7):
        for c in range(7):
            ikh[r, c] = 1.0 if r == c else 0.0
        for c in range(4):
            ikh[r, c] = ikh[r, c] - x[c, r]
    _matmul_fma(ikh, cov, t1, 7, 7, 7, False)
    _matmul_fma(t1, ikh, t2, 7, 7, 7, True)
    # K R (7 x 4) into t1, then (K R) K^T into ikh; K[r, c] = x[c, r].
    for r in range(7):
        for c in range(4):
            acc = 0.0
            for k in range(4):
                acc = _fma(x[k, r], _R[k] if k == c else 0.0, acc)
            t1[r, c] = acc
    for r in range(7):
        for c in range(7):
            acc = 0.0
            for k in range(4):
                acc = _fma(t1[r, k], x[k, c], acc)
            cov[r, c] = t2[r, c] + acc


# --- Boxes --------------------------------------------------------------------------------


@njit
def _iou32(a: Float32Array, area_a: float, b: Float32Array, area_b: float) -> float:
    """``box_iou`` of one pair, in its float32 arithmetic; returned as float64."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    iw = max(iw, _ZERO32)
    ih = max(ih, _ZERO32)
    inter = iw * ih
    union = area_a + area_b - inter
    return float(inter / max(union, _EPS32))


@njit
def _boxes32(boxes: Float64Array, n: int) -> tuple[Float32Array, Float32Array]:
    """float32 copies of ``boxes[:n]`` and their areas, as ``box_iou`` computes them."""
    out = np.empty((n, 4), np.float32)
    area = np.empty(n, np.float32)
    for i in range(n):
        for k in range(4):
            out[i, k] = np.float32(boxes[i, k])
        area[i] = max(out[i, 2] - out[i, 0], _ZERO32) * max(out[i, 3] - out[i, 1], _ZERO32)
    return out, area


@njit
def _unit_direction(fx1: float, fy1: float, fx2: float, fy2: float, to: Float64Array) -> Any:
    """``dy, dx`` of the unit vector from the centre of box ``f`` to that of ``to``."""
    dx = 0.5 * (to[0] + to[2]) - 0.5 * (fx1 + fx2)
    dy = 0.5 * (to[1] + to[3]) - 0.5 * (fy1 + fy2)
    norm = math.sqrt(dx * dx + dy * dy) + 1e-6
    return dy / norm, dx / norm


# --- Association --------------------------------------------------------------------------


@njit
def _match(
    iou: Float64Array, weight: Float64Array, threshold: float, first: bool, out: IntArray
) -> None:
    """One association round as ``ocsort._match``; ``out[row] = col`` for matched pairs.

    ``out`` must hold -1 on entry. Maximum-weight matching of ``min(n, m)`` pairs, keeping
    pairs with IoU at least ``threshold``; in the first round a one-to-one set of pairs
    above the threshold is taken as is, later rounds run only if some pair is above it.
    """
    n, m = iou.shape
    if n == 0 or m == 0:
        return
    row_count = np.zeros(n, np.int64)
    col_count = np.zeros(m, np.int64)
    any_above = False
    one_to_one = True
    any_kept = False
    for i in range(n):
        for j in range(m):
            v = iou[i, j]
            if v >= threshold:
                any_kept = True
            if v > threshold:
                any_above = True
                row_count[i] += 1
                col_count[j] += 1
                if row_count[i] > 1 or col_count[j] > 1:
                    one_to_one = False
    if first:
        if any_above and one_to_one:
            for i in range(n):
                if row_count[i] == 1:
                    for j in range(m):
                        if iou[i, j] > threshold:
                            out[i] = j
            return
    elif not any_above:
        return
    if not any_kept:  # no pair of any matching can pass the filter
        return
    row_to_col, _ = min_cost_matching(-weight)
    for i in range(n):
        j = row_to_col[i]
        if j >= 0 and iou[i, j] >= threshold:
            out[i] = j


# --- The frame ----------------------------------------------------------------------------


@njit
def ocsort_step(  # noqa: PLR0917 (compiled: positional only)
    mean: Float64Array,
    cov: Float64Array,
    frozen_mean: Float64Array,
    frozen_cov: Float64Array,
    last_box: Float64Array,
    hist_box: Float64Array,
    hist_age: IntArray,
    velocity: Float64Array,
    track_id: IntArray,
    age: IntArray,
    since_update: IntArray,
    hit_streak: IntArray,
    n_tracks: int,
    next_id: int,
    frame_id: int,
    det_xyxy: Float64Array,
    det_score: Float64Array,
    det_thresh: float,
    low_thresh: float,
    use_byte: bool,
    iou_threshold: float,
    inertia: float,
    min_hits: int,
    max_lost: int,
    use_oru: bool,
) -> tuple[int, int, IntArray, IntArray]:
    """Advance the tracks ``[0, n_tracks)`` by one frame, in place.

    Args:
        mean ... hit_streak: the state arrays (capacity rows each), as ``_TrackState``
            in ``ocsort.py`` documents them; capacity must be at least
            ``n_tracks + len(det_xyxy)``.
        n_tracks: live tracks before this frame.
        next_id: the next identity to hand out.
        frame_id: this frame's number, 1 for a stream's first frame.
        det_xyxy: (N, 4) float64 detection boxes.
        det_score: (N,) float64 confidences.
        det_thresh ... max_lost: ``OCSortConfig`` values (``max_lost`` is
            ``max_frames_lost``).
        use_oru: re-update re-found tracks (always, except in tests).

    Returns:
        ``(n_tracks, next_id, rows, ids)``: the live tracks and next identity after this
        frame, and the detection rows a reported track observed, ascending, with its id.
    """
    tracks = (
        mean, cov, frozen_mean, frozen_cov, last_box, hist_box, hist_age, velocity, track_id,
        age, since_update, hit_streak,
    )  # fmt: skip
    det_index = np.full(mean.shape[0], -1, np.int64)  # detection each track observed

    track_boxes = _predict(tracks, n_tracks)
    n_tracks = _remove_unreal_predictions(tracks, n_tracks, track_boxes, det_index)
    n = n_tracks  # the tracks that take part in the associations
    reference = _direction_references(tracks, n)

    high = _high_detections(det_score, det_thresh)
    det32, det_area = _boxes32(det_xyxy, det_xyxy.shape[0])
    dets = (det_xyxy, det_score, det32, det_area)
    predicted = _boxes32(track_boxes, n)
    track_det = np.full(n, -1, np.int64)  # detection each track matched this frame
    det_used = np.zeros(det_xyxy.shape[0], np.bool_)
    _associate_ocm(
        tracks, dets, predicted, reference, high, inertia, iou_threshold, track_det, det_used
    )
    if use_byte:
        low = _low_detections(det_score, low_thresh, det_thresh)
        _associate_byte(dets, predicted, low, iou_threshold, track_det, det_used)
    _associate_ocr(tracks, dets, high, iou_threshold, track_det, det_used)

    _freeze_newly_lost(tracks, track_det)
    _update_matched(tracks, det_xyxy, reference, track_det, use_oru, det_index)
    n_tracks = _start_new_tracks(tracks, n_tracks, det_xyxy, high, det_used, det_index)
    next_id, out_rows, out_ids = _report(
        tracks, n_tracks, det_index, det_xyxy.shape[0], frame_id, min_hits, next_id
    )
    n_tracks = _remove_expired(tracks, n_tracks, det_index, max_lost)
    return n_tracks, next_id, out_rows, out_ids


# --- The steps, in frame order ------------------------------------------------------------


@njit_step
def _predict(tracks: Tracks, n: int) -> Float64Array:
    """Kalman prediction of the tracks ``[0, n)`` (a scale velocity that would make the
    area non-positive is zeroed first); ages them and breaks the hit streak of a track
    unobserved on the last frame. Returns the (n, 4) predicted xyxy boxes."""
    mean, cov, _, _, _, _, _, _, _, age, since_update, hit_streak = tracks
    track_boxes = np.empty((n, 4))
    for t in range(n):
        m = mean[t]
        if m[2] + m[6] <= 0:
            m[6] = 0.0
        kalman_predict(m, cov[t])
        age[t] += 1
        if since_update[t] > 0:
            hit_streak[t] = 0
        since_update[t] += 1
        w = np.sqrt(m[2] * m[3])
        h = np.divide(m[2], w)
        track_boxes[t, 0] = m[0] - 0.5 * w
        track_boxes[t, 1] = m[1] - 0.5 * h
        track_boxes[t, 2] = m[0] + 0.5 * w
        track_boxes[t, 3] = m[1] + 0.5 * h
    return track_boxes


@njit_step
def _remove_unreal_predictions(
    tracks: Tracks, n: int, track_boxes: Float64Array, det_index: IntArray
) -> int:
    """Drop the tracks whose predicted box is not finite (their rows in ``track_boxes``
    too, which keeps the survivors' boxes in its first rows); returns how many remain."""
    finite = np.ones(n, np.bool_)
    all_finite = True
    for t in range(n):
        for k in range(4):
            if not np.isfinite(track_boxes[t, k]):
                finite[t] = False
                all_finite = False
    if all_finite:
        return n
    kept = 0
    for t in range(n):
        if finite[t]:
            track_boxes[kept] = track_boxes[t]
            kept += 1
    return _compact(finite, n, tracks, det_index)


@njit_step
def _direction_references(tracks: Tracks, n: int) -> Float64Array:
    """(n, 4) each track's oldest observation of the last ``delta_t`` frames (else its
    last one): where OCM's direction of motion starts."""
    _, _, _, _, last_box, hist_box, hist_age, _, _, age, _, _ = tracks
    delta_t = hist_age.shape[1]
    reference = np.empty((n, 4))
    for t in range(n):
        limit = age[t] - delta_t
        slot = -1
        best = 0
        for s in range(delta_t):
            a = hist_age[t, s]
            if a >= limit and (slot < 0 or a < best):
                slot = s
                best = a
        if slot >= 0:
            reference[t] = hist_box[t, slot]
        else:
            reference[t] = last_box[t]
    return reference


@njit_step
def _high_detections(det_score: Float64Array, det_thresh: float) -> IntArray:
    """The detection rows scoring above ``det_thresh``, ascending."""
    count = 0
    for d in range(det_score.shape[0]):
        if det_score[d] > det_thresh:
            count += 1
    rows = np.empty(count, np.int64)
    count = 0
    for d in range(det_score.shape[0]):
        if det_score[d] > det_thresh:
            rows[count] = d
            count += 1
    return rows


@njit_step
def _low_detections(det_score: Float64Array, low_thresh: float, det_thresh: float) -> IntArray:
    """The detection rows scoring above ``low_thresh`` and below ``det_thresh``."""
    count = 0
    for d in range(det_score.shape[0]):
        if low_thresh < det_score[d] < det_thresh:
            count += 1
    rows = np.empty(count, np.int64)
    count = 0
    for d in range(det_score.shape[0]):
        if low_thresh < det_score[d] < det_thresh:
            rows[count] = d
            count += 1
    return rows


@njit_step
def _associate_ocm(  # noqa: PLR0917 (compiled: positional only)
    tracks: Tracks,
    dets: Dets,
    predicted: Boxes32,
    reference: Float64Array,
    high: IntArray,
    inertia: float,
    iou_threshold: float,
    track_det: IntArray,
    det_used: BoolArray,
) -> None:
    """First round (OCM): the predicted boxes against the high-score detections on IoU
    plus ``inertia`` times the confidence-scaled consistency of the direction from each
    track's reference observation to the detection with the track's own direction."""
    _, _, _, _, _, _, _, velocity, _, _, _, _ = tracks
    det_xyxy, det_score, det32, det_area = dets
    trk32, trk_area = predicted
    n = track_det.shape[0]
    iou = np.empty((n, high.shape[0]))
    weight = np.empty((n, high.shape[0]))
    for t in range(n):
        rx1, ry1, rx2, ry2 = reference[t, 0], reference[t, 1], reference[t, 2], reference[t, 3]
        vy, vx = velocity[t, 0], velocity[t, 1]
        for c in range(high.shape[0]):
            d = high[c]
            v = _iou32(trk32[t], trk_area[t], det32[d], det_area[d])
            dy, dx = _unit_direction(rx1, ry1, rx2, ry2, det_xyxy[d])
            cos = min(max(vx * dx + vy * dy, -1.0), 1.0)
            angle = (_HALF_PI - math.acos(cos)) / _PI
            iou[t, c] = v
            weight[t, c] = v + inertia * angle * det_score[d]
    pairs = np.full(n, -1, np.int64)
    _match(iou, weight, iou_threshold, True, pairs)
    for t in range(n):
        if pairs[t] >= 0:
            track_det[t] = high[pairs[t]]
            det_used[high[pairs[t]]] = True


@njit_step
def _associate_byte(  # noqa: PLR0917 (compiled: positional only)
    dets: Dets,
    predicted: Boxes32,
    low: IntArray,
    iou_threshold: float,
    track_det: IntArray,
    det_used: BoolArray,
) -> None:
    """BYTE round (``use_byte``): the tracks left over, by predicted box, against the
    low-score detections on IoU."""
    _, _, det32, det_area = dets
    trk32, trk_area = predicted
    rows = _unmatched_tracks(track_det)
    iou = np.empty((rows.shape[0], low.shape[0]))
    for a in range(rows.shape[0]):
        t = rows[a]
        for c in range(low.shape[0]):
            d = low[c]
            iou[a, c] = _iou32(trk32[t], trk_area[t], det32[d], det_area[d])
    pairs = np.full(rows.shape[0], -1, np.int64)
    _match(iou, iou, iou_threshold, False, pairs)
    _claim(rows, pairs, low, track_det, det_used)


@njit_step
def _associate_ocr(  # noqa: PLR0917 (compiled: positional only)
    tracks: Tracks,
    dets: Dets,
    high: IntArray,
    iou_threshold: float,
    track_det: IntArray,
    det_used: BoolArray,
) -> None:
    """Last round (OCR): the tracks still left over, by *last observed* box, against the
    high-score detections still left over, on IoU."""
    _, _, _, _, last_box, _, _, _, _, _, _, _ = tracks
    _, _, det32, det_area = dets
    rows = _unmatched_tracks(track_det)
    n_cols = 0
    for c in range(high.shape[0]):
        if not det_used[high[c]]:
            n_cols += 1
    cols = np.empty(n_cols, np.int64)
    n_cols = 0
    for c in range(high.shape[0]):
        if not det_used[high[c]]:
            cols[n_cols] = high[c]
            n_cols += 1
    if rows.shape[0] == 0 or n_cols == 0:
        return
    last32, last_area = _boxes32(last_box, track_det.shape[0])
    iou = np.empty((rows.shape[0], n_cols))
    for a in range(rows.shape[0]):
        t = rows[a]
        for c in range(n_cols):
            d = cols[c]
            iou[a, c] = _iou32(last32[t], last_area[t], det32[d], det_area[d])
    pairs = np.full(rows.shape[0], -1, np.int64)
    _match(iou, iou, iou_threshold, False, pairs)
    _claim(rows, pairs, cols, track_det, det_used)


@njit_step
def _unmatched_tracks(track_det: IntArray) -> IntArray:
    """The tracks no round has matched yet, ascending."""
    count = 0
    for t in range(track_det.shape[0]):
        if track_det[t] < 0:
            count += 1
    rows = np.empty(count, np.int64)
    count = 0
    for t in range(track_det.shape[0]):
        if track_det[t] < 0:
            rows[count] = t
            count += 1
    return rows


@njit_step
def _claim(
    rows: IntArray, pairs: IntArray, cols: IntArray, track_det: IntArray, det_used: BoolArray
) -> None:
    """Record a round's matches: track ``rows[a]`` observed detection ``cols[pairs[a]]``."""
    for a in range(rows.shape[0]):
        if pairs[a] >= 0:
            track_det[rows[a]] = cols[pairs[a]]
            det_used[cols[pairs[a]]] = True


@njit_step
def _freeze_newly_lost(tracks: Tracks, track_det: IntArray) -> None:
    """A track unmatched for the first time keeps this frame's prediction, from which
    ORU replays its filter if it is found again."""
    mean, cov, frozen_mean, frozen_cov, _, _, _, _, _, _, since_update, _ = tracks
    for t in range(track_det.shape[0]):
        if track_det[t] < 0 and since_update[t] == 1:
            frozen_mean[t] = mean[t]
            frozen_cov[t] = cov[t]


@njit_step
def _update_matched(  # noqa: PLR0917 (compiled: positional only)
    tracks: Tracks,
    det_xyxy: Float64Array,
    reference: Float64Array,
    track_det: IntArray,
    use_oru: bool,
    det_index: IntArray,
) -> None:
    """Each matched track: its direction of motion (reference observation to the new
    one); ORU (:func:`_re_update`) if it was unobserved since an earlier frame; Kalman
    correction with the detection; the observation recorded in its history."""
    (
        mean, cov, frozen_mean, frozen_cov, last_box, hist_box, hist_age, velocity, _, age,
        since_update, hit_streak,
    ) = tracks  # fmt: skip
    delta_t = hist_age.shape[1]
    work = np.empty((5, 7, 7))
    ipiv = np.zeros(4, np.int64)
    z = np.empty(4)
    for t in range(track_det.shape[0]):
        d = track_det[t]
        if d < 0:
            continue
        box = det_xyxy[d]
        dy, dx = _unit_direction(
            reference[t, 0], reference[t, 1], reference[t, 2], reference[t, 3], box
        )
        velocity[t, 0] = dy
        velocity[t, 1] = dx
        if since_update[t] > 1 and use_oru:
            _re_update(
                mean[t],
                cov[t],
                frozen_mean[t],
                frozen_cov[t],
                last_box[t],
                box,
                since_update[t],
                work,
                ipiv,
            )
        # After ORU the new observation is applied a second time, as the reference does.
        bw = box[2] - box[0]
        bh = box[3] - box[1]
        z[0] = box[0] + 0.5 * bw
        z[1] = box[1] + 0.5 * bh
        z[2] = bw * bh
        z[3] = np.divide(bw, bh + 1e-6)
        kalman_update(mean[t], cov[t], z, work, ipiv)
        last_box[t] = box
        slot = age[t] % delta_t
        hist_box[t, slot] = box
        hist_age[t, slot] = age[t]
        since_update[t] = 0
        hit_streak[t] += 1
        det_index[t] = d


@njit
def _re_update(  # noqa: PLR0917 (compiled: positional only)
    mean: Float64Array,
    cov: Float64Array,
    frozen_mean: Float64Array,
    frozen_cov: Float64Array,
    last: Float64Array,
    new: Float64Array,
    gap: int,
    work: Float64Array,
    ipiv: IntArray,
) -> None:
    """ORU of one track: replay the frozen filter along the straight path last -> new."""
    mean[:] = frozen_mean
    cov[:] = frozen_cov
    sx = 0.5 * (last[0] + last[2])
    sy = 0.5 * (last[1] + last[3])
    sw = last[2] - last[0]
    sh = last[3] - last[1]
    gx = (0.5 * (new[0] + new[2]) - sx) / gap
    gy = (0.5 * (new[1] + new[3]) - sy) / gap
    gw = ((new[2] - new[0]) - sw) / gap
    gh = ((new[3] - new[1]) - sh) / gap
    z = np.empty(4)
    for k in range(gap):
        f = float(k + 1)
        w = sw + f * gw
        h = sh + f * gh
        z[0] = sx + f * gx
        z[1] = sy + f * gy
        z[2] = w * h
        z[3] = np.divide(w, h)
        kalman_update(mean, cov, z, work, ipiv)
        if k + 1 < gap:
            kalman_predict(mean, cov)


@njit_step
def _start_new_tracks(  # noqa: PLR0917 (compiled: positional only)
    tracks: Tracks,
    n_tracks: int,
    det_xyxy: Float64Array,
    high: IntArray,
    det_used: BoolArray,
    det_index: IntArray,
) -> int:
    """Append a track for each high-score detection nobody claimed, in detection order
    (its id comes when it is first reported); returns the new number of tracks."""
    (
        mean, cov, frozen_mean, frozen_cov, last_box, hist_box, hist_age, velocity, track_id,
        age, since_update, hit_streak,
    ) = tracks  # fmt: skip
    delta_t = hist_age.shape[1]
    for c in range(high.shape[0]):
        d = high[c]
        if det_used[d]:
            continue
        t = n_tracks
        n_tracks += 1
        box = det_xyxy[d]
        kalman_initiate(mean[t], cov[t], box)
        frozen_mean[t] = mean[t]
        frozen_cov[t] = cov[t]
        last_box[t] = box
        for s in range(delta_t):
            hist_age[t, s] = NO_OBSERVATION
            for k in range(4):
                hist_box[t, s, k] = 0.0
        hist_box[t, 0] = box
        hist_age[t, 0] = 0
        velocity[t, 0] = 0.0
        velocity[t, 1] = 0.0
        track_id[t] = 0
        age[t] = 0
        since_update[t] = 0
        hit_streak[t] = 0
        det_index[t] = d
    return n_tracks


@njit_step
def _report(  # noqa: PLR0917 (compiled: positional only)
    tracks: Tracks,
    n_tracks: int,
    det_index: IntArray,
    n_det: int,
    frame_id: int,
    min_hits: int,
    next_id: int,
) -> tuple[int, IntArray, IntArray]:
    """The tracks observed this frame with ``min_hits`` observations in a row (every one
    during a stream's first ``min_hits`` frames). A track gets its id when first reported,
    in table order. Returns the next free id, and the reported detection rows, ascending,
    with their track ids."""
    _, _, _, _, _, _, _, _, track_id, _, since_update, hit_streak = tracks
    det_id = np.full(n_det, -1, np.int64)
    n_out = 0
    for t in range(n_tracks):
        if since_update[t] == 0 and (hit_streak[t] >= min_hits or frame_id <= min_hits):
            if track_id[t] == 0:
                track_id[t] = next_id
                next_id += 1
            det_id[det_index[t]] = track_id[t]
            n_out += 1
    out_rows = np.empty(n_out, np.int64)
    out_ids = np.empty(n_out, np.int64)
    k = 0
    for d in range(n_det):
        if det_id[d] >= 0:
            out_rows[k] = d
            out_ids[k] = det_id[d]
            k += 1
    return next_id, out_rows, out_ids


@njit_step
def _remove_expired(tracks: Tracks, n_tracks: int, det_index: IntArray, max_lost: int) -> int:
    """Delete the tracks unobserved for more than ``max_lost`` frames; returns how many
    remain."""
    _, _, _, _, _, _, _, _, _, _, since_update, _ = tracks
    keep = np.empty(n_tracks, np.bool_)
    all_kept = True
    for t in range(n_tracks):
        keep[t] = since_update[t] <= max_lost
        all_kept = all_kept and keep[t]
    if all_kept:
        return n_tracks
    return _compact(keep, n_tracks, tracks, det_index)


@njit_step
def _compact(keep: BoolArray, n: int, tracks: Tracks, det_index: IntArray) -> int:
    """Move the rows ``keep`` marks to the front, in order; returns how many."""
    (
        mean, cov, frozen_mean, frozen_cov, last_box, hist_box, hist_age, velocity, track_id,
        age, since_update, hit_streak,
    ) = tracks  # fmt: skip
    w = 0
    for r in range(n):
        if not keep[r]:
            continue
        if w != r:
            mean[w] = mean[r]
            cov[w] = cov[r]
            frozen_mean[w] = frozen_mean[r]
            frozen_cov[w] = frozen_cov[r]
            last_box[w] = last_box[r]
            hist_box[w] = hist_box[r]
            hist_age[w] = hist_age[r]
            velocity[w] = velocity[r]
            track_id[w] = track_id[r]
            age[w] = age[r]
            since_update[w] = since_update[r]
            hit_streak[w] = hit_streak[r]
            det_index[w] = det_index[r]
        w += 1
    return w
