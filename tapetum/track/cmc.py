"""Camera-motion compensation (CMC): how the picture moved between two frames.

A moving or shaking camera shifts every object in the image at once, which a per-object
constant-velocity model cannot foresee: predicted boxes stay where the objects were and
IoU association fails. BoT-SORT (Aharon et al., 2022, section 3.2; the reference
``tracker/gmc.py`` of NirAharon/BoT-SORT) estimates a global 2x3 affine warp from the
previous frame to the current one and applies it to every track's Kalman state before
association (:func:`warp_states`, the reference's ``multi_gmc``).

Estimators (one instance per stream; each remembers the previous frame):

- :class:`SparseFlowCMC`: corners (``cv2.goodFeaturesToTrack``) of the previous frame,
  followed into the current one with pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``),
  and a RANSAC similarity fit (``cv2.estimateAffinePartial2D``). Work is on a grey frame
  downscaled by ``downscale``; corners inside detection boxes are ignored, since people
  walking are exactly the motion that is not the camera's.
- :class:`EccCMC`: dense intensity alignment (``cv2.findTransformECC``, Euclidean warp) of
  blurred, downscaled grey frames, detection boxes masked out too. No corners needed;
  slower.

Both return the identity on the first frame, on a resolution change, and when the fit
fails (too few points, ECC not converging): a missed compensation costs one frame of
worse association, a wrong one would cost more.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from tapetum._types import Float64Array, UInt8Array
from tapetum.errors import ConfigError

log = logging.getLogger(__name__)


#: Names accepted by :func:`make_cmc`.
CMC_METHODS = ("sparseOptFlow", "ecc", "none")


def identity_warp() -> Float64Array:
    """(2, 3) float64 affine warp that moves nothing."""
    return np.eye(2, 3, dtype=np.float64)


class CameraMotionEstimator(Protocol):
    """Estimates the warp from the previous frame's pixels to this frame's."""

    def estimate(self, image: UInt8Array, boxes_xyxy: npt.ArrayLike | None = None) -> Float64Array:
        """(2, 3) float64 affine ``A`` with ``p_now = A[:, :2] @ p_prev + A[:, 2]`` in pixels.

        Args:
            image: (H, W, 3) uint8 BGR frame.
            boxes_xyxy: (N, 4) boxes of moving objects in this frame, pixels; their pixels
                are not used to measure the camera's motion.
        """
        ...

    def reset(self) -> None:
        """Forget the previous frame."""
        ...


def _grey(image: UInt8Array, downscale: int) -> UInt8Array:
    """(h, w) uint8 grey copy of a BGR (or already grey) frame, shrunk by ``downscale``."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if downscale > 1:
        h, w = grey.shape[:2]
        grey = cv2.resize(grey, (w // downscale, h // downscale), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(grey, dtype=np.uint8)


def _scale_warp(warp: Float64Array, downscale: int) -> Float64Array:
    """A warp fitted on the downscaled frame, in full-resolution pixels.

    Rotation and scale are unchanged; the translation grows by the downscale factor.
    (The reference does this for sparse flow but forgets it for ECC.)
    """
    out = warp.astype(np.float64, copy=True)
    out[:, 2] *= downscale
    return out


def _box_mask(
    shape: tuple[int, ...], boxes_xyxy: npt.ArrayLike | None, downscale: int
) -> UInt8Array:
    """(h, w) uint8 mask of a downscaled frame: 255 for background, 0 inside any box.

    Args:
        shape: the downscaled frame's shape.
        boxes_xyxy: (N, 4) boxes in full-resolution pixels, or None.
        downscale: the factor the frame was shrunk by.
    """
    h, w = shape[:2]
    mask = np.full((h, w), 255, np.uint8)
    if boxes_xyxy is None:
        return mask
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) / downscale
    if boxes.shape[0] == 0:
        return mask
    x1 = np.clip(np.floor(boxes[:, 0]), 0, w).astype(np.int64)
    y1 = np.clip(np.floor(boxes[:, 1]), 0, h).astype(np.int64)
    x2 = np.clip(np.ceil(boxes[:, 2]), 0, w).astype(np.int64)
    y2 = np.clip(np.ceil(boxes[:, 3]), 0, h).astype(np.int64)
    # Rasterise all boxes at once with a 2-D difference array: +1 at each box's top-left,
    # -1 past its right and bottom edges, then two cumulative sums.
    diff = np.zeros((h + 1, w + 1), np.int32)
    np.add.at(diff, (y1, x1), 1)
    np.add.at(diff, (y1, x2), -1)
    np.add.at(diff, (y2, x1), -1)
    np.add.at(diff, (y2, x2), 1)
    mask[diff.cumsum(axis=0).cumsum(axis=1)[:h, :w] > 0] = 0
    return mask


class SparseFlowCMC:
    """Sparse optical flow camera-motion estimator (BoT-SORT's ``sparseOptFlow``).

    Args:
        downscale: integer factor the grey frame is shrunk by before any work.
        max_corners: most corners tracked per frame.
        quality_level: corner strength relative to the strongest, ``goodFeaturesToTrack``.
        min_distance_px: least distance between corners, in downscaled pixels.

    Example:
        >>> cmc = SparseFlowCMC()
        >>> frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
        >>> cmc.estimate(frame).tolist()  # first frame: identity
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """

    def __init__(
        self,
        downscale: int = 2,
        max_corners: int = 1000,
        quality_level: float = 0.01,
        min_distance_px: int = 1,
    ) -> None:
        if downscale < 1:
            raise ConfigError(f"SparseFlowCMC.downscale must be >= 1, got {downscale}")
        self.downscale = int(downscale)
        self.max_corners = int(max_corners)
        self.quality_level = float(quality_level)
        self.min_distance_px = int(min_distance_px)
        self._prev: UInt8Array | None = None
        self._prev_points: npt.NDArray[Any] | None = None

    def reset(self) -> None:
        self._prev = None
        self._prev_points = None

    def estimate(self, image: UInt8Array, boxes_xyxy: npt.ArrayLike | None = None) -> Float64Array:
        """See :meth:`CameraMotionEstimator.estimate`."""
        grey = _grey(image, self.downscale)
        points = cv2.goodFeaturesToTrack(
            grey,
            maxCorners=self.max_corners,
            qualityLevel=self.quality_level,
            minDistance=self.min_distance_px,
            mask=_box_mask(grey.shape, boxes_xyxy, self.downscale),
            blockSize=3,
            useHarrisDetector=False,
            k=0.04,
        )
        prev, prev_points = self._prev, self._prev_points
        self._prev, self._prev_points = grey, points
        if prev is None or prev.shape != grey.shape or prev_points is None:
            return identity_warp()
        if len(prev_points) < 5:
            return identity_warp()
        next_points, status, _ = cv2.calcOpticalFlowPyrLK(
            prev, grey, prev_points, np.empty_like(prev_points)
        )
        ok = status.reshape(-1).astype(bool)
        src = prev_points.reshape(-1, 2)[ok]
        dst = next_points.reshape(-1, 2)[ok]
        if src.shape[0] < 5:
            log.debug("camera motion: %d tracked corners, keeping identity", src.shape[0])
            return identity_warp()
        warp, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC)
        if warp is None:
            return identity_warp()
        return _scale_warp(warp, self.downscale)


