"""Per-track trajectory forecasting: where will each tracked object's centre be in 1 s, 2 s?

A forecaster follows every track's box centre with a small linear-Gaussian (Kalman) motion
model and extrapolates it to future times with the propagated uncertainty. Two models:

* :class:`ConstantVelocityForecaster`: position and velocity per axis, white-noise
  acceleration (the baseline, as in ByteTrack's filter but in seconds rather than frames);
* :class:`ConstantAccelerationForecaster`: position, velocity and acceleration per axis,
  white-noise jerk, with an optional Singer decay that pulls the acceleration back to zero
  with a time constant (pedestrians accelerate in short bursts; extrapolating a burst for two
  seconds overshoots). ``acceleration_time_constant_s=None`` gives the plain CA filter.

Why not CTRV (constant turn rate and velocity)? It models a vehicle that holds a heading; in
image coordinates a pedestrian's "turn rate" is mostly perspective, camera motion and box
jitter, and the model is non-linear (needs an EKF/UKF). A linear CA filter keeps the exact,
batched Kalman equations and its decay term captures what matters at 1-2 s: speed changes.

Time is continuous: every step uses ``dt`` from the timestamps, so dropped frames, variable
frame rates and tracks that skip frames forecast the same motion. Noise scales with the box
height (a near, large person moves more pixels per second than a far, small one), as in
DeepSORT/ByteTrack; pass ``heights_px`` to :meth:`Forecaster.update` to use it.

State is structure-of-arrays, sorted by track id: means ``(C, K, 2)`` (K state terms per axis,
x and y in the last axis) and one covariance ``(C, K, K)`` per track shared by both axes: the
axes are independent with the same noise, so their covariances are equal and one suffices.
Every update and prediction is batched over tracks; there is no Python loop per track.

Example:
    >>> import numpy as np
    >>> from tapetum.track.forecast import ConstantVelocityForecaster
    >>> fc = ConstantVelocityForecaster()
    >>> for k in range(60):  # a person walking right at 50 px/s, 30 fps
    ...     fc.update(np.array([7]), np.array([[100.0 + 50.0 * k / 30, 200.0]]), k / 30)
    >>> out = fc.predict(np.array([7]), np.array([1.0, 2.0]))
    >>> np.round(out.mean_px[0], 0).tolist()  # at +1 s and +2 s
    [[248.0, 200.0], [298.0, 200.0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError

# Gauss-Legendre nodes on [0, 1]: the process-noise integral Q(dt) = ∫ c(s) c(s)^T ds over
# [0, dt] is a polynomial of degree <= 4 for CV/CA (exact with 3 nodes) and smooth
# exponential-polynomial for the Singer model (8 nodes: error far below float32 drawing).
_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)
_GL_NODES = 0.5 * (_GL_X + 1.0)
_GL_WEIGHTS = 0.5 * _GL_W


def lookup_sorted(sorted_ids: IntArray, ids: IntArray) -> tuple[IntArray, BoolArray]:
    """Rows of ``ids`` in the sorted track-id store ``sorted_ids`` and whether each was found
    (the forecasters keep their per-track state sorted by track id)."""
    if len(sorted_ids) == 0:
        return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, np.bool_)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1).astype(np.int64)
    found: BoolArray = sorted_ids[pos] == ids
    return pos, found


def _check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
            raise ConfigError(f"{owner}.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True, slots=True)
class ConstantVelocityConfig:
    """Constant-velocity (white-noise acceleration) forecaster settings.

    Noise standard deviations are per pixel of box height (``h``), so one setting suits near
    and far objects and any resolution.

    Attributes:
        acceleration_std_per_height: white-noise acceleration: the velocity's standard
            deviation grows by this many box heights per second for every √s without a
            measurement (spectral density ``(σ h)²`` px²/s³). 0.5 ≈ 0.85 m/s per √s for a
            1.7 m pedestrian: people change speed and direction within a second.
        measurement_std_per_height: standard deviation of a measured centre, in box heights
            (0.02: ground truth or a good detector; use ~0.05 for jittery detections).
        initial_velocity_std_per_height: velocity uncertainty of a new track, heights per
            second (1.0 ≈ walking speed).
        max_age_s: a track absent from updates for longer than this is dropped, seconds.
        default_height_px: the box height assumed when ``update`` gets no ``heights_px``.
    """

    acceleration_std_per_height: float = 0.5
    measurement_std_per_height: float = 0.02
    initial_velocity_std_per_height: float = 1.0
    max_age_s: float = 1.0
    default_height_px: float = 100.0

    def __post_init__(self) -> None:
        _check_positive(
            type(self).__name__,
            acceleration_std_per_height=self.acceleration_std_per_height,
            measurement_std_per_height=self.measurement_std_per_height,
            initial_velocity_std_per_height=self.initial_velocity_std_per_height,
            max_age_s=self.max_age_s,
            default_height_px=self.default_height_px,
        )


@dataclass(frozen=True, slots=True)
class ConstantAccelerationConfig:
    """Constant-acceleration (white-noise jerk, optional Singer decay) forecaster settings.

    Attributes:
        jerk_std_per_height: white-noise jerk: the acceleration's standard deviation grows by
            this many box heights per s² for every √s (spectral density ``(σ h)²`` px²/s⁵).
            0.3 was the best of 0.1 / 0.3 / 1.0 on MOT17 train ground truth.
        acceleration_time_constant_s: Singer model: the acceleration decays to zero as
            ``exp(-t / τ)`` (velocity settles instead of growing without bound). Pedestrian
            speed changes are short bursts: plain CA extrapolates them for the whole horizon
            and nearly doubles the 2 s error on MOT17 (FDE 1.05 vs 0.56 box heights for CV);
            with τ = 0.5 s it is within 10 % of CV. None disables the decay (plain CA).
        measurement_std_per_height: standard deviation of a measured centre, box heights.
        initial_velocity_std_per_height: velocity uncertainty of a new track, heights/s.
        initial_acceleration_std_per_height: acceleration uncertainty of a new track,
            heights/s².
        max_age_s: a track absent from updates for longer than this is dropped, seconds.
        default_height_px: the box height assumed when ``update`` gets no ``heights_px``.
    """

    jerk_std_per_height: float = 0.3
    acceleration_time_constant_s: float | None = 0.5
    measurement_std_per_height: float = 0.02
    initial_velocity_std_per_height: float = 1.0
    initial_acceleration_std_per_height: float = 0.5
    max_age_s: float = 1.0
    default_height_px: float = 100.0

    def __post_init__(self) -> None:
        _check_positive(
            type(self).__name__,
            jerk_std_per_height=self.jerk_std_per_height,
            measurement_std_per_height=self.measurement_std_per_height,
            initial_velocity_std_per_height=self.initial_velocity_std_per_height,
            initial_acceleration_std_per_height=self.initial_acceleration_std_per_height,
            max_age_s=self.max_age_s,
            default_height_px=self.default_height_px,
        )
        if self.acceleration_time_constant_s is not None:
            _check_positive(
                type(self).__name__, acceleration_time_constant_s=self.acceleration_time_constant_s
            )


@dataclass(frozen=True, slots=True)
class Forecast:
    """Predicted centres of some tracks at some future times.

    Attributes:
        track_ids: (N,) int64, the tracks asked for, in the order asked.
        horizons_s: (H,) float64, seconds after ``origin_timestamp_s``.
        origin_timestamp_s: the time the horizons count from (the latest update unless
            ``predict`` was given another).
        mean_px: (N, H, 2) float64, expected centre ``x, y`` in pixels; NaN where not valid.
        cov_px2: (N, H, 2, 2) float64, covariance of the true centre in square pixels (the
            filter's propagated state covariance, measurement noise excluded); NaN where not
            valid.
        valid: (N,) bool, False for ids the forecaster does not know (never seen, or dropped
            after ``max_age_s``).
        inner_sigma: (N, H) float64 or None: the Mahalanobis radius of the forecaster's 39 %
            prediction region under ``cov_px2``, where it is not the 1-sigma ellipse. Motion
            errors are heavier-tailed than a Gaussian: a covariance whose 2-sigma ellipse
            holds 86 % of outcomes has a 1-sigma ellipse holding more than 39 %; a
            forecaster that calibrates both regions (the learned one does, per stream) says
            here how far its 39 % region reaches. None: 1 (the Gaussian's).
    """

    track_ids: IntArray
    horizons_s: Float64Array
    origin_timestamp_s: float
    mean_px: Float64Array
    cov_px2: Float64Array
    valid: BoolArray
    inner_sigma: Float64Array | None = None

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])

    def as_detection_data(self) -> dict[str, Float32Array]:
        """Flat per-row arrays for ``Detections.data`` (rows follow ``track_ids``).

        Returns:
            ``"forecast_xy"``: (N, 2H) float32, ``x0, y0, x1, y1, ...`` per horizon;
            ``"forecast_cov"``: (N, 3H) float32, ``var_x, var_y, cov_xy`` per horizon.
        """
        n, h = self.mean_px.shape[:2]
        cov = np.stack(
            (self.cov_px2[..., 0, 0], self.cov_px2[..., 1, 1], self.cov_px2[..., 0, 1]), axis=-1
        )
        return {
            "forecast_xy": self.mean_px.reshape(n, 2 * h).astype(np.float32),
            "forecast_cov": cov.reshape(n, 3 * h).astype(np.float32),
        }


@runtime_checkable
class Forecaster(Protocol):
    """Follows the centres of one stream's tracks and forecasts them.

    One instance belongs to one stream (like a :class:`~tapetum.track.base.Tracker`).
    """

    def update(
        self,
        track_ids: npt.ArrayLike,
        centers_px: npt.ArrayLike,
        timestamp_s: float,
        heights_px: npt.ArrayLike | None = None,
    ) -> None:
        """Feed this frame's observed centres.

        Args:
            track_ids: (N,) unique track identities.
            centers_px: (N, 2) observed centres ``x, y`` in pixels.
            timestamp_s: observation time in seconds; must not decrease between calls.
            heights_px: (N,) box heights in pixels (scale the noise); None uses the
                config's ``default_height_px``.

        Tracks absent from this call are kept (and forecast from their last observation)
        until they have been absent for more than the config's ``max_age_s``.

        Raises:
            ValueError: shapes disagree, ids repeat, values are not finite, or time goes back.
        """
        ...

    def predict(
        self,
        track_ids: npt.ArrayLike,
        horizons_s: npt.ArrayLike,
        timestamp_s: float | None = None,
    ) -> Forecast:
        """Forecast the centres of ``track_ids`` at ``timestamp_s + horizons_s``.

        Args:
            track_ids: (N,) ids; unknown ids come back NaN with ``valid`` False.
            horizons_s: (H,) non-negative seconds ahead.
            timestamp_s: the origin of the horizons; None = the latest update's timestamp.
        """
        ...

    def reset(self) -> None:
        """Forget every track."""
        ...

    @property
    def track_ids(self) -> IntArray:
        """(C,) int64 ids currently followed, ascending."""
        ...

    @property
    def latest_timestamp_s(self) -> float | None:
        """Timestamp of the latest update in seconds; None before the first (or after reset)."""
        ...


def validate_update(
    track_ids: npt.ArrayLike,
    centers_px: npt.ArrayLike,
    timestamp_s: float,
    heights_px: npt.ArrayLike | None,
    default_height_px: float,
) -> tuple[IntArray, Float64Array, Float64Array, float]:
    """Check and convert the arguments of :meth:`Forecaster.update`.

    Returns:
        ids (N,) int64, centres (N, 2) float64, heights (N,) float64 (``default_height_px``
        when None) and the timestamp as a float.

    Raises:
        ValueError: shapes disagree, ids repeat, values are not finite or heights not positive.
    """
    ids = np.asarray(track_ids, np.int64).reshape(-1)
    z = np.asarray(centers_px, np.float64).reshape(-1, 2)
    n = ids.shape[0]
    h = (
        np.full(n, default_height_px, np.float64)
        if heights_px is None
        else np.asarray(heights_px, np.float64).reshape(-1)
    )
    t = float(timestamp_s)
    if z.shape[0] != n or h.shape[0] != n:
        raise ValueError(f"update got {n} ids, {z.shape[0]} centres and {h.shape[0]} heights")
    if n > 1:
        ordered = np.sort(ids)
        if (ordered[1:] == ordered[:-1]).any():
            raise ValueError("update got the same track id twice in one frame")
    # one reduction each: a NaN or inf centre makes the sum non-finite, and NaN heights
    # fail ``h > 0`` as non-positive ones do
    if not (math.isfinite(t) and math.isfinite(float(z.sum()))):
        raise ValueError("update got a non-finite timestamp, centre or height")
    if not (h > 0).all():
        if not np.isfinite(h).all():
            raise ValueError("update got a non-finite timestamp, centre or height")
        raise ValueError("box heights must be positive")
    if not math.isfinite(float(h.sum())):
        raise ValueError("update got a non-finite timestamp, centre or height")
    return ids, z, h, t


class _LinearForecaster:
    """Batched Kalman filter on independent per-axis linear motion models.

    Subclasses give the state size, the transition ``F(dt)``, the noise input column
    ``c(s) = F(s) L`` (how white noise injected ``s`` seconds ago moved the state), the
    noise spectral density and the initial covariance. Position is always state term 0.
    """

    _STATE_DIM: int

    def __init__(
        self, max_age_s: float, measurement_std_per_height: float, default_height_px: float
    ) -> None:
        self._max_age_s = max_age_s
        self._meas_std_per_h = measurement_std_per_height
        self._default_h = default_height_px
        self.reset()

    # -- model hooks --------------------------------------------------------------------------

    def _transition(self, dt: Float64Array) -> Float64Array:
        """(...,) seconds → (..., K, K) state transition."""
        raise NotImplementedError

    def _noise_column(self, s: Float64Array) -> Float64Array:
        """(...,) seconds → (..., K): ``F(s) L``, the state response to a unit noise impulse."""
        raise NotImplementedError

    def _noise_std_per_height(self) -> float:
        """Square root of the noise spectral density per box height."""
        raise NotImplementedError

    def _initial_std_per_height(self) -> Float64Array:
        """(K,) initial state standard deviations per box height (position first)."""
        raise NotImplementedError

    # -- shared machinery ---------------------------------------------------------------------

    def _process_noise(self, dt: Float64Array, height_px: Float64Array) -> Float64Array:
        """(...,) seconds and heights → (..., K, K) process noise ``∫_0^dt q c(s) c(s)^T ds``."""
        s = dt[..., None] * _GL_NODES  # (..., G)
        c = self._noise_column(s)  # (..., G, K)
        w = dt[..., None] * _GL_WEIGHTS  # (..., G)
        q = np.square(self._noise_std_per_height() * height_px)
        noise: Float64Array = np.einsum("...g,...gk,...gl->...kl", w, c, c) * q[..., None, None]
        return noise

    def reset(self) -> None:
        k = self._STATE_DIM
        self._ids: IntArray = np.empty(0, np.int64)
        self._mean: Float64Array = np.empty((0, k, 2), np.float64)
        self._cov: Float64Array = np.empty((0, k, k), np.float64)
        self._obs_time_s: Float64Array = np.empty(0, np.float64)
        self._height_px: Float64Array = np.empty(0, np.float64)
        self._now_s: float | None = None

    @property
    def track_ids(self) -> IntArray:
        return self._ids.copy()

    @property
    def latest_timestamp_s(self) -> float | None:
        return self._now_s

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def _lookup(self, ids: IntArray) -> tuple[IntArray, BoolArray]:
        """Rows of ``ids`` in the sorted store and whether each was found."""
        return lookup_sorted(self._ids, ids)

    def update(
        self,
        track_ids: npt.ArrayLike,
        centers_px: npt.ArrayLike,
        timestamp_s: float,
        heights_px: npt.ArrayLike | None = None,
    ) -> None:
        ids, z, h, t = validate_update(
            track_ids, centers_px, timestamp_s, heights_px, self._default_h
        )
        if self._now_s is not None and t < self._now_s:
            raise ValueError(f"timestamp {t} s is earlier than the previous update {self._now_s} s")
        self._now_s = t

        alive = (t - self._obs_time_s) <= self._max_age_s
        if not alive.all():
            self._ids, self._mean, self._cov = self._ids[alive], self._mean[alive], self._cov[alive]
            self._obs_time_s, self._height_px = self._obs_time_s[alive], self._height_px[alive]

        rows, found = self._lookup(ids)
        if found.any():
            idx = rows[found]
            mean, cov = self._mean[idx], self._cov[idx]
            dt = t - self._obs_time_s[idx]
            f = self._transition(dt)
            mean = f @ mean
            cov = f @ cov @ f.transpose(0, 2, 1) + self._process_noise(dt, self._height_px[idx])
            # Measurement matrix H = [1 0 ...] on each axis: the innovation covariance is a
            # scalar per track, so the gain needs no matrix solve.
            r = np.square(self._meas_std_per_h * h[found])
            s = cov[:, 0, 0] + r  # (M,)
            gain = cov[:, :, 0] / s[:, None]  # (M, K)
            innovation = z[found] - mean[:, 0, :]  # (M, 2)
            mean = mean + gain[:, :, None] * innovation[:, None, :]
            cov = cov - gain[:, :, None] * gain[:, None, :] * s[:, None, None]
            self._mean[idx], self._cov[idx] = mean, 0.5 * (cov + cov.transpose(0, 2, 1))
            self._obs_time_s[idx], self._height_px[idx] = t, h[found]

        new = ~found
        if new.any():
            m = int(new.sum())
            k = self._STATE_DIM
            mean = np.zeros((m, k, 2), np.float64)
            mean[:, 0, :] = z[new]
            std = self._initial_std_per_height()[None, :] * h[new, None]
            std[:, 0] = self._meas_std_per_h * h[new]
            cov = np.zeros((m, k, k), np.float64)
            cov[:, np.arange(k), np.arange(k)] = np.square(std)
            all_ids = np.concatenate((self._ids, ids[new]))
            order = np.argsort(all_ids, kind="stable")
            self._ids = all_ids[order]
            self._mean = np.concatenate((self._mean, mean))[order]
            self._cov = np.concatenate((self._cov, cov))[order]
            self._obs_time_s = np.concatenate((self._obs_time_s, np.full(m, t)))[order]
            self._height_px = np.concatenate((self._height_px, h[new]))[order]

    def predict(
        self,
        track_ids: npt.ArrayLike,
        horizons_s: npt.ArrayLike,
        timestamp_s: float | None = None,
    ) -> Forecast:
        ids = np.asarray(track_ids, np.int64).reshape(-1)
        horizons = np.asarray(horizons_s, np.float64).reshape(-1)
        if not (np.isfinite(horizons).all() and (horizons >= 0).all()):
            raise ValueError("horizons_s must be finite and non-negative")
        origin = timestamp_s if timestamp_s is not None else self._now_s
        n, nh = ids.shape[0], horizons.shape[0]
        mean_px = np.full((n, nh, 2), np.nan)
        cov_px2 = np.full((n, nh, 2, 2), np.nan)
        rows, found = self._lookup(ids)
        if origin is None:
            found[:] = False
        else:
            # Absent longer than max_age_s at the forecast's origin: gone, whether or not an
            # update has pruned it yet (so forecasts do not depend on who else was updated).
            found[found] &= (float(origin) - self._obs_time_s[rows[found]]) <= self._max_age_s
        if found.any() and origin is not None:
            idx = rows[found]
            dt = (float(origin) - self._obs_time_s[idx])[:, None] + horizons[None, :]  # (M, H)
            f0 = self._transition(dt)[..., 0, :]  # (M, H, K): position row
            mean_px[found] = np.einsum("mhk,mkd->mhd", f0, self._mean[idx])
            height = np.broadcast_to(self._height_px[idx, None], dt.shape)
            var = np.einsum("mhk,mkl,mhl->mh", f0, self._cov[idx], f0)
            var = var + self._process_noise(dt, height)[..., 0, 0]
            cov = np.zeros((int(found.sum()), nh, 2, 2))
            cov[..., 0, 0] = var
            cov[..., 1, 1] = var
            cov_px2[found] = cov
        return Forecast(
            track_ids=ids,
            horizons_s=horizons,
            origin_timestamp_s=float("nan") if origin is None else float(origin),
            mean_px=mean_px,
            cov_px2=cov_px2,
            valid=found,
        )


class ConstantVelocityForecaster(_LinearForecaster):
    """Kalman constant-velocity model per axis: state ``(p, v)``, white-noise acceleration.

    Args:
        config: noise and track-lifetime settings (defaults documented on the config).
    """

    _STATE_DIM = 2

    def __init__(self, config: ConstantVelocityConfig | None = None) -> None:
        self.config = config or ConstantVelocityConfig()
        super().__init__(
            self.config.max_age_s,
            self.config.measurement_std_per_height,
            self.config.default_height_px,
        )

    def _transition(self, dt: Float64Array) -> Float64Array:
        f = np.zeros((*dt.shape, 2, 2))
        f[..., 0, 0] = f[..., 1, 1] = 1.0
        f[..., 0, 1] = dt
        return f

    def _noise_column(self, s: Float64Array) -> Float64Array:
        return np.stack((s, np.ones_like(s)), axis=-1)

    def _noise_std_per_height(self) -> float:
        return self.config.acceleration_std_per_height

    def _initial_std_per_height(self) -> Float64Array:
        return np.array([0.0, self.config.initial_velocity_std_per_height])


class ConstantAccelerationForecaster(_LinearForecaster):
    """Kalman constant-acceleration model per axis: state ``(p, v, a)``, white-noise jerk.

    With ``acceleration_time_constant_s = τ`` it is Singer's model (``ȧ = -a/τ + w``): the
    forecast follows a speed change for about τ seconds, then continues at constant velocity.

    Args:
        config: noise, decay and track-lifetime settings (defaults documented on the config).
    """

    _STATE_DIM = 3

    def __init__(self, config: ConstantAccelerationConfig | None = None) -> None:
        self.config = config or ConstantAccelerationConfig()
        super().__init__(
            self.config.max_age_s,
            self.config.measurement_std_per_height,
            self.config.default_height_px,
        )

    def _transition(self, dt: Float64Array) -> Float64Array:
        f = np.zeros((*dt.shape, 3, 3))
        f[..., 0, 0] = f[..., 1, 1] = 1.0
        f[..., 0, 1] = dt
        # The last column of F(dt) is the response to an acceleration impulse: c(dt).
        f[..., :, 2] = self._noise_column(dt)
        return f

    def _noise_column(self, s: Float64Array) -> Float64Array:
        tau = self.config.acceleration_time_constant_s
        if tau is None:
            return np.stack((0.5 * s * s, s, np.ones_like(s)), axis=-1)
        x = s / tau
        decay = np.exp(-x)
        # expm1 keeps 1 - e^{-x} accurate for the short frame gaps (x ~ 0.03).
        one_minus = -np.expm1(-x)
        return np.stack((tau * tau * (x - one_minus), tau * one_minus, decay), axis=-1)

    def _noise_std_per_height(self) -> float:
        return self.config.jerk_std_per_height

    def _initial_std_per_height(self) -> Float64Array:
        cfg = self.config
        return np.array(
            [0.0, cfg.initial_velocity_std_per_height, cfg.initial_acceleration_std_per_height]
        )


@dataclass(frozen=True, slots=True)
class ForecastEllipses:
    """Uncertainty ellipses of a forecast, ready for ``cv2.ellipse``.

    Attributes:
        semi_major_px: (N, H) float64, semi-axis along the direction of most uncertainty.
        semi_minor_px: (N, H) float64, the perpendicular semi-axis.
        angle_deg: (N, H) float64, angle of the major axis from the image +x axis towards +y
            (image coordinates, y down: the convention of ``cv2.ellipse``'s ``angle``).
    """

    semi_major_px: Float64Array
    semi_minor_px: Float64Array
    angle_deg: Float64Array


def forecast_ellipses(forecast: Forecast | npt.ArrayLike, n_sigma: float = 2.0) -> ForecastEllipses:
    """Ellipses at Mahalanobis distance ``n_sigma`` around each forecast point.

    For a 2-D Gaussian the ``n_sigma`` ellipse holds ``1 - exp(-n_sigma²/2)`` of the
    probability: 39 % at 1, 86 % at 2, 99 % at 3.

    Args:
        forecast: a :class:`Forecast`, or covariances (..., 2, 2) in square pixels.
        n_sigma: size of the ellipse in standard deviations.

    Returns:
        Semi-axes in pixels and major-axis angles, shaped like the covariances without their
        last two axes; NaN where the covariance is NaN.
    """
    cov = forecast.cov_px2 if isinstance(forecast, Forecast) else np.asarray(forecast, np.float64)
    a, b, c = cov[..., 0, 0], cov[..., 1, 1], cov[..., 0, 1]
    # Closed-form eigen-decomposition of a symmetric 2x2 matrix (no per-element eigh call).
    mid = 0.5 * (a + b)
    radius = np.sqrt(np.square(0.5 * (a - b)) + np.square(c))
    major = np.sqrt(np.clip(mid + radius, 0.0, None))
    minor = np.sqrt(np.clip(mid - radius, 0.0, None))
    angle = 0.5 * np.degrees(np.arctan2(2.0 * c, a - b))
    return ForecastEllipses(n_sigma * major, n_sigma * minor, angle)


def forecast_detections(
    forecaster: Forecaster,
    detections: Detections,
    timestamp_s: float,
    horizons_s: npt.ArrayLike,
) -> Detections:
    """Update ``forecaster`` with this frame's tracked detections and attach their forecasts.

    Rows without a ``tracker_id`` are not fed to the forecaster and get NaN forecasts. A
    timestamp earlier than the previous one (a source that reconnected and restarted its
    clock) resets the forecaster instead of failing the frame.

    Args:
        forecaster: the stream's forecaster.
        detections: this frame's tracker output.
        timestamp_s: the frame's timestamp in seconds (``Frame.timestamp_s``).
        horizons_s: (H,) seconds ahead.

    Returns:
        The same detections (arrays shared, not copied) with ``data["forecast_xy"]`` (N, 2H)
        and ``data["forecast_cov"]`` (N, 3H) float32 added (see
        :meth:`Forecast.as_detection_data`).
    """
    horizons = np.asarray(horizons_s, np.float64).reshape(-1)
    latest = forecaster.latest_timestamp_s
    if latest is not None and timestamp_s < latest:
        forecaster.reset()
    tracked = detections.is_tracked
    ids = detections.tracker_id[tracked]
    xyxy = detections.xyxy[tracked].astype(np.float64)
    heights_px = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1.0)  # guard degenerate boxes
    forecaster.update(ids, detections.center[tracked], timestamp_s, heights_px)
    flat = forecaster.predict(ids, horizons).as_detection_data()
    data = dict(detections.data)
    for key, rows in flat.items():
        column = np.full((len(detections), rows.shape[1]), np.nan, np.float32)
        column[tracked] = rows
        data[key] = column
    return Detections(
        xyxy=detections.xyxy,
        confidence=detections.confidence,
        class_id=detections.class_id,
        tracker_id=detections.tracker_id,
        embeddings=detections.embeddings,
        data=data,
    )


class ForecastEnricher:
    """Per-stream pipeline stage: feeds the tracker output to a forecaster and attaches
    ``forecast_xy`` / ``forecast_cov`` columns (see :func:`forecast_detections`).

    Example:
        >>> from tapetum.pipeline import Pipeline  # doctest: +SKIP
        >>> pipe = Pipeline(sources, detector, enrichers=[  # doctest: +SKIP
        ...     lambda src: ForecastEnricher(ConstantVelocityForecaster(), (1.0, 2.0))])
    """

    def __init__(self, forecaster: Forecaster, horizons_s: npt.ArrayLike) -> None:
        self.forecaster = forecaster
        self.horizons_s = np.asarray(horizons_s, np.float64).reshape(-1)

    def __call__(self, frame: Frame, detections: Detections) -> Detections:
        return forecast_detections(self.forecaster, detections, frame.timestamp_s, self.horizons_s)

    def state_sizes(self) -> dict[str, int]:
        """Tracks the forecaster holds (dropped ``max_age_s`` after their last update)."""
        return {"forecast_tracks": int(self.forecaster.track_ids.shape[0])}


#: Forecaster settings for detector boxes (noisier than ground truth): measured in
#: ``tapetum.eval.forecast`` with box jitter 0.05 h, they tie CA on accuracy and keep CV's
#: well-calibrated ellipses.
DETECTOR_CV_CONFIG = ConstantVelocityConfig(
    measurement_std_per_height=0.05, acceleration_std_per_height=0.25
)
