"""Per-stream online blending and calibration of learned forecasts, from the stream's own past.

A learned forecaster is trained on other scenes; on a given camera it may extrapolate less
well than constant velocity (slow walkers filmed from eye level), and its ellipses may be
too wide or too narrow for that scene. Each stream therefore keeps score of its own
forecasts once their horizon has passed, using only observations already seen (no look
ahead), and adapts two things per horizon:

* **the blend** ``mean = cv + Σ_e w_e · (model_e - cv)`` over the file's ``E`` members
  (one network, or an ensemble trained with different recipes), per image axis: ``w`` are
  the least-squares weights of the members' corrections over constant velocity on the
  stream's scored forecasts (normal equations with exponential forgetting: stacking),
  shrunk towards ``prior_weight / E`` each while evidence is scarce, each within ``[0, 1]``
  and summing to at most 1: ``w = 0`` is constant velocity. The axes are weighed apart
  because a camera that pans or turns spoils the horizontal corrections and leaves the
  vertical ones (held out on MOT17-13, a turning car: one weight for both axes left the
  blend 5.5 % worse than constant velocity at 1 s, one per axis 0.3 % worse);
* **the prediction regions**: motion errors are heavier-tailed than a Gaussian, so one
  covariance scale cannot make both the 1- and the 2-sigma ellipse hold what a Gaussian's
  would (39.3 % and 86.5 %). The stream fits the standard-deviation multiplier whose 2-sigma
  ellipse holds 86.5 % of its last scored forecasts (the blended means under the model's
  covariance; split-conformal: the quantile of their squared Mahalanobis distances), and
  the radius (in those sigmas) of the ellipse that holds 39.3 % (``inner_sigma``, reported
  with each forecast), both shrunk towards the file's own calibration (1 and 1) while
  evidence is scarce. With ``regions=False`` one multiplier fits both levels as well as it
  can (:func:`fit_coverage_scale`).

Everything is in the model's units: offsets from each track's latest observation in its box
height, on the model's time grid. Forecasts are recorded at most every ``record_every_s``
(all tracks observed that frame) and scored at the grid steps ``check_steps``; the weight
and the scale of other steps interpolate between them. State is bounded: a ring of
``capacity`` records and a window of squared distances per checked step.

Example:
    >>> import numpy as np
    >>> from tapetum.track.forecast_blend import OnlineBlend, OnlineBlendConfig
    >>> blend = OnlineBlend(OnlineBlendConfig(), dt_s=0.1, horizon_steps=20, members=2)
    >>> blend.weights().shape, blend.weights()[0].tolist()  # the prior until evidence comes
    ((20, 2, 2), [[0.05, 0.05], [0.05, 0.05]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tapetum._types import Float32Array, Float64Array, IntArray
from tapetum.errors import ConfigError

__all__ = ["OnlineBlend", "OnlineBlendConfig", "fit_coverage_scale"]

#: Probability inside the 1- and 2-sigma ellipses of a 2-D Gaussian: 1 - exp(-n²/2).
COVERAGE_1SIGMA = 1.0 - math.exp(-0.5)
COVERAGE_2SIGMA = 1.0 - math.exp(-2.0)
_SCALE_GRID = np.exp(np.linspace(math.log(0.05), math.log(20.0), 2001))
_SCALE_GRID2 = np.square(_SCALE_GRID)


def fit_coverage_scale(d2: Float64Array) -> float:
    """The standard-deviation multiplier that best calibrates a set of forecasts.

    Scaling every covariance by ``s²`` divides every squared Mahalanobis distance by ``s²``.
    The scale chosen minimises the squared gaps between the 1- and 2-sigma coverages and
    their Gaussian values (39.3 %, 86.5 %), searched on a fine log grid (0.05 … 20): errors
    of real motion are heavier-tailed than a Gaussian, and the likelihood-optimal scale
    (``mean(d²) / 2``) would be set by the few worst forecasts and widen every ellipse.

    Args:
        d2: (M,) squared Mahalanobis distances of scored forecasts (inf allowed).

    Returns:
        The multiplier ``s`` (1.0 when ``d2`` is empty).
    """
    values = np.sort(d2[~np.isnan(d2)])
    if values.size == 0:
        return 1.0
    inside_1 = np.searchsorted(values, _SCALE_GRID2, side="right") / values.size
    inside_2 = np.searchsorted(values, 4.0 * _SCALE_GRID2, side="right") / values.size
    gap = np.square(inside_1 - COVERAGE_1SIGMA) + np.square(inside_2 - COVERAGE_2SIGMA)
    return float(_SCALE_GRID[int(np.argmin(gap))])


@dataclass(frozen=True, slots=True)
class OnlineBlendConfig:
    """How a stream adapts its learned forecasts (see the module docstring).

    Attributes:
        check_steps: grid steps (1-based; step ``k`` is ``k·dt`` ahead) at which recorded
            forecasts are scored; the weight and scale interpolate between them and hold
            before the first and after the last.
        record_every_s: a stream records its tracks' forecasts, and scores those come due,
            at most this often, seconds.
        memory: forgetting horizon of the blend, in scored forecasts per checked step (an
            estimate made of ``n`` forecasts counts each with weight ``(1 - 1/memory)^age``).
        prior_samples: pseudo-forecasts at ``prior_weight`` and at scale 1: how much
            evidence it takes to move the blend and the scale away from the file's model.
        prior_weight: the members' total weight before evidence, shared equally (1: the
            model as trained; 0.1, from the held-out folds of ``bench/forecast.py``: almost
            constant velocity until the stream has evidence, so a short clip from a camera
            unlike the training ones is not worse than constant velocity. With per-axis
            weights, streams of a few seconds gain the model's share quickly; 0.3 left
            TUD-Campus, a 3-second clip, 29 % worse at 2 s, 0.15 4 %, 0.1 none, at the same
            pooled gains).
        calibrate: adapt the covariance scale (False: the file's calibration only).
        regions: calibrate the 86.5 % (2-sigma) and 39.3 % regions separately (see the
            module docstring); False: one scale for both.
        calibration_window: scored forecasts per checked step the scale is fitted on.
        refit_every: refit the scale after this many new scored forecasts of a step.
        capacity: recorded forecasts kept (a ring; older unscored ones are dropped).
        max_gap_s: a true position interpolated across a longer gap is not scored.
    """

    check_steps: tuple[int, ...] = (5, 10, 15, 20)
    record_every_s: float = 0.1
    memory: float = 3000.0
    prior_samples: float = 100.0
    prior_weight: float = 0.1
    calibrate: bool = True
    regions: bool = True
    calibration_window: int = 1500
    refit_every: int = 100
    capacity: int = 4096
    max_gap_s: float = 0.5

    def __post_init__(self) -> None:
        steps = self.check_steps
        if not steps or any(k < 1 for k in steps) or list(steps) != sorted(set(steps)):
            raise ConfigError(f"check_steps must be ascending positive steps, got {steps}")
        for name in ("record_every_s", "memory", "prior_samples", "max_gap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"OnlineBlendConfig.{name} must be positive, got {value}")
        if not 0.0 <= self.prior_weight <= 1.0:
            raise ConfigError(f"prior_weight must be within [0, 1], got {self.prior_weight}")
        for name in ("calibration_window", "refit_every", "capacity"):
            if getattr(self, name) < 1:
                raise ConfigError(f"OnlineBlendConfig.{name} must be >= 1")


class OnlineBlend:
    """One stream's record of learned and constant-velocity forecasts, the blend weight and
    covariance scale per grid step it learns from them once their horizon has passed.

    Args:
        config: the settings.
        dt_s: the model's grid step, seconds.
        horizon_steps: ``K``, the model's grid steps (check steps past ``K`` are ignored).
        members: ``E``, the forecasts the file makes per track (an ensemble's members).
    """

    def __init__(
        self, config: OnlineBlendConfig, dt_s: float, horizon_steps: int, members: int = 1
    ) -> None:
        self.config = config
        self.dt_s = dt_s
        self.horizon_steps = horizon_steps
        self.members = members
        steps = np.asarray([k for k in config.check_steps if k <= horizon_steps], np.int64)
        if steps.size == 0:
            raise ConfigError(
                f"no check step within the model's {horizon_steps} steps: {config.check_steps}"
            )
        self.steps = steps
        s, cap = len(steps), config.capacity
        self._id = np.zeros(cap, np.int64)
        self._t = np.zeros(cap, np.float64)
        self._origin = np.zeros((cap, 3), np.float64)  # x0, y0, h0 in pixels
        e = members
        self._model = np.zeros((cap, s, e, 2), np.float64)  # box heights from the origin
        self._cv = np.zeros((cap, s, 2), np.float64)
        self._blend = np.zeros((cap, s, 2), np.float64)
        self._cov = np.zeros((cap, s, 3), np.float64)  # var_x, var_y, cov_xy in h0², unscaled
        self._head = 0  # records written so far
        self._done = np.zeros(s, np.int64)  # per step: records scored or dropped so far
        self._last_record_s = -math.inf
        # Normal equations of the blend per step, with forgetting: sum |d|², sum d·r, count.
        self._gram = np.zeros((s, 2, e, e))  # per step and axis
        self._cross = np.zeros((s, 2, e))
        self._count = np.zeros(s)
        self._prior = np.full(e, config.prior_weight / e)
        self._d2 = np.full((s, config.calibration_window), np.nan)
        self._d2_next = np.zeros(s, np.int64)
        self._since_fit = np.zeros(s, np.int64)
        self._scale_fit = np.ones(s)
        self._inner_fit = np.ones(s)
        self._inner = np.ones(s)
        self._weight = np.tile(self._prior[:, None], (s, 1, 2))  # (S, E, 2): per axis
        self._scale = np.ones(s)
        self._horizons_s = steps.astype(np.float64) * dt_s
        # (K, S): linear interpolation from the checked steps to every grid step (held
        # before the first and after the last), as a matrix
        grid = np.arange(1, horizon_steps + 1, dtype=np.float64)
        checked = steps.astype(np.float64)
        self._to_grid = np.stack([np.interp(grid, checked, unit) for unit in np.eye(s)], axis=1)
        self.scored = 0
        self._next_due_s = math.inf  # when the earliest unscored check comes due
        self._last_score_s = -math.inf
        self._cached: tuple[Float64Array, Float64Array, float] | None = None

    # ------------------------------------------------------------------ what it says now

    def weights(self) -> Float64Array:
        """(K, E, 2) each member's weight per grid step (``k·dt``, k = 1 … K) and image
        axis (x, y)."""
        return self._per_grid()[0]

    def scales(self) -> Float64Array:
        """(K,) the standard-deviation multiplier per grid step."""
        return self._per_grid()[1]

    def model_weight(self) -> float:
        """The members' total weight, averaged over the checked steps and the axes (0:
        constant velocity alone)."""
        return self._per_grid()[2]

    def _per_grid(self) -> tuple[Float64Array, Float64Array, float]:
        """Weights (K, E, 2) and scales (K,) on the grid, and the members' mean total
        weight, recomputed only after they change."""
        if self._cached is None:
            s, k = len(self.steps), self.horizon_steps
            weights = (self._to_grid @ self._weight.reshape(s, -1)).reshape(k, self.members, 2)
            total = float(self._weight.sum(axis=1).mean())
            self._cached = (weights, self._to_grid @ self._scale, total)
        return self._cached

    def inner_sigma(self, steps: Float64Array) -> Float64Array:
        """The 39.3 % region's radius in sigmas of the scaled covariance at fractional grid
        steps ``steps`` (any shape; 1 where regions are not calibrated separately)."""
        grid = self.steps.astype(np.float64)
        out: Float64Array = np.interp(steps, grid, self._inner)
        return out

    def blend(self, members: Float64Array, cv: Float64Array) -> Float64Array:
        """The blended grid forecasts (M, K, 2) of members (M, E, K, 2) and constant
        velocity (M, K, 2), with the weights of now."""
        weights = self.weights().transpose(1, 0, 2)[None]  # (1, E, K, 2)
        out: Float64Array = cv + ((members - cv[:, None]) * weights).sum(axis=1)
        return out

    # ------------------------------------------------------------------------- recording

    def wants_record(self, now_s: float) -> bool:
        """Whether forecasts made at ``now_s`` should be recorded (rate-limited)."""
        return now_s - self._last_record_s >= self.config.record_every_s - 1e-9

    def record(  # noqa: PLR0917 - the columns of one table
        self,
        track_ids: IntArray,
        now_s: float,
        origin_px: Float64Array,
        model: Float32Array | Float64Array,
        cv: Float64Array,
        blended: Float64Array,
        cov: Float64Array,
    ) -> None:
        """Keep forecasts made at ``now_s`` from each track's observation at ``now_s``.

        Args:
            track_ids: (M,) the tracks.
            now_s: the origin time (their latest observation).
            origin_px: (M, 3) their latest ``x, y, h`` in pixels.
            model: (M, E, K, 2) the members' offsets on the grid, box heights.
            cv, blended: (M, K, 2) constant velocity's and the blended offsets.
            cov: (M, K, 3) the model's covariance on the grid before the online scale, h0².
        """
        self._last_record_s = now_s
        m = track_ids.shape[0]
        cap = self.config.capacity
        if m == 0:
            return
        if m > cap:  # more tracks than the ring holds: keep a spread of them
            keep = np.linspace(0, m - 1, cap).astype(np.int64)
            track_ids, origin_px = track_ids[keep], origin_px[keep]
            model, cv, blended, cov = model[keep], cv[keep], blended[keep], cov[keep]
            m = cap
        slots = (self._head + np.arange(m)) % cap
        cols = self.steps - 1
        self._id[slots] = track_ids
        self._t[slots] = now_s
        self._origin[slots] = origin_px
        self._model[slots] = model[:, :, cols].transpose(0, 2, 1, 3)
        self._cv[slots] = cv[:, cols]
        self._blend[slots] = blended[:, cols]
        self._cov[slots] = cov[:, cols]
        self._head += m
        # Records overwritten before their horizon passed are lost, not scored.
        np.maximum(self._done, self._head - cap, out=self._done)
        self._next_due_s = min(self._next_due_s, now_s + float(self.steps[0]) * self.dt_s)

    # --------------------------------------------------------------------------- scoring

    def score(
        self,
        now_s: float,
        store_ids: IntArray,
        store_t: Float64Array,
        store_obs: Float64Array,
    ) -> None:
        """Score every recorded forecast whose checked horizon has passed by ``now_s``
        against the track's observations, and update the weights and scales.

        Args:
            now_s: the latest update's time.
            store_ids: (C,) sorted track ids of the forecaster's buffer.
            store_t: (C, L) their observation times (``-inf`` padded on the left).
            store_obs: (C, L, 3) ``x, y, h`` in pixels.
        """
        from tapetum.track.kernels.forecast_blend import score_due

        # Score in batches, at most every record_every_s: the per-frame cost stays small.
        cfg = self.config
        if now_s < self._next_due_s - 1e-9 or now_s - self._last_score_s < (
            cfg.record_every_s - 1e-9
        ):
            return
        self._last_score_s = now_s
        refit = np.empty(len(self.steps), np.bool_)
        self.scored += score_due(
            self._id,
            self._t,
            self._origin,
            self._model,
            self._cv,
            self._blend,
            self._cov,
            self._head,
            self._horizons_s,
            now_s,
            store_ids,
            store_t,
            store_obs,
            cfg.max_gap_s,
            1.0 - 1.0 / cfg.memory,
            cfg.prior_samples,
            self._prior,
            cfg.calibrate,
            cfg.refit_every,
            self._done,
            self._gram,
            self._cross,
            self._count,
            self._weight,
            self._d2,
            self._d2_next,
            self._since_fit,
            refit,
        )
        for s_i in np.flatnonzero(refit).tolist():
            self._refit(s_i)
        self._cached = None
        cap = cfg.capacity
        pending = [
            float(self._t[int(done) % cap]) + step * self.dt_s
            for done, step in zip(self._done.tolist(), self.steps.tolist(), strict=True)
            if done < self._head
        ]
        self._next_due_s = min(pending, default=math.inf)

    def _refit(self, s_i: int) -> None:
        """The step's scale (and 39 % radius) from its window of squared distances."""
        cfg = self.config
        d2 = self._d2[s_i]
        d2 = d2[~np.isnan(d2)]
        seen = float(d2.size)
        if cfg.regions:
            # quantiles without interpolation: a singular forecast's distance is inf
            inner, outer = _lower_quantiles(d2, (COVERAGE_1SIGMA, COVERAGE_2SIGMA))
            outer2 = outer / 4.0
            self._scale_fit[s_i] = math.sqrt(max(outer2, 1e-12))
            if not (math.isfinite(outer2) and math.isfinite(inner)):
                return  # too many singular forecasts to size a region: keep the last fit
            inner2 = inner / max(outer2, 1e-12)
            self._inner_fit[s_i] = math.sqrt(inner2)
        else:
            self._scale_fit[s_i] = fit_coverage_scale(d2)
        shrink = seen / (seen + cfg.prior_samples)
        s2 = shrink * self._scale_fit[s_i] ** 2 + (1.0 - shrink)
        self._scale[s_i] = math.sqrt(s2)
        if cfg.regions:
            # the radius is fitted under the stream's scale: shrink it towards the file's
            # 1-sigma ellipse (radius 1 at scale 1) in absolute terms
            absolute = shrink * (self._inner_fit[s_i] * self._scale_fit[s_i]) ** 2 + (1.0 - shrink)
            self._inner[s_i] = math.sqrt(absolute / s2)


def _lower_quantiles(values: Float64Array, levels: tuple[float, ...]) -> list[float]:
    """The smallest value with at least ``level`` of ``values`` at or below it, per level
    (numpy's ``inverted_cdf`` quantile) by one partial sort."""
    n = values.shape[0]
    ranks = [min(max(math.ceil(level * n) - 1, 0), n - 1) for level in levels]
    parted = np.partition(values, ranks)
    return [float(parted[k]) for k in ranks]
