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
  "box heights"), so sequences of different resolution and depth combine fairly.

Combined scores pool the samples of all sequences (each sample weighs the same).

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
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tapetum.errors import ConfigError
from tapetum.eval.mot import MotSequence
from tapetum.track.forecast import (
    ConstantAccelerationForecaster,
    ConstantVelocityForecaster,
    Forecaster,
)

#: Name of the pooled row in a :class:`ForecastReport`.
COMBINED = "COMBINED"

ForecasterFactory = Callable[[], Forecaster]


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
    """

    horizons_s: tuple[float, ...] = (1.0, 2.0)
    min_history_s: float = 0.5
    track_stride: int = 1
    observation_noise_std_per_height: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.horizons_s or any(not (h > 0 and np.isfinite(h)) for h in self.horizons_s):
            raise ConfigError(f"horizons_s must be positive seconds, got {self.horizons_s}")
        if self.min_history_s < 0 or self.observation_noise_std_per_height < 0:
            raise ConfigError("min_history_s and observation_noise_std_per_height must be >= 0")
        if self.track_stride < 1:
            raise ConfigError(f"track_stride must be >= 1, got {self.track_stride}")


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
        samples: number of (track, frame) forecasts scored.
    """

    forecaster: str
    sequence: str
    horizon_s: float
    ade_px: float
    fde_px: float
    ade_norm: float
    fde_norm: float
    samples: int


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

    def format_table(self) -> str:
        """A fixed-width text table, one row per score."""
        head = (
            f"{'forecaster':<10} {'sequence':<16} {'h_s':>4} {'ADE_px':>8} {'FDE_px':>8} "
            f"{'ADE/h':>7} {'FDE/h':>7} {'samples':>8}"
        )
        lines = [head, "-" * len(head)]
        for s in self.scores:
            lines.append(
                f"{s.forecaster:<10} {s.sequence:<16} {s.horizon_s:>4.1f} {s.ade_px:>8.2f} "
                f"{s.fde_px:>8.2f} {s.ade_norm:>7.3f} {s.fde_norm:>7.3f} {s.samples:>8d}"
            )
        return "\n".join(lines)


@dataclass(slots=True)
class _Sums:
    """Running sums for one forecaster × sequence × horizon."""

    ade_px: float = 0.0
    fde_px: float = 0.0
    ade_norm: float = 0.0
    fde_norm: float = 0.0
    samples: int = 0

    def add(self, other: _Sums) -> None:
        self.ade_px += other.ade_px
        self.fde_px += other.fde_px
        self.ade_norm += other.ade_norm
        self.fde_norm += other.fde_norm
        self.samples += other.samples

    def scores(self, forecaster: str, sequence: str, horizon_s: float) -> ForecastScores:
        n = self.samples
        mean = (lambda v: v / n) if n else (lambda v: float("nan"))
        return ForecastScores(
            forecaster,
            sequence,
            horizon_s,
            mean(self.ade_px),
            mean(self.fde_px),
            mean(self.ade_norm),
            mean(self.fde_norm),
            n,
        )


def _evaluate_sequence(
    seq: MotSequence, factory: ForecasterFactory, config: ForecastEvalConfig
) -> list[_Sums]:
    """Sums per horizon of one forecaster on one sequence."""
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
    forecaster = factory()
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
        pred = forecaster.predict(ids[ready], steps / fps).mean_px  # (N, S, 2)
        truth = future[ti[ready, None], f + steps[None, :]]  # (N, S, 2)
        err = np.linalg.norm(pred - truth, axis=-1)  # (N, S), NaN where no ground truth
        h_now = height[rows][ready]
        for acc, k in zip(sums, horizon_steps, strict=True):
            window = err[:, :k]
            full = ~np.isnan(window).any(axis=1)
            if not full.any():
                continue
            ade = window[full].mean(axis=1)
            fde = window[full, k - 1]
            acc.add(
                _Sums(
                    float(ade.sum()),
                    float(fde.sum()),
                    float((ade / h_now[full]).sum()),
                    float((fde / h_now[full]).sum()),
                    int(full.sum()),
                )
            )
    return sums


def evaluate_forecasts(
    sequences: Iterable[MotSequence],
    forecasters: Mapping[str, ForecasterFactory],
    config: ForecastEvalConfig | None = None,
) -> ForecastReport:
    """Score forecasters on the ground-truth tracks of MOTChallenge sequences.

    Args:
        sequences: sequences with ground truth (``load_sequence``).
        forecasters: name → factory of a fresh forecaster (one per sequence).
        config: horizons and sampling; defaults to :class:`ForecastEvalConfig`.

    Returns:
        One row per forecaster, sequence (then ``COMBINED``) and horizon.

    Raises:
        ConfigError: a sequence has no ground truth.
    """
    config = config or ForecastEvalConfig()
    seqs: Sequence[MotSequence] = list(sequences)
    rows: list[ForecastScores] = []
    for name, factory in forecasters.items():
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
