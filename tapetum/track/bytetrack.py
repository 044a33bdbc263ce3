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

The whole frame is one compiled call (numba) over a structure of arrays holding every
track: :mod:`tapetum.track.kernels.byte_step`, shared with BoT-SORT.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError
from tapetum.track.coast import coast_byte_core
from tapetum.track.kalman import KalmanFilter

#: ``tapetum.track.kernels.kalman8.MOTION_XYAH`` (the kernels load numba; this does not).
MOTION_XYAH = 0

__all__ = ["ByteTrackConfig", "ByteTracker", "TrackState"]


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


class TrackState(enum.IntEnum):
    """Life-cycle state of a track; removed tracks are deleted."""

    TRACKED = 1
    LOST = 2


class ByteTracker:
    """ByteTrack multi-object tracker for one stream (implements ``Tracker``).

    The frame runs as one compiled call (:mod:`tapetum.track.kernels.byte_step`); the
    first tracker built after installing compiles it (a few seconds, then cached).

    Example:
        >>> import numpy as np
        >>> from tapetum.core.detections import Detections
        >>> tracker = ByteTracker(ByteTrackConfig(frame_rate=25))
        >>> dets = Detections(np.array([[10, 10, 50, 90]]), np.array([0.9]), np.array([0]))
        >>> tracker.update(dets).tracker_id
        array([1])
    """

    def __init__(self, config: ByteTrackConfig | None = None) -> None:
        from tapetum.track.kernels import byte_step as kernel  # numba: load on use

        self.config = cfg = config if config is not None else ByteTrackConfig()
        kalman = KalmanFilter()
        params = kernel.make_params(
            track_thresh=cfg.track_thresh,
            low_thresh=cfg.low_thresh,
            new_track_thresh=cfg.new_track_thresh,
            match_thresh=cfg.match_thresh,
            low_match_thresh=cfg.low_match_thresh,
            unconfirmed_match_thresh=cfg.unconfirmed_match_thresh,
            duplicate_iou=cfg.duplicate_iou,
            std_weight_position=kalman.std_weight_position,
            std_weight_velocity=kalman.std_weight_velocity,
        )
        flags = kernel.make_flags(
            motion=MOTION_XYAH,
            max_frames_lost=cfg.max_frames_lost,
            fuse_score=cfg.fuse_score,
            appearance=False,
        )
        self._core = kernel.ByteCore(params, flags)
        self._frame_id = 0
        self._last = Detections.empty()

    def reset(self) -> None:
        """Forget every track; the next frame is frame 1 and ids restart at 1."""
        self._core.reset()
        self._frame_id = 0
        self._last = Detections.empty()

    def state_sizes(self) -> dict[str, int]:
        """Tracks held now (tracked, lost and unconfirmed; ended ones are deleted)."""
        return {"tracker_tracks": int(self._core.state.n)}

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
        self._frame_id += 1
        ids = self._core.step(
            self._frame_id, detections.xyxy, detections.confidence, detections.class_id
        )
        rows = np.flatnonzero(ids >= 0)
        result = detections[rows]
        result.tracker_id = ids[rows]
        self._last = result
        return result

    def predict(self, frame: Frame | None = None) -> Detections:
        """A frame without detections (implements ``PredictingTracker``): confirmed and
        lost tracks move by the Kalman filter; nothing is matched, started or lost, but
        the frame counts towards how long a lost track is kept.

        Returns:
            The tracks of the last ``update``, with their predicted boxes.
        """
        del frame
        self._frame_id += 1
        return coast_byte_core(self._core, self._last)
