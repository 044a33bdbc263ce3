"""Batched constant-velocity Kalman filter over BoT-SORT's ``(x, y, w, h)`` box state.

BoT-SORT (Aharon et al., "BoT-SORT: Robust Associations Multi-Pedestrian Tracking", 2022,
section 3.1) replaces ByteTrack's ``(x, y, a, h)`` state by box centre, width and height:

    state ``(x, y, w, h, vx, vy, vw, vh)``, measurement ``(x, y, w, h)``, pixels.

Estimating the width directly (instead of through the aspect ratio) fits the box width
better. The noise standard deviations scale with the box's own width for ``x, w`` and
height for ``y, h`` (the reference ``tracker/kalman_filter.py`` of NirAharon/BoT-SORT),
with the DeepSORT weights ``1/20`` (position) and ``1/160`` (velocity).

Only the noise model differs from ByteTrack's filter, so this is a subclass of
:class:`tapetum.track.kalman.KalmanFilter`: the constant-velocity transition and the
batched correction step (``update``) are shared. Every function takes all tracks at once, stacked
along the first axis; arrays are float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tapetum._types import Float64Array
from tapetum.track.kalman import MEASUREMENT_DIM, KalmanFilter


def xyxy_to_xywh(xyxy: npt.ArrayLike) -> Float64Array:
    """Box corners to the filter's measurement space.

    Args:
        xyxy: (N, 4) corners ``x1, y1, x2, y2`` in pixels.

    Returns:
        (N, 4) float64 ``x_centre, y_centre, w, h`` in pixels.
    """
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(boxes)
    out[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    out[:, :2] = boxes[:, :2] + 0.5 * out[:, 2:]
    return out


def xywh_to_xyxy(xywh: npt.ArrayLike) -> Float64Array:
    """Inverse of ``xyxy_to_xywh``.

    Args:
        xywh: (N, 4) ``x_centre, y_centre, w, h`` (the first four columns of a state mean
            may be passed directly).

    Returns:
        (N, 4) float64 corners ``x1, y1, x2, y2`` in pixels.
    """
    boxes = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    half = 0.5 * boxes[:, 2:]
    return np.concatenate((boxes[:, :2] - half, boxes[:, :2] + half), axis=1)


def _diag(std: Float64Array) -> Float64Array:
    """(N, D) standard deviations to (N, D, D) diagonal covariances."""
    n, d = std.shape
    out = np.zeros((n, d, d), np.float64)
    idx = np.arange(d)
    out[:, idx, idx] = np.square(std)
    return out


@dataclass(frozen=True, slots=True)
class KalmanFilterXYWH(KalmanFilter):
    """Constant-velocity Kalman filter for (x, y, w, h) boxes, batched over tracks.

    Attributes:
        std_weight_position: position noise standard deviation per pixel of box size.
        std_weight_velocity: velocity noise standard deviation per pixel of box size.

    Example:
        >>> kf = KalmanFilterXYWH()
        >>> mean, cov = kf.initiate(xyxy_to_xywh([[0, 0, 40, 80]]))
        >>> mean, cov = kf.predict(mean, cov)
        >>> xywh_to_xyxy(mean[:, :4]).round(1).tolist()
        [[0.0, 0.0, 40.0, 80.0]]
    """

    def initiate(self, measurements: npt.ArrayLike) -> tuple[Float64Array, Float64Array]:
        """Start tracks from unassociated measurements.

        Args:
            measurements: (N, 4) ``x, y, w, h``.

        Returns:
            mean (N, 8) with zero velocity, and diagonal covariance (N, 8, 8).
        """
        z = np.asarray(measurements, dtype=np.float64).reshape(-1, MEASUREMENT_DIM)
        mean = np.concatenate((z, np.zeros_like(z)), axis=1)
        wh = np.concatenate((z[:, 2:], z[:, 2:]), axis=1)  # (w, h, w, h)
        std = np.concatenate(
            (2 * self.std_weight_position * wh, 10 * self.std_weight_velocity * wh), axis=1
        )
        return mean, _diag(std)

    def predict(
        self, mean: Float64Array, covariance: Float64Array
    ) -> tuple[Float64Array, Float64Array]:
        """Advance every track by one frame (the reference's ``multi_predict``).

        Args:
            mean: (N, 8) state means.
            covariance: (N, 8, 8) state covariances.

        Returns:
            New (N, 8) means and (N, 8, 8) covariances; the inputs are not modified.
        """
        wh = np.concatenate((mean[:, 2:4], mean[:, 2:4]), axis=1)
        std = np.concatenate((self.std_weight_position * wh, self.std_weight_velocity * wh), axis=1)
        # Transition: position += velocity, written out instead of two 8x8 products.
        new_mean = mean.copy()
        new_mean[:, :MEASUREMENT_DIM] += mean[:, MEASUREMENT_DIM:]
        p = covariance
        m = MEASUREMENT_DIM
        new_cov = p.copy()
        # F P F^T with F = [[I, I], [0, I]] on 4x4 blocks [[A, B], [C, D]]:
        # [[A + B + C + D, B + D], [C + D, D]].
        new_cov[:, :m, :m] += p[:, :m, m:] + p[:, m:, :m] + p[:, m:, m:]
        new_cov[:, :m, m:] += p[:, m:, m:]
        new_cov[:, m:, :m] += p[:, m:, m:]
        idx = np.arange(2 * m)
        new_cov[:, idx, idx] += np.square(std)
        return new_mean, new_cov

    def project(
        self, mean: Float64Array, covariance: Float64Array
    ) -> tuple[Float64Array, Float64Array]:
        """Map states to measurement space.

        Returns:
            Projected (N, 4) means and (N, 4, 4) innovation covariances (state uncertainty
            plus measurement noise).
        """
        wh = np.concatenate((mean[:, 2:4], mean[:, 2:4]), axis=1)
        cov = covariance[:, :MEASUREMENT_DIM, :MEASUREMENT_DIM].copy()
        idx = np.arange(MEASUREMENT_DIM)
        cov[:, idx, idx] += np.square(self.std_weight_position * wh)
        return mean[:, :MEASUREMENT_DIM].copy(), cov
