"""The 8-state constant-velocity Kalman filters of ByteTrack and BoT-SORT, one track at a
time, for compiled code.

These are the scalar twins of :class:`tapetum.track.kalman.KalmanFilter` (``x, y, a, h``
boxes, ByteTrack) and :class:`tapetum.track.kalman_xywh.KalmanFilterXYWH` (``x, y, w, h``,
BoT-SORT), which stay the batched numpy API and the reference the tests compare these
with. ``motion`` selects the layout; each function works in place on one row of the
tracker's state (``mean`` (8,), ``cov`` (8, 8)).

The operations follow the numpy versions term by term (the same sums in the same
order), so prediction is bit-identical; the correction solves the 4 x 4 innovation
system by LU with partial pivoting like LAPACK and agrees to rounding.
"""

from __future__ import annotations

import numpy as np

from tapetum._types import Float64Array
from tapetum.track.kernels.jit import njit

#: ``motion`` values: ByteTrack's ``x, y, a, h`` and BoT-SORT's ``x, y, w, h`` state.
MOTION_XYAH = 0
MOTION_XYWH = 1


@njit
def to_measurement(box: Float64Array, motion: int, out: Float64Array) -> None:
    """Corners ``x1, y1, x2, y2`` to the filter's ``x, y, a, h`` or ``x, y, w, h``."""
    w = box[2] - box[0]
    h = box[3] - box[1]
    out[0] = box[0] + 0.5 * w
    out[1] = box[1] + 0.5 * h
    out[2] = w / h if motion == MOTION_XYAH else w
    out[3] = h


@njit
def to_corners(mean: Float64Array, motion: int, out: Float64Array) -> None:
    """A state mean's box as corners ``x1, y1, x2, y2``."""
    if motion == MOTION_XYAH:
        half_w = 0.5 * mean[2] * mean[3]
        half_h = 0.5 * mean[3]
        out[0] = mean[0] - half_w
        out[1] = mean[1] - half_h
        out[2] = mean[0] + half_w
        out[3] = mean[1] + half_h
    else:
        half_w = 0.5 * mean[2]
        half_h = 0.5 * mean[3]
        out[0] = mean[0] - half_w
        out[1] = mean[1] - half_h
        out[2] = mean[0] + half_w
        out[3] = mean[1] + half_h


@njit
def _noise_std(mean: Float64Array, motion: int, pos: float, vel: float, out: Float64Array) -> None:
    """Height- (ByteTrack) or size-scaled (BoT-SORT) state noise standard deviations."""
    if motion == MOTION_XYAH:
        h = mean[3]
        out[0] = h * pos
        out[1] = h * pos
        out[2] = 1e-2
        out[3] = h * pos
        out[4] = h * vel
        out[5] = h * vel
        out[6] = 1e-5
        out[7] = h * vel
    else:
        w = mean[2]
        h = mean[3]
        out[0] = pos * w
        out[1] = pos * h
        out[2] = pos * w
        out[3] = pos * h
        out[4] = vel * w
        out[5] = vel * h
        out[6] = vel * w
        out[7] = vel * h


@njit
def initiate(  # noqa: PLR0917  (compiled: positional arrays)
    z: Float64Array, motion: int, pos: float, vel: float, mean: Float64Array, cov: Float64Array
) -> None:
    """Start a track from measurement ``z``: zero velocity, diagonal covariance."""
    for k in range(4):
        mean[k] = z[k]
        mean[4 + k] = 0.0
    std = np.empty(8)
    _noise_std(mean, motion, 2 * pos, 10 * vel, std)
    cov[:, :] = 0.0
    for k in range(8):
        cov[k, k] = std[k] * std[k]


@njit
def predict(mean: Float64Array, cov: Float64Array, motion: int, pos: float, vel: float) -> None:
    """Advance one track by one frame: position += velocity, ``P = F P F^T + Q``."""
    std = np.empty(8)
    _noise_std(mean, motion, pos, vel, std)
    for k in range(4):
        mean[k] += mean[4 + k]
    if motion == MOTION_XYAH:
        for r in range(4):  # F P: rows 0-3 += rows 4-7
            for c in range(8):
                cov[r, c] += cov[r + 4, c]
        for r in range(8):  # (F P) F^T: columns 0-3 += columns 4-7
            for c in range(4):
                cov[r, c] += cov[r, c + 4]
    else:
        # Blocks [[A, B], [C, D]] -> [[A + ((B + C) + D), B + D], [C + D, D]].
        for r in range(4):
            for c in range(4):
                cov[r, c] += (cov[r, c + 4] + cov[r + 4, c]) + cov[r + 4, c + 4]
        for r in range(4):
            for c in range(4):
                d = cov[r + 4, c + 4]
                cov[r, c + 4] += d
                cov[r + 4, c] += d
    for k in range(8):
        cov[k, k] += std[k] * std[k]


