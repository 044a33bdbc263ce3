"""ByteTrack: associate every detection box, including the low-confidence ones.

Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection Box"
(ECCV 2022); the logic follows the reference ``yolox/tracker/byte_tracker.py``:

1. Split detections into high (``> track_thresh``) and low (``low_thresh < s < track_thresh``)
   confidence.
2. Predict confirmed and lost tracks with the Kalman filter and match them to the high
   detections on ``1 - IoU * score``.
3. Match the still-unmatched *tracked* tracks to the low detections on ``1 - IoU``: an
   occluded object often scores low, and this keeps its track alive without letting low
   scores start tracks. Tracked tracks left over become lost.
4. Match unconfirmed tracks (born on the previous frame) to the leftover high detections;
   unconfirmed tracks left over are dropped.
5. Start tracks from leftover high detections scoring at least ``track_thresh + 0.1``.
6. Drop tracks lost for longer than ``track_buffer * frame_rate / 30`` frames, and of a
   tracked/lost pair overlapping by IoU > 0.85 keep only the longer-lived one.

Track state is a structure of arrays (``_TrackTable``) so prediction, correction and
cost matrices are array operations over all tracks at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError
from tapetum.track import byte_association as ba
from tapetum.track.assignment import fuse_score, iou_distance
from tapetum.track.byte_association import TrackState
from tapetum.track.kalman import KalmanFilter, xyah_to_xyxy, xyxy_to_xyah

__all__ = ["ByteTrackConfig", "ByteTracker", "TrackState"]

Float64Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class ByteTrackConfig:
    """ByteTrack parameters; defaults are the paper's (MOT17).

    Attributes:
        track_thresh: detections scoring above this take part in the first association.
        low_thresh: detections scoring above this (and below ``track_thresh``) take part
            in the second association only.
        new_track_margin: a new track needs a score of at least
            ``track_thresh + new_track_margin``.
        match_thresh: largest ``1 - IoU * score`` cost accepted in the first association.
        low_match_thresh: largest ``1 - IoU`` cost accepted in the second association.
        unconfirmed_match_thresh: largest fused cost for matching unconfirmed tracks.
        duplicate_iou: a tracked and a lost track overlapping more than this are duplicates.
        track_buffer: frames a lost track is kept at 30 fps.
        frame_rate: stream frame rate in frames per second; scales ``track_buffer``.
        fuse_score: multiply IoU by detection score in the high-score associations (the
            reference turns this off with ``--mot20``).
    """

    track_thresh: float = 0.5
    low_thresh: float = 0.1
    new_track_margin: float = 0.1
    match_thresh: float = 0.8
    low_match_thresh: float = 0.5
    unconfirmed_match_thresh: float = 0.7
    duplicate_iou: float = 0.85
    track_buffer: int = 30
    frame_rate: float = 30.0
    fuse_score: bool = True

    def __post_init__(self) -> None:
        unit = (
            "track_thresh",
            "low_thresh",
            "match_thresh",
            "low_match_thresh",
            "unconfirmed_match_thresh",
            "duplicate_iou",
        )
        for name in unit:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"ByteTrackConfig.{name} must be in [0, 1], got {value}")
        if self.low_thresh > self.track_thresh:
            raise ConfigError(
                f"ByteTrackConfig.low_thresh ({self.low_thresh}) must not exceed "
                f"track_thresh ({self.track_thresh})"
            )
        if self.new_track_margin < 0:
            raise ConfigError(
                f"ByteTrackConfig.new_track_margin must be >= 0, got {self.new_track_margin}"
            )
        if self.track_buffer < 0:
            raise ConfigError(
                f"ByteTrackConfig.track_buffer must be >= 0 frames, got {self.track_buffer}"
            )
        if not self.frame_rate > 0:
            raise ConfigError(f"ByteTrackConfig.frame_rate must be > 0 fps, got {self.frame_rate}")

    @property
    def new_track_thresh(self) -> float:
        """Lowest score that starts a track."""
        return self.track_thresh + self.new_track_margin

    @property
    def max_frames_lost(self) -> int:
        """Frames a lost track survives at this frame rate (the reference's ``max_time_lost``)."""
        return int(self.frame_rate / 30.0 * self.track_buffer)


@dataclass(slots=True)
class _TrackTable(ba.ByteTrackTable):
    """All live tracks of one tracker, one row per track (structure of arrays).

    The columns are :class:`~tapetum.track.byte_association.ByteTrackTable`'s; ``mean``
    is the Kalman state ``x, y, a, h`` and velocities.
    """

    def boxes(self) -> Float64Array:
        """(T, 4) xyxy boxes of the Kalman means, in pixels."""
        return xyah_to_xyxy(self.mean[:, :4])


class ByteTracker:
    """ByteTrack multi-object tracker for one stream (implements ``Tracker``).

    Example:
        >>> import numpy as np
        >>> from tapetum.core.detections import Detections
        >>> tracker = ByteTracker(ByteTrackConfig(frame_rate=25))
        >>> dets = Detections(np.array([[10, 10, 50, 90]]), np.array([0.9]), np.array([0]))
        >>> tracker.update(dets).tracker_id
        array([1])
    """

    def __init__(self, config: ByteTrackConfig | None = None) -> None:
        self.config = config if config is not None else ByteTrackConfig()
        self._kalman = KalmanFilter()
        self._tracks = _TrackTable.empty()
        self._frame_id = 0
        self._next_id = 1

    def reset(self) -> None:
        """Forget every track; the next frame is frame 1 and ids restart at 1."""
        self._tracks = _TrackTable.empty()
        self._frame_id = 0
        self._next_id = 1

    @property
    def frame_id(self) -> int:
        """Number of frames seen since construction or the last ``reset``."""
        return self._frame_id

    def update(self, detections: Detections, frame: Frame | None = None) -> Detections:
        """Associate this frame's detections with the tracks.

        Args:
            detections: this frame's detections; incoming ``tracker_id`` is ignored.
            frame: unused (ByteTrack is motion-only).

        Returns:
            Rows of ``detections`` that belong to activated, currently tracked tracks, in
            input order, with ``tracker_id`` set. Boxes, confidence, class and extra data are
            the detector's. On frame 1 every detection scoring at least
            ``new_track_thresh`` is returned; later, a new object is returned from its
            second consecutive detection on.
        """
        del frame
        cfg = self.config
        self._frame_id += 1
        frame_id = self._frame_id
        t = self._tracks
        groups = ba.group_tracks(t)

        scores = detections.confidence
        det_xyah = xyxy_to_xyah(detections.xyxy)
        high, low = ba.split_by_score(scores, cfg.track_thresh, cfg.low_thresh)

        # Predict confirmed and lost tracks; a lost track's height velocity is zeroed.
        ba.predict_pool(t, self._kalman, groups, size_velocity=(7,))
        # 1 - IoU of every track with every detection, computed once: each association
        # below uses a block of it.
        dist = iou_distance(t.boxes(), detections.xyxy)

        def high_cost(track_rows: IntArray, det_rows: IntArray) -> Float64Array:
            cost = dist[track_rows][:, det_rows]
            return fuse_score(cost, scores[det_rows]) if cfg.fuse_score else cost

        assoc = ba.associate(
            t,
            groups,
            self._kalman,
            params=cfg,
            iou_dist=dist,
            high=high,
            low=low,
            high_cost=high_cost,
            measurements=det_xyah,
            detections=detections,
            frame_id=frame_id,
        )
        t, out_rows, track_ids = ba.finish_frame(
            t,
            groups,
            assoc,
            params=cfg,
            scores=scores,
            frame_id=frame_id,
            start_tracks=lambda rows: self._start_tracks(rows, det_xyah, detections, frame_id),
        )
        self._tracks = t
        result = detections[out_rows]
        result.tracker_id = track_ids
        return result

    def _start_tracks(
        self, det_rows: IntArray, det_xyah: Float64Array, detections: Detections, frame_id: int
    ) -> _TrackTable:
        n = int(det_rows.shape[0])
        mean, covariance = self._kalman.initiate(det_xyah[det_rows])
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return _TrackTable(
            mean=mean,
            covariance=covariance,
            track_id=ids,
            **ba.new_track_columns(det_rows, detections, frame_id),
        )
