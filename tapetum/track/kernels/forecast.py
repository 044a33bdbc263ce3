"""Compiled inner loops of the learned forecaster (see :mod:`tapetum.track.forecast_model`):
its per-track store (buffers and constant-velocity filters), the model's inputs and the
forecasts in pixels.

Each would be a dozen numpy operations on arrays of 50 rows, each dominated by dispatch
overhead; here each is one pass. Training builds its samples with the same resampling, so
the model sees exactly the numbers it will see online. The stream's blend has its own
(:mod:`tapetum.track.kernels.forecast_blend`).
"""

from __future__ import annotations

import math

import numpy as np

from tapetum._types import Float32Array, Float64Array, IntArray
from tapetum.track.kernels.jit import njit, njit_step


@njit
def push_observations(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    times_s: Float64Array,
    obs: Float64Array,
    kalman: Float64Array,
    rows: IntArray,
    centers_px: Float64Array,
    heights_px: Float64Array,
    now_s: float,
    min_gap_s: float,
    acceleration_std_per_height: float,
    measurement_std_per_height: float,
) -> None:
    """Append one observation to each of ``rows``' right-aligned buffers, and update each
    row's constant-velocity Kalman filter with it.

    The buffer shifts left by one unless the new observation is closer than ``min_gap_s``
    to the one before the latest; then it replaces the latest (a dense stream keeps its
    history window in the buffer). The filter sees every observation.

    The filter is :class:`tapetum.track.forecast.ConstantVelocityForecaster`'s, per row (per
    axis state ``p, v``; white-noise acceleration with spectral density ``(σ_a h)²``, ``h``
    the height at the previous observation; measurement variance ``(σ_z h)²``; both axes
    share one covariance): the same numbers as the baseline forecaster, kept up to date at
    a few flops per observation instead of replayed over the buffer at every forecast.

    Args:
        times_s: (C, L) observation times, updated in place.
        obs: (C, L, 3) ``x, y, h`` pixels, updated in place.
        kalman: (C, 7) each row's filter ``px, py, vx, vy, P_pp, P_pv, P_vv``, updated.
        rows: (M,) the rows observed now.
        centers_px: (M, 2) their centres; heights_px: (M,) their box heights.
        now_s: the observation time.
        min_gap_s: see above.
        acceleration_std_per_height, measurement_std_per_height: the filter's settings.
    """
    last = times_s.shape[1] - 1
    for m in range(rows.shape[0]):
        r = rows[m]
        _kalman_step(
            kalman,
            r,
            now_s - times_s[r, last],
            obs[r, last, 2],
            centers_px[m, 0],
            centers_px[m, 1],
            heights_px[m],
            acceleration_std_per_height,
            measurement_std_per_height,
        )
        if now_s - times_s[r, last - 1] >= min_gap_s:
            for j in range(last):
                times_s[r, j] = times_s[r, j + 1]
                obs[r, j, 0] = obs[r, j + 1, 0]
                obs[r, j, 1] = obs[r, j + 1, 1]
                obs[r, j, 2] = obs[r, j + 1, 2]
        times_s[r, last] = now_s
        obs[r, last, 0] = centers_px[m, 0]
        obs[r, last, 1] = centers_px[m, 1]
        obs[r, last, 2] = heights_px[m]


@njit_step
def _kalman_step(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    kalman: Float64Array,
    r: int,
    dt: float,
    h_prev: float,
    zx: float,
    zy: float,
    h: float,
    acceleration_std_per_height: float,
    measurement_std_per_height: float,
) -> None:
    """Predict row ``r``'s filter ``dt`` ahead and update it with the centre ``zx, zy``."""
    px, py, vx, vy = kalman[r, 0], kalman[r, 1], kalman[r, 2], kalman[r, 3]
    p00, p01, p11 = kalman[r, 4], kalman[r, 5], kalman[r, 6]
    q = (acceleration_std_per_height * h_prev) ** 2
    # predict: F = [[1, dt], [0, 1]], Q = q [[dt³/3, dt²/2], [dt²/2, dt]]
    px += vx * dt
    py += vy * dt
    n00 = p00 + 2.0 * dt * p01 + dt * dt * p11 + q * dt**3 / 3.0
    n01 = p01 + dt * p11 + q * dt * dt / 2.0
    n11 = p11 + q * dt
    # update with the position measurement, variance (σ_z h)²
    s = n00 + (measurement_std_per_height * h) ** 2
    k0, k1 = n00 / s, n01 / s
    ix, iy = zx - px, zy - py
    kalman[r, 0], kalman[r, 1] = px + k0 * ix, py + k0 * iy
    kalman[r, 2], kalman[r, 3] = vx + k1 * ix, vy + k1 * iy
    kalman[r, 4] = n00 - k0 * k0 * s
    kalman[r, 5] = n01 - k0 * k1 * s
    kalman[r, 6] = n11 - k1 * k1 * s


