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

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tapetum.core.boxes import box_iou
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError
from tapetum.track.assignment import fuse_score, iou_distance, linear_assignment
from tapetum.track.kalman import KalmanFilter, xyah_to_xyxy, xyxy_to_xyah
from tapetum.track.table import ColumnTable

Float64Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


class TrackState(enum.IntEnum):
    """Life-cycle state of a track; removed tracks are deleted from the table."""

    TRACKED = 1
    LOST = 2


# Plain numpy scalars for the per-frame comparisons: an enum member costs an attribute
# lookup through the enum machinery on every use, which adds up at ~20 uses per frame.
_TRACKED = np.int8(TrackState.TRACKED)
_LOST = np.int8(TrackState.LOST)


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
class _TrackTable(ColumnTable):
    """All live tracks of one tracker, one row per track (structure of arrays).

    Attributes:
        mean: (T, 8) Kalman state ``x, y, a, h`` and velocities.
        covariance: (T, 8, 8) Kalman covariance.
        track_id: (T,) positive identity.
        state: (T,) ``TrackState`` values.
        activated: (T,) False for a track born after frame 1 until its second detection.
        score: (T,) confidence of the last associated detection.
        class_id: (T,) class of the last associated detection.
        start_frame: (T,) frame number the track was born on.
        last_frame: (T,) frame number of the last associated detection.
        det_index: (T,) row of this frame's detections associated to the track, -1 if none.
    """

    mean: Float64Array
    covariance: Float64Array
    track_id: IntArray
    state: npt.NDArray[np.int8]
    activated: BoolArray
    score: npt.NDArray[np.float32]
    class_id: IntArray
    start_frame: IntArray
    last_frame: IntArray
    det_index: IntArray

    @classmethod
    def empty(cls) -> _TrackTable:
        return cls(
            mean=np.empty((0, 8), np.float64),
            covariance=np.empty((0, 8, 8), np.float64),
            track_id=np.empty(0, np.int64),
            state=np.empty(0, np.int8),
            activated=np.empty(0, np.bool_),
            score=np.empty(0, np.float32),
            class_id=np.empty(0, np.int64),
            start_frame=np.empty(0, np.int64),
            last_frame=np.empty(0, np.int64),
            det_index=np.empty(0, np.int64),
        )

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
        t.det_index[:] = -1

        scores = detections.confidence
        det_xyah = xyxy_to_xyah(detections.xyxy)
        # Strict inequalities as in the reference: a score of exactly track_thresh joins
        # neither association.
        high = np.flatnonzero(scores > cfg.track_thresh)
        low = np.flatnonzero((scores > cfg.low_thresh) & (scores < cfg.track_thresh))

        was_lost = t.state == _LOST
        unconfirmed = np.flatnonzero((t.state == _TRACKED) & ~t.activated)
        pool = np.flatnonzero(((t.state == _TRACKED) & t.activated) | was_lost)

        # Predict confirmed and lost tracks. A lost track's height velocity is zeroed so a
        # shrinking or growing box does not run away while unobserved. Unconfirmed tracks
        # are not predicted (as in the reference).
        pool_mean = t.mean[pool]
        pool_mean[was_lost[pool], 7] = 0.0
        t.mean[pool], t.covariance[pool] = self._kalman.predict(pool_mean, t.covariance[pool])
        # 1 - IoU of every track with every detection, computed once: each association
        # below uses a block of it.
        dist = iou_distance(t.boxes(), detections.xyxy)

        # First association: confirmed + lost tracks with high-score detections.
        cost = dist[pool][:, high]
        if cfg.fuse_score:
            cost = fuse_score(cost, scores[high])
        matches_1, free_pool, free_high = linear_assignment(cost, cfg.match_thresh)
        match_tracks = [pool[matches_1[:, 0]]]
        match_dets = [high[matches_1[:, 1]]]

        # Second association: tracks that were tracked last frame with low-score detections.
        leftover = pool[free_pool]
        leftover = leftover[t.state[leftover] == _TRACKED]
        cost = dist[leftover][:, low]
        matches_2, free_leftover, _ = linear_assignment(cost, cfg.low_match_thresh)
        match_tracks.append(leftover[matches_2[:, 0]])
        match_dets.append(low[matches_2[:, 1]])
        t.state[leftover[free_leftover]] = _LOST

        # Unconfirmed tracks (born last frame) with the high-score detections left over.
        remaining_high = high[free_high]
        cost = dist[unconfirmed][:, remaining_high]
        if cfg.fuse_score:
            cost = fuse_score(cost, scores[remaining_high])
        matches_3, free_unconfirmed, free_remaining = linear_assignment(
            cost, cfg.unconfirmed_match_thresh
        )
        match_tracks.append(unconfirmed[matches_3[:, 0]])
        match_dets.append(remaining_high[matches_3[:, 1]])

        # Correct every matched track in one batched Kalman update.
        rows = np.concatenate(match_tracks)
        det_rows = np.concatenate(match_dets)
        t.mean[rows], t.covariance[rows] = self._kalman.update(
            t.mean[rows], t.covariance[rows], det_xyah[det_rows]
        )
        t.state[rows] = _TRACKED
        t.activated[rows] = True
        t.score[rows] = scores[det_rows]
        t.class_id[rows] = detections.class_id[det_rows]
        t.last_frame[rows] = frame_id
        t.det_index[rows] = det_rows

        # Drop unconfirmed tracks that found no detection and tracks lost for too long.
        remove = np.zeros(len(t), np.bool_)
        remove[unconfirmed[free_unconfirmed]] = True
        remove |= was_lost & (t.state == _LOST) & (frame_id - t.last_frame > cfg.max_frames_lost)
        t = t.select(~remove)

        # Start tracks from confident high-score detections nobody claimed.
        new = remaining_high[free_remaining]
        new = new[scores[new] >= cfg.new_track_thresh]
        t = t.concat(self._start_tracks(new, det_xyah, detections, frame_id))

        t = self._remove_duplicates(t)
        self._tracks = t

        out_mask = (t.state == _TRACKED) & t.activated
        out_rows = t.det_index[out_mask]
        order = np.argsort(out_rows, kind="stable")
        result = detections[out_rows[order]]
        result.tracker_id = t.track_id[out_mask][order].copy()
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
            state=np.full(n, _TRACKED, np.int8),
            # Only on the first frame is a track reported before its second detection.
            activated=np.full(n, frame_id == 1, np.bool_),
            score=detections.confidence[det_rows],
            class_id=detections.class_id[det_rows],
            start_frame=np.full(n, frame_id, np.int64),
            last_frame=np.full(n, frame_id, np.int64),
            det_index=det_rows.astype(np.int64, copy=True),
        )

    def _remove_duplicates(self, t: _TrackTable) -> _TrackTable:
        """Of each tracked/lost pair with IoU above ``duplicate_iou`` drop the younger one."""
        tracked = np.flatnonzero(t.state == _TRACKED)
        lost = np.flatnonzero(t.state == _LOST)
        if tracked.size == 0 or lost.size == 0:
            return t
        boxes = t.boxes()
        pairs = box_iou(boxes[tracked], boxes[lost]) > self.config.duplicate_iou
        if not pairs.any():
            return t
        age = t.last_frame - t.start_frame
        tracked_older = age[tracked][:, None] > age[lost][None, :]
        remove = np.zeros(len(t), np.bool_)
        remove[tracked[(pairs & ~tracked_older).any(axis=1)]] = True
        remove[lost[(pairs & tracked_older).any(axis=0)]] = True
        return t.select(~remove)
