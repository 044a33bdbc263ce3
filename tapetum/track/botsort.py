"""BoT-SORT: ByteTrack's two-stage association plus camera motion and appearance.

Aharon, Orfaig and Bobrovsky, "BoT-SORT: Robust Associations Multi-Pedestrian Tracking"
(arXiv 2206.14651, 2022); the logic follows the reference ``tracker/bot_sort.py`` of
NirAharon/BoT-SORT. On top of :mod:`tapetum.track.bytetrack`:

1. The Kalman state is ``(x, y, w, h)`` and velocities (:mod:`tapetum.track.kalman_xywh`),
   with noise scaled by the box's width and height.
2. Camera-motion compensation (:mod:`tapetum.track.cmc`): the affine warp between the
   previous and the current frame moves every track's state after prediction, before
   association, so a panning camera does not break IoU matching.
3. Appearance (with ``with_reid``): each track keeps an exponential moving average of its
   L2-normalised re-identification embeddings; the first association and the unconfirmed
   one use ``min(IoU cost, appearance cost)``, where the appearance cost (cosine distance
   / 2) counts only for pairs that look alike (``<= appearance_thresh``) *and* overlap
   (IoU distance ``<= proximity_thresh``); elsewhere it is 1 (:func:`gated_fused_cost`).
   The second association (tracked tracks with low-score boxes) stays IoU-only.

The frame itself is ByteTrack's compiled one (:mod:`tapetum.track.kernels.byte_step`)
with BoT-SORT's filter; camera motion is estimated and embeddings computed here, before
it, as they need the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from tapetum._types import Float32Array, Float64Array, IntArray
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError
from tapetum.track.assignment import fuse_score
from tapetum.track.cmc import CMC_METHODS, CameraMotionEstimator, make_cmc
from tapetum.track.coast import coast_byte_core
from tapetum.track.kalman_xywh import KalmanFilterXYWH
from tapetum.track.reid import Embedder

if TYPE_CHECKING:
    from tapetum.track.kernels.byte_step import ByteCore

#: ``tapetum.track.kernels.kalman8.MOTION_XYWH`` (the kernels load numba; this does not).
MOTION_XYWH = 1


CmcMethod = Literal["sparseOptFlow", "ecc", "none"]


@dataclass(frozen=True, slots=True)
class BoTSortConfig:
    """BoT-SORT parameters; defaults are the reference's (MOT17, ``tools/track.py``).

    Attributes:
        track_high_thresh: detections scoring above this take part in the first
            association (and are embedded).
        track_low_thresh: detections scoring above this (and below ``track_high_thresh``)
            take part in the second association only.
        new_track_thresh: a new track needs a score of at least this.
        track_buffer: frames a lost track is kept at 30 fps.
        match_thresh: largest cost accepted in the first association.
        low_match_thresh: largest ``1 - IoU`` accepted in the second association.
        unconfirmed_match_thresh: largest cost for matching unconfirmed tracks.
        proximity_thresh: appearance may only match a pair whose IoU distance
            (``1 - IoU``) is at most this.
        appearance_thresh: appearance may only match a pair whose embedding distance
            (cosine distance / 2, in [0, 1]) is at most this.
        with_reid: use appearance embeddings (needs a ``ReidEmbedder`` or detections
            that carry ``embeddings``).
        cmc_method: camera-motion compensation, ``"sparseOptFlow"``, ``"ecc"`` or
            ``"none"``. Needs the frame; a call without one skips compensation.
        ema_alpha: weight of a track's past embedding in its moving average.
        duplicate_iou: a tracked and a lost track overlapping more than this are duplicates.
        frame_rate: stream frame rate in frames per second; scales ``track_buffer``.
        fuse_score: multiply IoU by detection score in the high-score associations (the
            reference turns this off with ``--mot20``).
    """

    track_high_thresh: float = 0.6
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.7
    track_buffer: int = 30
    match_thresh: float = 0.8
    low_match_thresh: float = 0.5
    unconfirmed_match_thresh: float = 0.7
    proximity_thresh: float = 0.5
    appearance_thresh: float = 0.25
    with_reid: bool = False
    cmc_method: CmcMethod = "sparseOptFlow"
    ema_alpha: float = 0.9
    duplicate_iou: float = 0.85
    frame_rate: float = 30.0
    fuse_score: bool = True

    def __post_init__(self) -> None:
        unit = (
            "track_high_thresh",
            "track_low_thresh",
            "new_track_thresh",
            "match_thresh",
            "low_match_thresh",
            "unconfirmed_match_thresh",
            "proximity_thresh",
            "appearance_thresh",
            "ema_alpha",
            "duplicate_iou",
        )
        for name in unit:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"BoTSortConfig.{name} must be in [0, 1], got {value}")
        if self.track_low_thresh > self.track_high_thresh:
            raise ConfigError(
                f"BoTSortConfig.track_low_thresh ({self.track_low_thresh}) must not exceed "
                f"track_high_thresh ({self.track_high_thresh})"
            )
        if self.track_buffer < 0:
            raise ConfigError(
                f"BoTSortConfig.track_buffer must be >= 0 frames, got {self.track_buffer}"
            )
        if not self.frame_rate > 0:
            raise ConfigError(f"BoTSortConfig.frame_rate must be > 0 fps, got {self.frame_rate}")
        if self.cmc_method not in CMC_METHODS:
            raise ConfigError(
                f"BoTSortConfig.cmc_method must be one of {CMC_METHODS}, got {self.cmc_method!r}"
            )

    @property
    def max_frames_lost(self) -> int:
        """Frames a lost track survives at this frame rate (the reference's ``max_time_lost``)."""
        return int(self.frame_rate / 30.0 * self.track_buffer)


def embedding_distance(track_features: npt.ArrayLike, det_features: npt.ArrayLike) -> Float64Array:
    """Halved cosine distance between L2-normalised embeddings.

    Args:
        track_features: (T, D) unit vectors (tracks' moving averages).
        det_features: (M, D) unit vectors (detections).

    Returns:
        (T, M) float64 ``max(0, 1 - cos) / 2`` in [0, 1]: 0 for identical directions,
        0.5 for orthogonal ones (the reference divides the cosine distance by 2).
    """
    a = np.asarray(track_features, dtype=np.float64)
    b = np.asarray(det_features, dtype=np.float64)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.ones((a.shape[0], b.shape[0]), np.float64)
    cost: Float64Array = np.clip(1.0 - a @ b.T, 0.0, 2.0) * 0.5
    return cost


def gated_fused_cost(
    iou_dist: npt.ArrayLike,
    appearance_dist: npt.ArrayLike,
    proximity_thresh: float,
    appearance_thresh: float,
    scores: npt.ArrayLike | None = None,
) -> Float64Array:
    """BoT-SORT's association cost: the smaller of the motion and the gated appearance cost.

    The appearance cost of a pair is replaced by 1 (never preferred) when the two look
    different (``appearance_dist > appearance_thresh``) or are far apart
    (``iou_dist > proximity_thresh``), so appearance only disambiguates among nearby boxes
    and cannot pull a track across the frame.

    Args:
        iou_dist: (T, M) ``1 - IoU`` in [0, 1].
        appearance_dist: (T, M) from :func:`embedding_distance`, in [0, 1].
        proximity_thresh: largest IoU distance at which appearance counts.
        appearance_thresh: largest appearance distance that counts.
        scores: (M,) detection confidences; when given, the motion cost is
            ``1 - IoU * score`` (ByteTrack's fusion; the gate still uses the plain IoU).

    Returns:
        (T, M) float64 cost in [0, 1].
    """
    iou = np.asarray(iou_dist, dtype=np.float64)
    motion = iou if scores is None else fuse_score(iou, scores)
    appearance = np.array(appearance_dist, dtype=np.float64)
    appearance[(appearance > appearance_thresh) | (iou > proximity_thresh)] = 1.0
    cost: Float64Array = np.minimum(motion, appearance)
    return cost


def _normalise_rows(x: npt.ArrayLike) -> Float32Array:
    """Rows scaled to unit length; all-zero rows stay zero."""
    a = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    out: Float32Array = a / np.maximum(norm, 1e-12)
    return out


class BoTSortTracker:
    """BoT-SORT multi-object tracker for one stream (implements ``Tracker``).

    Args:
        config: parameters (defaults: the reference's, no re-identification).
        embedder: re-identification model, run on this frame's high-score detections when
            ``config.with_reid`` is set and the detections carry no ``embeddings``.

    Example:
        >>> import numpy as np
        >>> from tapetum.core.detections import Detections
        >>> tracker = BoTSortTracker(BoTSortConfig(frame_rate=25, cmc_method="none"))
        >>> dets = Detections(np.array([[10, 10, 50, 90]]), np.array([0.9]), np.array([0]))
        >>> tracker.update(dets).tracker_id
        array([1])

        With appearance (the frame is needed for the crops and for camera motion)::

            tracker = BoTSortTracker(BoTSortConfig(with_reid=True),
                                     ReidEmbedder("osnet_x0_25_msmt17.onnx"))
            tracked = tracker.update(detections, frame)
    """

    def __init__(
        self, config: BoTSortConfig | None = None, embedder: Embedder | None = None
    ) -> None:
        self.config = config if config is not None else BoTSortConfig()
        if embedder is not None and not self.config.with_reid:
            raise ConfigError(
                "BoTSortTracker got a re-identification embedder but with_reid is False; "
                "set BoTSortConfig(with_reid=True) or drop the embedder"
            )
        self.embedder = embedder
        self._cmc: CameraMotionEstimator | None = make_cmc(self.config.cmc_method)
        self._core = _make_core(self.config, embedder.embedding_dim if embedder is not None else 0)
        self._frame_id = 0
        self._last = Detections.empty()
        #: (2, 3) camera warp applied on the last ``update`` or ``predict`` (identity
        #: without CMC).
        self.last_warp: Float64Array = np.eye(2, 3, dtype=np.float64)

    def reset(self) -> None:
        """Forget every track and the previous frame; ids restart at 1."""
        self._core.reset()
        self._frame_id = 0
        self._last = Detections.empty()
        self.last_warp = np.eye(2, 3, dtype=np.float64)
        if self._cmc is not None:
            self._cmc.reset()

    def state_sizes(self) -> dict[str, int]:
        """Tracks held now, each with its embedding (ended tracks are deleted)."""
        return {"tracker_tracks": int(self._core.state.n)}

    @property
    def frame_id(self) -> int:
        """Number of frames seen since construction or the last ``reset``."""
        return self._frame_id

    def _det_features(
        self, detections: Detections, high: IntArray, frame: Frame | None
    ) -> Float32Array:
        """(N, D) unit embeddings of this frame's detections (zero rows where not embedded)."""
        if detections.embeddings is not None:
            return _normalise_rows(detections.embeddings)
        if self.embedder is None or frame is None:
            raise ValueError(
                "BoT-SORT with re-identification needs detections.embeddings, or an "
                "embedder and the frame: call update(detections, frame)"
            )
        feats = np.zeros((len(detections), self.embedder.embedding_dim), np.float32)
        # As in the reference, only the high-score boxes are embedded: only they are
        # matched by appearance or start tracks.
        feats[high] = self.embedder.embed(frame.image, detections.xyxy[high])
        return feats

    def update(self, detections: Detections, frame: Frame | None = None) -> Detections:
        """Associate this frame's detections with the tracks.

        Args:
            detections: this frame's detections; incoming ``tracker_id`` is ignored.
            frame: the frame they came from (camera motion and, with ReID, crops). Without
                it no camera motion is compensated on this call.

        Returns:
            Rows of ``detections`` that belong to activated, currently tracked tracks, in
            input order, with ``tracker_id`` set; with ReID also ``embeddings`` (N, D)
            float32, unit length for boxes above ``track_high_thresh`` and zero rows for
            the low-score boxes, which are not embedded. On frame 1 every detection
            scoring at least ``new_track_thresh`` is returned; later, a new object is
            returned from its second consecutive detection on.
        """
        cfg = self.config
        self._frame_id += 1
        scores = detections.confidence

        feats: Float32Array | None = None
        appearance: Float64Array | None = None
        if cfg.with_reid:
            high = np.flatnonzero(scores > cfg.track_high_thresh)
            feats = self._det_features(detections, high, frame)
            state = self._core.state
            if feats.shape[1] != state.features.shape[1]:
                if state.n:
                    raise ValueError(
                        f"embedding length changed from {state.features.shape[1]} to "
                        f"{feats.shape[1]} while tracks are alive"
                    )
                state.set_feature_dim(int(feats.shape[1]))
            appearance = embedding_distance(state.features[: state.n], feats)

        # Camera motion moves every track, unconfirmed ones included, after prediction.
        # The estimator sees every frame, even one with no tracks, so it always holds the
        # previous frame.
        self.last_warp = np.eye(2, 3, dtype=np.float64)
        affine: Float64Array | None = None
        if self._cmc is not None and frame is not None:
            moving = detections.xyxy[scores > cfg.track_low_thresh]
            self.last_warp = self._cmc.estimate(frame.image, moving)
            if not np.array_equal(self.last_warp, np.eye(2, 3)):
                affine = np.ascontiguousarray(self.last_warp, np.float64)

        # The second association (tracked tracks with low-score detections) is on IoU
        # alone: low-score boxes are often occluded, so appearance is unreliable there,
        # and they are not embedded.
        ids = self._core.step(
            self._frame_id,
            detections.xyxy,
            scores,
            detections.class_id,
            det_features=feats,
            appearance=appearance,
            affine=affine,
        )
        rows = np.flatnonzero(ids >= 0)
        result = detections[rows]
        result.tracker_id = ids[rows]
        if feats is not None and detections.embeddings is None:
            result.embeddings = feats[rows]
        self._last = result
        return result

    def predict(self, frame: Frame | None = None) -> Detections:
        """A frame without detections (implements ``PredictingTracker``): confirmed and
        lost tracks move by the Kalman filter, then every track by the camera's motion
        measured on ``frame`` (when CMC is on and the frame is given, with the last
        reported boxes masked out); nothing is matched, started or lost.

        Returns:
            The tracks of the last ``update``, with their predicted boxes (embeddings
            carried over).
        """
        self._frame_id += 1
        self.last_warp = np.eye(2, 3, dtype=np.float64)
        affine: Float64Array | None = None
        if self._cmc is not None and frame is not None:
            self.last_warp = self._cmc.estimate(frame.image, self._last.xyxy)
            if not np.array_equal(self.last_warp, np.eye(2, 3)):
                affine = np.ascontiguousarray(self.last_warp, np.float64)
        return coast_byte_core(self._core, self._last, affine)


def _make_core(cfg: BoTSortConfig, feature_dim: int) -> ByteCore:
    """The compiled ByteTrack frame with BoT-SORT's filter, thresholds and appearance."""
    from tapetum.track.kernels import byte_step as kernel  # numba: load on use

    kalman = KalmanFilterXYWH()
    params = kernel.make_params(
        track_thresh=cfg.track_high_thresh,
        low_thresh=cfg.track_low_thresh,
        new_track_thresh=cfg.new_track_thresh,
        match_thresh=cfg.match_thresh,
        low_match_thresh=cfg.low_match_thresh,
        unconfirmed_match_thresh=cfg.unconfirmed_match_thresh,
        duplicate_iou=cfg.duplicate_iou,
        std_weight_position=kalman.std_weight_position,
        std_weight_velocity=kalman.std_weight_velocity,
        proximity_thresh=cfg.proximity_thresh,
        appearance_thresh=cfg.appearance_thresh,
        ema_alpha=cfg.ema_alpha,
    )
    flags = kernel.make_flags(
        motion=MOTION_XYWH,
        max_frames_lost=cfg.max_frames_lost,
        fuse_score=cfg.fuse_score,
        appearance=cfg.with_reid,
    )
    return kernel.ByteCore(params, flags, feature_dim)
