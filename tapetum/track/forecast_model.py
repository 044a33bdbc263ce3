"""A learned, probabilistic trajectory forecaster run with ONNX Runtime.

The model reads a track's recent past and returns a 2-D Gaussian of its centre at every
step of a fixed horizon grid. Everything the model sees and says is in **box heights**
relative to the latest observation, on a **fixed time step** in seconds, so one model serves
any resolution, any depth and any frame rate it was trained on:

* history: the track's centre and box height resampled by linear interpolation at
  ``t0, t0 - dt, …, t0 - (T-1)·dt`` (``t0`` its latest observation), each as
  ``((x - x0) / h0, (y - y0) / h0, log(h / h0), observed)``; ``observed`` is 0 for times
  before the track's first observation (those rows continue the track back at its mean
  velocity, or repeat the first observation in older files: ``history_padding``);
* output: ``mean`` (N, K, 2) offsets from ``(x0, y0)`` in units of ``h0`` at
  ``dt, 2·dt, …, K·dt`` and ``cov`` (N, K, 3) ``var_x, var_y, cov_xy`` in ``h0²``.

Forecasts at other horizons interpolate linearly between grid steps (and from the origin,
where the offset and its covariance are zero). A per-step standard-deviation scale, fitted
on validation tracks when the model was trained (:mod:`tapetum.learn.forecast`), is applied
to every covariance; it is stored in the file with the rest of the contract
(:class:`ForecastModelSpec`) under the ``tapetum`` metadata key.

:class:`LearnedForecaster` follows the :class:`~tapetum.track.forecast.Forecaster` protocol:
it keeps the last observations of every track in a structure of arrays (``(C, L)`` times and
``(C, L, 3)`` ``x, y, h``, right-aligned, ``-inf`` times on the left where a track has fewer
than ``L`` observations), resamples every track's history in one compiled pass
(:mod:`tapetum.track.kernels.forecast`) and makes one model call per frame for all of them.
A track observed for less than ``min_history_s`` (one observation included) is forecast by
the constant-velocity Kalman filter (kept per track as it is updated) instead, and
counted (:class:`ForecastCounts`). A model may also read a summary of the frame's other
tracks (:func:`neighbour_context`; the default recipe's second network does).

Only numpy and onnxruntime are needed here; torch is used only to train
(``tapetum train forecast``).

Example:
    >>> from tapetum.track.forecast_model import LearnedForecaster, load_forecast_model
    >>> model = load_forecast_model("forecaster.onnx")  # doctest: +SKIP
    >>> fc = LearnedForecaster(model)  # doctest: +SKIP
    >>> fc.update([7], [[640.0, 360.0]], 0.0, heights_px=[120.0])  # doctest: +SKIP
    >>> fc.predict([7], [1.0, 2.0]).mean_px.shape  # doctest: +SKIP
    (1, 2, 2)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray
from tapetum.errors import ConfigError, ModelLoadError
from tapetum.track.forecast import (
    ConstantVelocityConfig,
    ConstantVelocityForecaster,
    Forecast,
    lookup_sorted,
    validate_update,
)
from tapetum.track.forecast_blend import OnlineBlend, OnlineBlendConfig

__all__ = [
    "FORECAST_METADATA_KEY",
    "FORECAST_TASK",
    "ForecastCounts",
    "ForecastModel",
    "ForecastModelSpec",
    "LearnedForecaster",
    "StreamForecasters",
    "history_features",
    "load_forecast_model",
    "mixture",
    "neighbour_context",
]

#: The ``metadata_props`` key of Tapetum's JSON block (shared with detector files).
FORECAST_METADATA_KEY = "tapetum"
#: The ``task`` a forecaster's block declares (a detector's block has none).
FORECAST_TASK = "forecast"
#: Version of the forecaster block; a newer one is refused with a clear message.
FORECAST_SCHEMA = 1
#: Features per history step: dx/h0, dy/h0, log(h/h0), observed.
HISTORY_FEATURES = 4
#: Features per history step of the neighbour context: median dx, median dy, log(1 + count)
#: over the frame's tracks.
CONTEXT_FEATURES = 3
#: Features added by a local context: median dx, dy of the nearest other tracks.
LOCAL_CONTEXT_FEATURES = 2
#: A stream whose blend gives the model less than this weight counts as leaning on constant
#: velocity (:attr:`ForecastCounts.leaning_cv`).
LEANING_CV_WEIGHT = 0.25

#: How a history is filled before a young track's first observation (``ForecastModelSpec``).
HISTORY_PADDINGS = ("repeat", "extrapolate")

#: Input and output names of the ONNX graph.
INPUT_NAME, CONTEXT_NAME, MEAN_NAME, COV_NAME = "history", "context", "mean", "cov"


@dataclass(frozen=True, slots=True)
class ForecastModelSpec:
    """The contract between a forecaster file and the code that feeds it.

    Attributes:
        dt_s: the step of both grids, seconds (history resampling and forecast horizons).
        history_steps: ``T``: history points at ``t0 - k·dt_s``, ``k = 0 … T-1``.
        horizon_steps: ``K``: forecasts at ``(k + 1)·dt_s``, ``k = 0 … K-1``; the longest
            horizon a file can serve is ``K·dt_s``.
        min_history_s: a track observed for less than this (latest minus first observation)
            is forecast by the constant-velocity fallback.
        min_frame_rate_fps: the lowest frame rate of the training tracks, capped at the grid
            rate ``1 / dt_s``; a source with sparser observations is refused (its resampled
            history would look like nothing the model saw).
        covariance_scale: (K,) standard-deviation multiplier per horizon step fitted on
            validation tracks (1.0: uncalibrated).
        context: the model also reads the neighbour context (:func:`neighbour_context`), a
            second input ``context`` (N, T, C).
        context_neighbours: with ``context``, the context also pools the motion of this many
            nearest other tracks (0: the frame's median only; ``C`` is 3, else 5).
        history_padding: how the history is filled before a young track's first
            observation: ``"repeat"`` the first observation (files written before this
            field) or ``"extrapolate"`` back at the track's mean velocity (see
            :func:`history_features`).
        members: ``E``, networks in the file (an ensemble trained with different recipes);
            with more than one the outputs carry a member axis: ``mean`` (N, E, K, 2) and
            ``cov`` (N, E, K, 3), and the forecast is their mixture (see :func:`mixture`)
            unless a stream blends them itself (:mod:`tapetum.track.forecast_blend`).
        info: free-form provenance: training sequences, epochs, validation scores.
    """

    dt_s: float = 0.1
    history_steps: int = 12
    horizon_steps: int = 20
    min_history_s: float = 0.2
    min_frame_rate_fps: float = 10.0
    covariance_scale: tuple[float, ...] = ()
    context: bool = False
    context_neighbours: int = 0
    members: int = 1
    history_padding: str = "repeat"
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.history_padding not in HISTORY_PADDINGS:
            raise ModelLoadError(
                f"forecaster history_padding must be one of {HISTORY_PADDINGS}, got "
                f"{self.history_padding!r}"
            )
        if self.members < 1:
            raise ModelLoadError(f"forecaster members must be >= 1, got {self.members}")
        if self.context_neighbours < 0 or (self.context_neighbours and not self.context):
            raise ModelLoadError(
                f"forecaster context_neighbours must be >= 0 and needs the context, got "
                f"{self.context_neighbours}"
            )
        if not (math.isfinite(self.dt_s) and self.dt_s > 0):
            raise ModelLoadError(f"forecaster dt_s must be positive seconds, got {self.dt_s}")
        if self.history_steps < 2 or self.horizon_steps < 1:
            raise ModelLoadError(
                f"forecaster needs >= 2 history and >= 1 horizon steps, got "
                f"{self.history_steps} and {self.horizon_steps}"
            )
        if not (0 <= self.min_history_s <= (self.history_steps - 1) * self.dt_s + 1e-9):
            raise ModelLoadError(
                f"forecaster min_history_s {self.min_history_s} is outside its history window"
            )
        if not (math.isfinite(self.min_frame_rate_fps) and self.min_frame_rate_fps > 0):
            raise ModelLoadError("forecaster min_frame_rate_fps must be positive")
        scale = self.covariance_scale
        if scale and (
            len(scale) != self.horizon_steps or not all(math.isfinite(s) and s > 0 for s in scale)
        ):
            raise ModelLoadError(
                f"forecaster covariance_scale needs {self.horizon_steps} positive numbers, "
                f"got {len(scale)}"
            )

    @property
    def context_features(self) -> int:
        """Features per history step of the ``context`` input (0: the model reads none)."""
        if not self.context:
            return 0
        return CONTEXT_FEATURES + (LOCAL_CONTEXT_FEATURES if self.context_neighbours else 0)

    @property
    def max_horizon_s(self) -> float:
        """The longest horizon the model forecasts, seconds."""
        return self.horizon_steps * self.dt_s

    @property
    def history_span_s(self) -> float:
        """Time from the oldest history point to the latest, seconds."""
        return (self.history_steps - 1) * self.dt_s

    @property
    def scales(self) -> Float64Array:
        """(K,) covariance scale, ones when the file has none."""
        if not self.covariance_scale:
            return np.ones(self.horizon_steps)
        return np.asarray(self.covariance_scale, np.float64)

    def check_horizons(self, horizons_s: npt.ArrayLike, source: str = "forecaster") -> None:
        """Raise ConfigError when a requested horizon is longer than the model forecasts."""
        horizons = np.asarray(horizons_s, np.float64).reshape(-1)
        if horizons.size and float(horizons.max()) > self.max_horizon_s + 1e-9:
            raise ConfigError(
                f"{source} forecasts at most {self.max_horizon_s:g} s ahead; "
                f"asked for {float(horizons.max()):g} s"
            )

    def check_frame_rate(self, frame_rate_fps: float | None, source: str = "source") -> None:
        """Raise ConfigError when a stream's frame rate is below what the model was trained on."""
        if frame_rate_fps is None or frame_rate_fps <= 0:
            return  # unknown (live stream): resampling copes; nothing to check against
        if frame_rate_fps < self.min_frame_rate_fps - 1e-6:
            raise ConfigError(
                f"{source} runs at {frame_rate_fps:g} fps; the forecaster was trained on tracks "
                f"of {self.min_frame_rate_fps:g} fps and more (history resampled every "
                f"{self.dt_s:g} s): use the constant-velocity forecaster for this source"
            )

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": FORECAST_SCHEMA,
                "task": FORECAST_TASK,
                "dt_s": self.dt_s,
                "history_steps": self.history_steps,
                "horizon_steps": self.horizon_steps,
                "min_history_s": self.min_history_s,
                "min_frame_rate_fps": self.min_frame_rate_fps,
                "covariance_scale": list(self.covariance_scale),
                "context": self.context,
                "context_neighbours": self.context_neighbours,
                "members": self.members,
                "history_padding": self.history_padding,
                "normalisation": (
                    "history (x-x0)/h0, (y-y0)/h0, log(h/h0), observed at t0-k*dt_s; "
                    "outputs mean offsets in h0 and cov in h0^2 at (k+1)*dt_s"
                ),
                "info": dict(self.info),
            }
        )

    @classmethod
    def from_json(cls, text: str, source: str = "forecaster") -> ForecastModelSpec:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ModelLoadError(f"{source}: malformed {FORECAST_METADATA_KEY!r} metadata") from exc
        if not isinstance(data, dict) or data.get("task") != FORECAST_TASK:
            raise ModelLoadError(
                f"{source} is not a Tapetum forecaster (its metadata has no task 'forecast'); "
                "train one with `tapetum train forecast`"
            )
        if int(data.get("schema", 0)) > FORECAST_SCHEMA:
            raise ModelLoadError(
                f"{source} uses forecaster metadata schema {data['schema']}; this Tapetum "
                f"reads up to {FORECAST_SCHEMA}: upgrade Tapetum"
            )
        try:
            return cls(
                dt_s=float(data["dt_s"]),
                history_steps=int(data["history_steps"]),
                horizon_steps=int(data["horizon_steps"]),
                min_history_s=float(data["min_history_s"]),
                min_frame_rate_fps=float(data["min_frame_rate_fps"]),
                covariance_scale=tuple(float(s) for s in data.get("covariance_scale") or ()),
                context=bool(data.get("context", False)),
                context_neighbours=int(data.get("context_neighbours", 0)),
                members=int(data.get("members", 1)),
                history_padding=str(data.get("history_padding", "repeat")),
                info=dict(data.get("info") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: malformed forecaster metadata: {exc}") from exc


# ------------------------------------------------------------------------------- features


def history_features(
    times_s: Float64Array,
    centers_px: Float64Array,
    heights_px: Float64Array,
    dt_s: float,
    steps: int,
    *,
    padding: str = "repeat",
) -> Float32Array:
    """Resample each track's last observations onto the model's history grid.

    Args:
        times_s: (N, L) observation times, ascending per row; the last column is the latest
            observation of every row; ``-inf`` on the left where a track has fewer than
            ``L`` observations.
        centers_px: (N, L, 2) centres ``x, y`` in pixels (any value where time is ``-inf``).
        heights_px: (N, L) positive box heights in pixels (likewise).
        dt_s: the grid step, seconds.
        steps: ``T``, the number of grid points (``t0`` first, then further into the past).
        padding: before a track's first observation, ``"repeat"`` it or ``"extrapolate"``
            its centre back at the track's mean velocity (first to latest observation);
            the height is held either way.

    Returns:
        (N, T, 4) float32: ``(x - x0) / h0, (y - y0) / h0, log(h / h0), observed`` at
        ``t0 - k·dt_s``, where ``t0, x0, y0, h0`` are each row's latest observation, by
        linear interpolation between the observations around each grid time; ``observed``
        is 0 before a track's first observation (the padded steps).
    """
    obs = np.concatenate((centers_px, heights_px[..., None]), axis=2)
    times = np.ascontiguousarray(times_s, np.float64)
    return _resample(times, obs, None, dt_s, steps, padding)


def _resample(  # noqa: PLR0917 - the columns of one store
    times_s: Float64Array,
    obs: Float64Array,
    rows: IntArray | None,
    dt_s: float,
    steps: int,
    padding: str = "repeat",
) -> Float32Array:
    """:func:`history_features` on the rows of a store of (C, L) times and (C, L, 3) x, y, h."""
    from tapetum.track.kernels.forecast import resample_history

    if padding not in HISTORY_PADDINGS:
        raise ValueError(f"padding must be one of {HISTORY_PADDINGS}, got {padding!r}")
    if rows is None:
        rows = np.arange(times_s.shape[0])
    out = np.empty((rows.shape[0], steps, HISTORY_FEATURES), np.float32)
    resample_history(times_s, obs, rows, dt_s, out, padding == "extrapolate")
    return out


def neighbour_context(  # noqa: PLR0917 - the columns of one frame's table
    population: Float32Array,
    population_h0_px: Float64Array,
    h0_px: Float64Array,
    neighbours: int = 0,
    population_xy_px: Float64Array | None = None,
    xy_px: Float64Array | None = None,
    own: IntArray | None = None,
) -> Float32Array:
    """What the other tracks of the frame did: a cue for camera motion and crowd flow.

    At every history step, the median displacement (pixels) of the tracks observed then,
    divided by each forecast track's own box height, and how many tracks that median pools.
    When the camera pans, every track shifts by about the same pixels; the median keeps that
    and ignores a few people walking against the flow. With ``neighbours``, also the median
    displacement of the ``neighbours`` tracks nearest to each forecast track (by current
    centre; itself left out): when the camera moves forward, the scene flows outwards from
    the point it heads to, and nearby tracks flow alike.

    Args:
        population: (P, T, 4) history features of every track in the frame (the forecast
            tracks among them).
        population_h0_px: (P,) their latest box heights.
        h0_px: (M,) latest box heights of the tracks to forecast.
        neighbours: nearest tracks pooled per forecast track (0: no local part).
        population_xy_px: (P, 2) latest centres of the population (needed with neighbours).
        xy_px: (M, 2) latest centres of the tracks to forecast (likewise).
        own: (M,) each forecast track's row in the population, -1 where absent (likewise).

    Returns:
        (M, T, 3) float32: median ``dx / h0``, median ``dy / h0``, ``log(1 + count)``; with
        ``neighbours`` (M, T, 5): then the nearest tracks' median ``dx / h0, dy / h0``.
    """
    from tapetum.track.kernels.forecast import motion_median

    width = CONTEXT_FEATURES + (LOCAL_CONTEXT_FEATURES if neighbours else 0)
    steps = population.shape[1]
    out = np.zeros((h0_px.shape[0], steps, width), np.float32)
    if population.shape[0] == 0:
        return out
    median, count = np.empty((steps, 2)), np.empty(steps)
    motion_median(population, np.asarray(population_h0_px, np.float64), median, count)
    np.divide(median[None], h0_px[:, None, None], out=out[..., :2], casting="unsafe")
    out[..., 2] = np.log1p(count)
    if neighbours and population.shape[0] > 1:
        observed = population[..., 3] > 0.5  # (P, T)
        disp = population[..., :2].astype(np.float64) * population_h0_px[:, None, None]
        disp[~observed] = np.nan
        if population_xy_px is None or xy_px is None or own is None:
            raise ValueError("a local context needs the centres and each track's own row")
        gap = np.linalg.norm(xy_px[:, None, :] - population_xy_px[None, :, :], axis=2)
        present = own >= 0
        gap[np.flatnonzero(present), own[present]] = np.inf  # not its own neighbour
        k = min(neighbours, population.shape[0] - 1)
        nearest = np.argpartition(gap, k - 1, axis=1)[:, :k]  # (M, k)
        local = _nan_median(disp[nearest].transpose(1, 0, 2, 3))  # (M, T, 2)
        out[..., 3:5] = local / h0_px[:, None, None]
    return out


def _nan_median(values: Float64Array) -> Float64Array:
    """Median over axis 0 ignoring NaN (0 where all are NaN), by one sort: NaN sorts last,
    so the finite values of a column are its first ``count`` rows (np.nanmedian is ~50x
    slower on these small arrays)."""
    count = (~np.isnan(values[..., 0])).sum(axis=0)  # (...)
    ordered = np.sort(values, axis=0)
    lo = np.maximum(count - 1, 0) // 2
    hi = np.minimum(count // 2, values.shape[0] - 1)
    low = np.take_along_axis(ordered, lo[None, ..., None], axis=0)[0]
    high = np.take_along_axis(ordered, hi[None, ..., None], axis=0)[0]
    median: Float64Array = 0.5 * (low + high)
    median[count == 0] = 0.0
    return median


# ----------------------------------------------------------------------------- the model


class ForecastModel:
    """A forecaster ONNX file opened with ONNX Runtime (CPU, one thread), and its contract.

    One instance can serve every stream: ONNX Runtime sessions take concurrent ``run`` calls.

    Args:
        path: the ``.onnx`` file written by ``tapetum train forecast``.
        threads: ONNX Runtime intra-op threads (1: a small MLP gains nothing from more, and
            the trackers of other streams need the cores).

    Raises:
        ModelLoadError: the file is missing, not ONNX, or not a Tapetum forecaster.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"forecaster file not found: {self.path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelLoadError(f"cannot open forecaster {self.path}: {exc}") from exc
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if FORECAST_METADATA_KEY not in meta:
            raise ModelLoadError(
                f"{self.path} has no Tapetum metadata: not a forecaster written by "
                "`tapetum train forecast`"
            )
        self.spec = ForecastModelSpec.from_json(meta[FORECAST_METADATA_KEY], str(self.path))
        self._check_graph()
        #: (K,) the file's calibration: variance multiplier per grid step
        self.scale2: Float64Array = np.square(self.spec.scales)

    def _check_graph(self) -> None:
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        spec = self.spec
        want = {INPUT_NAME: [spec.history_steps, HISTORY_FEATURES]}
        if spec.context:
            want[CONTEXT_NAME] = [spec.history_steps, spec.context_features]
        if set(inputs) != set(want) or any(list(inputs[k][1:]) != v for k, v in want.items()):
            raise ModelLoadError(
                f"{self.path}: expected inputs {want} (after the batch axis) as its metadata "
                f"says; the graph has {inputs}"
            )
        member_axis = [spec.members] if spec.members > 1 else []
        for name, width in ((MEAN_NAME, 2), (COV_NAME, 3)):
            want_shape = [*member_axis, spec.horizon_steps, width]
            if name not in outputs or list(outputs[name][1:]) != want_shape:
                raise ModelLoadError(
                    f"{self.path}: expected output {name!r} (N, {', '.join(map(str, want_shape))}) "
                    f"as its metadata says; the graph has {outputs}"
                )

    def run(
        self, features: Float32Array, context: Float32Array | None = None
    ) -> tuple[Float64Array, Float64Array]:
        """Forecast from (N, T, 4) history features (and the (N, T, C) context if the model
        reads it).

        Returns:
            ``mean`` (N, K, 2) offsets in box heights and ``cov`` (N, K, 3)
            ``var_x, var_y, cov_xy`` in square box heights, calibration scale applied (the
            members' mixture where the file holds several).
        """
        _, mean, cov = self.run_members(features, context)
        return mean, cov

    def run_members(
        self, features: Float32Array, context: Float32Array | None = None
    ) -> tuple[Float64Array, Float64Array, Float64Array]:
        """:meth:`run`, and each member's mean (N, E, K, 2) before the mixture."""
        mean, cov = self.outputs(features, context)
        means, covs = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
        mixed_mean, mixed_cov = mixture(means, covs)
        return means, mixed_mean, mixed_cov * self.scale2[None, :, None]

    def outputs(
        self, features: Float32Array, context: Float32Array | None = None
    ) -> tuple[Float32Array, Float32Array]:
        """The graph's outputs as they are, with a member axis: means (N, E, K, 2) and
        covariances (N, E, K, 3), float32, before the file's calibration scale."""
        feeds = {INPUT_NAME: features}
        if self.spec.context:
            if context is None:
                raise ValueError(f"{self.path.name} needs the neighbour context")
            feeds[CONTEXT_NAME] = context
        mean, cov = self.session.run([MEAN_NAME, COV_NAME], feeds)
        if self.spec.members == 1:
            return mean[:, None], cov[:, None]
        return mean, cov


def mixture(means: Float64Array, covs: Float64Array) -> tuple[Float64Array, Float64Array]:
    """The mean and covariance of an equal-weight mixture of Gaussians: members' means
    (N, E, K, 2) and covariances (N, E, K, 3) ``var_x, var_y, cov_xy`` → (N, K, 2), (N, K, 3)
    (the average covariance plus the spread of the means)."""
    if means.shape[1] == 1:
        return means[:, 0], covs[:, 0]
    mean = means.mean(axis=1)
    dev = means - mean[:, None]
    cov = covs.mean(axis=1)
    cov[..., 0] += np.square(dev[..., 0]).mean(axis=1)
    cov[..., 1] += np.square(dev[..., 1]).mean(axis=1)
    cov[..., 2] += (dev[..., 0] * dev[..., 1]).mean(axis=1)
    return mean, cov


def load_forecast_model(path: str | Path, threads: int = 1) -> ForecastModel:
    """Open a forecaster file (see :class:`ForecastModel`)."""
    return ForecastModel(path, threads)


# ------------------------------------------------------------------------- the forecaster


@dataclass(slots=True)
class ForecastCounts:
    """What a :class:`LearnedForecaster` did with the rows it was asked to forecast.

    Attributes:
        model: rows forecast by the learned model.
        fallback_short_history: rows forecast by constant velocity because the track had
            been observed for less than the model's ``min_history_s`` (one observation
            included).
        beyond_horizon: rows of tracks last seen so long ago that ``age + horizon`` passes
            the model's longest horizon; returned invalid (NaN).
        leaning_cv: of the ``model`` rows, those forecast while the stream's online blend
            (:mod:`tapetum.track.forecast_blend`) gave the model less than a quarter of the
            weight on average over the horizon: mostly constant velocity, which has done
            better on this camera.
    """

    model: int = 0
    fallback_short_history: int = 0
    beyond_horizon: int = 0
    leaning_cv: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "model": self.model,
            "fallback_short_history": self.fallback_short_history,
            "beyond_horizon": self.beyond_horizon,
            "leaning_cv": self.leaning_cv,
        }

    def add(self, other: ForecastCounts) -> None:
        self.model += other.model
        self.fallback_short_history += other.fallback_short_history
        self.beyond_horizon += other.beyond_horizon
        self.leaning_cv += other.leaning_cv


class LearnedForecaster:
    """One stream's tracks forecast by a learned model (constant velocity while young).

    Args:
        model: the opened forecaster file (may be shared by many streams).
        fallback: the constant-velocity settings: of the filter kept per track (the
            forecast of tracks with too little history, and what the online blend weighs
            the model against); its ``max_age_s`` also drops tracks absent that long.
        buffer_length: observations kept per track. Observations closer than ``dt/2`` to
            the one before the latest replace the latest, so the buffer spans the history
            window at any frame rate (44 slots cover 1.1 s at the densest spacing).
        adapt: the stream's online blend with constant velocity and covariance scale
            (:class:`~tapetum.track.forecast_blend.OnlineBlendConfig`); None: the model's
            forecasts as they are.
    """

    def __init__(
        self,
        model: ForecastModel,
        fallback: ConstantVelocityConfig | None = None,
        buffer_length: int = 48,
        adapt: OnlineBlendConfig | None = OnlineBlendConfig(),  # noqa: B008 - frozen
    ) -> None:
        self.model = model
        self.spec = model.spec
        self.adapt = adapt
        self.fallback = fallback or ConstantVelocityConfig()
        self._max_age_s = self.fallback.max_age_s
        self._length = buffer_length
        self._min_gap_s = 0.5 * self.spec.dt_s
        self._label = f"forecaster {model.path.name}"
        self.counts = ForecastCounts()
        self.reset()

    def reset(self) -> None:
        length = self._length
        self._ids: IntArray = np.empty(0, np.int64)
        self._t: Float64Array = np.empty((0, length), np.float64)
        self._obs: Float64Array = np.empty((0, length, 3), np.float64)  # x, y, h
        self._start_s: Float64Array = np.empty(0, np.float64)  # first observation
        # each track's constant-velocity filter: px, py, vx, vy, P_pp, P_pv, P_vv
        self._kalman: Float64Array = np.empty((0, 7), np.float64)
        self._now_s: float | None = None
        self.blend = (
            None
            if self.adapt is None
            else OnlineBlend(self.adapt, self.spec.dt_s, self.spec.horizon_steps, self.spec.members)
        )

    @property
    def track_ids(self) -> IntArray:
        return self._ids.copy()

    @property
    def latest_timestamp_s(self) -> float | None:
        return self._now_s

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def _lookup(self, ids: IntArray) -> tuple[IntArray, BoolArray]:
        return lookup_sorted(self._ids, ids)

    def update(
        self,
        track_ids: npt.ArrayLike,
        centers_px: npt.ArrayLike,
        timestamp_s: float,
        heights_px: npt.ArrayLike | None = None,
    ) -> None:
        ids, z, h, t = validate_update(
            track_ids, centers_px, timestamp_s, heights_px, self.fallback.default_height_px
        )
        if self._now_s is not None and t < self._now_s:
            raise ValueError(f"timestamp {t} s is earlier than the previous update {self._now_s} s")
        self._now_s = t
        if len(self._ids):
            alive = (t - self._t[:, -1]) <= self._max_age_s
            if not alive.all():
                self._ids, self._t = self._ids[alive], self._t[alive]
                self._obs, self._start_s = self._obs[alive], self._start_s[alive]
                self._kalman = self._kalman[alive]

        rows, found = self._lookup(ids)
        if found.any():
            from tapetum.track.kernels.forecast import push_observations

            # Keep slot -2 and earlier at least dt/2 apart: a dense stream overwrites the
            # latest observation instead of pushing the history window out of the buffer.
            cfg = self.fallback
            push_observations(
                self._t,
                self._obs,
                self._kalman,
                rows[found],
                z[found],
                h[found],
                t,
                self._min_gap_s,
                cfg.acceleration_std_per_height,
                cfg.measurement_std_per_height,
            )
        new = ~found
        if new.any():
            m, length = int(new.sum()), self._length
            t_new = np.full((m, length), -np.inf)
            t_new[:, -1] = t
            obs_new = np.empty((m, length, 3))
            obs_new[..., :2] = z[new][:, None, :]
            obs_new[..., 2] = h[new][:, None]
            cfg = self.fallback
            kalman_new = np.zeros((m, 7))
            kalman_new[:, :2] = z[new]
            kalman_new[:, 4] = np.square(cfg.measurement_std_per_height * h[new])
            kalman_new[:, 6] = np.square(cfg.initial_velocity_std_per_height * h[new])
            new_ids = ids[new]
            all_ids = np.concatenate((self._ids, new_ids))
            arrays = [
                all_ids,
                np.concatenate((self._t, t_new)),
                np.concatenate((self._obs, obs_new)),
                np.concatenate((self._start_s, np.full(m, t))),
                np.concatenate((self._kalman, kalman_new)),
            ]
            # trackers number new tracks upwards: then appending keeps the ids sorted
            if not bool((all_ids[1:] > all_ids[:-1]).all()):
                order = np.argsort(all_ids, kind="stable")
                arrays = [a[order] for a in arrays]
            self._ids, self._t, self._obs, self._start_s, self._kalman = arrays
        # score on the frames that record too (every record_every_s), so the other frames
        # carry neither
        if self.blend is not None and self.blend.wants_record(t):
            self.blend.score(t, self._ids, self._t, self._obs)

    def predict(
        self,
        track_ids: npt.ArrayLike,
        horizons_s: npt.ArrayLike,
        timestamp_s: float | None = None,
    ) -> Forecast:
        from tapetum.track.kernels.forecast import ROW_BEYOND, ROW_READY, ROW_YOUNG, classify_rows

        ids = np.asarray(track_ids, np.int64).reshape(-1)
        horizons = np.asarray(horizons_s, np.float64).reshape(-1)
        if not (np.isfinite(horizons).all() and (horizons >= 0).all()):
            raise ValueError("horizons_s must be finite and non-negative")
        self.spec.check_horizons(horizons, self._label)
        origin = timestamp_s if timestamp_s is not None else self._now_s
        n, nh = ids.shape[0], horizons.shape[0]
        rows, age = np.zeros(n, np.int64), np.full(n, np.inf)
        kind = np.zeros(n, np.int64)
        if origin is not None and len(self._ids):
            classify_rows(
                self._ids,
                self._t,
                self._start_s,
                ids,
                float(origin),
                self._max_age_s,
                self.spec.min_history_s,
                self.spec.max_horizon_s - (float(horizons.max()) if nh else 0.0),
                rows,
                age,
                kind,
            )
        ready = kind == ROW_READY
        n_ready = int(np.count_nonzero(ready))
        self.counts.model += n_ready
        inner = None
        if n_ready == n and n:  # the usual frame: no fancy indexing
            mean_px, cov_px2 = self._forecast(ids, rows, age, horizons)
            valid = np.ones(n, np.bool_)
            if self.blend is not None:
                inner = self.blend.inner_sigma((age[:, None] + horizons) / self.spec.dt_s)
        else:
            mean_px = np.full((n, nh, 2), np.nan)
            cov_px2 = np.full((n, nh, 2, 2), np.nan)
            young = kind == ROW_YOUNG
            valid = ready | young
            self.counts.beyond_horizon += int(np.count_nonzero(kind == ROW_BEYOND))
            if young.any():
                mean_px[young], cov_px2[young] = self._constant_velocity(
                    rows[young], age[young], horizons
                )
                self.counts.fallback_short_history += int(np.count_nonzero(young))
            if self.blend is not None:
                inner = np.ones((n, nh))
            if n_ready:
                mean_px[ready], cov_px2[ready] = self._forecast(
                    ids[ready], rows[ready], age[ready], horizons
                )
                if inner is not None and self.blend is not None:
                    ahead = (age[ready, None] + horizons[None, :]) / self.spec.dt_s
                    inner[ready] = self.blend.inner_sigma(ahead)
        return Forecast(
            track_ids=ids,
            horizons_s=horizons,
            origin_timestamp_s=float("nan") if origin is None else float(origin),
            mean_px=mean_px,
            cov_px2=cov_px2,
            valid=valid,
            inner_sigma=inner,
        )

    def _constant_velocity(
        self, rows: IntArray, age_s: Float64Array, horizons_s: Float64Array
    ) -> tuple[Float64Array, Float64Array]:
        """The rows' constant-velocity Kalman filters at ``age + horizons`` after their
        latest observation."""
        from tapetum.track.kernels.forecast import constant_velocity_ahead

        ahead = age_s[:, None] + horizons_s[None, :]
        mean_px = np.empty((*ahead.shape, 2))
        cov_px2 = np.empty((*ahead.shape, 2, 2))
        constant_velocity_ahead(
            self._kalman,
            rows,
            self._obs[rows, -1, 2],
            ahead,
            self.fallback.acceleration_std_per_height,
            mean_px,
            cov_px2,
        )
        return mean_px, cov_px2

    def _features(self, rows: IntArray) -> Float32Array:
        spec = self.spec
        return _resample(
            self._t, self._obs, rows, spec.dt_s, spec.history_steps, spec.history_padding
        )

    def _inputs(self, rows: IntArray) -> tuple[Float32Array, Float32Array | None]:
        """The model's inputs for ``rows``: history (M, T, 4) and, if it reads one, the
        neighbour context (M, T, C) pooled over every track seen at the latest update."""
        spec = self.spec
        if not spec.context:
            return self._features(rows), None
        if not spec.context_neighbours and self._now_s is not None:
            from tapetum.track.kernels.forecast import history_and_context

            m, steps = rows.shape[0], spec.history_steps
            feats = np.empty((m, steps, HISTORY_FEATURES), np.float32)
            context = np.empty((m, steps, CONTEXT_FEATURES), np.float32)
            extrapolate = spec.history_padding == "extrapolate"
            history_and_context(
                self._t, self._obs, rows, self._now_s, spec.dt_s, extrapolate, feats, context
            )
            return feats, context
        current = np.flatnonzero(self._t[:, -1] == self._now_s)
        population = self._features(current)
        own = np.minimum(np.searchsorted(current, rows), max(len(current) - 1, 0))
        own_ok = current[own] == rows if len(current) else np.zeros(len(rows), np.bool_)
        # rows observed now (all, unless some are lost) have their features in the population
        feats = population[own] if own_ok.all() else self._features(rows)
        latest = self._obs[:, -1]
        context = neighbour_context(
            population,
            latest[current, 2],
            latest[rows, 2],
            spec.context_neighbours,
            latest[current, :2],
            latest[rows, :2],
            np.where(own_ok, own, -1),
        )
        return feats, context

    def _forecast(
        self, ids: IntArray, rows: IntArray, age_s: Float64Array, horizons_s: Float64Array
    ) -> tuple[Float64Array, Float64Array]:
        """Model forecasts of ``rows`` at ``age + horizons`` after their latest observation:
        means (M, H, 2) px and covariances (M, H, 2, 2) px²; with a blend, the members are
        weighed against constant velocity as the stream's blend says now, and the forecasts
        made from an observation of this frame are recorded for it to score."""
        from tapetum.track.kernels.forecast import grid_to_pixels
        from tapetum.track.kernels.forecast_blend import blend_members

        means, covs = self.model.outputs(*self._inputs(rows))
        m, k, e = rows.shape[0], self.spec.horizon_steps, self.spec.members
        blend = self.blend
        if blend is None:  # the members' mixture as it is
            cv = np.zeros((m, k, 2))
            weights = np.full((k, e, 2), 1.0 / e)
            stream2 = np.ones(k)
        else:
            cv = self._cv_grid(rows)
            weights = blend.weights()
            stream2 = np.square(blend.scales())
            if blend.model_weight() < LEANING_CV_WEIGHT:
                self.counts.leaning_cv += int(m)
        grid = np.empty((m, k, 5))
        mixed_cov = np.empty((m, k, 3))
        blend_members(means, covs, cv, weights, self.model.scale2, stream2, grid, mixed_cov)
        now = self._now_s
        if blend is not None and now is not None and blend.wants_record(now):
            fresh = age_s <= 0.0
            if fresh.any():
                blend.record(
                    ids[fresh],
                    now,
                    self._obs[rows[fresh], -1],
                    means[fresh],
                    cv[fresh],
                    grid[fresh, :, :2],
                    mixed_cov[fresh],
                )
        times = age_s[:, None] + horizons_s[None, :]
        mean_px = np.empty((*times.shape, 2))
        cov_px2 = np.empty((*times.shape, 2, 2))
        grid_to_pixels(grid, times, self.spec.dt_s, self._obs[rows, -1], mean_px, cov_px2)
        return mean_px, cov_px2

    def _cv_grid(self, rows: IntArray) -> Float64Array:
        """Constant velocity's forecasts on the model's grid (M, K, 2): offsets from each
        row's latest observation in its box height."""
        from tapetum.track.kernels.forecast import constant_velocity_grid

        grid = np.empty((rows.shape[0], self.spec.horizon_steps, 2))
        constant_velocity_grid(self._kalman, rows, self._obs[rows, -1], self.spec.dt_s, grid)
        return grid


class StreamForecasters:
    """Makes each stream's forecaster: the learned model (one file shared by every stream) or,
    without a file, constant velocity; and totals what the learned ones counted.

    Args:
        horizons_s: the horizons every stream will ask for (checked against the file now).
        model_path: a forecaster file, or None for constant velocity.
        fallback: constant-velocity settings (the fallback of the learned forecaster).
        adapt: each stream's online blend and calibration (None: off).

    Raises:
        ModelLoadError: the file cannot be opened or is not a forecaster.
        ConfigError: it cannot forecast that far ahead.
    """

    def __init__(
        self,
        horizons_s: npt.ArrayLike,
        model_path: str | Path | None = None,
        fallback: ConstantVelocityConfig | None = None,
        adapt: OnlineBlendConfig | None = OnlineBlendConfig(),  # noqa: B008 - frozen
    ) -> None:
        self.fallback = fallback
        self.adapt = adapt
        self.model = load_forecast_model(model_path) if model_path is not None else None
        if self.model is not None:
            self.model.spec.check_horizons(horizons_s, f"forecaster {self.model.path.name}")
        self._learned: list[LearnedForecaster] = []

    def __call__(
        self, frame_rate_fps: float | None = None, source: str = "source"
    ) -> ConstantVelocityForecaster | LearnedForecaster:
        """A fresh forecaster for one stream.

        Raises:
            ConfigError: the stream's frame rate is below what the model was trained on.
        """
        if self.model is None:
            return ConstantVelocityForecaster(self.fallback)
        self.model.spec.check_frame_rate(frame_rate_fps, f"source {source!r}")
        forecaster = LearnedForecaster(self.model, self.fallback, adapt=self.adapt)
        self._learned.append(forecaster)
        return forecaster

    def counts(self) -> dict[str, int]:
        """Rows forecast by the model, by the fallback, and refused, over every stream."""
        total = ForecastCounts()
        for forecaster in self._learned:
            total.add(forecaster.counts)
        return total.as_dict()