#: What :func:`classify_rows` found of a requested track.
ROW_UNKNOWN, ROW_YOUNG, ROW_READY, ROW_BEYOND = 0, 1, 2, 3


@njit
def classify_rows(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    store_ids: IntArray,
    times_s: Float64Array,
    start_s: Float64Array,
    ids: IntArray,
    origin_s: float,
    max_age_s: float,
    min_history_s: float,
    max_age_ahead_s: float,
    rows: IntArray,
    age: Float64Array,
    kind: IntArray,
) -> None:
    """Find requested tracks in a forecaster's store and say how each is to be forecast.

    Args:
        store_ids: (C,) sorted track ids; times_s: (C, L) their observation times (latest
            last); start_s: (C,) their first observation.
        ids: (N,) requested tracks; origin_s: when the forecast is made.
        max_age_s: a track unseen longer is unknown.
        min_history_s: a track observed for less is young (constant velocity).
        max_age_ahead_s: a track last seen longer ago than this cannot reach the longest
            requested horizon on the model's grid (beyond).
        rows: (N,) written: the store rows (any value where unknown).
        age: (N,) written: seconds from each latest observation to ``origin_s``.
        kind: (N,) written: ``ROW_UNKNOWN``, ``ROW_YOUNG``, ``ROW_READY`` or ``ROW_BEYOND``.
    """
    count = store_ids.shape[0]
    last = times_s.shape[1] - 1
    for i in range(ids.shape[0]):
        kind[i] = ROW_UNKNOWN
        r = np.searchsorted(store_ids, ids[i])
        rows[i] = min(r, max(count - 1, 0))
        if r >= count or store_ids[r] != ids[i]:
            age[i] = math.inf
            continue
        a = origin_s - times_s[r, last]
        age[i] = a
        if not a <= max_age_s:
            continue
        if times_s[r, last] - start_s[r] < min_history_s - 1e-9:
            kind[i] = ROW_YOUNG
        elif a > max_age_ahead_s + 1e-9:
            kind[i] = ROW_BEYOND
        else:
            kind[i] = ROW_READY


@njit
def resample_history(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    times_s: Float64Array,
    obs: Float64Array,
    rows: IntArray,
    dt_s: float,
    out: Float32Array,
    extrapolate: bool = False,
) -> None:
    """Each row's history on the grid ``t0 - k·dt`` relative to its latest observation.

    Args:
        times_s: (C, L) observation times, ascending per row, latest in the last column,
            ``-inf`` before a track's first observation.
        obs: (C, L, 3) ``x, y, h`` in pixels at those times.
        rows: (M,) rows of the store to resample.
        dt_s: grid step, seconds.
        out: (M, T, 4) float32, written: ``(x - x0) / h0, (y - y0) / h0, log(h / h0),
            observed``. Before the first observation (observed 0) the first one is repeated
            or, with ``extrapolate``, the centre goes back at the track's mean velocity
            from its first to its latest observation (the height is held).
    """
    length = times_s.shape[1]
    steps = out.shape[1]
    last = length - 1
    for m in range(rows.shape[0]):
        r = rows[m]
        t0 = times_s[r, last]
        x0, y0, h0 = obs[r, last, 0], obs[r, last, 1], obs[r, last, 2]
        first = last
        while first > 0 and math.isfinite(times_s[r, first - 1]):
            first -= 1
        t_first = times_s[r, first]
        vx, vy = 0.0, 0.0
        if extrapolate and t0 > t_first:
            vx = (x0 - obs[r, first, 0]) / (t0 - t_first)
            vy = (y0 - obs[r, first, 1]) / (t0 - t_first)
        j = last
        for k in range(steps):
            q = t0 - dt_s * k
            # the last observation at or before q (the tolerance absorbs float rounding)
            while j > first and times_s[r, j] > q + 1e-9:
                j -= 1
            hi = min(j + 1, last)
            span = times_s[r, hi] - times_s[r, j]
            w = 0.0
            if span > 0:
                w = min(max((q - times_s[r, j]) / span, 0.0), 1.0)
            x = obs[r, j, 0] + w * (obs[r, hi, 0] - obs[r, j, 0])
            y = obs[r, j, 1] + w * (obs[r, hi, 1] - obs[r, j, 1])
            h = obs[r, j, 2] + w * (obs[r, hi, 2] - obs[r, j, 2])
            if q < t_first:  # before the first observation (x, y are the first one's)
                x += vx * (q - t_first)
                y += vy * (q - t_first)
            out[m, k, 0] = (x - x0) / h0
            out[m, k, 1] = (y - y0) / h0
            out[m, k, 2] = math.log(h / h0)
            out[m, k, 3] = 1.0 if q >= t_first - 1e-9 else 0.0


