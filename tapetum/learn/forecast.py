"""Train the learned trajectory forecaster on MOTChallenge ground-truth tracks.

What is learned: from a track's last ``T`` resampled observations (centre and box height,
relative to the latest, in box heights: :func:`tapetum.track.forecast_model.history_features`)
a 2-D Gaussian of the centre at each of ``K`` future steps. The network is a small MLP with a
linear skip path for the mean (a linear map of the history already expresses constant
velocity, so the MLP only learns the correction). The covariance comes out as a Cholesky
factor ``L = [[a, 0], [b, c]]`` (``a, c > 0`` through ``exp``), so it is positive definite
by construction and the Gaussian negative log-likelihood is closed-form:

    z1 = rx / a,  z2 = (ry - b·z1) / c,  NLL = ½(z1² + z2²) + log a + log c + log 2π.

The data (every ``(track, frame)`` of the ground truth whose track has been observed for
``min_history_s``; targets interpolated at ``t0 + k·dt``, masked where the track ends or
has a gap longer than ``max_target_gap_s``) is built with numpy exactly as the online
forecaster builds its input, so training and inference see the same features. Tracks are
mirrored left-right at random (people walk both ways; a vertical flip would break
perspective).

About one track in ``validation_every`` is held out of training: its samples pick the best
epoch and fit the per-step covariance scale (:func:`tapetum.eval.forecast.fit_covariance_scale`)
that ships in the file's metadata.

Leave-one-sequence-out (:func:`leave_one_sequence_out`) trains one model per evaluated
sequence on all the other sequences and caches them by the hash of their recipe.

torch is imported only inside the training functions (the ``train`` extra).

Example:
    >>> from tapetum.eval import find_sequences, load_sequence
    >>> from tapetum.learn.forecast import ForecastTrainConfig, train_forecaster
    >>> seqs = [load_sequence(p) for p in find_sequences("MOT17/train")]  # doctest: +SKIP
    >>> result = train_forecaster(seqs, "forecaster.onnx", ForecastTrainConfig())  # doctest: +SKIP
    >>> result.spec.covariance_scale  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tapetum._optional import import_optional
from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray
from tapetum.errors import ConfigError, DatasetError, ModelLoadError
from tapetum.eval.forecast import (
    ForecasterFactory,
    ForecastEvalConfig,
    ForecastReport,
    default_forecasters,
    evaluate_forecasts,
    fit_covariance_scale,
    mahalanobis_sq,
)
from tapetum.eval.mot import MotSequence
from tapetum.track.forecast import Forecaster
from tapetum.track.forecast_blend import OnlineBlendConfig
from tapetum.track.forecast_model import (
    CONTEXT_FEATURES,
    CONTEXT_NAME,
    COV_NAME,
    FORECAST_METADATA_KEY,
    HISTORY_FEATURES,
    HISTORY_PADDINGS,
    INPUT_NAME,
    LOCAL_CONTEXT_FEATURES,
    MEAN_NAME,
    ForecastCounts,
    ForecastModelSpec,
    history_features,
    mixture,
    neighbour_context,
)

__all__ = [
    "ForecastTrainConfig",
    "HeldOutResult",
    "TrainResult",
    "TrajectorySamples",
    "build_samples",
    "combine_forecasters",
    "evaluate_held_out",
    "leave_one_sequence_out",
    "train_forecaster",
]

#: Bump when the network, features or training change: cached fold models are retrained.
RECIPE_VERSION = 3

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default log: say nothing."""


