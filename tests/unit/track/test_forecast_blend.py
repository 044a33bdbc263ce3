"""A stream's online blend of learned and constant-velocity forecasts and its covariance scale:
learnt only from forecasts whose horizon has passed, towards whichever forecaster was right on
this stream, and to the ellipse size that covers what it should."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tapetum.errors import ConfigError
from tapetum.track.forecast_blend import OnlineBlend, OnlineBlendConfig, fit_coverage_scale
from tapetum.track.forecast_model import LearnedForecaster, load_forecast_model
from tests.unit.track.test_forecast_model import DT, K, write_cv_model


def _store(ids: np.ndarray, times: np.ndarray, xy: np.ndarray, h: float = 100.0) -> tuple:
    """A forecaster buffer: (C,) ids, (C, L) times, (C, L, 3) x, y, h."""
    c, length = xy.shape[:2]
    obs = np.empty((c, length, 3))
    obs[..., :2], obs[..., 2] = xy, h
    return ids, np.broadcast_to(times, (c, length)).copy(), obs


def _feed(
    blend: OnlineBlend, model_speed: float, truth_speed: float, cv_speed: float | None = None
) -> None:
    """Twenty tracks walking right at ``truth_speed`` box heights per second for 6 s, 10 fps;
    constant velocity forecasts ``cv_speed`` (default: the truth), the model ``model_speed``;
    every frame scores what has come due and records new forecasts."""
    cv_speed = truth_speed if cv_speed is None else cv_speed
    n, fps = 20, 10.0
    ids = np.arange(n, dtype=np.int64)
    steps = DT * np.arange(1, K + 1)
    frames = np.arange(0, 61)
    times = frames / fps
    xs = np.broadcast_to(100.0 * truth_speed * times, (n, len(frames)))
    for f, t in enumerate(times):
        past = slice(max(0, f - 47), f + 1)
        pad = 48 - (past.stop - past.start)
        tt = np.concatenate((np.full(pad, -np.inf), times[past]))
        xy = np.zeros((n, 48, 2))
        xy[:, pad:, 0] = xs[:, past]
        xy[:, :pad, 0] = xs[:, past.start, None]
        blend.score(t, *_store(ids, tt, xy))
        if blend.wants_record(t):
            cv = np.zeros((n, K, 2))
            cv[..., 0] = cv_speed * steps
            model = np.zeros((n, K, 2))
            model[..., 0] = model_speed * steps
            cov = np.zeros((n, K, 3))
            cov[..., 0] = cov[..., 1] = np.square(0.05 * np.arange(1, K + 1))
            origin = np.stack((xs[:, f], np.zeros(n), np.full(n, 100.0)), axis=1)
            members = model[:, None]
            blend.record(ids, t, origin, members, cv, blend.blend(members, cv), cov)


def test_the_blend_turns_to_constant_velocity_where_it_was_right() -> None:
    blend = OnlineBlend(OnlineBlendConfig(prior_samples=50.0), DT, K)
    assert np.allclose(blend.weights(), 0.1)  # mostly CV, until evidence comes
    _feed(blend, model_speed=0.5, truth_speed=1.5)
    assert blend.scored > 1000
    weights = blend.weights()
    assert weights[..., 0].max() < 0.02
    # vertically the model and constant velocity agree: nothing to choose, the prior stays
    np.testing.assert_allclose(weights[..., 1], 0.1)


def test_the_blend_keeps_the_model_where_it_was_right() -> None:
    blend = OnlineBlend(OnlineBlendConfig(prior_samples=50.0), DT, K)
    _feed(blend, model_speed=1.0, truth_speed=1.0, cv_speed=2.0)  # CV overshoots
    assert blend.scored > 1000
    assert blend.weights()[..., 0].min() > 0.9


def test_nothing_is_scored_before_its_horizon_has_passed() -> None:
    blend = OnlineBlend(OnlineBlendConfig(check_steps=(10,)), DT, K)
    ids = np.array([1])
    zeros = np.zeros((1, K, 2))
    origin = np.array([[0.0, 0.0, 100.0]])
    blend.record(ids, 0.0, origin, zeros[:, None], zeros, zeros, np.ones((1, K, 3)))
    times = np.full(48, -np.inf)
    times[-2:] = [0.0, 0.9]
    blend.score(0.9, *_store(ids, times, np.zeros((1, 48, 2))))
    assert blend.scored == 0  # 1 s ahead of 0.0 has not come yet
    times[-3:] = [0.0, 0.9, 1.0]
    blend.score(1.0, *_store(ids, times, np.zeros((1, 48, 2))))
    assert blend.scored == 1


def test_the_scale_widens_ellipses_that_cover_too_little() -> None:
    # 2000 tracks forecast to stay put with 0.1 h of spread per axis; they end up spread
    # 0.2 h around it: the stream's ellipses must double
    n = 2000
    blend = OnlineBlend(OnlineBlendConfig(check_steps=(10,), prior_samples=10.0), DT, K)
    ids = np.arange(n, dtype=np.int64)
    zeros = np.zeros((n, K, 2))
    cov = np.zeros((n, K, 3))
    cov[..., 0] = cov[..., 1] = 0.1**2
    origin = np.tile([0.0, 0.0, 100.0], (n, 1))
    blend.record(ids, 0.0, origin, zeros[:, None], zeros, zeros, cov)
    times = np.full(48, -np.inf)
    times[-2:] = [0.0, 1.0]
    xy = np.zeros((n, 48, 2))
    xy[:, -1] = np.random.default_rng(5).normal(0.0, 0.2 * 100.0, (n, 2))
    blend.score(1.0, *_store(ids, times, xy))
    assert blend.scored == n
    assert blend.scales()[9] == pytest.approx(2.0, rel=0.06)
    d2 = np.sum(np.square(np.random.default_rng(6).normal(0.0, 2.0, (5000, 2))), axis=1)
    assert fit_coverage_scale(d2) == pytest.approx(2.0, rel=0.05)


def test_two_members_are_weighed_by_how_each_did_along_each_axis() -> None:
    # the truth walks diagonally; constant velocity overshoots x and misses y; member 0 is
    # right in x and says what CV says in y, member 1 the other way round
    n, fps, speed = 20, 10.0, 1.0
    blend = OnlineBlend(OnlineBlendConfig(prior_samples=50.0), DT, K, members=2)
    np.testing.assert_allclose(blend.weights(), 0.05)
    ids = np.arange(n, dtype=np.int64)
    steps = DT * np.arange(1, K + 1)
    times = np.arange(0, 61) / fps
    for f, t in enumerate(times):
        lo = max(0, f - 47)
        pad = 48 - (f + 1 - lo)
        tt = np.concatenate((np.full(pad, -np.inf), times[lo : f + 1]))
        xy = np.zeros((n, 48, 2))
        xy[:, pad:, :] = 100.0 * speed * times[lo : f + 1, None]
        blend.score(t, *_store(ids, tt, xy))
        cv = np.zeros((n, K, 2))
        cv[..., 0] = 2.0 * speed * steps
        members = np.zeros((n, 2, K, 2))
        members[:, 0, :, 0] = speed * steps
        members[:, 1, :, 0] = cv[..., 0]
        members[:, 1, :, 1] = speed * steps
        origin = np.stack((np.full(n, 100.0 * speed * t), np.full(n, 100.0 * speed * t)), 1)
        origin = np.concatenate((origin, np.full((n, 1), 100.0)), axis=1)
        blend.record(ids, t, origin, members, cv, blend.blend(members, cv), np.ones((n, K, 3)))
    weights = blend.weights()  # (K, member, axis)
    assert weights[:, 0, 0].min() > 0.9 and weights[:, 1, 1].min() > 0.9
    assert weights[:, 1, 0].max() < 0.05 and weights[:, 0, 1].max() < 0.05
    assert (weights.sum(axis=1) <= 1.0 + 1e-9).all()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="check_steps"):
        OnlineBlendConfig(check_steps=(10, 5))
    with pytest.raises(ConfigError, match="prior_weight"):
        OnlineBlendConfig(prior_weight=1.5)
    with pytest.raises(ConfigError, match="no check step"):
        OnlineBlend(OnlineBlendConfig(check_steps=(30,)), DT, K)


def _still_model(tmp_path: Path) -> Path:
    """A forecaster that always says "stays where it is" (its mean weights zeroed)."""
    path = write_cv_model(tmp_path / "still.onnx")
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name == "w_mean":
            zero = np.zeros_like(numpy_helper.to_array(init))
            init.CopyFrom(numpy_helper.from_array(zero, "w_mean"))
    onnx.save(model, str(path))
    return path


def test_a_stream_whose_model_lags_is_forecast_by_constant_velocity_and_counted(
    tmp_path: Path,
) -> None:
    model = load_forecast_model(_still_model(tmp_path))
    adapted = LearnedForecaster(model, adapt=OnlineBlendConfig(prior_samples=50.0))
    fixed = LearnedForecaster(model, adapt=None)
    ids = list(range(30))
    fps = 10.0
    for f in range(0, 81):  # 8 s of walkers at 1.5 box heights per second
        t = f / fps
        centers = np.stack((100.0 * np.arange(30) + 150.0 * t, np.full(30, 300.0)), axis=1)
        for fc in (adapted, fixed):
            fc.update(ids, centers, t, np.full(30, 100.0))
            fc.predict(ids, [1.0, 2.0])
    assert adapted.counts.leaning_cv > 0 and fixed.counts.leaning_cv == 0
    truth = 150.0 * np.array([1.0, 2.0])
    last_x = 150.0 * 8.0
    got = adapted.predict(ids, [1.0, 2.0]).mean_px[0, :, 0] - last_x
    still = fixed.predict(ids, [1.0, 2.0]).mean_px[0, :, 0] - last_x
    np.testing.assert_allclose(still, 0.0, atol=1e-6)
    np.testing.assert_allclose(got, truth, rtol=0.1)
