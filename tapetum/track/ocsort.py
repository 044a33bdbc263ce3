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

Track state is a fixed-capacity structure of arrays (``_TrackState``) owned by the
tracker, and the whole frame is one compiled call
(``tapetum.track.kernels.ocsort_step``): a frame of a few dozen tracks is a few hundred
small array operations, each costing more in interpreter overhead than in arithmetic.
The compiled frame reproduces the floating-point operations of the batched numpy
implementation this module had before (``KalmanFilterXYSR``, float32 ``box_iou``), so
its decisions are the same bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tapetum._types import Float64Array, IntArray
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError
from tapetum.track.coast import carry_forward

#: Rows of a new tracker's state; doubled whenever a frame could overflow it.
_INITIAL_CAPACITY = 64


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
            during the first ``min_hits`` frames of a stream every observed track is. On
            a stream with a detection interval this counts frames of video, not detector
            frames: see :meth:`OCSortTracker.predict`.
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


class _TrackState:
    """All tracks of one tracker, one row per track (structure of arrays), rows
    ``[0, n)`` live; the compiled frame updates it in place.

    Attributes:
        mean: (C, 7) Kalman state ``x, y, s, r, vx, vy, vs``.
        covariance: (C, 7, 7) Kalman covariance.
        frozen_mean: (C, 7) the state predicted on the first frame a track went unobserved,
            kept for ORU; meaningless while the track is observed.
        frozen_covariance: (C, 7, 7) its covariance.
        last_box: (C, 4) last observed xyxy box, in pixels (OCR matches on it).
        history_box: (C, delta_t, 4) ring of the last observed boxes, slot ``age % delta_t``.
        history_age: (C, delta_t) track age at which each slot was observed.
        velocity: (C, 2) unit direction ``dy, dx`` of observed motion (OCM); zero until the
            second observation.
        track_id: (C,) identity, 0 until the track is first reported.
        age: (C,) frames since birth.
        since_update: (C,) frames since the last observation (0: observed this frame).
        hit_streak: (C,) observations since the last missed frame, birth excluded.
    """

    __slots__ = (
        "age",
        "covariance",
        "frozen_covariance",
        "frozen_mean",
        "history_age",
        "history_box",
        "hit_streak",
        "last_box",
        "mean",
        "since_update",
        "track_id",
        "velocity",
    )

    def __init__(self, capacity: int, delta_t: int) -> None:
        self.mean: Float64Array = np.zeros((capacity, 7))
        self.covariance: Float64Array = np.zeros((capacity, 7, 7))
        self.frozen_mean: Float64Array = np.zeros((capacity, 7))
        self.frozen_covariance: Float64Array = np.zeros((capacity, 7, 7))
        self.last_box: Float64Array = np.zeros((capacity, 4))
        self.history_box: Float64Array = np.zeros((capacity, delta_t, 4))
        self.history_age: IntArray = np.zeros((capacity, delta_t), np.int64)
        self.velocity: Float64Array = np.zeros((capacity, 2))
        self.track_id: IntArray = np.zeros(capacity, np.int64)
        self.age: IntArray = np.zeros(capacity, np.int64)
        self.since_update: IntArray = np.zeros(capacity, np.int64)
        self.hit_streak: IntArray = np.zeros(capacity, np.int64)

    @property
    def capacity(self) -> int:
        """Rows allocated (C)."""
        return int(self.track_id.shape[0])

    def grown(self, capacity: int, n: int) -> _TrackState:
        """A state of ``capacity`` rows holding this one's first ``n`` rows."""
        bigger = _TrackState(capacity, self.history_age.shape[1])
        for name in self.__slots__:
            getattr(bigger, name)[:n] = getattr(self, name)[:n]
        return bigger


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
        # numba is imported (and the frame compiled or loaded from its cache) on first use,
        # not at ``import tapetum``.
        from tapetum.track.kernels import ocsort_step

        self._kernel = ocsort_step.ocsort_step
        self._last = Detections.empty()
        self.config = config if config is not None else OCSortConfig()
        self._state = _TrackState(_INITIAL_CAPACITY, self.config.delta_t)
        self._n_tracks = 0
        self._frame_id = 0
        self._next_id = 1
        self._coasted = 0  # frames predicted since the last update
        self._oru = True  # observation-centric re-update; tests switch it off
        # Load the compiled frame now (from the disk cache, or compile it) rather than on
        # the stream's first frame.
        self.update(Detections.empty())
        self.reset()

    def reset(self) -> None:
        """Forget every track; the next frame is frame 1 and ids restart at 1."""
        self._state = _TrackState(_INITIAL_CAPACITY, self.config.delta_t)
        self._n_tracks = 0
        self._frame_id = 0
        self._next_id = 1
        self._coasted = 0
        self._last = Detections.empty()

    def state_sizes(self) -> dict[str, int]:
        """Tracks held now (tracked, lost and unconfirmed; ended ones are deleted)."""
        return {"tracker_tracks": int(self._n_tracks)}

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
        # Confirmation in frames of video: after ``gap - 1`` predicted frames each
        # observation stands for ``gap`` frames (ceil: never fewer frames than asked).
        gap = 1 + self._coasted
        self._coasted = 0
        min_hits = -(-cfg.min_hits // gap)
        boxes = detections.xyxy.astype(np.float64)
        scores = detections.confidence.astype(np.float64)
        needed = self._n_tracks + boxes.shape[0]
        state = self._state
        if needed > state.capacity:
            capacity = state.capacity
            while capacity < needed:
                capacity *= 2
            state = self._state = state.grown(capacity, self._n_tracks)
        self._n_tracks, self._next_id, rows, ids = self._kernel(
            state.mean,
            state.covariance,
            state.frozen_mean,
            state.frozen_covariance,
            state.last_box,
            state.history_box,
            state.history_age,
            state.velocity,
            state.track_id,
            state.age,
            state.since_update,
            state.hit_streak,
            self._n_tracks,
            self._next_id,
            self._frame_id,
            boxes,
            scores,
            # Fixed argument types: one compiled specialisation whatever the config holds.
            float(cfg.det_thresh),
            float(cfg.low_thresh),
            bool(cfg.use_byte),
            float(cfg.iou_threshold),
            float(cfg.inertia),
            min_hits,
            cfg.max_frames_lost,
            self._oru,
        )
        result = detections[rows]
        result.tracker_id = ids
        self._last = result
        return result

    def predict(self, frame: Frame | None = None) -> Detections:
        """A frame without detections (implements ``PredictingTracker``): every track's
        filter is predicted one frame; nothing is matched, started or lost.

        The observation bookkeeping (``age``, ``max_age``, the ORU gap) counts detector
        frames, so a lost track survives ``max_age`` detector frames. ``min_hits`` is
        scaled to frames of video instead: when ``gap - 1`` predicted frames separate two
        updates, a track is reported after ``ceil(min_hits / gap)`` observations in a
        row. Counted in detector frames, a new object would stay unreported for
        ``min_hits * gap`` frames (12 at k = 4): 3.1 HOTA lost on MOT15 at k = 4
        (``bench/interval.py``). ``max_age`` in frames of video lost 0.7-1.1 HOTA on
        MOT17 at k = 2 and 4 in trial runs, so it stays in detector frames.

        Returns:
            The tracks of the last ``update``, with their predicted boxes.
        """
        del frame
        from tapetum.track.kernels.coast import coast_ocsort

        state = self._state
        self._coasted += 1
        boxes = coast_ocsort(state.mean, state.covariance, self._n_tracks)
        return carry_forward(self._last, state.track_id[: self._n_tracks], boxes)
