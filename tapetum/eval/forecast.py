"""Trajectory-forecast accuracy (ADE/FDE) on MOTChallenge ground-truth tracks.

Each evaluated ground-truth track (pedestrian, ``consider == 1``) is fed to a forecaster frame
by frame, as a perfect tracker would; after every frame the forecaster predicts each visible
track's centre at every frame up to the longest horizon. For a horizon ``h``:

* a sample is one (track, frame) whose ground truth exists at **every** frame of the next
  ``h`` seconds (so ADE and FDE at ``h`` share one sample set) and that has been observed
  for at least ``min_history_s``;
* **ADE** is the mean over samples of the mean centre displacement over the frames
  ``1 .. round(h · fps)`` ahead; **FDE** the mean displacement at the last of them;
* both in pixels, and normalised by the box height at the forecast's origin (``*_norm``,
  "box heights"), so sequences of different resolution and depth combine fairly;
* **miss rate**: the share of samples whose FDE exceeds ``miss_threshold_norm`` box heights;
* **calibration** at the horizon's last frame: the share of true positions inside the
  forecast's 1- and 2-sigma ellipses (a calibrated 2-D Gaussian holds 39.3 % and 86.5 %)
  and the mean negative log-likelihood of the true position in box-height units (nats;
  lower is better, it punishes both over- and under-confident ellipses).

Combined scores pool the samples of all sequences (each sample weighs the same). A learned
forecaster is scored leave-one-sequence-out: ``per_sequence`` gives each sequence a model
that never saw its tracks (:func:`tapetum.learn.forecast.leave_one_sequence_out`).

The loop runs over frames only; tracks, future frames and horizons are array axes.

Example:
    >>> from tapetum.eval.forecast import evaluate_forecasts, default_forecasters
    >>> from tapetum.eval import load_sequence
    >>> seq = load_sequence("MOT17/train/MOT17-09-FRCNN")  # doctest: +SKIP
    >>> report = evaluate_forecasts([seq], default_forecasters())  # doctest: +SKIP
    >>> report.get("cv", "COMBINED", 1.0).fde_px  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tapetum._types import Float64Array
from tapetum.errors import ConfigError
from tapetum.eval.mot import MotSequence
from tapetum.track.forecast import (
    ConstantAccelerationForecaster,
    ConstantVelocityForecaster,
    Forecaster,
)
from tapetum.track.forecast_blend import fit_coverage_scale

#: Name of the pooled row in a :class:`ForecastReport`.
COMBINED = "COMBINED"

ForecasterFactory = Callable[[], Forecaster]
#: A forecaster for one sequence (a fold model that did not train on it).
SequenceForecasterFactory = Callable[[MotSequence], Forecaster]

#: Probability inside the 1- and 2-sigma ellipses of a 2-D Gaussian: 1 - exp(-n²/2).
EXPECTED_COVERAGE_1SIGMA = 1.0 - math.exp(-0.5)
EXPECTED_COVERAGE_2SIGMA = 1.0 - math.exp(-2.0)


def default_forecasters() -> dict[str, ForecasterFactory]:
    """The built-in forecasters with default settings: ``"cv"`` and ``"ca"``."""
    return {"cv": ConstantVelocityForecaster, "ca": ConstantAccelerationForecaster}


@dataclass(frozen=True, slots=True)
class ForecastEvalConfig:
    """How forecasts are scored.

    Attributes:
        horizons_s: horizons scored, seconds (each rounded to whole frames of the sequence).
        min_history_s: a (track, frame) is scored only once the track has been observed
            this long (the filter needs a few frames to estimate velocity).
        track_stride: keep every ``track_stride``-th ground-truth track (by sorted id), to
            evaluate quickly on a subset; 1 keeps all.
        observation_noise_std_per_height: Gaussian noise added to the observed centres, in
            box heights (0: clean ground truth; ~0.05 mimics detector jitter). Errors are
            always measured against the clean ground truth.
        seed: seed of that noise.
        miss_threshold_norm: a forecast whose final displacement exceeds this many box
            heights is a miss (0.5 h: about 0.85 m for a 1.7 m pedestrian).
    """

    horizons_s: tuple[float, ...] = (1.0, 2.0)
    min_history_s: float = 0.5
    track_stride: int = 1
    observation_noise_std_per_height: float = 0.0
    seed: int = 0
    miss_threshold_norm: float = 0.5

    def __post_init__(self) -> None:
        if not self.horizons_s or any(not (h > 0 and np.isfinite(h)) for h in self.horizons_s):
            raise ConfigError(f"horizons_s must be positive seconds, got {self.horizons_s}")
        if self.min_history_s < 0 or self.observation_noise_std_per_height < 0:
            raise ConfigError("min_history_s and observation_noise_std_per_height must be >= 0")
        if self.track_stride < 1:
            raise ConfigError(f"track_stride must be >= 1, got {self.track_stride}")
        if not (self.miss_threshold_norm > 0 and np.isfinite(self.miss_threshold_norm)):
            raise ConfigError(
                f"miss_threshold_norm must be positive box heights, got {self.miss_threshold_norm}"
            )


@dataclass(frozen=True, slots=True)
class ForecastScores:
    """Displacement errors of one forecaster on one sequence (or pooled) at one horizon.

    Attributes:
        forecaster: forecaster name.
        sequence: sequence name, or ``COMBINED``.
        horizon_s: the horizon asked for, seconds.
        ade_px: average displacement error, pixels (NaN without samples).
        fde_px: final displacement error at the horizon, pixels.
        ade_norm: ADE in box heights.
        fde_norm: FDE in box heights.
        miss_rate: share of samples with FDE above the config's ``miss_threshold_norm``.
        coverage_1sigma: share of true final positions inside the forecaster's 39 % region
            (calibrated: 0.393): the 1-sigma ellipse, unless the forecaster reports its own
            radius (``Forecast.inner_sigma``).
        coverage_2sigma: the same for the 2-sigma ellipse (calibrated: 0.865).
        nll: mean negative log-likelihood of the true final position under the forecast's
            Gaussian, in box-height units (nats; inf when a covariance is singular).
        samples: number of (track, frame) forecasts scored.
        coverage_1sigma_ellipse: share inside the plain 1-sigma ellipse (equals
            ``coverage_1sigma`` for forecasters that report no 39 % radius).
    """

    forecaster: str
    sequence: str
    horizon_s: float
    ade_px: float
    fde_px: float
    ade_norm: float
    fde_norm: float
    miss_rate: float
    coverage_1sigma: float
    coverage_2sigma: float
    nll: float
    samples: int
    coverage_1sigma_ellipse: float = float("nan")

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "coverage_1sigma_ellipse": self.coverage_1sigma_ellipse,
            "ade_px": self.ade_px,
            "fde_px": self.fde_px,
            "ade_norm": self.ade_norm,
            "fde_norm": self.fde_norm,
            "miss_rate": self.miss_rate,
            "coverage_1sigma": self.coverage_1sigma,
            "coverage_2sigma": self.coverage_2sigma,
            "nll": self.nll,
            "samples": self.samples,
        }


@dataclass(frozen=True, slots=True)
class ForecastReport:
    """Scores for every forecaster × (sequence and ``COMBINED``) × horizon."""

    scores: tuple[ForecastScores, ...]
    config: ForecastEvalConfig = field(default_factory=ForecastEvalConfig)

    def get(self, forecaster: str, sequence: str, horizon_s: float) -> ForecastScores:
        """One row; raises KeyError when absent."""
        for s in self.scores:
            if s.forecaster == forecaster and s.sequence == sequence and s.horizon_s == horizon_s:
                return s
        raise KeyError((forecaster, sequence, horizon_s))

    def as_dict(self) -> dict[str, dict[str, dict[str, dict[str, float | int | str]]]]:
        """``{forecaster: {sequence: {"1.0": scores}}}``, JSON-ready."""
        out: dict[str, dict[str, dict[str, dict[str, float | int | str]]]] = {}
        for s in self.scores:
            per_seq = out.setdefault(s.forecaster, {}).setdefault(s.sequence, {})
            per_seq[f"{s.horizon_s:g}"] = s.as_dict()
        return out

    def format_table(self) -> str:
        """A fixed-width text table, one row per score."""
        head = (
            f"{'forecaster':<10} {'sequence':<16} {'h_s':>4} {'ADE_px':>8} {'FDE_px':>8} "
            f"{'ADE/h':>7} {'FDE/h':>7} {'miss':>6} {'cov1':>6} {'cov2':>6} {'NLL':>7} "
            f"{'samples':>8}"
        )
        lines = [head, "-" * len(head)]
        for s in self.scores:
            lines.append(
                f"{s.forecaster:<10} {s.sequence:<16} {s.horizon_s:>4.1f} {s.ade_px:>8.2f} "
                f"{s.fde_px:>8.2f} {s.ade_norm:>7.3f} {s.fde_norm:>7.3f} {s.miss_rate:>6.3f} "
                f"{s.coverage_1sigma:>6.3f} {s.coverage_2sigma:>6.3f} {s.nll:>7.3f} "
                f"{s.samples:>8d}"
            )
        lines.append(
            f"cov1/cov2: share inside the 1/2-sigma ellipses (calibrated "
            f"{EXPECTED_COVERAGE_1SIGMA:.3f}/{EXPECTED_COVERAGE_2SIGMA:.3f}); "
            f"miss: FDE > {self.config.miss_threshold_norm:g} box heights; NLL in box heights"
        )
        return "\n".join(lines)


def mahalanobis_sq(error: Float64Array, cov: Float64Array) -> Float64Array:
    """Squared Mahalanobis distances of 2-D errors under 2x2 covariances.

    Args:
        error: (..., 2) true minus predicted position.
        cov: (..., 2, 2) symmetric covariances.

    Returns:
        (...) ``eᵀ Σ⁻¹ e``; inf where the covariance is singular or not finite (and the error
        is not zero).
    """
    a, b, c = cov[..., 0, 0], cov[..., 1, 1], cov[..., 0, 1]
    ex, ey = error[..., 0], error[..., 1]
    det = a * b - c * c
    ok = np.isfinite(det) & (det > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d2 = (b * ex * ex - 2.0 * c * ex * ey + a * ey * ey) / np.where(ok, det, 1.0)
    out: Float64Array = np.where(ok, d2, np.inf)
    return out


def gaussian_nll(error: Float64Array, cov: Float64Array) -> Float64Array:
    """Negative log-density (nats) of 2-D errors under zero-mean Gaussians: (...)."""
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        log_det = np.where(det > 0, np.log(np.where(det > 0, det, 1.0)), np.inf)
    out: Float64Array = 0.5 * mahalanobis_sq(error, cov) + math.log(2 * math.pi) + 0.5 * log_det
    return out


def ellipse_coverage(d2: Float64Array, n_sigma: float) -> float:
    """Share of squared Mahalanobis distances inside the ``n_sigma`` ellipse (NaN if empty)."""
    return float(np.mean(d2 <= n_sigma * n_sigma)) if d2.size else float("nan")


def fit_covariance_scale(d2: Float64Array) -> float:
    """The standard-deviation multiplier that best calibrates a set of forecasts: the one
    that brings their 1- and 2-sigma coverage closest to a 2-D Gaussian's (39.3 %, 86.5 %);
    see :func:`tapetum.track.forecast_blend.fit_coverage_scale`, which streams use online.

    Args:
        d2: (M,) squared Mahalanobis distances of validation forecasts (inf allowed).

    Returns:
        The multiplier ``s`` (1.0 when ``d2`` is empty).
    """
    return fit_coverage_scale(d2)


@dataclass(slots=True)
class _Sums:
    """Running sums for one forecaster × sequence × horizon."""

    ade_px: float = 0.0
    fde_px: float = 0.0
    ade_norm: float = 0.0
    fde_norm: float = 0.0
    misses: int = 0
    inside_1sigma: int = 0
    inside_2sigma: int = 0
    nll: float = 0.0
    samples: int = 0
    inside_1sigma_ellipse: int = 0

    def add(self, other: _Sums) -> None:
        self.ade_px += other.ade_px
        self.fde_px += other.fde_px
        self.ade_norm += other.ade_norm
        self.fde_norm += other.fde_norm
        self.misses += other.misses
        self.inside_1sigma += other.inside_1sigma
        self.inside_2sigma += other.inside_2sigma
        self.nll += other.nll
        self.samples += other.samples
        self.inside_1sigma_ellipse += other.inside_1sigma_ellipse

    def scores(self, forecaster: str, sequence: str, horizon_s: float) -> ForecastScores:
        n = self.samples

        def mean(v: float) -> float:
            return v / n if n else float("nan")

        return ForecastScores(
            forecaster,
            sequence,
            horizon_s,
            mean(self.ade_px),
            mean(self.fde_px),
            mean(self.ade_norm),
            mean(self.fde_norm),
            mean(self.misses),
            mean(self.inside_1sigma),
            mean(self.inside_2sigma),
            mean(self.nll),
            n,
            mean(self.inside_1sigma_ellipse),
        )


def _evaluate_sequence(
    seq: MotSequence,
    factory: SequenceForecasterFactory,
    config: ForecastEvalConfig,
    calibration: list[list[Float64Array]] | None = None,
) -> list[_Sums]:
    """Sums per horizon of one forecaster on one sequence (and, into ``calibration``, per
    horizon the (M, 2) squared Mahalanobis distance and NLL of every sample)."""
    gt = seq.gt
    if gt is None:
        raise ConfigError(f"sequence {seq.name} has no ground truth (gt/gt.txt)")
    fps = seq.info.frame_rate_fps
    length = seq.info.length_frames
    keep = gt.evaluated
    frame, track_id, tlwh = gt.frame[keep], gt.track_id[keep], gt.tlwh[keep]
    uniq, track_index = np.unique(track_id, return_inverse=True)
    if config.track_stride > 1:
        sub = track_index % config.track_stride == 0
        frame, track_id, tlwh = frame[sub], track_id[sub], tlwh[sub]
        uniq, track_index = np.unique(track_id, return_inverse=True)
    center = tlwh[:, :2] + 0.5 * tlwh[:, 2:]
    height = tlwh[:, 3]
    observed = center
    if config.observation_noise_std_per_height > 0:
        rng = np.random.default_rng(config.seed)
        noise = rng.standard_normal(center.shape) * config.observation_noise_std_per_height
        observed = center + noise * height[:, None]

    horizon_steps = [max(1, round(h * fps)) for h in config.horizons_s]
    max_steps = max(horizon_steps)
    steps = np.arange(1, max_steps + 1)
    # Dense (track, frame) table of true centres, NaN where the track is not annotated;
    # padded past the end so the look-ahead never indexes out of range.
    future = np.full((len(uniq), length + 2 + max_steps, 2), np.nan)
    future[track_index, frame] = center
    first_frame = np.full(len(uniq), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first_frame, track_index, frame)
    min_history_frames = config.min_history_s * fps

    offsets = np.searchsorted(frame, np.arange(1, length + 2), side="left")
    forecaster = factory(seq)
    sums = [_Sums() for _ in horizon_steps]
    for f in range(1, length + 1):
        rows = slice(int(offsets[f - 1]), int(offsets[f]))
        ids = track_id[rows]
        if ids.size == 0:
            continue
        forecaster.update(ids, observed[rows], (f - 1) / fps, height[rows])
        ti = track_index[rows]
        ready = (f - first_frame[ti]) >= min_history_frames - 1e-9
        if not ready.any():
            continue
        forecast = forecaster.predict(ids[ready], steps / fps)
        truth = future[ti[ready, None], f + steps[None, :]]  # (N, S, 2)
        diff = truth - forecast.mean_px
        err = np.linalg.norm(diff, axis=-1)  # (N, S), NaN where no ground truth
        h_now = height[rows][ready]
        for i, (acc, k) in enumerate(zip(sums, horizon_steps, strict=True)):
            window = err[:, :k]
            full = ~np.isnan(window).any(axis=1)
            if full.any():
                inner = None if forecast.inner_sigma is None else forecast.inner_sigma[full, k - 1]
                acc.add(
                    _score(
                        window[full],
                        diff[full, k - 1],
                        forecast.cov_px2[full, k - 1],
                        h_now[full],
                        config.miss_threshold_norm,
                        inner,
                    )
                )
            if calibration is not None and full.any():
                d, cov, h = diff[full, k - 1], forecast.cov_px2[full, k - 1], h_now[full]
                nll = gaussian_nll(d / h[:, None], cov / np.square(h)[:, None, None])
                calibration[i].append(np.stack((mahalanobis_sq(d, cov), nll), axis=1))
    return sums


def calibration_samples(
    seq: MotSequence, factory: ForecasterFactory, config: ForecastEvalConfig | None = None
) -> list[Float64Array]:
    """The calibration evidence of one forecaster on one sequence, to fit or check a
    covariance scale (see :func:`scaled_calibration`).

    Returns:
        Per horizon of ``config`` an (M, 2) array over the samples the evaluator scores:
        squared Mahalanobis distance of the true final position, and its NLL in box heights.
    """
    config = config or ForecastEvalConfig()
    out: list[list[Float64Array]] = [[] for _ in config.horizons_s]
    _evaluate_sequence(seq, _ignoring_sequence(factory), config, out)
    return [np.concatenate(parts) if parts else np.empty((0, 2)) for parts in out]


def scaled_calibration(samples: Float64Array, scale: float) -> tuple[float, float, float]:
    """1- and 2-sigma coverage and mean NLL after multiplying every covariance by ``scale²``.

    Args:
        samples: (M, 2) squared Mahalanobis distances and NLLs (:func:`calibration_samples`).
        scale: the standard-deviation multiplier.

    Returns:
        ``(coverage_1sigma, coverage_2sigma, nll)``; NaN for no samples.
    """
    if samples.shape[0] == 0:
        return float("nan"), float("nan"), float("nan")
    scaled = rescale_evidence(samples, scale)
    return (
        ellipse_coverage(scaled[:, 0], 1.0),
        ellipse_coverage(scaled[:, 0], 2.0),
        float(np.mean(scaled[:, 1])),
    )


def rescale_evidence(samples: Float64Array, scale: float) -> Float64Array:
    """(M, 2) squared Mahalanobis distances and NLLs as they would be had every covariance
    been multiplied by ``scale²``."""
    d2 = samples[:, 0] / (scale * scale)
    # NLL of a 2-D Gaussian: ½ d² + log 2π + ½ log det Σ; det(s²Σ) = s⁴ det Σ
    with np.errstate(invalid="ignore"):
        nll = samples[:, 1] - 0.5 * samples[:, 0] + 0.5 * d2 + 2.0 * math.log(scale)
    nll[np.isinf(samples[:, 0])] = np.inf  # a singular covariance stays infinitely unlikely
    out: Float64Array = np.stack((d2, nll), axis=1)
    return out


def _score(  # noqa: PLR0917 - the columns of one batch of samples
    err_px: Float64Array,
    final_diff_px: Float64Array,
    final_cov_px2: Float64Array,
    height_px: Float64Array,
    miss_threshold_norm: float,
    inner_sigma: Float64Array | None = None,
) -> _Sums:
    """Sums over M samples: displacement errors (M, k) px, the final error (M, 2) px, its
    forecast covariance (M, 2, 2) px², the origin box heights (M,) px and the radius of the
    forecaster's 39 % region (M,) (None: 1)."""
    ade = err_px.mean(axis=1)
    fde = err_px[:, -1]
    fde_norm = fde / height_px
    d2 = mahalanobis_sq(final_diff_px, final_cov_px2)
    h2 = np.square(height_px)[:, None, None]
    nll = gaussian_nll(final_diff_px / height_px[:, None], final_cov_px2 / h2)
    return _Sums(
        ade_px=float(ade.sum()),
        fde_px=float(fde.sum()),
        ade_norm=float((ade / height_px).sum()),
        fde_norm=float(fde_norm.sum()),
        misses=int((fde_norm > miss_threshold_norm).sum()),
        inside_1sigma=int((d2 <= (1.0 if inner_sigma is None else inner_sigma**2)).sum()),
        inside_1sigma_ellipse=int((d2 <= 1.0).sum()),
        inside_2sigma=int((d2 <= 4.0).sum()),
        nll=float(nll.sum()),
        samples=int(err_px.shape[0]),
    )


