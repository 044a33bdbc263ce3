"""Compiled inner loops of a stream's online blend (see :mod:`tapetum.track.forecast_blend`):
mixing the members' forecasts with constant velocity, and scoring recorded forecasts into
the blend's normal equations, its weights and its calibration window, one call per
scoring instead of a few dozen numpy operations per checked step.
"""

from __future__ import annotations

import math

import numpy as np

from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray
from tapetum.track.kernels.jit import njit


@njit
def blend_members(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    means: Float32Array,
    covs: Float32Array,
    cv: Float64Array,
    weights: Float64Array,
    file_scale2: Float64Array,
    stream_scale2: Float64Array,
    grid: Float64Array,
    mixed_cov: Float64Array,
) -> None:
    """A forecaster file's member outputs → the grid forecasts a stream keeps.

    The mean is constant velocity plus each member's weighted correction over it,
    ``cv + Σ_e w_e (mean_e - cv)`` (weights 1/E and any ``cv``: the members' average); the
    covariance is the members' equal-weight mixture (their average covariance plus the
    spread of their means) times the file's and the stream's variance scales.

    Args:
        means: (M, E, K, 2) the members' mean offsets, box heights.
        covs: (M, E, K, 3) their ``var_x, var_y, cov_xy``.
        cv: (M, K, 2) constant velocity's offsets on the grid.
        weights: (K, E, 2) each member's weight per step and image axis.
        file_scale2, stream_scale2: (K,) variance multipliers per step.
        grid: (M, K, 5) written: the blended mean and the covariance with both scales.
        mixed_cov: (M, K, 3) written: the mixture's covariance, the file's scale only.
    """
    members = means.shape[1]
    inv = 1.0 / members
    for m in range(means.shape[0]):
        for k in range(means.shape[2]):
            mx, my = 0.0, 0.0
            for e in range(members):
                mx += means[m, e, k, 0]
                my += means[m, e, k, 1]
            mx *= inv
            my *= inv
            vxx, vyy, vxy = 0.0, 0.0, 0.0
            bx, by = cv[m, k, 0], cv[m, k, 1]
            for e in range(members):
                dx, dy = means[m, e, k, 0] - mx, means[m, e, k, 1] - my
                vxx += covs[m, e, k, 0] + dx * dx
                vyy += covs[m, e, k, 1] + dy * dy
                vxy += covs[m, e, k, 2] + dx * dy
                bx += weights[k, e, 0] * (means[m, e, k, 0] - cv[m, k, 0])
                by += weights[k, e, 1] * (means[m, e, k, 1] - cv[m, k, 1])
            f2 = file_scale2[k]
            vxx, vyy, vxy = vxx * inv * f2, vyy * inv * f2, vxy * inv * f2
            mixed_cov[m, k, 0], mixed_cov[m, k, 1], mixed_cov[m, k, 2] = vxx, vyy, vxy
            s2 = stream_scale2[k]
            grid[m, k, 0], grid[m, k, 1] = bx, by
            grid[m, k, 2], grid[m, k, 3], grid[m, k, 4] = vxx * s2, vyy * s2, vxy * s2


