"""Compiled inner loops of the learned forecaster (see :mod:`tapetum.track.forecast_model`).

Resampling 50 tracks' histories onto the model's grid is ~15 numpy operations on small
arrays in numpy, each dominated by dispatch overhead (~0.2 ms a frame in all); here it is
one pass over each track's buffer. Training builds its samples with the same function, so
the model sees exactly the numbers it will see online.
"""

from __future__ import annotations

import math

from tapetum._types import Float32Array, Float64Array, IntArray
from tapetum.track.kernels.jit import njit, njit_step


@njit
def resample_history(
    times_s: Float64Array,
    obs: Float64Array,
    rows: IntArray,
    dt_s: float,
    out: Float32Array,
) -> None:
    """Each row's history on the grid ``t0 - k·dt`` relative to its latest observation.

    Args:
        times_s: (C, L) observation times, ascending per row, latest in the last column,
            ``-inf`` before a track's first observation.
        obs: (C, L, 3) ``x, y, h`` in pixels at those times.
        rows: (M,) rows of the store to resample.
        dt_s: grid step, seconds.
        out: (M, T, 4) float32, written: ``(x - x0) / h0, (y - y0) / h0, log(h / h0),
            observed`` (before the first observation: the first one repeated, observed 0).
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
            out[m, k, 0] = (x - x0) / h0
            out[m, k, 1] = (y - y0) / h0
            out[m, k, 2] = math.log(h / h0)
            out[m, k, 3] = 1.0 if q >= t_first - 1e-9 else 0.0


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
def constant_velocity_replay(  # noqa: PLR0917 - a compiled kernel takes flat arguments
    times_s: Float64Array,
    obs: Float64Array,
    rows: IntArray,
    ahead_s: Float64Array,
    acceleration_std_per_height: float,
    measurement_std_per_height: float,
    initial_velocity_std_per_height: float,
    mean_px: Float64Array,
    cov_px2: Float64Array,
) -> None:
    """The Kalman filter of ``tapetum.track.forecast.ConstantVelocityForecaster`` run over
    each row's buffered observations, then extrapolated.

    The same equations as the numpy filter (per axis state ``p, v``; white-noise
    acceleration with spectral density ``(σ_a h)²``, ``h`` the height at the previous
    observation; measurement variance ``(σ_z h)²``; both axes share one covariance), for
    the young tracks the learned model does not serve: a handful of observations each, so
    replaying them costs less than keeping a filter for every track.

    Args:
        times_s, obs: the store (see :func:`resample_history`).
        rows: (M,) rows to forecast.
        ahead_s: (M, H) seconds after each row's latest observation.
        acceleration_std_per_height, measurement_std_per_height,
            initial_velocity_std_per_height: the constant-velocity settings.
        mean_px: (M, H, 2) written.
        cov_px2: (M, H, 2, 2) written (isotropic: the axes share the variance).
    """
    length = times_s.shape[1]
    for m in range(rows.shape[0]):
        r = rows[m]
        first = length - 1
        while first > 0 and math.isfinite(times_s[r, first - 1]):
            first -= 1
        h = obs[r, first, 2]
        px, py = obs[r, first, 0], obs[r, first, 1]
        vx, vy = 0.0, 0.0
        p00 = (measurement_std_per_height * h) ** 2
        p01 = 0.0
        p11 = (initial_velocity_std_per_height * h) ** 2
        t = times_s[r, first]
        for j in range(first + 1, length):
            dt = times_s[r, j] - t
            q = (acceleration_std_per_height * h) ** 2
            # predict: F = [[1, dt], [0, 1]], Q = q [[dt³/3, dt²/2], [dt²/2, dt]]
            px += vx * dt
            py += vy * dt
            n00 = p00 + 2.0 * dt * p01 + dt * dt * p11 + q * dt**3 / 3.0
            n01 = p01 + dt * p11 + q * dt * dt / 2.0
            n11 = p11 + q * dt
            # update with the position measurement, variance (σ_z h_new)²
            h = obs[r, j, 2]
            s = n00 + (measurement_std_per_height * h) ** 2
            k0, k1 = n00 / s, n01 / s
            ix, iy = obs[r, j, 0] - px, obs[r, j, 1] - py
            px, py = px + k0 * ix, py + k0 * iy
            vx, vy = vx + k1 * ix, vy + k1 * iy
            p00, p01, p11 = n00 - k0 * k0 * s, n01 - k0 * k1 * s, n11 - k1 * k1 * s
            t = times_s[r, j]
        q = (acceleration_std_per_height * h) ** 2
        for i in range(ahead_s.shape[1]):
            tau = ahead_s[m, i]
            var = p00 + 2.0 * tau * p01 + tau * tau * p11 + q * tau**3 / 3.0
            mean_px[m, i, 0] = px + vx * tau
            mean_px[m, i, 1] = py + vy * tau
            cov_px2[m, i, 0, 0] = var
            cov_px2[m, i, 1, 1] = var
            cov_px2[m, i, 0, 1] = 0.0
            cov_px2[m, i, 1, 0] = 0.0