@njit
def motion_median(
    population: Float32Array, h0: Float64Array, median: Float64Array, count: Float64Array
) -> None:
    """Per history step, the median displacement in pixels of the tracks observed then.

    Args:
        population: (P, T, 4) history features (see :func:`resample_history`).
        h0: (P,) each track's latest box height, pixels.
        median: (T, 2) written: median ``dx, dy`` pixels (0 where no track was observed).
        count: (T,) written: the tracks pooled.
    """
    tracks = population.shape[0]
    xs = np.empty(tracks)
    ys = np.empty(tracks)
    for t in range(population.shape[1]):
        n = 0
        for p in range(tracks):
            if population[p, t, 3] > 0.5:
                xs[n] = np.float64(population[p, t, 0]) * h0[p]
                ys[n] = np.float64(population[p, t, 1]) * h0[p]
                n += 1
        count[t] = n
        median[t, 0] = _median(xs, n)
        median[t, 1] = _median(ys, n)


@njit_step
def _median(values: Float64Array, n: int) -> float:
    """The median of ``values[:n]`` (0 when empty; numba's quickselect, reorders them)."""
    if n == 0:
        return 0.0
    value: float = np.median(values[:n])
    return value


@njit
def history_and_context(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    times_s: Float64Array,
    obs: Float64Array,
    rows: IntArray,
    now_s: float,
    dt_s: float,
    extrapolate: bool,
    features: Float32Array,
    context: Float32Array,
) -> None:
    """The rows' history features and the frame's median-motion context in one pass: what
    :func:`resample_history` and ``tapetum.track.forecast_model.neighbour_context`` (no
    nearest tracks) give, without the intermediate arrays.

    Args:
        times_s, obs: the store (see :func:`resample_history`).
        rows: (M,) rows to forecast.
        now_s: the latest update; the tracks observed then are the population pooled.
        dt_s: grid step, seconds.
        extrapolate: the padding (see :func:`resample_history`).
        features: (M, T, 4) float32, written.
        context: (M, T, 3) float32, written: median ``dx, dy`` of the population in each
            row's latest box height, ``log(1 + count)``.
    """
    last = times_s.shape[1] - 1
    steps = features.shape[1]
    population = np.empty(times_s.shape[0], np.int64)
    n = 0
    for r in range(times_s.shape[0]):
        if times_s[r, last] == now_s:
            population[n] = r
            n += 1
    pooled = np.empty((n, steps, features.shape[2]), np.float32)
    resample_history(times_s, obs, population[:n], dt_s, pooled, extrapolate)
    h0 = np.empty(n)
    for p in range(n):
        h0[p] = obs[population[p], last, 2]
    median = np.empty((steps, 2))
    count = np.empty(steps)
    motion_median(pooled, h0, median, count)
    # rows observed now have their features among the population's; the others (tracks
    # not seen at the latest update) are resampled on their own
    pop = population[:n]
    others = np.empty(rows.shape[0], np.int64)
    k = 0
    for m in range(rows.shape[0]):
        p = np.searchsorted(pop, rows[m])
        if p < n and pop[p] == rows[m]:
            features[m] = pooled[p]
        else:
            others[k] = m
            k += 1
    if k:
        extra = np.empty((k, steps, features.shape[2]), np.float32)
        resample_history(times_s, obs, rows[others[:k]], dt_s, extra, extrapolate)
        for i in range(k):
            features[others[i]] = extra[i]
    for m in range(rows.shape[0]):
        h = obs[rows[m], last, 2]
        for t in range(steps):
            context[m, t, 0] = median[t, 0] / h
            context[m, t, 1] = median[t, 1] / h
            context[m, t, 2] = math.log1p(count[t])