@njit
def score_step(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    ring_id: IntArray,
    ring_t: Float64Array,
    ring_origin: Float64Array,
    ring_model: Float64Array,
    ring_cv: Float64Array,
    ring_blend: Float64Array,
    ring_cov: Float64Array,
    lo: int,
    hi: int,
    step: int,
    horizon_s: float,
    now_s: float,
    store_ids: IntArray,
    store_t: Float64Array,
    store_obs: Float64Array,
    max_gap_s: float,
    gram: Float64Array,
    cross: Float64Array,
    d2: Float64Array,
) -> tuple[int, int]:
    """Score a stream's recorded forecasts at one checked step, those whose horizon has
    passed by ``now_s``, against where their tracks went.

    Where a track went is its centre at the forecast's time plus ``horizon_s``, from its
    buffered observations (an observation then, or linear interpolation between two that
    bracket it at most ``max_gap_s`` apart; a track no longer buffered, or unseen then, is
    not scored), as an offset from the forecast's origin in the origin's box height.

    Args:
        ring_id, ring_t, ring_origin: (R,), (R,), (R, 3) the records' tracks, times and
            origins ``x, y, h``; ring_model: (R, S, E, 2) the members' offsets; ring_cv,
            ring_blend: (R, S, 2) constant velocity's and the blended offsets; ring_cov:
            (R, S, 3) the covariances.
        lo, hi: the records not yet scored at this step, as counters (slot: counter % R),
            in time order.
        step: the checked step's column ``S``; horizon_s: its horizon, seconds.
        now_s: the latest update.
        store_ids: (C,) sorted track ids; store_t, store_obs: (C, L) times and (C, L, 3)
            ``x, y, h`` of their buffers.
        max_gap_s: see above.
        gram: (2, E, E) written: per image axis ``Σ d dᵀ`` of the members' corrections over
            constant velocity of the scored forecasts.
        cross: (2, E) written: per image axis ``Σ d · (truth - cv)``.
        d2: (≥ hi - lo,) written, first ``scored`` entries: squared Mahalanobis distance of
            each scored blended forecast's error (inf where the covariance is singular).

    Returns:
        ``due``, the records whose horizon has passed (done with at this step, scored or
        not), and ``scored``.
    """
    cap = ring_id.shape[0]
    members = ring_model.shape[2]
    count = store_ids.shape[0]
    last = store_t.shape[1] - 1
    gram[:, :, :] = 0.0
    cross[:, :] = 0.0
    due = 0
    scored = 0
    for c in range(lo, hi):
        slot = c % cap
        q = ring_t[slot] + horizon_s
        if q > now_s + 1e-9:
            break  # later records are later still
        due += 1
        r = np.searchsorted(store_ids, ring_id[slot])
        if r >= count or store_ids[r] != ring_id[slot]:
            continue
        j = last
        while j >= 0 and store_t[r, j] > q + 1e-9:
            j -= 1
        if j < 0 or not math.isfinite(store_t[r, j]):
            continue
        w = 0.0
        if abs(store_t[r, j] - q) >= 1e-9:
            if j == last:
                continue
            span = store_t[r, j + 1] - store_t[r, j]
            if not (store_t[r, j + 1] > q and span <= max_gap_s + 1e-9):
                continue
            w = min(max((q - store_t[r, j]) / span, 0.0), 1.0)
        hi_j = min(j + 1, last)
        h0 = ring_origin[slot, 2]
        x = store_obs[r, j, 0] + w * (store_obs[r, hi_j, 0] - store_obs[r, j, 0])
        y = store_obs[r, j, 1] + w * (store_obs[r, hi_j, 1] - store_obs[r, j, 1])
        tx = (x - ring_origin[slot, 0]) / h0
        ty = (y - ring_origin[slot, 1]) / h0
        for axis in range(2):
            base = ring_cv[slot, step, axis]
            rest = (tx if axis == 0 else ty) - base
            for e in range(members):
                de = ring_model[slot, step, e, axis] - base
                cross[axis, e] += de * rest
                for f in range(members):
                    gram[axis, e, f] += de * (ring_model[slot, step, f, axis] - base)
        ex = tx - ring_blend[slot, step, 0]
        ey = ty - ring_blend[slot, step, 1]
        a, b, cxy = ring_cov[slot, step, 0], ring_cov[slot, step, 1], ring_cov[slot, step, 2]
        det = a * b - cxy * cxy
        if math.isfinite(det) and det > 0:
            d2[scored] = (b * ex * ex - 2.0 * cxy * ex * ey + a * ey * ey) / det
        else:
            d2[scored] = math.inf
        scored += 1
    return due, scored


@njit
def blend_weights(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    gram: Float64Array,
    cross: Float64Array,
    count: float,
    prior_samples: float,
    prior: Float64Array,
    out: Float64Array,
) -> None:
    """The members' blend weights at one checked step, per image axis: the least-squares
    solution of ``(gram + ridge) w = cross`` (a ridge of 1e-3 of the mean diagonal keeps
    near-identical members from trading huge opposite weights), shrunk to ``prior`` by
    ``count`` against ``prior_samples``, each within [0, 1] and summing to at most 1. Where
    the members and constant velocity agree (a vanishing gram) the prior stands.

    Args:
        gram: (2, E, E) and cross: (2, E), per axis (see :func:`blend_evidence`).
        count: the (forgotten) number of scored forecasts behind them.
        prior_samples: pseudo-forecasts at the prior.
        prior: (E,) the weights before evidence.
        out: (E, 2) written.
    """
    e = prior.shape[0]
    a = np.empty((e, e + 1))
    for axis in range(2):
        size = 0.0
        for i in range(e):
            size += gram[axis, i, i]
        if size <= 1e-12 * count * e:
            for i in range(e):
                out[i, axis] = prior[i]
            continue
        for i in range(e):
            for j in range(e):
                a[i, j] = gram[axis, i, j]
            a[i, i] += 1e-3 * size / e
            a[i, e] = cross[axis, i]
        # Gaussian elimination with partial pivoting (the matrix is symmetric positive
        # definite with the ridge; pivoting guards rounding)
        for c in range(e):
            pivot = c
            for i in range(c + 1, e):
                if abs(a[i, c]) > abs(a[pivot, c]):
                    pivot = i
            if pivot != c:
                for j in range(e + 1):
                    a[c, j], a[pivot, j] = a[pivot, j], a[c, j]
            for i in range(c + 1, e):
                f = a[i, c] / a[c, c]
                for j in range(c, e + 1):
                    a[i, j] -= f * a[c, j]
        total = 0.0
        for i in range(e - 1, -1, -1):
            v = a[i, e]
            for j in range(i + 1, e):
                v -= a[i, j] * out[j, axis]
            out[i, axis] = v / a[i, i]
        for i in range(e):
            w = (count * out[i, axis] + prior_samples * prior[i]) / (count + prior_samples)
            w = min(max(w, 0.0), 1.0)
            out[i, axis] = w
            total += w
        if total > 1.0:
            for i in range(e):
                out[i, axis] /= total


