"""Simulated detections from ground truth, for sequences that ship no ``det.txt``.

A tracker benchmark needs detector output; MOT17/MOT20 ground truth here comes without it.
This model degrades the ground truth the way a detector does, with every random draw from
one ``np.random.default_rng(seed)`` over the whole sequence at once, so every tracker given
the same sequence, parameters and seed sees identical detections.

Per evaluated ground-truth box (pedestrian, ``consider == 1``; every other class and
ignored row produces nothing):

* **miss**: dropped with probability
  ``clip(miss_rate + occlusion_miss_rate * (1 - visibility), 0, 1)``: occluded people are
  missed more often (MOT15 has no visibility; there it is 1).
* **jitter**: centre moved by ``N(0, jitter * w)`` horizontally and ``N(0, jitter * h)``
  vertically; width and height scaled by ``exp(N(0, jitter))``. Noise scales with box size,
  as a detector's localisation error does.
* **score**: ``Beta(*true_positive_beta)``, by default mean 0.8.

Per frame, ``Poisson(false_positives_per_frame)`` **false positives**, each with the size of
a random evaluated ground-truth box of the sequence, placed uniformly inside the image,
scored ``Beta(*false_positive_beta)`` (by default mean 0.29: mostly below the true
positives, with overlap, as for a real detector).

Example:
    >>> from tapetum.eval.noise import DetectionNoise, simulate_detections
    >>> sim = simulate_detections(seq, DetectionNoise(miss_rate=0.2), seed=0)  # doctest: +SKIP
    >>> frames = sim.per_frame()  # one Detections per frame  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tapetum._types import Float32Array, IntArray
from tapetum.core.detections import Detections
from tapetum.errors import ConfigError
from tapetum.eval.mot import MotSequence, split_by_frame


@dataclass(frozen=True, slots=True)
class DetectionNoise:
    """Parameters of the detection noise model (see the module docstring).

    Attributes:
        miss_rate: probability of missing a fully visible pedestrian, in [0, 1].
        occlusion_miss_rate: extra miss probability at visibility 0 (linear in
            ``1 - visibility``), in [0, 1].
        jitter: standard deviation of the centre shift as a fraction of box width/height,
            and of the log of the width/height scale factors.
        false_positives_per_frame: mean number of false positives per frame (Poisson).
        true_positive_beta: ``(a, b)`` of the Beta distribution of true-positive scores.
        false_positive_beta: ``(a, b)`` of the Beta distribution of false-positive scores.
    """

    miss_rate: float = 0.1
    occlusion_miss_rate: float = 0.6
    jitter: float = 0.05
    false_positives_per_frame: float = 1.0
    true_positive_beta: tuple[float, float] = (8.0, 2.0)
    false_positive_beta: tuple[float, float] = (2.0, 5.0)

    def __post_init__(self) -> None:
        if not (0.0 <= self.miss_rate <= 1.0 and 0.0 <= self.occlusion_miss_rate <= 1.0):
            raise ConfigError("miss_rate and occlusion_miss_rate must be in [0, 1]")
        if self.jitter < 0.0 or self.false_positives_per_frame < 0.0:
            raise ConfigError("jitter and false_positives_per_frame must be >= 0")
        if min(*self.true_positive_beta, *self.false_positive_beta) <= 0.0:
            raise ConfigError("Beta parameters must be > 0")

    def miss_probability(self, visibility: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(N,) probability of missing boxes of the given visibility in [0, 1]."""
        vis = np.clip(np.asarray(visibility, np.float64), 0.0, 1.0)
        p: npt.NDArray[np.float64] = np.clip(
            self.miss_rate + self.occlusion_miss_rate * (1.0 - vis), 0.0, 1.0
        )
        return p


@dataclass(frozen=True, slots=True)
class SimulatedDetections:
    """Detections of a whole sequence, flat and sorted by frame.

    Attributes:
        frame: (K,) int64, 1-based frame number, ascending.
        xyxy: (K, 4) float32 boxes, pixels.
        confidence: (K,) float32 scores in [0, 1].
        gt_row: (K,) int64, the ground-truth row (index into ``sequence.gt``) a detection
            was derived from, -1 for false positives. For analysis only: never give it to
            a tracker.
        length_frames: number of frames in the sequence.
    """

    frame: IntArray
    xyxy: Float32Array
    confidence: Float32Array
    gt_row: IntArray
    length_frames: int

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def per_frame(self) -> list[Detections]:
        """One Detections per frame (index 0 is frame 1), class 0 (person), untracked."""
        return split_by_frame(
            self.frame, self.length_frames, xyxy=self.xyxy, confidence=self.confidence
        )


def simulate_detections(
    sequence: MotSequence, noise: DetectionNoise | None = None, seed: int = 0
) -> SimulatedDetections:
    """Derive noisy detections from a sequence's ground truth (see the module docstring).

    Args:
        sequence: a sequence with ground truth.
        noise: model parameters; None uses the defaults.
        seed: seed of ``np.random.default_rng``; same sequence + parameters + seed give
            identical detections.

    Raises:
        ConfigError: the sequence has no ground truth.
    """
    noise = noise or DetectionNoise()
    gt = sequence.gt
    if gt is None:
        raise ConfigError(f"sequence {sequence.name} has no ground truth to simulate from")
    info = sequence.info
    rng = np.random.default_rng(seed)

    rows = np.flatnonzero(gt.evaluated)
    kept = rows[rng.random(rows.size) >= noise.miss_probability(gt.visibility[rows])]
    tlwh = gt.tlwh[kept]
    shift = rng.normal(0.0, noise.jitter, size=(kept.size, 2)) * tlwh[:, 2:]
    center = tlwh[:, :2] + 0.5 * tlwh[:, 2:] + shift
    size = tlwh[:, 2:] * np.exp(rng.normal(0.0, noise.jitter, size=(kept.size, 2)))
    tp_xyxy = np.concatenate([center - 0.5 * size, center + 0.5 * size], axis=1)
    tp_score = rng.beta(*noise.true_positive_beta, size=kept.size)

    fp_counts = rng.poisson(noise.false_positives_per_frame, size=info.length_frames)
    if rows.size == 0:  # no pedestrian to borrow a false positive's size from
        fp_counts[:] = 0
    n_fp = int(fp_counts.sum())
    fp_frame = np.repeat(np.arange(1, info.length_frames + 1, dtype=np.int64), fp_counts)
    fp_size = gt.tlwh[rng.choice(rows, size=n_fp), 2:] if n_fp else np.empty((0, 2))
    image_wh = np.array([info.width_px, info.height_px], np.float64)
    fp_top_left = rng.random((n_fp, 2)) * np.clip(image_wh - fp_size, 0.0, None)
    fp_xyxy = np.concatenate([fp_top_left, fp_top_left + fp_size], axis=1)
    fp_score = rng.beta(*noise.false_positive_beta, size=n_fp)

    frame = np.concatenate([gt.frame[kept], fp_frame])
    order = np.argsort(frame, kind="stable")
    return SimulatedDetections(
        frame=frame[order],
        xyxy=np.concatenate([tp_xyxy, fp_xyxy]).astype(np.float32)[order],
        confidence=np.concatenate([tp_score, fp_score]).astype(np.float32)[order],
        gt_row=np.concatenate([kept, np.full(n_fp, -1, np.int64)])[order],
        length_frames=info.length_frames,
    )
