"""Batched constant-velocity Kalman filter over ByteTrack's box state.

The state of one track is ``(x, y, a, h, vx, vy, va, vh)``: box centre ``x, y`` in pixels,
aspect ratio ``a = w / h``, height ``h`` in pixels, and their per-frame velocities. The
noise model is the one of DeepSORT and ByteTrack (``yolox/tracker/kalman_filter.py``):
process and measurement noise scale with the box height, so a large, near object may
move more pixels per frame than a small, far one.

Every function takes all tracks at once, stacked along the first axis, like ByteTrack's
``multi_predict``; there is no Python loop per track. Arrays are float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tapetum._types import Float64Array

#: Number of measured quantities (x, y, a, h) and of state dimensions.
MEASUREMENT_DIM = 4
STATE_DIM = 8


def xyxy_to_xyah(xyxy: npt.ArrayLike) -> Float64Array:
    """Box corners to the filter's measurement space.

    Args:
        xyxy: (N, 4) corners ``x1, y1, x2, y2`` in pixels.

    Returns:
        (N, 4) float64 ``x_centre, y_centre, w / h, h``. A zero-height box gives an
        infinite or NaN aspect; detectors do not emit those and the filter does not guard.
    """
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    out = np.empty_like(boxes)
    out[:, :2] = boxes[:, :2] + 0.5 * wh
    out[:, 2] = wh[:, 0] / wh[:, 1]
    out[:, 3] = wh[:, 1]
    return out


def xyah_to_xyxy(xyah: npt.ArrayLike) -> Float64Array:
    """Inverse of ``xyxy_to_xyah``.

    Args:
        xyah: (N, 4) ``x_centre, y_centre, w / h, h`` (the first four columns of a state
            mean may be passed directly).

    Returns:
        (N, 4) float64 corners ``x1, y1, x2, y2`` in pixels.
    """
    boxes = np.asarray(xyah, dtype=np.float64).reshape(-1, 4)
    half = np.empty((boxes.shape[0], 2), np.float64)  # half width, half height
    half[:, 0] = 0.5 * boxes[:, 2] * boxes[:, 3]
    half[:, 1] = 0.5 * boxes[:, 3]
    out = np.empty_like(boxes)
    out[:, :2] = boxes[:, :2] - half
    out[:, 2:] = boxes[:, :2] + half
    return out


#: Indices of the diagonal of an (8, 8) state / (4, 4) measurement covariance.
_STATE_DIAG = np.arange(STATE_DIM)
_MEASUREMENT_DIAG = np.arange(MEASUREMENT_DIM)


def _diag(std: Float64Array) -> Float64Array:
    """(N, D) standard deviations to (N, D, D) diagonal covariances."""
    n, d = std.shape
    out = np.zeros((n, d, d), np.float64)
    idx = np.arange(d)
    out[:, idx, idx] = np.square(std)
    return out


def _height_std(h: Float64Array, pos: float, vel: float) -> Float64Array:
    """(N, 8) state noise standard deviations ``pos*h, pos*h, 1e-2, pos*h, vel*h, vel*h,
    1e-5, vel*h``: DeepSORT's height-scaled noise with a fixed aspect-ratio term."""
    std = np.multiply.outer(h, (pos, pos, 0.0, pos, vel, vel, 0.0, vel))
    std[:, 2] = 1e-2
    std[:, 6] = 1e-5
    return std