def evaluate_forecasts(
    sequences: Iterable[MotSequence],
    forecasters: Mapping[str, ForecasterFactory],
    config: ForecastEvalConfig | None = None,
    per_sequence: Mapping[str, SequenceForecasterFactory] | None = None,
) -> ForecastReport:
    """Score forecasters on the ground-truth tracks of MOTChallenge sequences.

    Args:
        sequences: sequences with ground truth (``load_sequence``).
        forecasters: name → factory of a fresh forecaster (one per sequence).
        config: horizons and sampling; defaults to :class:`ForecastEvalConfig`.
        per_sequence: name → factory given the sequence it will forecast (leave-one-out
            fold models); scored after ``forecasters``.

    Returns:
        One row per forecaster, sequence (then ``COMBINED``) and horizon.

    Raises:
        ConfigError: a sequence has no ground truth.
    """
    config = config or ForecastEvalConfig()
    seqs: Sequence[MotSequence] = list(sequences)
    rows: list[ForecastScores] = []
    factories: dict[str, SequenceForecasterFactory] = {
        name: _ignoring_sequence(factory) for name, factory in forecasters.items()
    }
    factories.update(per_sequence or {})
    for name, factory in factories.items():
        pooled = [_Sums() for _ in config.horizons_s]
        for seq in seqs:
            sums = _evaluate_sequence(seq, factory, config)
            for total, part, h in zip(pooled, sums, config.horizons_s, strict=True):
                total.add(part)
                rows.append(part.scores(name, seq.name, h))
        rows.extend(
            total.scores(name, COMBINED, h)
            for total, h in zip(pooled, config.horizons_s, strict=True)
        )
    return ForecastReport(tuple(rows), config)


def _ignoring_sequence(factory: ForecasterFactory) -> SequenceForecasterFactory:
    def make(seq: MotSequence) -> Forecaster:
        return factory()

    return make


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tapetum.eval.forecast MOT17/train``: print ADE/FDE of CV and CA."""
    from tapetum.eval.mot import find_sequences, load_sequence

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("path", help="a sequence folder or a split folder (e.g. MOT17/train)")
    parser.add_argument("--horizons", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--min-history", type=float, default=0.5)
    parser.add_argument("--track-stride", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.0, help="observation noise, heights")
    args = parser.parse_args(argv)
    config = ForecastEvalConfig(
        horizons_s=tuple(args.horizons),
        min_history_s=args.min_history,
        track_stride=args.track_stride,
        observation_noise_std_per_height=args.noise,
    )
    t0 = time.perf_counter()
    seqs = [load_sequence(p) for p in find_sequences(args.path)]
    report = evaluate_forecasts(seqs, default_forecasters(), config)
    print(report.format_table())
    print(f"\n{len(seqs)} sequences in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
