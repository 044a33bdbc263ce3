"""OC-SORT's frame as one compiled call (see ``tapetum/track/ocsort.py`` for the method).

The tracker's state is a fixed-capacity structure of arrays owned by ``OCSortTracker``;
rows ``[0, n_tracks)`` are the live tracks, in the order the numpy implementation kept
them (survivors in birth order, newborns appended). :func:`ocsort_step` advances it by one
frame in place: predict, the three association rounds (OCM, optional BYTE, OCR),
observation-centric re-update (ORU) of re-found tracks, Kalman correction, track birth,
reporting and deletion.

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
import numpy.typing as npt
from numba import types
from numba.extending import intrinsic

from tapetum._types import Float32Array, Float64Array, IntArray
from tapetum.track.kernels.jit import njit
from tapetum.track.kernels.lsa import min_cost_matching

#: ``history_age`` of an empty slot in the observation ring; older than any window start.
NO_OBSERVATION = int(np.iinfo(np.int64).min // 2)

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
def _compact(  # noqa: PLR0917 (compiled: positional only)
    keep: npt.NDArray[np.bool_],
    n: int,
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
    det_index: IntArray,
) -> int:
    """Move the rows ``keep``s marks to the front, in order; returns how many."""
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
    n_det = det_xyxy.shape[0]
    delta_t = hist_age.shape[1]
    capacity = mean.shape[0]
    det_index = np.full(capacity, -1, np.int64)
    work = np.empty((5, 7, 7))
    ipiv = np.zeros(4, np.int64)

    # Predict; drop tracks whose predicted box is not real.
    all_finite = True
    finite = np.ones(n_tracks, np.bool_)
    track_boxes = np.empty((n_tracks, 4))
    for t in range(n_tracks):
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
        for k in range(4):
            if not np.isfinite(track_boxes[t, k]):
                finite[t] = False
                all_finite = False
    if not all_finite:
        kept = 0
        for t in range(n_tracks):
            if finite[t]:
                track_boxes[kept] = track_boxes[t]
                kept += 1
        n_tracks = _compact(
            finite,
            n_tracks,
            mean,
            cov,
            frozen_mean,
            frozen_cov,
            last_box,
            hist_box,
            hist_age,
            velocity,
            track_id,
            age,
            since_update,
            hit_streak,
            det_index,
        )
    n = n_tracks

    # Each track's oldest observation of the last delta_t frames (else its last one).
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

    high = np.empty(n_det, np.int64)
    n_high = 0
    for d in range(n_det):
        if det_score[d] > det_thresh:
            high[n_high] = d
            n_high += 1
    det32, det_area = _boxes32(det_xyxy, n_det)
    trk32, trk_area = _boxes32(track_boxes, n)
    track_det = np.full(n, -1, np.int64)
    det_used = np.zeros(n_det, np.bool_)

    # First association (OCM): IoU plus direction consistency, scaled by confidence.
    iou = np.empty((n, n_high))
    weight = np.empty((n, n_high))
    for t in range(n):
        rx1, ry1, rx2, ry2 = reference[t, 0], reference[t, 1], reference[t, 2], reference[t, 3]
        vy, vx = velocity[t, 0], velocity[t, 1]
        for c in range(n_high):
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

    # BYTE: leftover tracks' predictions against the low-score detections.
    if use_byte:
        low = np.empty(n_det, np.int64)
        n_low = 0
        for d in range(n_det):
            if det_score[d] > low_thresh and det_score[d] < det_thresh:
                low[n_low] = d
                n_low += 1
        rows = np.empty(n, np.int64)
        n_rows = 0
        for t in range(n):
            if track_det[t] < 0:
                rows[n_rows] = t
                n_rows += 1
        iou = np.empty((n_rows, n_low))
        for a in range(n_rows):
            t = rows[a]
            for c in range(n_low):
                d = low[c]
                iou[a, c] = _iou32(trk32[t], trk_area[t], det32[d], det_area[d])
        pairs = np.full(n_rows, -1, np.int64)
        _match(iou, iou, iou_threshold, False, pairs)
        for a in range(n_rows):
            if pairs[a] >= 0:
                track_det[rows[a]] = low[pairs[a]]
                det_used[low[pairs[a]]] = True

    # OCR: leftover tracks' last observations against the leftover high detections.
    rows = np.empty(n, np.int64)
    n_rows = 0
    for t in range(n):
        if track_det[t] < 0:
            rows[n_rows] = t
            n_rows += 1
    cols = np.empty(n_high, np.int64)
    n_cols = 0
    for c in range(n_high):
        if not det_used[high[c]]:
            cols[n_cols] = high[c]
            n_cols += 1
    if n_rows > 0 and n_cols > 0:
        last32, last_area = _boxes32(last_box, n)
        iou = np.empty((n_rows, n_cols))
        for a in range(n_rows):
            t = rows[a]
            for c in range(n_cols):
                d = cols[c]
                iou[a, c] = _iou32(last32[t], last_area[t], det32[d], det_area[d])
        pairs = np.full(n_rows, -1, np.int64)
        _match(iou, iou, iou_threshold, False, pairs)
        for a in range(n_rows):
            if pairs[a] >= 0:
                track_det[rows[a]] = cols[pairs[a]]
                det_used[cols[pairs[a]]] = True

    # Observe. A track missing for the first time keeps its prediction for a later ORU.
    for t in range(n):
        d = track_det[t]
        if d < 0:
            if since_update[t] == 1:
                frozen_mean[t] = mean[t]
                frozen_cov[t] = cov[t]
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
        z = np.empty(4)
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

    # Start tracks from the high detections nobody claimed, in detection order.
    for c in range(n_high):
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

    # Report; ids are handed out on first report, in table order.
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

    # Delete tracks unobserved for too long.
    keep = np.empty(n_tracks, np.bool_)
    all_kept = True
    for t in range(n_tracks):
        keep[t] = since_update[t] <= max_lost
        all_kept = all_kept and keep[t]
    if not all_kept:
        n_tracks = _compact(
            keep,
            n_tracks,
            mean,
            cov,
            frozen_mean,
            frozen_cov,
            last_box,
            hist_box,
            hist_age,
            velocity,
            track_id,
            age,
            since_update,
            hit_streak,
            det_index,
        )
    return n_tracks, next_id, out_rows, out_ids
