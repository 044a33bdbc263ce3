"""What the drift monitor measures on each frame: image statistics and a scene thumbnail.

Everything is computed on a small copy of the frame (``SMALL_WIDTH`` pixels wide, bilinear;
about 0.5 ms for a 720p frame on one core), so the cost does not grow with the camera's
resolution:

* ``brightness``: mean luma (0–255);
* ``contrast``: standard deviation of luma;
* ``sharpness``: ``log10(1 + var(Laplacian(luma)))`` — blur and defocus lower it
  (the variance-of-Laplacian focus measure, Pech-Pacheco et al., ICPR 2000);
* ``colour_rg``, ``colour_bg``: ``log`` of the mean red (blue) over the mean green, the
  grey-world colour balance — a white-balance or lighting-colour change moves them;
* ``scene``: a 16×9 luma thumbnail, mean-removed and scaled to unit norm (144 values): a
  tiny embedding of the scene's layout that a camera move, zoom or a different scene
  changes while people walking through it barely do.

:class:`FeatureExtractor` turns each :class:`~tapetum.core.result.FrameResult` of a stream
into the observations of every drift signal (:mod:`tapetum.monitor.drift_signals`): the
image statistics at most ``image_hz`` times a second of video, the model's outputs
(detections, confidences, box sizes, classes, ReID embeddings when the tracker computed
them) and the tracking health of a :class:`~tapetum.monitor.tracks.TrackLedger` on every
frame. Time is ``frame.index / fps``: video time, which a paced, dropped or replayed
stream keeps.

Example:
    >>> import numpy as np
    >>> scalars, scene = image_features(np.full((72, 128, 3), 100, np.uint8))
    >>> [round(float(v), 2) for v in scalars]
    [100.0, 0.0, 0.0, 0.0, 0.0]
    >>> scene.shape
    (144,)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tapetum._types import Float32Array, Float64Array, UInt8Array
from tapetum.core.result import FrameResult
from tapetum.monitor.tracks import TrackLedger

__all__ = [
    "IMAGE_SIGNALS",
    "SCENE_SHAPE",
    "SMALL_WIDTH",
    "FeatureExtractor",
    "image_features",
]

#: The per-frame scalar image signals, in the order :func:`image_features` returns them.
IMAGE_SIGNALS = ("brightness", "contrast", "sharpness", "colour_rg", "colour_bg")

#: Width in pixels of the copy the statistics are computed on.
SMALL_WIDTH = 256

#: (width, height) of the scene thumbnail.
SCENE_SHAPE = (16, 9)


def image_features(image: UInt8Array) -> tuple[Float64Array, Float32Array]:
    """Scalar statistics (``IMAGE_SIGNALS`` order) and the scene thumbnail of one
    ``(H, W, 3)`` uint8 BGR frame."""
    import cv2

    h, w = image.shape[:2]
    if w > SMALL_WIDTH:
        size = (SMALL_WIDTH, max(1, round(h * SMALL_WIDTH / w)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    else:
        small = image
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    mean, std = cv2.meanStdDev(gray)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S))
    sharp = float(np.log10(1.0 + float(lap_std[0, 0]) ** 2))
    b, g, r = (float(v) for v in cv2.mean(small)[:3])
    scalars = np.array(
        [
            float(mean[0, 0]),
            float(std[0, 0]),
            sharp,
            np.log((r + 1.0) / (g + 1.0)),
            np.log((b + 1.0) / (g + 1.0)),
        ],
        np.float64,
    )
    thumb = cv2.resize(gray, SCENE_SHAPE, interpolation=cv2.INTER_AREA).astype(np.float32)
    thumb = thumb.reshape(-1)
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    scene: Float32Array = thumb / norm if norm > 1e-6 else thumb
    return scalars, scene


#: Embedding rows kept per frame (a window holds at most this × frames).
EMBEDDINGS_PER_FRAME = 8


class FeatureExtractor:
    """Observations of every drift signal from one stream's frame results.

    Args:
        fps: the stream's nominal frame rate (time is ``index / fps``).
        image_hz: image statistics at most this many times per second of video (they
            cost about 0.5 ms a frame; the model and tracking signals cost microseconds).
        short_track_s: tracks that lived less than this are "short".
    """

    def __init__(self, fps: float = 25.0, image_hz: float = 4.0, short_track_s: float = 1.0):
        self.fps = fps if fps and fps > 0 else 25.0
        self.image_period_s = 1.0 / image_hz if image_hz > 0 else float("inf")
        self.short_track_s = short_track_s
        self.ledger = TrackLedger()
        self._next_image_s = -np.inf

    def time_s(self, result: FrameResult) -> float:
        return result.frame.index / self.fps

    def image_due(self, t: float) -> bool:
        """Whether the frame at ``t`` seconds gets image statistics (and, if so, book it)."""
        if t < self._next_image_s:
            return False
        self._next_image_s = t + self.image_period_s
        return True

    def observe(self, result: FrameResult) -> dict[str, npt.NDArray[Any]]:
        """This frame's observations, by signal name (a signal with nothing to say this
        frame is absent: image statistics between samples, ReID without embeddings)."""
        t = self.time_s(result)
        obs: dict[str, npt.NDArray[Any]] = {}
        if self.image_due(t):
            obs.update(self.observe_image(result.frame.image))
        det = result.detections
        n = len(det)
        if not result.predicted:  # the model ran on this frame
            obs.update(self._model_signals(result))
        events = self.ledger.update(det.tracker_id, det.xyxy, t)
        deaths = events.lifetimes_s
        obs["births"] = np.array([float(events.births)])
        obs["deaths"] = np.array([float(deaths.size)])
        if deaths.size:
            obs["track_length"] = deaths
            short = float((deaths < self.short_track_s).sum())
            obs["short_tracks"] = np.array([short, float(deaths.size)])
        if events.births:
            obs["rebirths"] = np.array([float(events.rebirths), float(events.births)])
        if events.active or n:
            obs["tracks_per_detection"] = np.array([events.active / max(n, 1)])
        return obs

    @staticmethod
    def _model_signals(result: FrameResult) -> dict[str, npt.NDArray[Any]]:
        """What the model said about the frame (absent on frames the detector skipped,
        whose boxes are the tracker's predictions)."""
        det = result.detections
        frame = result.frame
        wh = np.maximum(det.xyxy[:, 2:] - det.xyxy[:, :2], 0.0).astype(np.float64)
        diag = float(np.sqrt(max(frame.width * frame.height, 1)))
        obs: dict[str, npt.NDArray[Any]] = {
            "detections": np.array([float(len(det))]),
            "confidence": det.confidence.astype(np.float64),
            "box_size": np.sqrt(wh[:, 0] * wh[:, 1]) / diag,
            "class_mix": det.class_id,
        }
        if det.embeddings is not None and len(det):
            obs["appearance"] = det.embeddings[:EMBEDDINGS_PER_FRAME]
        return obs

    @staticmethod
    def observe_image(image: UInt8Array) -> dict[str, npt.NDArray[Any]]:
        """The image signals of one frame."""
        scalars, scene = image_features(image)
        obs: dict[str, npt.NDArray[Any]] = {
            name: scalars[i : i + 1] for i, name in enumerate(IMAGE_SIGNALS)
        }
        obs["scene"] = scene[None, :]
        return obs
