"""OC-SORT: SORT made robust to occlusion and non-linear motion by trusting observations.

Cao et al., "Observation-Centric SORT: Rethinking SORT for Robust Multi-Object Tracking"
(CVPR 2023); the logic follows the reference ``trackers/ocsort_tracker/ocsort.py`` of
``noahcao/OC_SORT``. Motion is SORT's constant-velocity Kalman filter on ``(x, y, s, r)``
(``kalman_xysr.py``); on top of it, per frame:

1. Predict every track. **OCM** (observation-centric momentum): match tracks to the
   detections scoring above ``det_thresh`` on ``IoU + inertia * score * angle``, where
   ``angle`` in [-1/2, 1/2] rewards a detection lying in the direction the track's own
   *observations* were moving (from the observation ``delta_t`` frames back to the last
   one), not the filter's velocity, which drifts while a track is unobserved.
2. Optionally (``use_byte``), match the tracks left over to the low-score detections on
   IoU with the predicted boxes, as ByteTrack does.
3. **OCR** (observation-centric recovery): match the tracks still left over to the
   detections still left over on IoU with each track's *last observed box*. This recovers
   objects that stopped or were briefly occluded, where the prediction has run away.
4. **ORU** (observation-centric re-update): when a track unobserved for ``g - 1`` frames
   is matched again, roll its filter back to the frame it was lost and re-run ``g``
   predict/update steps along a virtual straight path from the last observation to the
   new one, so the velocity error accumulated in the dark is undone.
5. Start tracks from the high-score detections nobody claimed; delete tracks unobserved
   for more than ``max_age`` frames (at 30 fps).

Track state is a structure of arrays (``_TrackTable``): prediction, correction and cost
matrices are array operations over all tracks at once. ORU loops over the gap frames
only, each step batched over the tracks re-found on this frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tapetum.core.boxes import box_iou
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError
from tapetum.track.assignment import max_weight_matching
from tapetum.track.kalman_xysr import KalmanFilterXYSR, xysr_to_xyxy, xyxy_to_xysr
from tapetum.track.table import ColumnTable

Float64Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: ``history_age`` of an empty slot in the observation ring; older than any window start.
_NO_OBSERVATION = np.iinfo(np.int64).min // 2


@dataclass(frozen=True, slots=True)
class OCSortConfig:
    """OC-SORT parameters; defaults are the reference implementation's (MOT17/DanceTrack).

    Attributes:
        det_thresh: detections scoring above this are associated and start tracks (the
            reference's ``--track_thresh``, default 0.6).
        low_thresh: with ``use_byte``, detections scoring above this and below
            ``det_thresh`` join the BYTE association (the reference hard-codes 0.1).
        max_age: frames a track survives without an observation, at 30 fps.
        min_hits: consecutive observations after its birth before a track is reported;
            during the first ``min_hits`` frames of a stream every observed track is.
        iou_threshold: smallest IoU of an accepted match, in every association.
        delta_t: how many frames back the observation that sets a track's direction of
            motion (OCM) is taken from.
        inertia: weight of the direction-consistency term against IoU (the paper's
            ``lambda``).
        use_byte: run ByteTrack's low-score association between OCM and OCR.
        frame_rate: stream frame rate in frames per second; scales ``max_age``.
    """

    det_thresh: float = 0.6
    low_thresh: float = 0.1
    max_age: int = 30
    min_hits: int = 3
    iou_threshold: float = 0.3
    delta_t: int = 3
    inertia: float = 0.2
    use_byte: bool = False
    frame_rate: float = 30.0

    def __post_init__(self) -> None:
        for name in ("det_thresh", "low_thresh", "iou_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"OCSortConfig.{name} must be in [0, 1], got {value}")
        if self.low_thresh > self.det_thresh:
            raise ConfigError(
                f"OCSortConfig.low_thresh ({self.low_thresh}) must not exceed "
                f"det_thresh ({self.det_thresh})"
            )
        if self.max_age < 0:
            raise ConfigError(f"OCSortConfig.max_age must be >= 0 frames, got {self.max_age}")
        if self.min_hits < 0:
            raise ConfigError(f"OCSortConfig.min_hits must be >= 0, got {self.min_hits}")
        if self.delta_t < 1:
            raise ConfigError(f"OCSortConfig.delta_t must be >= 1 frame, got {self.delta_t}")
        if not self.inertia >= 0:
            raise ConfigError(f"OCSortConfig.inertia must be >= 0, got {self.inertia}")
        if not self.frame_rate > 0:
            raise ConfigError(f"OCSortConfig.frame_rate must be > 0 fps, got {self.frame_rate}")

    @property
    def max_frames_lost(self) -> int:
        """Frames an unobserved track survives at this frame rate."""
        return int(self.frame_rate / 30.0 * self.max_age)


@dataclass(slots=True)
class _TrackTable(ColumnTable):
    """All live tracks of one tracker, one row per track (structure of arrays).

    Attributes:
        mean: (T, 7) Kalman state ``x, y, s, r, vx, vy, vs``.
        covariance: (T, 7, 7) Kalman covariance.
        frozen_mean: (T, 7) the state predicted on the first frame a track went unobserved,
            kept for ORU; meaningless while the track is observed.
        frozen_covariance: (T, 7, 7) its covariance.
        last_box: (T, 4) last observed xyxy box, in pixels (OCR matches on it).
        history_box: (T, delta_t, 4) ring of the last observed boxes, slot ``age % delta_t``.
        history_age: (T, delta_t) track age at which each slot was observed.
        velocity: (T, 2) unit direction ``dy, dx`` of observed motion (OCM); zero until the
            second observation.
        track_id: (T,) identity, 0 until the track is first reported.
        age: (T,) frames since birth.
        since_update: (T,) frames since the last observation (0: observed this frame).
        hit_streak: (T,) observations since the last missed frame, birth excluded.
        det_index: (T,) row of this frame's detections observed by the track, -1 if none.
    """

    mean: Float64Array
    covariance: Float64Array
    frozen_mean: Float64Array
    frozen_covariance: Float64Array
    last_box: Float64Array
    history_box: Float64Array
    history_age: IntArray
    velocity: Float64Array
    track_id: IntArray
    age: IntArray
    since_update: IntArray
    hit_streak: IntArray
    det_index: IntArray

    @classmethod
    def empty(cls, delta_t: int) -> _TrackTable:
        return cls(
            mean=np.empty((0, 7), np.float64),
            covariance=np.empty((0, 7, 7), np.float64),
            frozen_mean=np.empty((0, 7), np.float64),
            frozen_covariance=np.empty((0, 7, 7), np.float64),
            last_box=np.empty((0, 4), np.float64),
            history_box=np.empty((0, delta_t, 4), np.float64),
            history_age=np.empty((0, delta_t), np.int64),
            velocity=np.empty((0, 2), np.float64),
            track_id=np.empty(0, np.int64),
            age=np.empty(0, np.int64),
            since_update=np.empty(0, np.int64),
            hit_streak=np.empty(0, np.int64),
            det_index=np.empty(0, np.int64),
        )


def _centres(xyxy: Float64Array) -> Float64Array:
    """(N, 4) boxes to (N, 2) centres ``cx, cy``."""
    return 0.5 * (xyxy[:, :2] + xyxy[:, 2:])


def _unit_direction(from_xy: Float64Array, to_xy: Float64Array) -> tuple[Any, Any]:
    """``dy, dx`` of the unit vector between centres, broadcast over the inputs.

    The reference's ``speed_direction``: the 1e-6 makes a static object's direction zero
    instead of NaN.
    """
    dx = to_xy[..., 0] - from_xy[..., 0]
    dy = to_xy[..., 1] - from_xy[..., 1]
    norm = np.sqrt(dx * dx + dy * dy) + 1e-6
    return dy / norm, dx / norm


def _direction_consistency(
    velocity: Float64Array, reference_boxes: Float64Array, det_boxes: Float64Array
) -> Float64Array:
    """OCM's angle term, ``(pi/2 - angle) / pi`` in [-1/2, 1/2], per track and detection.

    Args:
        velocity: (T, 2) each track's observed direction of motion ``dy, dx`` (unit or 0).
        reference_boxes: (T, 4) each track's observation ``delta_t`` frames back.
        det_boxes: (D, 4) detections.

    Returns:
        (T, D): 1/2 where the detection continues the track's direction, -1/2 where it
        reverses it, 0 for a track with no direction yet.
    """
    dy, dx = _unit_direction(_centres(reference_boxes)[:, None, :], _centres(det_boxes)[None])
    cos = np.clip(velocity[:, 1:2] * dx + velocity[:, 0:1] * dy, -1.0, 1.0)
    result: Float64Array = (0.5 * np.pi - np.arccos(cos)) / np.pi
    return result


def _match(iou: Float64Array, weight: Float64Array, threshold: float, *, first: bool) -> IntArray:
    """Matched ``[row, col]`` pairs (K, 2) of one association round, as the reference does.

    Maximum-weight matching over all pairs, then pairs with IoU below ``threshold`` are
    dropped. In the first round, when every row and column has at most one pair above the
    threshold those pairs are taken directly; the later rounds run only if some pair is.
    """
    if iou.size == 0:
        return np.empty((0, 2), np.int64)
    above = iou > threshold
    if first:
        if above.any() and above.sum(0).max() == 1 and above.sum(1).max() == 1:
            return np.argwhere(above).astype(np.int64)
    elif not above.any():
        return np.empty((0, 2), np.int64)
    pairs = max_weight_matching(weight)
    return pairs[iou[pairs[:, 0], pairs[:, 1]] >= threshold]


class OCSortTracker:
    """OC-SORT multi-object tracker for one stream (implements ``Tracker``).

    Class-agnostic, like the reference: a track may match a detection of any class; the
    output carries the detector's class.

    Example:
        >>> import numpy as np
        >>> from tapetum.core.detections import Detections
        >>> tracker = OCSortTracker(OCSortConfig(frame_rate=25))
        >>> dets = Detections(np.array([[10, 10, 50, 90]]), np.array([0.9]), np.array([0]))
        >>> tracker.update(dets).tracker_id
        array([1])
    """

    def __init__(self, config: OCSortConfig | None = None) -> None:
        self.config = config if config is not None else OCSortConfig()
        self._kalman = KalmanFilterXYSR()
        self._tracks = _TrackTable.empty(self.config.delta_t)
        self._frame_id = 0
        self._next_id = 1

    def reset(self) -> None:
        """Forget every track; the next frame is frame 1 and ids restart at 1."""
        self._tracks = _TrackTable.empty(self.config.delta_t)
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
            frame: unused (OC-SORT is motion-only).

        Returns:
            Rows of ``detections`` observed by a reported track on this frame, in input
            order, with ``tracker_id`` set. A track is reported once it has been observed
            on ``min_hits`` consecutive frames after its birth frame (on every frame during
            the stream's first ``min_hits`` frames). Boxes, confidence, class and extra
            data are the detector's.
        """
        del frame
        cfg = self.config
        self._frame_id += 1
        boxes = detections.xyxy.astype(np.float64)
        scores = detections.confidence.astype(np.float64)
        high = np.flatnonzero(scores > cfg.det_thresh)

        t = self._predict(self._tracks)
        track_boxes = xysr_to_xyxy(t.mean[:, :4])
        reference_boxes = self._previous_observations(t)

        # First association (OCM): IoU plus direction consistency, scaled by confidence.
        iou = box_iou(track_boxes, boxes[high]).astype(np.float64)
        angle = _direction_consistency(t.velocity, reference_boxes, boxes[high])
        weight = iou + cfg.inertia * angle * scores[high][None, :]
        pairs = _match(iou, weight, cfg.iou_threshold, first=True)
        track_free = np.ones(len(t), np.bool_)
        high_free = np.ones(high.shape[0], np.bool_)
        track_free[pairs[:, 0]] = False
        high_free[pairs[:, 1]] = False
        match_tracks = [pairs[:, 0]]
        match_dets = [high[pairs[:, 1]]]

        # BYTE: leftover tracks' predictions against the low-score detections.
        if cfg.use_byte:
            low = np.flatnonzero((scores > cfg.low_thresh) & (scores < cfg.det_thresh))
            rows = np.flatnonzero(track_free)
            iou = box_iou(track_boxes[rows], boxes[low]).astype(np.float64)
            pairs = _match(iou, iou, cfg.iou_threshold, first=False)
            track_free[rows[pairs[:, 0]]] = False
            match_tracks.append(rows[pairs[:, 0]])
            match_dets.append(low[pairs[:, 1]])

        # OCR: leftover tracks' last observations against the leftover high detections.
        rows = np.flatnonzero(track_free)
        cols = np.flatnonzero(high_free)
        iou = box_iou(t.last_box[rows], boxes[high[cols]]).astype(np.float64)
        pairs = _match(iou, iou, cfg.iou_threshold, first=False)
        track_free[rows[pairs[:, 0]]] = False
        high_free[cols[pairs[:, 1]]] = False
        match_tracks.append(rows[pairs[:, 0]])
        match_dets.append(high[cols[pairs[:, 1]]])

        # A track missing for the first time keeps its prediction for a later ORU.
        freeze = track_free & (t.since_update == 1)
        t.frozen_mean[freeze] = t.mean[freeze]
        t.frozen_covariance[freeze] = t.covariance[freeze]

        self._observe(
            t, np.concatenate(match_tracks), np.concatenate(match_dets), boxes, reference_boxes
        )

        t = t.concat(self._start_tracks(high[high_free], boxes))

        report = (t.since_update == 0) & (
            (t.hit_streak >= cfg.min_hits) | (self._frame_id <= cfg.min_hits)
        )
        # Ids are handed out on first report, so tentative tracks that never confirm leave
        # no gaps in the numbering.
        unnamed = np.flatnonzero(report & (t.track_id == 0))
        t.track_id[unnamed] = np.arange(self._next_id, self._next_id + unnamed.size)
        self._next_id += int(unnamed.size)

        self._tracks = t.select(t.since_update <= cfg.max_frames_lost)

        out_rows = t.det_index[report]
        order = np.argsort(out_rows, kind="stable")
        result = detections[out_rows[order]]
        result.tracker_id = t.track_id[report][order].copy()
        return result

    def _predict(self, t: _TrackTable) -> _TrackTable:
        """Advance every track one frame; drop tracks whose predicted box is not real."""
        t.det_index[:] = -1
        # The reference stops a shrinking box's area velocity before the area reaches zero.
        t.mean[t.mean[:, 2] + t.mean[:, 6] <= 0, 6] = 0.0
        t.mean, t.covariance = self._kalman.predict(t.mean, t.covariance)
        t.age += 1
        t.hit_streak[t.since_update > 0] = 0
        t.since_update += 1
        finite: BoolArray = np.all(np.isfinite(xysr_to_xyxy(t.mean[:, :4])), axis=1)
        return t if finite.all() else t.select(finite)

    def _previous_observations(self, t: _TrackTable) -> Float64Array:
        """(T, 4) each track's oldest observation of the last ``delta_t`` frames.

        The reference's ``k_previous_obs``: the observation ``delta_t`` frames back, else
        the nearest later one, else (none in the window) the last observation.
        """
        in_window: BoolArray = t.history_age >= (t.age - self.config.delta_t)[:, None]
        slot = np.where(in_window, t.history_age, np.iinfo(np.int64).max).argmin(axis=1)
        windowed = t.history_box[np.arange(len(t)), slot]
        result: Float64Array = np.where(np.any(in_window, axis=1)[:, None], windowed, t.last_box)
        return result

    def _observe(
        self,
        t: _TrackTable,
        rows: IntArray,
        det_rows: IntArray,
        boxes: Float64Array,
        reference_boxes: Float64Array,
    ) -> None:
        """Correct the tracks at ``rows`` with detections ``det_rows``, in place."""
        det_boxes = boxes[det_rows]
        dy, dx = _unit_direction(_centres(reference_boxes[rows]), _centres(det_boxes))
        t.velocity[rows] = np.stack((dy, dx), axis=1)

        lost = t.since_update[rows] > 1
        if lost.any():
            self._re_update(t, rows[lost], det_boxes[lost])
        # After ORU this applies the new observation a second time, as the reference does
        # (its virtual path ends on the observation itself).
        t.mean[rows], t.covariance[rows] = self._kalman.update(
            t.mean[rows], t.covariance[rows], xyxy_to_xysr(det_boxes)
        )

        t.last_box[rows] = det_boxes
        slot = t.age[rows] % self.config.delta_t
        t.history_box[rows, slot] = det_boxes
        t.history_age[rows, slot] = t.age[rows]
        t.since_update[rows] = 0
        t.hit_streak[rows] += 1
        t.det_index[rows] = det_rows

    def _re_update(self, t: _TrackTable, rows: IntArray, new_boxes: Float64Array) -> None:
        """ORU: replay the frozen filter along a straight path to the new observation.

        A track last observed on frame ``f`` and observed again on ``f + g`` restarts from
        the state predicted for ``f + 1`` and is updated with ``g`` virtual boxes whose
        centre, width and height move linearly from the last observation to the new one,
        predicting between them. Each step is batched over the tracks whose gap is that
        long.
        """
        gap = t.since_update[rows]
        mean = t.frozen_mean[rows]
        covariance = t.frozen_covariance[rows]
        start = np.concatenate(
            (_centres(t.last_box[rows]), t.last_box[rows, 2:] - t.last_box[rows, :2]), axis=1
        )
        end = np.concatenate((_centres(new_boxes), new_boxes[:, 2:] - new_boxes[:, :2]), axis=1)
        step = (end - start) / gap[:, None]
        for k in range(int(gap.max())):
            active = np.flatnonzero(gap > k)
            cxcywh = start[active] + (k + 1) * step[active]
            w, h = cxcywh[:, 2], cxcywh[:, 3]
            virtual = np.stack((cxcywh[:, 0], cxcywh[:, 1], w * h, w / h), axis=1)
            mean[active], covariance[active] = self._kalman.update(
                mean[active], covariance[active], virtual
            )
            more = active[gap[active] > k + 1]
            mean[more], covariance[more] = self._kalman.predict(mean[more], covariance[more])
        t.mean[rows] = mean
        t.covariance[rows] = covariance

    def _start_tracks(self, det_rows: IntArray, boxes: Float64Array) -> _TrackTable:
        n = int(det_rows.shape[0])
        delta_t = self.config.delta_t
        det_boxes = boxes[det_rows]
        mean, covariance = self._kalman.initiate(xyxy_to_xysr(det_boxes))
        # The birth detection is the first observation, at age 0 (slot 0 of the ring).
        history_box = np.zeros((n, delta_t, 4), np.float64)
        history_box[:, 0] = det_boxes
        history_age = np.full((n, delta_t), _NO_OBSERVATION, np.int64)
        history_age[:, 0] = 0
        return _TrackTable(
            mean=mean,
            covariance=covariance,
            frozen_mean=mean.copy(),
            frozen_covariance=covariance.copy(),
            last_box=det_boxes,
            history_box=history_box,
            history_age=history_age,
            velocity=np.zeros((n, 2), np.float64),
            track_id=np.zeros(n, np.int64),
            age=np.zeros(n, np.int64),
            since_update=np.zeros(n, np.int64),
            hit_streak=np.zeros(n, np.int64),
            det_index=det_rows.astype(np.int64, copy=True),
        )