@dataclass(frozen=True, slots=True)
class ForecastTrainConfig:
    """How a forecaster is trained.

    Attributes:
        dt_s: time step of the history and horizon grids, seconds.
        history_steps: history points ``T`` (12 at 0.1 s: the last 1.1 s).
        horizon_steps: forecast steps ``K`` (20 at 0.1 s: up to 2 s).
        min_history_s: samples (and, online, forecasts) need a track observed this long;
            younger tracks are left to constant velocity.
        hidden: width of the MLP's hidden layers.
        layers: number of hidden layers.
        epochs: passes over the training samples (the best epoch on validation is kept).
        batch_size: samples per optimiser step.
        learning_rate: Adam's initial step size (cosine-decayed to 5 % over the epochs).
        weight_decay: AdamW weight decay.
        validation_every: one track in this many (by a hash of sequence and id) is held out
            for epoch selection and calibration.
        max_target_gap_s: a future position interpolated across a gap in the ground truth
            longer than this is not a target.
        buffer_length: observations per track window (as the online forecaster keeps).
        seed: initialisation, shuffling and flips.
        threads: torch CPU threads (1 leaves the other cores to the rest of the machine).
        context: the first network also reads the neighbour context (camera motion,
            crowd flow).
        context_neighbours: with a context, also pool the motion of this many nearest
            other tracks (0: the frame's median only).
        extra_members: more networks in the same file, each ``(context, drift_std_hps)``:
            an ensemble whose members a stream weighs by how well each did on it
            (:mod:`tapetum.track.forecast_blend`). The default adds a network that reads
            the context and is trained without the camera-pan augmentation: held out, it
            forecasts moving cameras best (it tells the camera's motion, which the
            context shows, from the person's) and still cameras worse than the first.
        drift_std_hps: standard deviation of the camera-pan augmentation, box heights per
            second (0: off); see ``_add_drift``.
        history_padding: how a young track's history is filled before its first
            observation (``"extrapolate"``: back at its mean velocity; held out, the
            networks then extrapolate young tracks as they do long-observed ones instead of
            reading the padded stretch as a standing start; ``"repeat"``: the first
            observation, as recipes before version 3 did).
    """

    dt_s: float = 0.1
    history_steps: int = 12
    horizon_steps: int = 20
    min_history_s: float = 0.2
    hidden: int = 128
    layers: int = 2
    epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_every: int = 8
    max_target_gap_s: float = 0.5
    buffer_length: int = 48
    seed: int = 0
    threads: int = 1
    context: bool = False
    context_neighbours: int = 0
    drift_std_hps: float = 1.0
    extra_members: tuple[tuple[bool, float], ...] = ((True, 0.0),)
    history_padding: str = "extrapolate"

    def __post_init__(self) -> None:
        if self.history_padding not in HISTORY_PADDINGS:
            raise ConfigError(
                f"history_padding must be one of {HISTORY_PADDINGS}, got {self.history_padding!r}"
            )
        if self.context_neighbours < 0 or (self.context_neighbours and not self.uses_context):
            raise ConfigError("context_neighbours must be >= 0 and needs a context")
        for member in self.extra_members:
            if len(member) != 2 or not (math.isfinite(member[1]) and member[1] >= 0):
                raise ConfigError(
                    f"extra_members are (context, drift_std_hps >= 0) pairs, got {member}"
                )
        if not (math.isfinite(self.drift_std_hps) and self.drift_std_hps >= 0):
            raise ConfigError(f"drift_std_hps must be >= 0, got {self.drift_std_hps}")
        ints = {
            "history_steps": (self.history_steps, 2),
            "horizon_steps": (self.horizon_steps, 1),
            "hidden": (self.hidden, 1),
            "layers": (self.layers, 1),
            "epochs": (self.epochs, 1),
            "batch_size": (self.batch_size, 1),
            "validation_every": (self.validation_every, 2),
            "threads": (self.threads, 1),
        }
        for name, (value, least) in ints.items():
            if value < least:
                raise ConfigError(f"{name} must be >= {least}, got {value}")
        for name in ("dt_s", "learning_rate", "max_target_gap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be positive, got {value}")
        if not 0 <= self.min_history_s <= (self.history_steps - 1) * self.dt_s:
            raise ConfigError(
                f"min_history_s must be within the history window "
                f"(0 … {(self.history_steps - 1) * self.dt_s:g} s), got {self.min_history_s}"
            )
        if self.buffer_length * 0.5 * self.dt_s < (self.history_steps - 1) * self.dt_s:
            raise ConfigError("buffer_length is too short to hold the history window")

    @property
    def uses_context(self) -> bool:
        """Whether any member reads the neighbour context (the file then takes it)."""
        return self.context or any(bool(c) for c, _ in self.extra_members)

    def members(self) -> list[ForecastTrainConfig]:
        """One single-network recipe per member: the first, then ``extra_members`` (same
        seed and data: a member trained alone with its recipe is the same network)."""
        out = [replace(self, extra_members=())]
        for context, drift in self.extra_members:
            out.append(
                replace(
                    self,
                    context=bool(context),
                    context_neighbours=self.context_neighbours if context else 0,
                    drift_std_hps=float(drift),
                    extra_members=(),
                )
            )
        return out

    def recipe(self) -> dict[str, Any]:
        """Everything that shapes a trained model (for cache keys and the file's metadata)."""
        recipe = asdict(self)
        recipe["extra_members"] = [list(m) for m in self.extra_members]
        return {"recipe_version": RECIPE_VERSION, **recipe}


@dataclass(frozen=True, slots=True)
class TrajectorySamples:
    """Training samples: one per (track, origin frame).

    Attributes:
        features: (N, T, 4) float32 model input (see ``history_features``).
        context: (N, T, C) float32 neighbour context (see ``neighbour_context``; zeros
            when the recipe has none).
        targets: (N, K, 2) float32 future offsets from the origin centre, box heights.
        target_valid: (N, K) bool, False where the ground truth does not say.
        validation: (N,) bool, True for samples of held-out tracks.
        sequence: (N,) int64 index of the sample's sequence in the list given.
        frame_rates_fps: frame rate of each sequence given.
    """

    features: Float32Array
    context: Float32Array
    targets: Float32Array
    target_valid: BoolArray
    validation: BoolArray
    sequence: IntArray
    frame_rates_fps: tuple[float, ...]

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def subset(self, mask: BoolArray) -> TrajectorySamples:
        return TrajectorySamples(
            self.features[mask],
            self.context[mask],
            self.targets[mask],
            self.target_valid[mask],
            self.validation[mask],
            self.sequence[mask],
            self.frame_rates_fps,
        )