@dataclass(frozen=True, slots=True)
class KalmanFilter:
    """Constant-velocity Kalman filter for (x, y, a, h) boxes, batched over tracks.

    Attributes:
        std_weight_position: position noise standard deviation per pixel of box height.
        std_weight_velocity: velocity noise standard deviation per pixel of box height.
    """

    std_weight_position: float = 1.0 / 20
    std_weight_velocity: float = 1.0 / 160

    def initiate(self, measurements: npt.ArrayLike) -> tuple[Float64Array, Float64Array]:
        """Start tracks from unassociated measurements.

        Args:
            measurements: (N, 4) ``x, y, a, h``.

        Returns:
            mean (N, 8) with zero velocity, and covariance (N, 8, 8), diagonal. The aspect
            ratio gets a small fixed uncertainty because it is nearly constant for one object.
        """
        z = np.asarray(measurements, dtype=np.float64).reshape(-1, MEASUREMENT_DIM)
        mean = np.concatenate((z, np.zeros_like(z)), axis=1)
        std = _height_std(z[:, 3], 2 * self.std_weight_position, 10 * self.std_weight_velocity)
        return mean, _diag(std)

    def predict(
        self, mean: Float64Array, covariance: Float64Array
    ) -> tuple[Float64Array, Float64Array]:
        """Advance every track by one frame (ByteTrack's ``multi_predict``).

        Args:
            mean: (N, 8) state means.
            covariance: (N, 8, 8) state covariances.

        Returns:
            New (N, 8) means and (N, 8, 8) covariances; the inputs are not modified.
        """
        std = _height_std(mean[:, 3], self.std_weight_position, self.std_weight_velocity)
        m = MEASUREMENT_DIM
        # Transition F = [[I, I], [0, I]] (position += velocity), written out instead of
        # 8x8 products. Every entry of F x, F P and (F P) F^T is a sum of exactly two
        # non-zero terms, so this is bit-identical to the matrix products.
        new_mean = mean.copy()
        new_mean[:, :m] += mean[:, m:]
        new_cov = covariance.copy()
        new_cov[:, :m, :] += covariance[:, m:, :]  # F P
        new_cov[:, :, :m] += new_cov[:, :, m:]  # (F P) F^T
        new_cov[:, _STATE_DIAG, _STATE_DIAG] += np.square(std)
        return new_mean, new_cov

    def project(
        self, mean: Float64Array, covariance: Float64Array
    ) -> tuple[Float64Array, Float64Array]:
        """Map states to measurement space.

        Returns:
            Projected (N, 4) means and (N, 4, 4) innovation covariances (state uncertainty
            plus measurement noise).
        """
        std = np.multiply.outer(mean[:, 3], np.full(MEASUREMENT_DIM, self.std_weight_position))
        std[:, 2] = 1e-1
        # The measurement matrix is [I 0], so H P H^T is the top-left block of P.
        cov = covariance[:, :MEASUREMENT_DIM, :MEASUREMENT_DIM].copy()
        cov[:, _MEASUREMENT_DIAG, _MEASUREMENT_DIAG] += np.square(std)
        return mean[:, :MEASUREMENT_DIM].copy(), cov

    def update(
        self, mean: Float64Array, covariance: Float64Array, measurements: npt.ArrayLike
    ) -> tuple[Float64Array, Float64Array]:
        """Correct every track with its associated measurement.

        Args:
            mean: (N, 8) predicted means.
            covariance: (N, 8, 8) predicted covariances.
            measurements: (N, 4) ``x, y, a, h``, row i belonging to track i.

        Returns:
            Corrected (N, 8) means and (N, 8, 8) covariances.
        """
        z = np.asarray(measurements, dtype=np.float64).reshape(-1, MEASUREMENT_DIM)
        if z.shape[0] == 0:
            return mean.copy(), covariance.copy()
        projected_mean, projected_cov = self.project(mean, covariance)
        # P H^T is the left 8x4 block of P. The gain K = P H^T S^-1 is found by solving
        # S K^T = (P H^T)^T on the stacked (N, 4, 4) systems instead of inverting S.
        cov_ht = covariance[:, :, :MEASUREMENT_DIM]
        gain = np.linalg.solve(projected_cov, cov_ht.transpose(0, 2, 1)).transpose(0, 2, 1)
        innovation = z - projected_mean
        new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        new_cov = covariance - gain @ projected_cov @ gain.transpose(0, 2, 1)
        return new_mean, new_cov
