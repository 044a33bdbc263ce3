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

Track state is a structure of arrays (``_TrackTable``, embeddings as one (T, D) matrix) so
prediction, camera warps, cost matrices and embedding updates are array operations over
all tracks at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError
from tapetum.track import byte_association as ba
from tapetum.track.assignment import fuse_score, iou_distance
from tapetum.track.cmc import CMC_METHODS, CameraMotionEstimator, make_cmc, warp_states
from tapetum.track.kalman_xywh import KalmanFilterXYWH, xywh_to_xyxy, xyxy_to_xywh
from tapetum.track.reid import ReidEmbedder

Float64Array = npt.NDArray[np.float64]
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

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


def _normalise_rows(x: npt.ArrayLike) -> FloatArray:
    """Rows scaled to unit length; all-zero rows stay zero."""
    a = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    out: FloatArray = a / np.maximum(norm, 1e-12)
    return out


@dataclass(slots=True)
class _TrackTable(ba.ByteTrackTable):
    """All live tracks of one tracker, one row per track (structure of arrays).

    The columns are :class:`~tapetum.track.byte_association.ByteTrackTable`'s, with
    ``mean`` the Kalman state ``x, y, w, h`` and velocities in pixels, and:

    Attributes:
        features: (T, D) float32 unit-length moving average of the track's embeddings
            (D = 0 without re-identification).
    """

    features: FloatArray

    def boxes(self) -> Float64Array:
        """(T, 4) xyxy boxes of the Kalman means, in pixels."""
        return xywh_to_xyxy(self.mean[:, :4])


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
        self, config: BoTSortConfig | None = None, embedder: ReidEmbedder | None = None
    ) -> None:
        self.config = config if config is not None else BoTSortConfig()
        if embedder is not None and not self.config.with_reid:
            raise ConfigError(
                "BoTSortTracker got a re-identification embedder but with_reid is False; "
                "set BoTSortConfig(with_reid=True) or drop the embedder"
            )
        self.embedder = embedder
        self._kalman = KalmanFilterXYWH()
        self._cmc: CameraMotionEstimator | None = make_cmc(self.config.cmc_method)
        self._feature_dim = embedder.embedding_dim if embedder is not None else 0
        self._tracks = _TrackTable.empty(features=np.empty((0, self._feature_dim), np.float32))
        self._frame_id = 0
        self._next_id = 1
        #: (2, 3) camera warp applied on the last ``update`` (identity without CMC).
        self.last_warp: Float64Array = np.eye(2, 3, dtype=np.float64)

    def reset(self) -> None:
        """Forget every track and the previous frame; ids restart at 1."""
        self._tracks = _TrackTable.empty(features=np.empty((0, self._feature_dim), np.float32))
        self._frame_id = 0
        self._next_id = 1
        self.last_warp = np.eye(2, 3, dtype=np.float64)
        if self._cmc is not None:
            self._cmc.reset()

    @property
    def frame_id(self) -> int:
        """Number of frames seen since construction or the last ``reset``."""
        return self._frame_id

    def _det_features(
        self, detections: Detections, high: IntArray, frame: Frame | None
    ) -> FloatArray:
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
        frame_id = self._frame_id
        t = self._tracks
        groups = ba.group_tracks(t)

        scores = detections.confidence
        det_xywh = xyxy_to_xywh(detections.xyxy)
        high, low = ba.split_by_score(scores, cfg.track_high_thresh, cfg.track_low_thresh)

        feats: FloatArray | None = None
        if cfg.with_reid:
            feats = self._det_features(detections, high, frame)
            if feats.shape[1] != t.features.shape[1]:
                if len(t):
                    raise ValueError(
                        f"embedding length changed from {t.features.shape[1]} to "
                        f"{feats.shape[1]} while tracks are alive"
                    )
                t.features = np.empty((0, feats.shape[1]), np.float32)
            self._feature_dim = int(feats.shape[1])

        # Predict confirmed and lost tracks; a lost track's size velocities are zeroed.
        ba.predict_pool(t, self._kalman, groups, size_velocity=(6, 7))

        # Camera motion moves every track, unconfirmed ones included. The estimator sees
        # every frame, even one with no tracks, so it always holds the previous frame.
        self.last_warp = np.eye(2, 3, dtype=np.float64)
        if self._cmc is not None and frame is not None:
            moving = detections.xyxy[scores > cfg.track_low_thresh]
            self.last_warp = self._cmc.estimate(frame.image, moving)
            if len(t) and not np.array_equal(self.last_warp, np.eye(2, 3)):
                t.mean, t.covariance = warp_states(t.mean, t.covariance, self.last_warp)
        # 1 - IoU of every track with every detection, computed once: each association
        # below uses a block of it.
        dist = iou_distance(t.boxes(), detections.xyxy)

        # The second association (tracked tracks with low-score detections) is on IoU
        # alone: low-score boxes are often occluded, so appearance is unreliable there,
        # and they are not embedded.
        def high_cost(track_rows: IntArray, det_rows: IntArray) -> Float64Array:
            return self._cost(
                t,
                track_rows=track_rows,
                det_rows=det_rows,
                iou_dist=dist,
                dets=detections,
                feats=feats,
            )

        assoc = ba.associate(
            t,
            groups,
            self._kalman,
            params=cfg,
            iou_dist=dist,
            high=high,
            low=low,
            high_cost=high_cost,
            measurements=det_xywh,
            detections=detections,
            frame_id=frame_id,
        )

        if feats is not None:
            # Moving average of the embeddings, from the high-score matches only (the
            # low-score boxes carry no embedding), renormalised to unit length.
            emb_rows = np.concatenate((assoc.tracks[0], assoc.tracks[2]))
            emb_dets = np.concatenate((assoc.dets[0], assoc.dets[2]))
            a = cfg.ema_alpha
            t.features[emb_rows] = _normalise_rows(
                a * t.features[emb_rows] + (1.0 - a) * feats[emb_dets]
            )

        t, out_rows, track_ids = ba.finish_frame(
            t,
            groups,
            assoc,
            params=cfg,
            scores=scores,
            frame_id=frame_id,
            start_tracks=lambda rows: self._start_tracks(
                rows, det_xywh, detections, feats, frame_id
            ),
        )
        self._tracks = t
        result = detections[out_rows]
        result.tracker_id = track_ids
        if feats is not None and detections.embeddings is None:
            result.embeddings = feats[out_rows]
        return result

    def _cost(
        self,
        t: _TrackTable,
        *,
        track_rows: IntArray,
        det_rows: IntArray,
        iou_dist: Float64Array,
        dets: Detections,
        feats: FloatArray | None,
    ) -> Float64Array:
        """Cost of the high-score associations: fused IoU, gated appearance when ReID.

        ``iou_dist`` is ``1 - IoU`` of every track with every detection; the block at
        ``track_rows`` x ``det_rows`` is used.
        """
        cfg = self.config
        iou_dist = iou_dist[track_rows][:, det_rows]
        scores = dets.confidence[det_rows] if cfg.fuse_score else None
        if feats is None:
            return iou_dist if scores is None else fuse_score(iou_dist, scores)
        appearance = embedding_distance(t.features[track_rows], feats[det_rows])
        return gated_fused_cost(
            iou_dist, appearance, cfg.proximity_thresh, cfg.appearance_thresh, scores
        )

    def _start_tracks(
        self,
        det_rows: IntArray,
        det_xywh: Float64Array,
        detections: Detections,
        feats: FloatArray | None,
        frame_id: int,
    ) -> _TrackTable:
        n = int(det_rows.shape[0])
        mean, covariance = self._kalman.initiate(det_xywh[det_rows])
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        features = (
            feats[det_rows] if feats is not None else np.empty((n, self._feature_dim), np.float32)
        )
        return _TrackTable(
            mean=mean,
            covariance=covariance,
            features=features,
            track_id=ids,
            **ba.new_track_columns(det_rows, detections, frame_id),
        )