@njit
def grid_to_pixels(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    grid: Float64Array,
    times_s: Float64Array,
    dt_s: float,
    origin: Float64Array,
    mean_px: Float64Array,
    cov_px2: Float64Array,
) -> None:
    """Model outputs on the grid → forecasts in pixels at any times, by linear interpolation
    (zero offset and zero covariance at time 0).

    Args:
        grid: (M, K, 5) per grid step ``dt·(k+1)``: mean ``dx, dy`` in box heights and
            ``var_x, var_y, cov_xy`` in square box heights.
        times_s: (M, H) seconds after each row's latest observation (clipped to the grid).
        dt_s: grid step, seconds.
        origin: (M, 3) each row's latest ``x, y, h`` in pixels.
        mean_px: (M, H, 2) written: forecast centres.
        cov_px2: (M, H, 2, 2) written: covariances.
    """
    k_steps = grid.shape[1]
    for m in range(grid.shape[0]):
        x0, y0, h0 = origin[m, 0], origin[m, 1], origin[m, 2]
        h2 = h0 * h0
        for i in range(times_s.shape[1]):
            pos = min(max(times_s[m, i] / dt_s, 0.0), float(k_steps))
            lo = min(int(math.floor(pos)), k_steps - 1)  # noqa: RUF046 - numba's floor is a float
            frac = pos - lo
            mean_px[m, i, 0] = x0 + h0 * _lerp(grid, m, lo, frac, 0)
            mean_px[m, i, 1] = y0 + h0 * _lerp(grid, m, lo, frac, 1)
            cov_px2[m, i, 0, 0] = h2 * _lerp(grid, m, lo, frac, 2)
            cov_px2[m, i, 1, 1] = h2 * _lerp(grid, m, lo, frac, 3)
            cov_xy = h2 * _lerp(grid, m, lo, frac, 4)
            cov_px2[m, i, 0, 1] = cov_xy
            cov_px2[m, i, 1, 0] = cov_xy


@njit_step
def _lerp(grid: Float64Array, m: int, lo: int, frac: float, c: int) -> float:
    """Channel ``c`` of row ``m`` between padded grid index ``lo`` and ``lo + 1``."""
    a = grid[m, lo - 1, c] if lo > 0 else 0.0
    value: float = a + frac * (grid[m, lo, c] - a)
    return value


@njit
def constant_velocity_ahead(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    kalman: Float64Array,
    rows: IntArray,
    heights_px: Float64Array,
    ahead_s: Float64Array,
    acceleration_std_per_height: float,
    mean_px: Float64Array,
    cov_px2: Float64Array,
) -> None:
    """The rows' constant-velocity filters (see :func:`push_observations`) extrapolated.

    Args:
        kalman: (C, 7) the filters.
        rows: (M,) rows to forecast.
        heights_px: (M,) their latest box heights (they scale the process noise).
        ahead_s: (M, H) seconds after each row's latest observation.
        acceleration_std_per_height: the filter's setting.
        mean_px: (M, H, 2) written.
        cov_px2: (M, H, 2, 2) written (isotropic: the axes share the variance).
    """
    for m in range(rows.shape[0]):
        r = rows[m]
        px, py, vx, vy = kalman[r, 0], kalman[r, 1], kalman[r, 2], kalman[r, 3]
        p00, p01, p11 = kalman[r, 4], kalman[r, 5], kalman[r, 6]
        q = (acceleration_std_per_height * heights_px[m]) ** 2
        for i in range(ahead_s.shape[1]):
            tau = ahead_s[m, i]
            var = p00 + 2.0 * tau * p01 + tau * tau * p11 + q * tau**3 / 3.0
            mean_px[m, i, 0] = px + vx * tau
            mean_px[m, i, 1] = py + vy * tau
            cov_px2[m, i, 0, 0] = var
            cov_px2[m, i, 1, 1] = var
            cov_px2[m, i, 0, 1] = 0.0
            cov_px2[m, i, 1, 0] = 0.0


@njit
def constant_velocity_grid(
    kalman: Float64Array, rows: IntArray, origin: Float64Array, dt_s: float, out: Float64Array
) -> None:
    """The rows' constant-velocity forecasts on the model's grid, as the model says them.

    Args:
        kalman: (C, 7) the filters (see :func:`push_observations`).
        rows: (M,) rows to forecast.
        origin: (M, 3) each row's latest observation ``x, y, h``, pixels.
        dt_s: grid step, seconds.
        out: (M, K, 2) written: the filter's mean at ``(k + 1)·dt`` after the latest
            observation, as an offset from it in its box height.
    """
    for m in range(rows.shape[0]):
        r = rows[m]
        inv = 1.0 / origin[m, 2]
        dx, dy = kalman[r, 0] - origin[m, 0], kalman[r, 1] - origin[m, 1]
        for k in range(out.shape[1]):
            tau = dt_s * (k + 1)
            out[m, k, 0] = (dx + kalman[r, 2] * tau) * inv
            out[m, k, 1] = (dy + kalman[r, 3] * tau) * inv