def _track_windows(
    t: Float64Array, xy: Float64Array, h: Float64Array, origins: IntArray, length: int
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """The online buffer after each origin observation: (M, L) times (-inf padded),
    (M, L, 2) centres and (M, L) heights."""
    pad = length - 1
    t_pad = np.concatenate((np.full(pad, -np.inf), t))
    xy_pad = np.concatenate((np.repeat(xy[:1], pad, axis=0), xy))
    h_pad = np.concatenate((np.repeat(h[:1], pad), h))
    win = origins[:, None] + np.arange(length)[None, :]  # padded index of window slots
    return t_pad[win], xy_pad[win], h_pad[win]


def _track_targets(
    t: Float64Array,
    xy: Float64Array,
    origins: IntArray,
    heights: Float64Array,
    config: ForecastTrainConfig,
) -> tuple[Float64Array, BoolArray]:
    """Future offsets (M, K, 2) in box heights at ``t0 + k·dt`` and their validity (M, K)."""
    query = t[origins][:, None] + config.dt_s * np.arange(1, config.horizon_steps + 1)
    flat = query.reshape(-1)
    x = np.interp(flat, t, xy[:, 0]).reshape(query.shape)
    y = np.interp(flat, t, xy[:, 1]).reshape(query.shape)
    j = np.searchsorted(t, query - 1e-9, side="left")
    inside = j < len(t)
    j_in = np.minimum(j, len(t) - 1)
    exact = inside & (np.abs(t[j_in] - query) < 1e-9)
    gap = t[j_in] - t[np.maximum(j_in - 1, 0)]
    valid = inside & (exact | ((j_in > 0) & (gap <= config.max_target_gap_s + 1e-9)))
    h0 = heights[origins][:, None]
    offsets = np.stack(((x - xy[origins, 0, None]) / h0, (y - xy[origins, 1, None]) / h0), -1)
    return offsets, valid


def build_samples(
    sequences: Sequence[MotSequence], config: ForecastTrainConfig | None = None
) -> TrajectorySamples:
    """Every (track, frame) of the sequences' evaluated ground truth as a training sample.

    Raises:
        DatasetError: a sequence has no ground truth, or no track is long enough.
    """
    config = config or ForecastTrainConfig()
    parts = [_sequence_samples(seq, s_i, config) for s_i, seq in enumerate(sequences)]
    parts = [p for p in parts if p is not None]
    if not parts:
        raise DatasetError(
            f"no ground-truth track is observed for {config.min_history_s:g} s with a future "
            "to forecast: nothing to train on"
        )

    def joined(name: str) -> Any:
        return np.concatenate([getattr(p, name) for p in parts])

    return TrajectorySamples(
        features=joined("features"),
        context=joined("context"),
        targets=joined("targets"),
        target_valid=joined("target_valid"),
        validation=joined("validation"),
        sequence=joined("sequence"),
        frame_rates_fps=tuple(float(s.info.frame_rate_fps) for s in sequences),
    )


def _sequence_samples(
    seq: MotSequence, s_i: int, config: ForecastTrainConfig
) -> TrajectorySamples | None:
    gt = seq.gt
    if gt is None:
        raise DatasetError(f"sequence {seq.name} has no ground truth (gt/gt.txt)")
    keep = gt.evaluated
    frame, ids, tlwh = gt.frame[keep], gt.track_id[keep], gt.tlwh[keep]
    order = np.lexsort((frame, ids))  # by track, then time
    frame, ids, tlwh = frame[order], ids[order], tlwh[order]
    times = (frame - 1) / seq.info.frame_rate_fps
    centers = tlwh[:, :2] + 0.5 * tlwh[:, 2:]
    heights = np.maximum(tlwh[:, 3], 1.0)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    windows: list[tuple[Float64Array, Float64Array, Float64Array]] = []
    picked, targets, valids, held = [], [], [], []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        t, xy, h = times[a:b], centers[a:b], heights[a:b]
        # Every row is a neighbour of the others (context); rows with enough history and a
        # future are samples.
        windows.append(_track_windows(t, xy, h, np.arange(b - a), config.buffer_length))
        origins = np.flatnonzero(t - t[0] >= config.min_history_s - 1e-9)
        if origins.size == 0:
            continue
        offsets, valid = _track_targets(t, xy, origins, h, config)
        useful = valid.any(axis=1)
        picked.append(a + origins[useful])
        targets.append(offsets[useful].astype(np.float32))
        valids.append(valid[useful])
        fold = zlib.crc32(f"{seq.name}:{int(ids[a])}".encode()) % config.validation_every
        held.append(np.full(int(useful.sum()), fold == 0))
    rows = np.concatenate(picked) if picked else np.empty(0, np.int64)
    if rows.size == 0:
        return None
    t_w, xy_w, h_w = (np.concatenate([w[i] for w in windows]) for i in range(3))
    # The context pools every row of a frame; without it only the samples need features.
    wanted = np.arange(len(t_w)) if config.uses_context else rows
    chunks = [wanted[lo : lo + 16384] for lo in range(0, len(wanted), 16384)]
    computed = np.concatenate(
        [
            history_features(
                t_w[c],
                xy_w[c],
                h_w[c],
                config.dt_s,
                config.history_steps,
                padding=config.history_padding,
            )
            for c in chunks
        ]
    )
    if config.uses_context:
        features = computed[rows]
        context = _frame_context(computed, heights, centers, frame, rows, config.context_neighbours)
    else:
        features = computed
        context = np.zeros((len(rows), config.history_steps, CONTEXT_FEATURES), np.float32)
    return TrajectorySamples(
        features,
        context,
        np.concatenate(targets),
        np.concatenate(valids),
        np.concatenate(held),
        np.full(len(rows), s_i, np.int64),
        (float(seq.info.frame_rate_fps),),
    )


def _frame_context(  # noqa: PLR0917 - the columns of one table
    population: Float32Array,
    heights: Float64Array,
    centers: Float64Array,
    frame: IntArray,
    rows: IntArray,
    neighbours: int,
) -> Float32Array:
    """The neighbour context of each sample row, pooled over every row of its frame."""
    width = CONTEXT_FEATURES + (LOCAL_CONTEXT_FEATURES if neighbours else 0)
    out = np.zeros((len(rows), population.shape[1], width), np.float32)
    by_frame = np.argsort(frame, kind="stable")
    bounds = np.searchsorted(frame[by_frame], np.unique(frame))
    bounds = np.r_[bounds, len(frame)]
    sample_order = np.argsort(frame[rows], kind="stable")
    sample_frames = frame[rows][sample_order]
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        members = by_frame[lo:hi]
        f = frame[members[0]]
        s_lo, s_hi = np.searchsorted(sample_frames, [f, f + 1])
        if s_hi == s_lo:
            continue
        mine = sample_order[s_lo:s_hi]
        out[mine] = neighbour_context(
            population[members],
            heights[members],
            heights[rows[mine]],
            neighbours,
            centers[members],
            centers[rows[mine]],
            np.searchsorted(members, rows[mine]),  # members ascend: by_frame is stable
        )
    return out


# --------------------------------------------------------------------------- the network


def _network(torch: Any, config: ForecastTrainConfig) -> Any:
    """The forecaster network: history (N, T, 4) and context (N, T, 3) → mean (N, K, 2),
    log a, b, log c (N, K) (the context is ignored when the recipe has none)."""
    nn = torch.nn
    k = config.horizon_steps
    context_width = 0
    if config.context:
        context_width = CONTEXT_FEATURES + (
            LOCAL_CONTEXT_FEATURES if config.context_neighbours else 0
        )
    width = config.history_steps * (HISTORY_FEATURES + context_width)
    use_context = config.context

    class ForecastNet(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            layers: list[Any] = []
            d = width
            for _ in range(config.layers):
                layers += [nn.Linear(d, config.hidden), nn.GELU()]
                d = config.hidden
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(d, k * 5)
            self.skip = nn.Linear(width, k * 2)  # linear extrapolation (constant velocity)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

        def forward(self, history: Any, context: Any) -> tuple[Any, Any, Any, Any]:
            x = history.flatten(1)
            if use_context:
                x = torch.cat((x, context.flatten(1)), dim=1)
            out = self.head(self.body(x)).reshape(-1, k, 5)
            mean = out[..., :2] + self.skip(x).reshape(-1, k, 2)
            # Initial spread ~0.1 h (e^-2.3) so early NLL gradients are well scaled.
            log_a = (out[..., 2] - 2.3).clamp(-7.0, 3.0)
            log_c = (out[..., 4] - 2.3).clamp(-7.0, 3.0)
            return mean, log_a, out[..., 3] * 0.1, log_c

    return ForecastNet()


def _exportable(torch: Any, nets: list[Any], context: bool) -> Any:
    """Wrap the members to output the file's contract: mean (N, K, 2) and cov (N, K, 3),
    with a member axis after N where there are several."""

    class Exported(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.nets = torch.nn.ModuleList(nets)

        def forward(self, history: Any, *extra: Any) -> tuple[Any, Any]:
            means, covs = [], []
            for net in self.nets:
                mean, log_a, b, log_c = net(history, extra[0] if context else None)
                a, c = torch.exp(log_a), torch.exp(log_c)
                means.append(mean)
                covs.append(torch.stack((a * a, b * b + c * c, a * b), dim=-1))
            if len(means) == 1:
                return means[0], covs[0]
            return torch.stack(means, dim=1), torch.stack(covs, dim=1)

    return Exported()


def _nll(torch: Any, outputs: tuple[Any, Any, Any, Any], target: Any, valid: Any) -> Any:
    """Mean Gaussian NLL (constant dropped) over the valid (sample, step) cells."""
    mean, log_a, b, log_c = outputs
    r = target - mean
    z1 = r[..., 0] * torch.exp(-log_a)
    z2 = (r[..., 1] - b * z1) * torch.exp(-log_c)
    cell = 0.5 * (z1 * z1 + z2 * z2) + log_a + log_c
    w = valid.to(cell.dtype)
    return (cell * w).sum() / w.sum().clamp(min=1.0)


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What :func:`train_forecaster` wrote and measured.

    Attributes:
        path: the ONNX file.
        spec: its metadata (with the fitted covariance scale).
        train_samples: samples trained on (before mirroring).
        validation_samples: samples of the held-out tracks.
        best_epoch: the epoch kept (1-based).
        validation_nll: mean NLL per (sample, step) of the kept epoch, box heights (the
            constant log 2π dropped), before calibration.
        seconds: wall time of data building, training, calibration and export.
        history: the validation NLL after each epoch.
    """

    path: Path
    spec: ForecastModelSpec
    train_samples: int
    validation_samples: int
    best_epoch: int
    validation_nll: float
    seconds: float
    history: tuple[float, ...] = field(default=())


def train_forecaster(
    sequences: Sequence[MotSequence],
    out: str | Path,
    config: ForecastTrainConfig | None = None,
    log: Log = _quiet,
) -> TrainResult:
    """Train a forecaster on the ground-truth tracks of ``sequences`` and export it to ONNX.

    Args:
        sequences: MOTChallenge sequences with ground truth.
        out: the ``.onnx`` file to write (its folder is created).
        config: the recipe; defaults to :class:`ForecastTrainConfig`.
        log: called with one line per epoch and step.

    Returns:
        Where the file is and how training went.

    Raises:
        MissingDependencyError: torch is not installed (``pip install 'tapetum[train]'``).
        DatasetError: no usable ground truth.
    """
    torch = import_optional("torch", "train", "training a forecaster")
    config = config or ForecastTrainConfig()
    started = time.perf_counter()
    samples = build_samples(sequences, config)
    train, val = samples.subset(~samples.validation), samples.subset(samples.validation)
    if len(val) == 0 or len(train) == 0:
        raise DatasetError(
            f"{len(train)} training and {len(val)} validation samples: "
            "give more tracks (or a smaller validation_every)"
        )
    built_s = time.perf_counter() - started
    log(f"{len(train)} training, {len(val)} validation samples ({built_s:.1f} s)")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        members = config.members()
        nets, fits = [], []
        for i, member in enumerate(members, start=1):
            if len(members) > 1:
                log(
                    f"member {i}/{len(members)}: context {member.context}, camera-pan "
                    f"augmentation {member.drift_std_hps:g} box heights/s"
                )
            net, best_epoch, best_nll, history = _fit(torch, train, val, member, log)
            nets.append(net)
            fits.append({"best_epoch": best_epoch, "validation_nll": round(best_nll, 4)})
        best_epoch, best_nll = int(fits[0]["best_epoch"]), float(fits[0]["validation_nll"])
        scales = _calibrate(torch, nets, val, config)
        log("covariance scale per step: " + " ".join(f"{s:.2f}" for s in scales))
        spec = ForecastModelSpec(
            dt_s=config.dt_s,
            history_steps=config.history_steps,
            horizon_steps=config.horizon_steps,
            min_history_s=config.min_history_s,
            # A source is refused below the slowest training rate, but one at the grid rate
            # (1 / dt) or faster always has an observation per grid step.
            min_frame_rate_fps=min(*samples.frame_rates_fps, 1.0 / config.dt_s),
            covariance_scale=tuple(round(s, 4) for s in scales),
            context=config.uses_context,
            context_neighbours=config.context_neighbours,
            members=len(members),
            history_padding=config.history_padding,
            info={
                "trained_on": [s.name for s in sequences],
                "recipe": config.recipe(),
                "train_samples": len(train),
                "validation_samples": len(val),
                "best_epoch": best_epoch,
                "validation_nll": round(best_nll, 4),
                "members": fits,
                "train_seconds": round(time.perf_counter() - started, 1),
            },
        )
        path = _export(torch, nets, spec, Path(out), val.subset(np.arange(len(val)) < 64))
    finally:
        torch.set_num_threads(previous_threads)
    seconds = time.perf_counter() - started
    log(f"wrote {path} in {seconds:.1f} s")
    return TrainResult(path, spec, len(train), len(val), best_epoch, best_nll, seconds, history)


def _fit(
    torch: Any,
    train: TrajectorySamples,
    val: TrajectorySamples,
    config: ForecastTrainConfig,
    log: Log,
) -> tuple[Any, int, float, tuple[float, ...]]:
    """Train with AdamW + cosine decay; keep the epoch with the lowest validation NLL."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = _network(torch, config)
    x = torch.from_numpy(train.features)
    ctx = torch.from_numpy(train.context)
    y = torch.from_numpy(train.targets)
    m = torch.from_numpy(train.target_valid)
    steps_per_epoch = max(1, math.ceil(len(train) / config.batch_size))
    optimiser = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=config.epochs * steps_per_epoch, eta_min=0.05 * config.learning_rate
    )
    best: tuple[float, int, dict[str, Any]] = (math.inf, 0, {})
    history: list[float] = []
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        order = torch.from_numpy(rng.permutation(len(train)))
        total = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * config.batch_size : (i + 1) * config.batch_size]
            xb, cb, yb = x[idx].clone(), ctx[idx].clone(), y[idx].clone()
            # Mirror half the batch left-right: x offsets change sign.
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            for tensor in (xb, cb, yb):
                tensor[flip, :, 0] = -tensor[flip, :, 0]
            if cb.shape[2] > CONTEXT_FEATURES:  # the local context's dx
                cb[flip, :, 3] = -cb[flip, :, 3]
            if config.drift_std_hps > 0:
                _add_drift(torch, (xb, cb, yb), rng, config)
            loss = _nll(torch, net(xb, cb), yb, m[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach())
        val_nll = _validation_nll(torch, net, val)
        history.append(val_nll)
        log(
            f"epoch {epoch}/{config.epochs}: train NLL {total / steps_per_epoch:.4f}, "
            f"validation NLL {val_nll:.4f} ({time.perf_counter() - t0:.1f} s)"
        )
        if val_nll < best[0]:
            best = (val_nll, epoch, {k: v.clone() for k, v in net.state_dict().items()})
    net.load_state_dict(best[2])
    net.eval()
    return net, best[1], best[0], tuple(history)


def _add_drift(
    torch: Any, batch: tuple[Any, Any, Any], rng: np.random.Generator, config: ForecastTrainConfig
) -> None:
    """Add a random constant image velocity to half the samples, past and future alike, as
    a panning camera would (in place).

    The ground truth is mostly filmed by still cameras at walking speeds, where a fast
    apparent motion is often jitter that does not last; without this a model learns to damp
    every fast track and fails when the camera pans (everyone moves fast, and keeps moving).
    A pan shifts every track by the same pixels, so the neighbour context shifts with it.
    """
    history, context, target = batch
    n = history.shape[0]
    drift = rng.normal(0.0, config.drift_std_hps, (n, 2)) * (rng.random((n, 1)) < 0.5)
    u = torch.from_numpy(drift.astype(np.float32))[:, None, :]  # (N, 1, 2) box heights / s
    lag = config.dt_s * torch.arange(config.history_steps, dtype=torch.float32)  # (T,)
    if config.history_padding == "extrapolate":
        # steps before a track's first observation continue its mean velocity, which the
        # pan changes like any other: every step moves with its own lag
        lag_used = lag.expand(n, -1)
    else:
        # steps before a track's first observation repeat it: they move with its oldest lag
        observed = history[..., 3] > 0.5
        oldest = (observed * lag).amax(dim=1, keepdim=True)  # (N, 1)
        lag_used = torch.where(observed, lag, oldest)
    history[..., :2] -= u * lag_used[..., None]
    seen = context[..., 2:3] > 0  # steps where some track was observed
    shift = u * lag[None, :, None] * seen
    context[..., :2] -= shift
    if context.shape[2] > CONTEXT_FEATURES:  # the nearest tracks moved with the camera too
        context[..., 3:5] -= shift
    ahead = config.dt_s * torch.arange(1, config.horizon_steps + 1, dtype=torch.float32)
    target += u * ahead[None, :, None]


def _predict(torch: Any, net: Any, samples: TrajectorySamples) -> tuple[Any, Any, Any, Any]:
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(samples.features), torch.from_numpy(samples.context))  # type: ignore[no-any-return]


def _validation_nll(torch: Any, net: Any, val: TrajectorySamples) -> float:
    out = _predict(torch, net, val)
    with torch.no_grad():
        nll = _nll(torch, out, torch.from_numpy(val.targets), torch.from_numpy(val.target_valid))
    return float(nll)


def _calibrate(
    torch: Any, nets: list[Any], val: TrajectorySamples, config: ForecastTrainConfig
) -> list[float]:
    """Per-step covariance scale of the members' mixture fitted on the validation tracks
    (1.0 where no sample)."""
    means, covs = [], []
    for net in nets:
        mean, log_a, b, log_c = (t.numpy().astype(np.float64) for t in _predict(torch, net, val))
        a, c = np.exp(log_a), np.exp(log_c)
        means.append(mean)
        covs.append(np.stack((a * a, b * b + c * c, a * b), axis=-1))
    mean, flat = mixture(np.stack(means, axis=1), np.stack(covs, axis=1))
    cov = np.empty((*flat.shape[:-1], 2, 2))
    cov[..., 0, 0], cov[..., 1, 1] = flat[..., 0], flat[..., 1]
    cov[..., 0, 1] = cov[..., 1, 0] = flat[..., 2]
    d2: Float64Array = mahalanobis_sq(val.targets.astype(np.float64) - mean, cov)
    return [
        fit_covariance_scale(d2[val.target_valid[:, k], k]) for k in range(config.horizon_steps)
    ]


def _export(
    torch: Any, nets: list[Any], spec: ForecastModelSpec, out: Path, probe: TrajectorySamples
) -> Path:
    """Write the ONNX file with Tapetum's metadata and check it against torch on ``probe``."""
    import onnx

    from tapetum.track.forecast_model import load_forecast_model

    out.parent.mkdir(parents=True, exist_ok=True)
    exported = _exportable(torch, nets, spec.context).eval()
    inputs: tuple[Any, ...] = (torch.from_numpy(probe.features),)
    names = [INPUT_NAME]
    if spec.context:
        inputs += (torch.from_numpy(probe.context),)
        names.append(CONTEXT_NAME)
    tmp = out.with_name(out.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            exported,
            inputs,
            str(tmp),
            input_names=names,
            output_names=[MEAN_NAME, COV_NAME],
            dynamic_axes={name: {0: "tracks"} for name in [*names, MEAN_NAME, COV_NAME]},
            opset_version=17,
            dynamo=False,
        )
    model = onnx.load(str(tmp))
    model.doc_string = "Tapetum learned trajectory forecaster (tapetum train forecast)"
    entry = model.metadata_props.add()
    entry.key, entry.value = FORECAST_METADATA_KEY, spec.to_json()
    onnx.save(model, str(tmp))
    # Parity: the file must say what the network says (the calibration scale aside).
    loaded = load_forecast_model(tmp)
    with torch.no_grad():
        want_mean, want_cov = (t.numpy() for t in exported(*inputs))
    got_means, _, got_cov = loaded.run_members(
        probe.features, probe.context if spec.context else None
    )
    got_cov = got_cov / np.square(spec.scales)[None, :, None]
    if spec.members == 1:
        want_mean, want_cov = want_mean[:, None], want_cov[:, None]
    _, want_mixed = mixture(want_mean.astype(np.float64), want_cov.astype(np.float64))
    if not (
        np.allclose(got_means, want_mean, atol=1e-4, rtol=1e-4)
        and np.allclose(got_cov, want_mixed, atol=1e-5, rtol=1e-3)
    ):
        tmp.unlink(missing_ok=True)
        raise ModelLoadError(
            f"the exported forecaster disagrees with the trained network (ONNX export of "
            f"{out.name}); nothing was written"
        )
    tmp.replace(out)
    return out


def combine_forecasters(
    members: Sequence[str | Path],
    out: str | Path,
    sequences: Sequence[MotSequence],
    config: ForecastTrainConfig | None = None,
) -> ForecastModelSpec:
    """One ensemble file from forecaster files trained separately, each on ``sequences``
    with one of ``config.members()`` (e.g. in parallel on another machine): the same file
    :func:`train_forecaster` writes for ``config``, whose covariance scale is fitted on the
    members' mixture over the same validation tracks.

    Raises:
        ModelLoadError: the files do not share one grid, or are not ``config``'s members.
    """
    import onnx

    from tapetum.track.forecast_model import load_forecast_model

    config = config or ForecastTrainConfig()
    loaded = [load_forecast_model(path) for path in members]
    recipes = config.members()
    if len(loaded) != len(recipes):
        raise ModelLoadError(f"the recipe has {len(recipes)} members; got {len(loaded)} files")
    for model, recipe in zip(loaded, recipes, strict=True):
        spec, wanted = model.spec, recipe.recipe()
        got = dict(spec.info.get("recipe") or {})
        if spec.members != 1 or any(
            got.get(k) != v for k, v in wanted.items() if k != "extra_members"
        ):
            raise ModelLoadError(f"{model.path.name} was not trained with member recipe {wanted}")
    samples = build_samples(sequences, config)
    val = samples.subset(samples.validation)
    raw = [_raw_outputs(model, val) for model in loaded]
    mean, flat = mixture(np.stack([r[0] for r in raw], 1), np.stack([r[1] for r in raw], 1))
    cov = np.empty((*flat.shape[:-1], 2, 2))
    cov[..., 0, 0], cov[..., 1, 1] = flat[..., 0], flat[..., 1]
    cov[..., 0, 1] = cov[..., 1, 0] = flat[..., 2]
    d2 = mahalanobis_sq(val.targets.astype(np.float64) - mean, cov)
    scales = [fit_covariance_scale(d2[val.target_valid[:, k], k]) for k in range(d2.shape[1])]
    first = loaded[0].spec
    spec = ForecastModelSpec(
        dt_s=first.dt_s,
        history_steps=first.history_steps,
        horizon_steps=first.horizon_steps,
        min_history_s=first.min_history_s,
        min_frame_rate_fps=min(m.spec.min_frame_rate_fps for m in loaded),
        covariance_scale=tuple(round(x, 4) for x in scales),
        context=config.uses_context,
        context_neighbours=config.context_neighbours,
        members=len(loaded),
        history_padding=first.history_padding,
        info={
            "trained_on": [s.name for s in sequences],
            "recipe": config.recipe(),
            "train_samples": int((~samples.validation).sum()),
            "validation_samples": len(val),
            "best_epoch": first.info.get("best_epoch"),
            "validation_nll": first.info.get("validation_nll"),
            "members": [
                {k: m.spec.info.get(k) for k in ("best_epoch", "validation_nll")} for m in loaded
            ],
            "train_seconds": round(
                sum(float(m.spec.info.get("train_seconds", 0)) for m in loaded), 1
            ),
            "combined_from": [Path(m.path).name for m in loaded],
        },
    )
    graphs = [onnx.load(str(m.path)) for m in loaded]
    combined = _stack_graphs(graphs, spec)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    onnx.save(combined, str(tmp))
    check = load_forecast_model(tmp)
    got_means, _, _ = check.run_members(
        val.features[:64], val.context[:64] if spec.context else None
    )
    want = np.stack([r[0][:64] for r in raw], axis=1)
    if not np.allclose(got_means, want, atol=1e-4, rtol=1e-4):
        tmp.unlink(missing_ok=True)
        raise ModelLoadError(f"the combined forecaster disagrees with its members ({target.name})")
    tmp.replace(target)
    return spec


def _raw_outputs(model: Any, samples: TrajectorySamples) -> tuple[Float64Array, Float64Array]:
    """A one-network file's mean (N, K, 2) and covariance (N, K, 3) before its own scale."""
    mean, cov = model.run(samples.features, samples.context if model.spec.context else None)
    return mean, cov / np.square(model.spec.scales)[None, :, None]


def _stack_graphs(graphs: list[Any], spec: ForecastModelSpec) -> Any:
    """One ONNX graph running every member on the shared inputs, outputs stacked on axis 1."""
    import onnx
    from onnx import helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = [numpy_helper.from_array(np.array([1], np.int64), "member_axis")]
    inputs: dict[str, Any] = {}
    stacked: dict[str, list[str]] = {MEAN_NAME: [], COV_NAME: []}
    for i, model in enumerate(graphs):
        prefix = f"m{i}_"
        graph = onnx.compose.add_prefix_graph(
            model.graph, prefix, rename_inputs=False, rename_outputs=True
        )
        nodes.extend(graph.node)
        inits.extend(graph.initializer)
        for value in graph.input:
            inputs.setdefault(value.name, value)
        for name in (MEAN_NAME, COV_NAME):
            out = f"{prefix}{name}_member"
            nodes.append(helper.make_node("Unsqueeze", [prefix + name, "member_axis"], [out]))
            stacked[name].append(out)
    for name, parts in stacked.items():
        nodes.append(helper.make_node("Concat", parts, [name], axis=1))
    outputs = [
        helper.make_tensor_value_info(
            MEAN_NAME, onnx.TensorProto.FLOAT, ["tracks", spec.members, spec.horizon_steps, 2]
        ),
        helper.make_tensor_value_info(
            COV_NAME, onnx.TensorProto.FLOAT, ["tracks", spec.members, spec.horizon_steps, 3]
        ),
    ]
    order = [INPUT_NAME, CONTEXT_NAME]
    graph = helper.make_graph(
        nodes,
        "tapetum_forecast_ensemble",
        [inputs[n] for n in order if n in inputs],
        outputs,
        inits,
    )
    combined = helper.make_model(graph, opset_imports=list(graphs[0].opset_import))
    combined.ir_version = graphs[0].ir_version
    combined.doc_string = "Tapetum learned trajectory forecaster (an ensemble of members)"
    entry = combined.metadata_props.add()
    entry.key, entry.value = FORECAST_METADATA_KEY, spec.to_json()
    return combined


# --------------------------------------------------------------------- leave one out


def recipe_key(config: ForecastTrainConfig, training: Sequence[MotSequence]) -> str:
    """Short hash of a training run's recipe and data (cache key of a fold model)."""
    payload = {
        "recipe": config.recipe(),
        "sequences": sorted(
            (s.name, len(s.gt) if s.gt is not None else 0, s.info.frame_rate_fps) for s in training
        ),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def leave_one_sequence_out(
    evaluated: Sequence[MotSequence],
    cache_dir: str | Path,
    config: ForecastTrainConfig | None = None,
    train_only: Sequence[MotSequence] = (),
    log: Log = _quiet,
) -> dict[str, Path]:
    """One model per evaluated sequence, trained on every other sequence given.

    Args:
        evaluated: the sequences to hold out one at a time.
        cache_dir: fold models are kept here, named by sequence and recipe hash; a model
            already there is reused.
        config: the training recipe.
        train_only: sequences that always train and are never held out (e.g. MOT20).
        log: progress lines.

    Returns:
        Sequence name → the fold model that never saw it.
    """
    config = config or ForecastTrainConfig()
    names = [s.name for s in evaluated]
    if len(set(names)) != len(names):
        raise ConfigError(f"sequence names repeat: {names}")
    cache = Path(cache_dir)
    folds: dict[str, Path] = {}
    for held in evaluated:
        training = [s for s in evaluated if s.name != held.name] + list(train_only)
        if not training:
            raise ConfigError("leave-one-sequence-out needs at least two sequences")
        path = cache / f"forecast-{held.name}-{recipe_key(config, training)}.onnx"
        if not path.is_file():
            log(f"fold {held.name}: training on {len(training)} other sequences")
            train_forecaster(training, path, config, log=lambda line: log(f"  {line}"))
        else:
            log(f"fold {held.name}: cached {path.name}")
        folds[held.name] = path
    return folds


@dataclass(frozen=True, slots=True)
class HeldOutResult:
    """Leave-one-sequence-out scores (see :func:`evaluate_held_out`).

    Attributes:
        report: every forecaster × sequence (and pooled) × horizon.
        folds: sequence name → the fold model scored on it.
        counts: sequence name → what the learned forecaster did with its rows (model vs
            constant-velocity fallback).
    """

    report: ForecastReport
    folds: dict[str, Path]
    counts: dict[str, ForecastCounts]


def evaluate_held_out(
    evaluated: Sequence[MotSequence],
    cache_dir: str | Path,
    *,
    train_config: ForecastTrainConfig | None = None,
    eval_config: ForecastEvalConfig | None = None,
    train_only: Sequence[MotSequence] = (),
    baselines: Mapping[str, ForecasterFactory] | None = None,
    name: str = "learned",
    adapt: OnlineBlendConfig | None = OnlineBlendConfig(),  # noqa: B008 - frozen
    log: Log = _quiet,
) -> HeldOutResult:
    """Train (or reuse) one fold model per sequence and score it on that sequence only,
    beside the baselines (default: constant velocity and constant acceleration); each
    sequence is one stream, with its own online blend and calibration (``adapt``; None:
    the fold model's forecasts as they are).

    Raises:
        ConfigError: a held-out sequence's frame rate is below what its fold model saw.
    """
    from tapetum.track.forecast_model import LearnedForecaster, load_forecast_model

    folds = leave_one_sequence_out(evaluated, cache_dir, train_config, train_only, log)
    models = {seq: load_forecast_model(path) for seq, path in folds.items()}
    for seq in evaluated:
        models[seq.name].spec.check_frame_rate(seq.info.frame_rate_fps, seq.name)
    counts: dict[str, ForecastCounts] = {}

    def fold_forecaster(seq: MotSequence) -> Forecaster:
        forecaster = LearnedForecaster(models[seq.name], adapt=adapt)
        counts[seq.name] = forecaster.counts
        return forecaster

    report = evaluate_forecasts(
        evaluated,
        default_forecasters() if baselines is None else baselines,
        eval_config,
        per_sequence={name: fold_forecaster},
    )
    return HeldOutResult(report, folds, counts)