@njit
def score_due(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    ring_id: IntArray,
    ring_t: Float64Array,
    ring_origin: Float64Array,
    ring_model: Float64Array,
    ring_cv: Float64Array,
    ring_blend: Float64Array,
    ring_cov: Float64Array,
    head: int,
    horizons_s: Float64Array,
    now_s: float,
    store_ids: IntArray,
    store_t: Float64Array,
    store_obs: Float64Array,
    max_gap_s: float,
    keep_per_forecast: float,
    prior_samples: float,
    prior: Float64Array,
    calibrate: bool,
    refit_every: int,
    done: IntArray,
    gram: Float64Array,
    cross: Float64Array,
    count: Float64Array,
    weight: Float64Array,
    d2: Float64Array,
    d2_next: IntArray,
    since_fit: IntArray,
    refit: BoolArray,
) -> int:
    """A stream's blend bookkeeping at one scoring: every checked step's due forecasts
    scored (:func:`score_step`), folded into its normal equations with forgetting, its
    weights solved (:func:`blend_weights`) and, with ``calibrate``, their squared distances
    written to its window; the steps whose window is due a refit are flagged.

    Args:
        ring_*: the records (see :func:`score_step`); head: records written so far.
        horizons_s: (S,) each checked step's horizon, seconds.
        now_s, store_ids, store_t, store_obs, max_gap_s: see :func:`score_step`.
        keep_per_forecast: the forgetting factor per scored forecast, ``1 - 1/memory``.
        prior_samples, prior: see :func:`blend_weights`.
        calibrate: keep the squared distances.
        refit_every: flag a step after this many new distances.
        done: (S,) records done with per step, updated.
        gram, cross, count: (S, 2, E, E), (S, 2, E), (S,) the normal equations, updated.
        weight: (S, E, 2) the weights, updated where a step scored something.
        d2: (S, W) the windows of squared distances; d2_next: (S,) where each writes
            next; since_fit: (S,) distances since the last refit; all updated.
        refit: (S,) written: whether each step's window is due a refit.

    Returns:
        The forecasts scored, all steps together.
    """
    steps = horizons_s.shape[0]
    members = prior.shape[0]
    window = d2.shape[1]
    g = np.empty((2, members, members))
    c = np.empty((2, members))
    total = 0
    for s_i in range(steps):
        refit[s_i] = False
        lo = done[s_i]
        if head <= lo:
            continue
        scratch = np.empty(head - lo)
        due, scored = score_step(
            ring_id,
            ring_t,
            ring_origin,
            ring_model,
            ring_cv,
            ring_blend,
            ring_cov,
            lo,
            head,
            s_i,
            horizons_s[s_i],
            now_s,
            store_ids,
            store_t,
            store_obs,
            max_gap_s,
            g,
            c,
            scratch,
        )
        done[s_i] = lo + due
        if scored == 0:
            continue
        total += scored
        forget = keep_per_forecast**scored
        gram[s_i] = forget * gram[s_i] + g
        cross[s_i] = forget * cross[s_i] + c
        count[s_i] = forget * count[s_i] + scored
        blend_weights(gram[s_i], cross[s_i], count[s_i], prior_samples, prior, weight[s_i])
        if not calibrate:
            continue
        first = max(scored - window, 0)  # a batch longer than the window keeps its last
        for k in range(first, scored):
            d2[s_i, (d2_next[s_i] + k) % window] = scratch[k]
        d2_next[s_i] += scored
        since_fit[s_i] += scored
        if since_fit[s_i] >= refit_every:
            since_fit[s_i] = 0
            refit[s_i] = True
    return total