class EccCMC:
    """Enhanced-correlation-coefficient camera-motion estimator (BoT-SORT's ``ecc``).

    Args:
        downscale: integer factor the grey frame is shrunk by (after a 3x3 Gaussian blur).
        max_iterations: ECC iteration cap (the reference uses 5000; 100 converges on small
            inter-frame motion and bounds the per-frame time).
        eps: ECC convergence threshold on the correlation increment.
    """

    def __init__(self, downscale: int = 4, max_iterations: int = 100, eps: float = 1e-5) -> None:
        if downscale < 1:
            raise ConfigError(f"EccCMC.downscale must be >= 1, got {downscale}")
        self.downscale = int(downscale)
        self.criteria = (
            cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT,
            int(max_iterations),
            float(eps),
        )
        self._prev: UInt8Array | None = None

    def reset(self) -> None:
        self._prev = None

    def estimate(self, image: UInt8Array, boxes_xyxy: npt.ArrayLike | None = None) -> Float64Array:
        """See :meth:`CameraMotionEstimator.estimate`."""
        blurred = np.asarray(cv2.GaussianBlur(_grey(image, 1), (3, 3), 1.5), np.uint8)
        grey = _grey(blurred, self.downscale)
        prev, self._prev = self._prev, grey
        if prev is None or prev.shape != grey.shape:
            return identity_warp()
        try:
            # findTransformECC(template, input) finds W with input(W(x)) ~ template(x),
            # i.e. W maps previous-frame coordinates to current-frame ones.
            _, warp = cv2.findTransformECC(
                prev,
                grey,
                np.eye(2, 3, dtype=np.float32),
                cv2.MOTION_EUCLIDEAN,
                self.criteria,
                _box_mask(grey.shape, boxes_xyxy, self.downscale),
                1,
            )
        except cv2.error:
            log.debug("camera motion: ECC did not converge, keeping identity")
            return identity_warp()
        return _scale_warp(np.asarray(warp, np.float64), self.downscale)


def make_cmc(method: str) -> CameraMotionEstimator | None:
    """Build an estimator by name: ``"sparseOptFlow"``, ``"ecc"`` or ``"none"`` (None)."""
    if method == "sparseOptFlow":
        return SparseFlowCMC()
    if method == "ecc":
        return EccCMC()
    if method == "none":
        return None
    raise ConfigError(f"unknown camera-motion method {method!r}; choose one of {CMC_METHODS}")


def warp_states(
    mean: Float64Array, covariance: Float64Array, warp: Float64Array
) -> tuple[Float64Array, Float64Array]:
    """Move every Kalman state by a camera warp (the reference's ``STrack.multi_gmc``).

    The 2x2 linear part ``R`` acts on each of the four 2-vectors of the state
    ``(x, y), (w, h), (vx, vy), (vw, vh)`` and the translation on the centre only:
    ``mean' = kron(I4, R) mean + [t, 0...]``, ``cov' = kron(I4, R) cov kron(I4, R)^T``.

    Args:
        mean: (T, 8) ``x, y, w, h`` states and velocities, pixels.
        covariance: (T, 8, 8).
        warp: (2, 3) affine from :class:`CameraMotionEstimator`.

    Returns:
        New (T, 8) means and (T, 8, 8) covariances; the inputs are not modified.
    """
    r = warp[:, :2]
    r8 = np.kron(np.eye(4), r)
    new_mean = mean @ r8.T
    new_mean[:, :2] += warp[:, 2]
    new_cov = r8 @ covariance @ r8.T
    return new_mean, new_cov