@njit
def update(mean: Float64Array, cov: Float64Array, z: Float64Array, motion: int, pos: float) -> None:
    """Correct one track with its measurement ``z``.

    Gain ``K = P H^T S^-1`` from the 4 x 4 system ``S K^T = (P H^T)^T`` (LU, partial
    pivoting), then ``x += K (z - H x)`` and ``P -= (K S) K^T``.
    """
    s = np.empty((4, 4))
    for r in range(4):
        for c in range(4):
            s[r, c] = cov[r, c]
    if motion == MOTION_XYAH:
        std = mean[3] * pos
        s[0, 0] += std * std
        s[1, 1] += std * std
        s[2, 2] += 1e-1 * 1e-1
        s[3, 3] += std * std
    else:
        sw = pos * mean[2]
        sh = pos * mean[3]
        s[0, 0] += sw * sw
        s[1, 1] += sh * sh
        s[2, 2] += sw * sw
        s[3, 3] += sh * sh
    # rhs = (P H^T)^T: (4, 8), row k = column k of P.
    kt = np.empty((4, 8))
    for k in range(4):
        for c in range(8):
            kt[k, c] = cov[c, k]
    lu = s.copy()
    _lu_solve(lu, kt)
    innovation = np.empty(4)
    for k in range(4):
        innovation[k] = z[k] - mean[k]
    for r in range(8):
        acc = 0.0
        for k in range(4):
            acc += kt[k, r] * innovation[k]
        mean[r] += acc
    # K S: (8, 4); then (K S) K^T: (8, 8).
    ks = np.zeros((8, 4))
    for r in range(8):
        for c in range(4):
            acc = 0.0
            for k in range(4):
                acc += kt[k, r] * s[k, c]
            ks[r, c] = acc
    for r in range(8):
        for c in range(8):
            acc = 0.0
            for k in range(4):
                acc += ks[r, k] * kt[k, c]
            cov[r, c] -= acc


@njit
def _lu_solve(a: Float64Array, b: Float64Array) -> None:
    """Solve ``a x = b`` in place (``b`` becomes ``x``); ``a`` is overwritten by its LU."""
    n = a.shape[0]
    for k in range(n):
        p = k
        best = abs(a[k, k])
        for i in range(k + 1, n):
            if abs(a[i, k]) > best:
                best = abs(a[i, k])
                p = i
        if p != k:
            for j in range(n):
                a[k, j], a[p, j] = a[p, j], a[k, j]
            for j in range(b.shape[1]):
                b[k, j], b[p, j] = b[p, j], b[k, j]
        inv = 1.0 / a[k, k]
        for i in range(k + 1, n):
            f = a[i, k] * inv
            a[i, k] = f
            for j in range(k + 1, n):
                a[i, j] -= f * a[k, j]
            for j in range(b.shape[1]):
                b[i, j] -= f * b[k, j]
    for k in range(n - 1, -1, -1):
        for j in range(b.shape[1]):
            acc = b[k, j]
            for i in range(k + 1, n):
                acc -= a[k, i] * b[i, j]
            b[k, j] = acc / a[k, k]


@njit
def warp(mean: Float64Array, cov: Float64Array, affine: Float64Array) -> None:
    """Move one state by a camera warp: the 2 x 2 part ``R`` on each of the state's four
    2-vectors, the translation on the centre (``tapetum.track.cmc.warp_states``)."""
    r00, r01, r10, r11 = affine[0, 0], affine[0, 1], affine[1, 0], affine[1, 1]
    for b in range(4):
        x = mean[2 * b]
        y = mean[2 * b + 1]
        mean[2 * b] = r00 * x + r01 * y
        mean[2 * b + 1] = r10 * x + r11 * y
    mean[0] += affine[0, 2]
    mean[1] += affine[1, 2]
    # cov' = R8 cov R8^T with R8 = kron(I4, R): left then right multiply, 2x2 blocks.
    for b in range(4):
        for c in range(8):
            x = cov[2 * b, c]
            y = cov[2 * b + 1, c]
            cov[2 * b, c] = r00 * x + r01 * y
            cov[2 * b + 1, c] = r10 * x + r11 * y
    for r in range(8):
        for b in range(4):
            x = cov[r, 2 * b]
            y = cov[r, 2 * b + 1]
            cov[r, 2 * b] = r00 * x + r01 * y
            cov[r, 2 * b + 1] = r10 * x + r11 * y
