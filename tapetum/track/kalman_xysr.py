"""Batched constant-velocity Kalman filter over SORT's ``(x, y, s, r)`` box state.

SORT (Bewley et al., 2016) and OC-SORT (Cao et al., CVPR 2023) model a box by its centre
``x, y`` in pixels, its area ``s = w * h`` in square pixels and its aspect ratio
``r = w / h``. The 7-dimensional state is ``(x, y, s, r, vx, vy, vs)``: the aspect ratio is
taken as constant, so it has no velocity. Unlike ByteTrack's filter (``kalman.py``) the noise
is fixed, not scaled by box size; the values are the OC-SORT reference's
(``trackers/ocsort_tracker/ocsort.py``, ``KalmanBoxTracker``):

- measurement noise ``R = diag(1, 1, 10, 10)``,
- process noise ``Q = diag(1, 1, 1, 1, 0.01, 0.01, 0.0001)``,
- initial covariance ``P0 = diag(10, 10, 10, 10, 1e4, 1e4, 1e4)`` (unobserved velocities
  get a large uncertainty).

Every function takes all tracks at once, stacked along the first axis; there is no Python
loop per track. Arrays are float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tapetum._types import Float64Array

#: Number of measured quantities (x, y, s, r) and of state dimensions.
MEASUREMENT_DIM = 4
STATE_DIM = 7


def xyxy_to_xysr(xyxy: npt.ArrayLike) -> Float64Array:
    """Box corners to the filter's measurement space.

    Args:
        xyxy: (N, 4) corners ``x1, y1, x2, y2`` in pixels.

    Returns:
        (N, 4) float64 ``x_centre, y_centre, w * h, w / h``. The reference adds 1e-6 to
        ``h`` in the ratio so a degenerate zero-height box stays finite; so do we.
    """
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.stack((boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w * h, w / (h + 1e-6)), axis=1)


def xysr_to_xyxy(xysr: npt.ArrayLike) -> Float64Array:
    """Inverse of ``xyxy_to_xysr``.

    Args:
        xysr: (N, 4) ``x_centre, y_centre, area, w / h`` (the first four columns of a state
            mean may be passed directly).

    Returns:
        (N, 4) float64 corners in pixels. A state whose ``s * r`` went negative has no
        real box and gives NaN rows; the tracker drops such tracks.
    """
    state = np.asarray(xysr, dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.sqrt(state[:, 2] * state[:, 3])
        h = state[:, 2] / w
    return np.stack(
        (
            state[:, 0] - 0.5 * w,
            state[:, 1] - 0.5 * h,
            state[:, 0] + 0.5 * w,
            state[:, 1] + 0.5 * h,
        ),
        axis=1,
    )


def _frozen(a: Float64Array) -> Float64Array:
    a.setflags(write=False)
    return a


def _motion_matrix() -> Float64Array:
    """(7, 7) transition for one frame: x, y, s += their velocities; r is constant."""
    f = np.eye(STATE_DIM, dtype=np.float64)
    f[0, 4] = f[1, 5] = f[2, 6] = 1.0
    return _frozen(f)


_MOTION_MATRIX = _motion_matrix()
_MEASUREMENT_NOISE = _frozen(np.diag([1.0, 1.0, 10.0, 10.0]))
_PROCESS_NOISE = _frozen(np.diag([1.0, 1.0, 1.0, 1.0, 1e-2, 1e-2, 1e-4]))
_INITIAL_COVARIANCE = _frozen(np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4]))
_IDENTITY = _frozen(np.eye(STATE_DIM, dtype=np.float64))


@dataclass(frozen=True, slots=True)
class KalmanFilterXYSR:
    """Constant-velocity Kalman filter for ``(x, y, s, r)`` boxes, batched over tracks.

    Example:
        >>> import numpy as np
        >>> kf = KalmanFilterXYSR()
        >>> mean, cov = kf.initiate(xyxy_to_xysr([[0, 0, 10, 20]]))
        >>> mean, cov = kf.predict(mean, cov)
        >>> mean, cov = kf.update(mean, cov, xyxy_to_xysr([[2, 0, 12, 20]]))
        >>> bool(mean[0, 4] > 0)  # it learned a rightward velocity
        True
    """

    def initiate(self, measurements: npt.ArrayLike) -> tuple[Float64Array, Float64Array]:
        """Start tracks from unassociated measurements.

        Args:
            measurements: (N, 4) ``x, y, s, r``.

        Returns:
            mean (N, 7) with zero velocity, and covariance (N, 7, 7) equal to ``P0``.
        """
        z = np.asarray(measurements, dtype=np.float64).reshape(-1, MEASUREMENT_DIM)
        n = z.shape[0]
        mean = np.zeros((n, STATE_DIM), np.float64)
        mean[:, :MEASUREMENT_DIM] = z
        return mean, np.broadcast_to(_INITIAL_COVARIANCE, (n, STATE_DIM, STATE_DIM)).copy()

    def predict(
        self, mean: Float64Array, covariance: Float64Array
    ) -> tuple[Float64Array, Float64Array]:
        """Advance every track by one frame.

        Args:
            mean: (N, 7) state means.
            covariance: (N, 7, 7) state covariances.

        Returns:
            New (N, 7) means and (N, 7, 7) covariances; the inputs are not modified.
        """
        f = _MOTION_MATRIX
        return mean @ f.T, f @ covariance @ f.T + _PROCESS_NOISE

    def update(
        self, mean: Float64Array, covariance: Float64Array, measurements: npt.ArrayLike
    ) -> tuple[Float64Array, Float64Array]:
        """Correct every track with its associated measurement.

        Args:
            mean: (N, 7) predicted means.
            covariance: (N, 7, 7) predicted covariances.
            measurements: (N, 4) ``x, y, s, r``, row i belonging to track i.

        Returns:
            Corrected (N, 7) means and (N, 7, 7) covariances; the inputs are not modified.
        """
        z = np.asarray(measurements, dtype=np.float64).reshape(-1, MEASUREMENT_DIM)
        if z.shape[0] == 0:
            return mean.copy(), covariance.copy()
        # H = [I 0], so H P H^T is the top-left 4x4 block and P H^T the left 7x4 block.
        # K = P H^T S^-1 is found by solving S K^T = (P H^T)^T on the stacked systems.
        cov_ht = covariance[:, :, :MEASUREMENT_DIM]
        innovation_cov = covariance[:, :MEASUREMENT_DIM, :MEASUREMENT_DIM] + _MEASUREMENT_NOISE
        gain = np.linalg.solve(innovation_cov, cov_ht.transpose(0, 2, 1)).transpose(0, 2, 1)
        innovation = z - mean[:, :MEASUREMENT_DIM]
        new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        # Joseph form, as the reference's filterpy-derived filter: it keeps P symmetric
        # and positive definite despite the 1e4 initial velocity variances.
        i_kh = np.broadcast_to(_IDENTITY, covariance.shape).copy()
        i_kh[:, :, :MEASUREMENT_DIM] -= gain
        new_cov = i_kh @ covariance @ i_kh.transpose(0, 2, 1) + (
            gain @ _MEASUREMENT_NOISE @ gain.transpose(0, 2, 1)
        )
        return new_mean, new_cov
