"""Batched Kalman filter against the single-track DeepSORT/ByteTrack equations."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from tapetum.track.kalman import KalmanFilter, xyah_to_xyxy, xyxy_to_xyah

F64 = npt.NDArray[np.float64]
W_POS, W_VEL = 1.0 / 20, 1.0 / 160


def _ref_initiate(z: F64) -> tuple[F64, F64]:
    h = z[3]
    std = [2 * W_POS * h, 2 * W_POS * h, 1e-2, 2 * W_POS * h]
    std += [10 * W_VEL * h, 10 * W_VEL * h, 1e-5, 10 * W_VEL * h]
    return np.r_[z, np.zeros(4)], np.diag(np.square(std))


def _ref_motion() -> F64:
    f = np.eye(8)
    for i in range(4):
        f[i, 4 + i] = 1.0
    return f


def _ref_predict(mean: F64, cov: F64) -> tuple[F64, F64]:
    h = mean[3]
    std = [W_POS * h, W_POS * h, 1e-2, W_POS * h, W_VEL * h, W_VEL * h, 1e-5, W_VEL * h]
    f = _ref_motion()
    return f @ mean, f @ cov @ f.T + np.diag(np.square(std))


def _ref_update(mean: F64, cov: F64, z: F64) -> tuple[F64, F64]:
    h_mat = np.eye(4, 8)
    r = np.diag(np.square([W_POS * mean[3], W_POS * mean[3], 1e-1, W_POS * mean[3]]))
    s = h_mat @ cov @ h_mat.T + r
    gain = cov @ h_mat.T @ np.linalg.inv(s)
    return mean + gain @ (z - h_mat @ mean), cov - gain @ s @ gain.T


def _random_measurements(rng: np.random.Generator, n: int) -> F64:
    xy = rng.uniform(0, 1000, (n, 2))
    a = rng.uniform(0.3, 1.5, (n, 1))
    h = rng.uniform(20, 300, (n, 1))
    return np.hstack((xy, a, h))


def test_batched_filter_matches_single_track_equations() -> None:
    rng = np.random.default_rng(0)
    kf = KalmanFilter()
    z0 = _random_measurements(rng, 6)
    mean, cov = kf.initiate(z0)
    ref = [_ref_initiate(z) for z in z0]
    for _ in range(5):
        mean, cov = kf.predict(mean, cov)
        ref = [_ref_predict(m, c) for m, c in ref]
        z = z0 + rng.normal(0, 3, z0.shape) * [1, 1, 0.01, 1]
        mean, cov = kf.update(mean, cov, z)
        ref = [_ref_update(m, c, zi) for (m, c), zi in zip(ref, z, strict=True)]
        np.testing.assert_allclose(mean, np.stack([m for m, _ in ref]), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(cov, np.stack([c for _, c in ref]), rtol=1e-9, atol=1e-9)


def test_predict_moves_by_velocity_and_grows_uncertainty() -> None:
    kf = KalmanFilter()
    mean, cov = kf.initiate(np.array([[100.0, 50.0, 0.5, 80.0], [10.0, 10.0, 1.0, 40.0]]))
    mean[:, 4:6] = [[3.0, -2.0], [0.0, 1.0]]
    new_mean, new_cov = kf.predict(mean, cov)
    np.testing.assert_allclose(new_mean[:, :2], [[103.0, 48.0], [10.0, 11.0]])
    # Every variance grows, position variances most (they also absorb velocity variance).
    assert np.all(np.diagonal(new_cov, axis1=1, axis2=2) > np.diagonal(cov, axis1=1, axis2=2))
    # Inputs are left untouched.
    assert mean[0, 0] == 100.0


def test_update_pulls_toward_measurement_and_shrinks_uncertainty() -> None:
    kf = KalmanFilter()
    mean, cov = kf.predict(*kf.initiate(np.array([[100.0, 100.0, 0.5, 100.0]])))
    z = np.array([[110.0, 95.0, 0.5, 104.0]])
    new_mean, new_cov = kf.update(mean, cov, z)
    before = np.abs(mean[:, :4] - z)
    after = np.abs(new_mean[:, :4] - z)
    assert np.all(after[:, [0, 1, 3]] < before[:, [0, 1, 3]])
    # Pulled toward, not past, the measurement.
    assert np.all(np.sign(new_mean[:, :2] - mean[:, :2]) == np.sign(z[:, :2] - mean[:, :2]))
    assert np.all(
        np.diagonal(new_cov, axis1=1, axis2=2)[:, :4] < np.diagonal(cov, axis1=1, axis2=2)[:, :4]
    )


def test_update_with_no_tracks_is_a_no_op() -> None:
    kf = KalmanFilter()
    mean, cov = kf.update(np.empty((0, 8)), np.empty((0, 8, 8)), np.empty((0, 4)))
    assert mean.shape == (0, 8) and cov.shape == (0, 8, 8)


def test_xyxy_xyah_known_values() -> None:
    np.testing.assert_allclose(xyxy_to_xyah([[10, 20, 50, 100]]), [[30.0, 60.0, 0.5, 80.0]])
    np.testing.assert_allclose(xyah_to_xyxy([[30.0, 60.0, 0.5, 80.0]]), [[10, 20, 50, 100]])


@settings(max_examples=50, deadline=None)
@given(
    st.floats(-1e4, 1e4),
    st.floats(-1e4, 1e4),
    st.floats(0.5, 2e3),
    st.floats(0.5, 2e3),
)
def test_xyxy_xyah_round_trip(x1: float, y1: float, w: float, h: float) -> None:
    box = np.array([[x1, y1, x1 + w, y1 + h]])
    np.testing.assert_allclose(xyah_to_xyxy(xyxy_to_xyah(box)), box, rtol=1e-9, atol=1e-6)
