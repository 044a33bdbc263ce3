"""Trajectory forecasters on synthetic paths: exactness, time-awareness, lifetimes, batching."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapetum.core.detections import Detections
from tapetum.errors import ConfigError
from tapetum.track.forecast import (
    ConstantAccelerationConfig,
    ConstantAccelerationForecaster,
    ConstantVelocityConfig,
    ConstantVelocityForecaster,
    Forecaster,
    forecast_detections,
    forecast_ellipses,
)

F64 = npt.NDArray[np.float64]
HORIZONS = np.array([1.0, 2.0])


def _feed(fc: Forecaster, times: F64, path: F64, track_id: int = 1, height: float = 100.0) -> None:
    for t, xy in zip(times, path, strict=True):
        fc.update(np.array([track_id]), xy[None], float(t), np.array([height]))


def _linear(times: F64) -> F64:
    return np.stack((50.0 + 40.0 * times, 300.0 - 15.0 * times), axis=1)


def _accelerating(times: F64) -> F64:
    return np.stack((50.0 + 10.0 * times + 0.5 * 60.0 * times**2, 200.0 + 0 * times), axis=1)


@pytest.mark.parametrize("make", [ConstantVelocityForecaster, ConstantAccelerationForecaster])
def test_straight_constant_speed_path_is_forecast_exactly(make: type[Forecaster]) -> None:
    times = np.arange(0, 10.0, 1 / 30)
    fc = make()
    _feed(fc, times, _linear(times))
    out = fc.predict([1], HORIZONS)
    expected = _linear(times[-1] + HORIZONS)
    np.testing.assert_allclose(out.mean_px[0], expected, atol=1e-3)
    assert out.valid.tolist() == [True]


def test_constant_acceleration_beats_constant_velocity_on_accelerating_path() -> None:
    times = np.arange(0, 3.0, 1 / 30)
    path = _accelerating(times)
    truth = _accelerating(times[-1] + HORIZONS)
    errors = {}
    for name, fc in (
        ("cv", ConstantVelocityForecaster()),
        ("ca", ConstantAccelerationForecaster()),
        (
            "ca_pure",
            ConstantAccelerationForecaster(
                ConstantAccelerationConfig(acceleration_time_constant_s=None)
            ),
        ),
    ):
        _feed(fc, times, path)
        errors[name] = np.linalg.norm(fc.predict([1], HORIZONS).mean_px[0] - truth, axis=1)
    # CV misses 0.5·a·h² (30 px at 1 s, 120 px at 2 s) plus its velocity lag; plain CA
    # extrapolates a sustained acceleration exactly.
    assert (errors["cv"] > 30.0).all(), errors
    assert (errors["ca_pure"] < 0.5).all(), errors
    # The default Singer decay assumes the acceleration fades within ~0.5 s, so it gains less
    # on a sustained one, but still beats CV.
    assert (errors["ca"] < 0.95 * errors["cv"]).all(), errors


@pytest.mark.parametrize("make", [ConstantVelocityForecaster, ConstantAccelerationForecaster])
def test_uncertainty_grows_with_horizon(make: type[Forecaster]) -> None:
    times = np.arange(0, 2.0, 1 / 25)
    fc = make()
    _feed(fc, times, _linear(times))
    horizons = np.array([0.0, 0.5, 1.0, 2.0, 4.0])
    cov = fc.predict([1], horizons).cov_px2[0]
    var = cov[:, 0, 0] + cov[:, 1, 1]
    assert (np.diff(var) > 0).all(), var
    np.testing.assert_allclose(cov, cov.transpose(0, 2, 1))
    assert (np.linalg.eigvalsh(cov) > 0).all()


@pytest.mark.parametrize("make", [ConstantVelocityForecaster, ConstantAccelerationForecaster])
def test_irregular_timestamps_forecast_like_regular_ones(make: type[Forecaster]) -> None:
    rng = np.random.default_rng(3)
    regular = np.arange(0, 8.0, 1 / 30)
    # Random gaps of 10..150 ms (dropped frames, jittery clocks), ending at the same time.
    gaps = rng.uniform(0.01, 0.15, 200)
    irregular = np.cumsum(gaps)
    irregular = irregular[irregular < regular[-1]]
    irregular = np.append(irregular, regular[-1])
    forecasts = []
    for times in (regular, irregular):
        fc = make()
        _feed(fc, times, _linear(times))
        forecasts.append(fc.predict([1], HORIZONS).mean_px[0])
    np.testing.assert_allclose(forecasts[1], forecasts[0], atol=1e-2)
    np.testing.assert_allclose(forecasts[0], _linear(regular[-1] + HORIZONS), atol=1e-2)


def test_absent_tracks_are_forecast_from_their_last_observation_then_dropped() -> None:
    fc = ConstantVelocityForecaster(ConstantVelocityConfig(max_age_s=1.0))
    times = np.arange(0, 3.0, 0.1)
    _feed(fc, times, _linear(times), track_id=2)
    t_last = float(times[-1])
    for t in np.arange(t_last + 0.1, t_last + 0.95, 0.1):
        fc.update([1], [[0.0, 0.0]], float(t))
    out = fc.predict([2], [1.0])
    assert out.valid.tolist() == [True]
    # Forecast origin is the latest update, ~0.9 s after track 2 was last seen.
    np.testing.assert_allclose(out.mean_px[0, 0], _linear(np.array([t_last + 0.9 + 1.0]))[0], 1e-3)
    assert fc.track_ids.tolist() == [1, 2]
    fc.update([1], [[0.0, 0.0]], t_last + 1.05)
    assert fc.track_ids.tolist() == [1]
    gone = fc.predict([2, 1], [1.0])
    assert gone.valid.tolist() == [False, True]
    assert np.isnan(gone.mean_px[0]).all() and np.isnan(gone.cov_px2[0]).all()


def test_a_track_returning_after_the_timeout_starts_afresh() -> None:
    fc = ConstantVelocityForecaster(ConstantVelocityConfig(max_age_s=0.5))
    times = np.arange(0, 2.0, 0.1)
    _feed(fc, times, _linear(times))
    fc.update([1], [[500.0, 500.0]], 3.0)
    np.testing.assert_allclose(fc.predict([1], [1.0]).mean_px[0, 0], [500.0, 500.0])


def test_update_rejects_bad_input() -> None:
    fc = ConstantVelocityForecaster()
    with pytest.raises(ValueError, match="twice"):
        fc.update([1, 1], [[0, 0], [1, 1]], 0.0)
    with pytest.raises(ValueError, match="ids"):
        fc.update([1, 2], [[0, 0]], 0.0)
    fc.update([1], [[0, 0]], 1.0)
    with pytest.raises(ValueError, match="earlier"):
        fc.update([1], [[0, 0]], 0.5)
    with pytest.raises(ConfigError, match="max_age_s"):
        ConstantVelocityConfig(max_age_s=0)


def test_process_noise_quadrature_matches_closed_forms() -> None:
    dt = np.array([0.04, 0.5, 2.0])
    h = np.full(3, 100.0)
    cv = ConstantVelocityForecaster()
    q = (cv.config.acceleration_std_per_height * 100.0) ** 2
    d = dt[:, None, None]
    cv_ref = q * np.block([[d**3 / 3, d**2 / 2], [d**2 / 2, d]])
    np.testing.assert_allclose(cv._process_noise(dt, h), cv_ref, rtol=1e-12)
    ca = ConstantAccelerationForecaster(
        ConstantAccelerationConfig(acceleration_time_constant_s=None)
    )
    q = (ca.config.jerk_std_per_height * 100.0) ** 2
    ca_ref = q * np.block(
        [
            [d**5 / 20, d**4 / 8, d**3 / 6],
            [d**4 / 8, d**3 / 3, d**2 / 2],
            [d**3 / 6, d**2 / 2, d],
        ]
    )
    np.testing.assert_allclose(ca._process_noise(dt, h), ca_ref, rtol=1e-12)
    # A very slow Singer decay is plain CA.
    slow = ConstantAccelerationForecaster(
        ConstantAccelerationConfig(acceleration_time_constant_s=1e5)
    )
    np.testing.assert_allclose(slow._process_noise(dt, h), ca_ref, rtol=1e-4)
    np.testing.assert_allclose(slow._transition(dt), ca._transition(dt), rtol=1e-4)


def test_ellipses_axes_and_angle() -> None:
    theta = np.radians(30.0)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cov = np.stack((np.diag([9.0, 4.0]), rot @ np.diag([16.0, 1.0]) @ rot.T))
    ell = forecast_ellipses(cov, n_sigma=2.0)
    np.testing.assert_allclose(ell.semi_major_px, [6.0, 8.0])
    np.testing.assert_allclose(ell.semi_minor_px, [4.0, 2.0])
    np.testing.assert_allclose(ell.angle_deg, [0.0, 30.0], atol=1e-9)


def test_forecast_detections_attaches_flat_columns() -> None:
    fc = ConstantVelocityForecaster()
    det = Detections(
        xyxy=np.array([[0, 0, 10, 20], [100, 100, 140, 180]], np.float32),
        confidence=np.ones(2, np.float32),
        class_id=np.zeros(2, np.int64),
        tracker_id=np.array([-1, 5]),
    )
    out = forecast_detections(fc, det, 0.0, HORIZONS)
    assert out.data["forecast_xy"].shape == (2, 4)
    assert out.data["forecast_cov"].shape == (2, 6)
    assert np.isnan(out.data["forecast_xy"][0]).all()
    np.testing.assert_allclose(out.data["forecast_xy"][1], [120, 140, 120, 140])
    assert fc.track_ids.tolist() == [5]
    assert len(out[out.is_tracked]) == 1  # the columns slice with the rows
    # The source restarted its clock: the forecaster starts over rather than raising.
    restarted = forecast_detections(fc, det[1:], 0.0 - 5.0, HORIZONS)
    np.testing.assert_allclose(restarted.data["forecast_xy"][0], [120, 140, 120, 140])
    assert fc.latest_timestamp_s == -5.0


@settings(max_examples=25, deadline=None)
@given(
    n_tracks=st.integers(1, 6),
    n_frames=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    pure_ca=st.booleans(),
)
def test_batched_predict_equals_per_track_predict(
    n_tracks: int, n_frames: int, seed: int, pure_ca: bool
) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.choice(1000, n_tracks, replace=False)
    makers: list[Callable[[], Forecaster]] = [
        ConstantVelocityForecaster,
        lambda: ConstantAccelerationForecaster(
            ConstantAccelerationConfig(acceleration_time_constant_s=None if pure_ca else 0.7)
        ),
    ]
    for make in makers:
        batched = make()
        singles = {int(i): make() for i in ids}
        t = 0.0
        for _ in range(n_frames):
            t += float(rng.uniform(0.01, 0.3))
            present = rng.random(n_tracks) < 0.7
            order = rng.permutation(n_tracks)[present]  # rows in any order
            xy = rng.uniform(0, 1000, (len(order), 2))
            h = rng.uniform(20, 300, len(order))
            batched.update(ids[order], xy, t, h)
            for row, k in enumerate(order):
                singles[int(ids[k])].update(ids[k : k + 1], xy[row : row + 1], t, h[row : row + 1])
        horizons = np.array([0.0, 0.4, 1.0, 2.0])
        query = rng.permutation(ids)
        out = batched.predict(query, horizons)
        for row, tid in enumerate(query.tolist()):
            one = singles[tid].predict([tid], horizons, timestamp_s=t)
            assert out.valid[row] == one.valid[0]
            np.testing.assert_allclose(out.mean_px[row], one.mean_px[0], rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(out.cov_px2[row], one.cov_px2[0], rtol=1e-9, atol=1e-9)
