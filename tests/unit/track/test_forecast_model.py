"""The learned forecaster's inference path: features, the ONNX contract, batching, fallback
counting and refused requests. The model here is a hand-built ONNX graph whose mean is exact
constant velocity, so every number a test checks has a closed form (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tapetum.errors import ConfigError, ModelLoadError
from tapetum.track.forecast import ConstantVelocityForecaster
from tapetum.track.forecast_model import (
    FORECAST_METADATA_KEY,
    ForecastModelSpec,
    LearnedForecaster,
    StreamForecasters,
    history_features,
    load_forecast_model,
    mixture,
    neighbour_context,
)

DT, T, K = 0.1, 12, 20
SIGMA_PER_STEP = 0.05  # box heights of standard deviation per 0.1 s step


def write_cv_model(path: Path, spec: ForecastModelSpec | None = None, *, meta: bool = True) -> Path:
    """An ONNX forecaster whose mean extrapolates the last 0.1 s of motion (constant
    velocity) and whose covariance is ``(0.05 (k+1))²`` h² on both axes, uncorrelated
    (a ``context`` input, if the spec has one, is declared and ignored)."""
    spec = spec or ForecastModelSpec(dt_s=DT, history_steps=T, horizon_steps=K)
    t, k = spec.history_steps, spec.horizon_steps
    w_mean = np.zeros((t * 4, k * 2), np.float32)
    steps = np.arange(1, k + 1, dtype=np.float32)
    # feature (step 1, x) = (x(t0 - dt) - x0) / h0, so x(t0 + j·dt) - x0 = -j · that
    w_mean[4, 0::2] = -steps
    w_mean[5, 1::2] = -steps
    bias_cov = np.zeros((k, 3), np.float32)
    bias_cov[:, 0] = bias_cov[:, 1] = np.square(SIGMA_PER_STEP * steps)
    nodes = [
        helper.make_node("Flatten", ["history"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w_mean"], ["mean_flat"]),
        helper.make_node("Reshape", ["mean_flat", "shape_mean"], ["mean"]),
        helper.make_node("MatMul", ["flat", "w_zero"], ["cov_zero"]),
        helper.make_node("Add", ["cov_zero", "bias_cov"], ["cov_flat"]),
        helper.make_node("Reshape", ["cov_flat", "shape_cov"], ["cov"]),
    ]
    init = [
        numpy_helper.from_array(w_mean, "w_mean"),
        numpy_helper.from_array(np.zeros((t * 4, k * 3), np.float32), "w_zero"),
        numpy_helper.from_array(bias_cov.reshape(-1), "bias_cov"),
        numpy_helper.from_array(np.array([-1, k, 2], np.int64), "shape_mean"),
        numpy_helper.from_array(np.array([-1, k, 3], np.int64), "shape_cov"),
    ]
    graph = helper.make_graph(
        nodes,
        "cv",
        [
            helper.make_tensor_value_info("history", TensorProto.FLOAT, ["n", t, 4]),
            *(
                [
                    helper.make_tensor_value_info(
                        "context", TensorProto.FLOAT, ["n", t, spec.context_features]
                    )
                ]
                if spec.context
                else []
            ),
        ],
        [
            helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["n", k, 2]),
            helper.make_tensor_value_info("cov", TensorProto.FLOAT, ["n", k, 3]),
        ],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta:
        entry = model.metadata_props.add()
        entry.key, entry.value = FORECAST_METADATA_KEY, spec.to_json()
    onnx.save(model, str(path))
    return path


@pytest.fixture
def cv_model_path(tmp_path: Path) -> Path:
    return write_cv_model(tmp_path / "cv.onnx")


def walk(
    fc: LearnedForecaster | ConstantVelocityForecaster,
    ids: list[int],
    *,
    fps: float,
    seconds: float,
    speed_hps: float = 1.5,
    height_px: float = 100.0,
) -> None:
    """Feed tracks walking right at ``speed_hps`` box heights per second (track i starts at
    x = 100 i)."""
    n = len(ids)
    for f in range(round(seconds * fps) + 1):
        t = f / fps
        x = 100.0 * np.arange(n) + speed_hps * height_px * t
        centers = np.stack((x, np.full(n, 300.0)), axis=1)
        fc.update(ids, centers, t, np.full(n, height_px))


# ----------------------------------------------------------------------------- features


def _buffer(times: list[float], xs: list[float], length: int = 16) -> tuple[np.ndarray, ...]:
    t = np.full((1, length), -np.inf)
    t[0, -len(times) :] = times
    xy = np.zeros((1, length, 2))
    xy[0, -len(xs) :, 0] = xs
    xy[0, : length - len(xs), 0] = xs[0]
    h = np.full((1, length), 50.0)
    return t, xy, h


def test_history_of_a_steady_walker_is_its_velocity_times_lag() -> None:
    times = [i / 30 for i in range(40)]  # 1.3 s at 30 fps
    xs = [10.0 + 80.0 * t for t in times]  # 80 px/s, h = 50 px
    feats = history_features(*_buffer(times, xs, 48), DT, T)
    lags = DT * np.arange(T)
    np.testing.assert_allclose(feats[0, :, 0], -80.0 * lags / 50.0, atol=1e-5)
    np.testing.assert_allclose(feats[0, :, 1:3], 0.0, atol=1e-6)
    assert (feats[0, :, 3] == 1).all()


def test_history_before_the_first_observation_repeats_it_and_is_marked_unobserved() -> None:
    times = [0.0, 0.05, 0.1, 0.15]
    xs = [0.0, 5.0, 10.0, 15.0]
    feats = history_features(*_buffer(times, xs), DT, 5)
    # grid 0.15, 0.05, -0.05, -0.15, -0.25: the last three are before the track began
    np.testing.assert_allclose(feats[0, :, 0], [0.0, -0.2, -0.3, -0.3, -0.3], atol=1e-6)
    assert feats[0, :, 3].tolist() == [1, 1, 0, 0, 0]


def test_extrapolated_history_goes_back_at_the_tracks_mean_velocity() -> None:
    times = [0.0, 0.05, 0.1, 0.15]
    xs = [0.0, 4.0, 11.0, 15.0]  # 100 px/s from first to latest, jittery in between
    t, xy, h = _buffer(times, xs)
    h[0, -1] = 60.0  # the height is held, not extrapolated
    feats = history_features(t, xy, h, DT, 5, padding="extrapolate")
    # grid 0.15, 0.05, -0.05, -0.15, -0.25: before 0.0 the centre goes back at 100 px/s
    want = np.array([15.0, 4.0, -5.0, -15.0, -25.0]) - 15.0
    np.testing.assert_allclose(feats[0, :, 0], want / 60.0, atol=1e-6)
    np.testing.assert_allclose(feats[0, 2:, 2], np.log(50.0 / 60.0), atol=1e-6)
    assert feats[0, :, 3].tolist() == [1, 1, 0, 0, 0]
    # observed steps are the same either way
    repeat = history_features(t, xy, h, DT, 5)
    np.testing.assert_array_equal(feats[0, :2], repeat[0, :2])


@pytest.mark.parametrize("padding", ["repeat", "extrapolate"])
def test_a_single_observation_gives_zero_history(padding: str) -> None:
    feats = history_features(*_buffer([2.0], [7.0]), DT, T, padding=padding)
    np.testing.assert_array_equal(feats[0, :, :3], 0.0)
    assert feats[0, :, 3].tolist() == [1] + [0] * (T - 1)


def test_a_file_says_how_it_pads_and_older_files_repeat() -> None:
    spec = ForecastModelSpec(history_padding="extrapolate")
    assert ForecastModelSpec.from_json(spec.to_json()).history_padding == "extrapolate"
    old = json.loads(spec.to_json())
    del old["history_padding"]
    assert ForecastModelSpec.from_json(json.dumps(old)).history_padding == "repeat"
    with pytest.raises(ModelLoadError, match="history_padding"):
        ForecastModelSpec(history_padding="mirror")


def test_irregular_timestamps_are_resampled_onto_the_grid() -> None:
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(0.0, 1.5, 30)).tolist()
    xs = [3.0 - 40.0 * t for t in times]
    feats = history_features(*_buffer(times, xs, 32), DT, T)
    span = times[-1] - times[0]
    observed = DT * np.arange(T) <= span + 1e-9
    np.testing.assert_allclose(
        feats[0, observed, 0], 40.0 * DT * np.arange(T)[observed] / 50.0, atol=1e-5
    )


def test_grid_outputs_become_pixels_linearly_from_zero_at_the_origin() -> None:
    from tapetum.track.kernels.forecast import grid_to_pixels

    steps = np.arange(1, K + 1, dtype=np.float64)
    grid = np.zeros((1, K, 5))
    grid[0, :, 0], grid[0, :, 1] = 2.0 * steps, -1.0 * steps  # offsets, box heights
    grid[0, :, 2] = grid[0, :, 3] = steps  # variances, square box heights
    grid[0, :, 4] = 0.5 * steps
    times = np.array([[0.0, 0.05, 0.1, 0.73, 2.0]])
    mean, cov = np.empty((1, 5, 2)), np.empty((1, 5, 2, 2))
    grid_to_pixels(grid, times, DT, np.array([[10.0, 20.0, 4.0]]), mean, cov)
    np.testing.assert_allclose(mean[0, :, 0], 10.0 + 4.0 * 2.0 * times[0] / DT, atol=1e-9)
    np.testing.assert_allclose(mean[0, :, 1], 20.0 - 4.0 * times[0] / DT, atol=1e-9)
    np.testing.assert_allclose(cov[0, :, 0, 0], 16.0 * times[0] / DT, atol=1e-9)
    np.testing.assert_allclose(cov[0, :, 0, 1], cov[0, :, 1, 0])
    np.testing.assert_allclose(cov[0, :, 0, 1], 8.0 * times[0] / DT, atol=1e-9)


def test_neighbour_context_is_the_median_motion_in_each_tracks_own_heights() -> None:
    # Three tracks panned 10 px per step by the camera, one walking against it.
    pop = np.zeros((4, 3, 4), np.float32)
    h0 = np.array([50.0, 100.0, 100.0, 25.0])
    shift_px = np.array([0.0, -10.0, -20.0])
    pop[:3, :, 0] = shift_px[None, :] / h0[:3, None]
    pop[3, :, 0] = np.array([0.0, 30.0, 60.0]) / h0[3]
    pop[..., 3] = 1
    ctx = neighbour_context(pop, h0, np.array([20.0, 40.0]))
    np.testing.assert_allclose(ctx[0, :, 0], shift_px / 20.0, atol=1e-6)
    np.testing.assert_allclose(ctx[1, :, 0], shift_px / 40.0, atol=1e-6)
    np.testing.assert_allclose(ctx[:, :, 2], np.log(5.0), atol=1e-6)


def test_local_context_is_the_median_motion_of_the_nearest_other_tracks() -> None:
    # Two groups far apart: on the left tracks flow left 5 px per step, on the right they
    # flow right 8 px per step (a camera moving forward: the scene flows outwards).
    pop = np.zeros((6, 3, 4), np.float32)
    h0 = np.full(6, 100.0)
    xy = np.array([[0, 0], [10, 0], [20, 0], [1000, 0], [1010, 0], [1020, 0]], np.float64)
    lag = np.arange(3)
    pop[:3, :, 0] = 5.0 * lag / 100.0  # in the past it was further right: moving left
    pop[3:, :, 0] = -8.0 * lag / 100.0
    pop[0, :, 0] = 50.0 * lag / 100.0  # track 0 itself races left: not its own neighbour
    pop[..., 3] = 1
    own = np.array([0, 4])
    ctx = neighbour_context(pop, h0, np.array([50.0, 50.0]), 2, xy, xy[own], own)
    assert ctx.shape == (2, 3, 5)
    np.testing.assert_allclose(ctx[0, :, 3], 5.0 * lag / 50.0, atol=1e-6)
    np.testing.assert_allclose(ctx[1, :, 3], -8.0 * lag / 50.0, atol=1e-6)
    np.testing.assert_allclose(ctx[..., 4], 0.0)
    without = neighbour_context(pop, h0, np.array([50.0, 50.0]))
    np.testing.assert_array_equal(without, ctx[..., :3])


# ---------------------------------------------------------------------- the ONNX contract


def test_spec_round_trips_through_json_and_refuses_other_files() -> None:
    spec = ForecastModelSpec(covariance_scale=(1.5,) * K, info={"trained_on": ["a"]})
    assert ForecastModelSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ModelLoadError, match="not a Tapetum forecaster"):
        ForecastModelSpec.from_json(json.dumps({"family": "yolox"}))
    newer = json.loads(spec.to_json()) | {"schema": 99}
    with pytest.raises(ModelLoadError, match="upgrade Tapetum"):
        ForecastModelSpec.from_json(json.dumps(newer))
    with pytest.raises(ModelLoadError, match="covariance_scale"):
        ForecastModelSpec(covariance_scale=(1.0, 2.0))


def test_a_steady_walker_is_forecast_exactly_with_the_files_covariance(
    cv_model_path: Path,
) -> None:
    fc = LearnedForecaster(load_forecast_model(cv_model_path), adapt=None)
    walk(fc, [4], fps=30.0, seconds=1.0)
    out = fc.predict([4], [0.5, 1.0, 2.0])
    assert out.valid.all()
    np.testing.assert_allclose(out.mean_px[0, :, 0], 150.0 + 150.0 * np.array([0.5, 1.0, 2.0]))
    np.testing.assert_allclose(out.mean_px[0, :, 1], 300.0)
    sigma_px = SIGMA_PER_STEP * np.array([5, 10, 20]) * 100.0
    np.testing.assert_allclose(out.cov_px2[0, :, 0, 0], sigma_px**2, rtol=1e-5)
    np.testing.assert_allclose(out.cov_px2[0, :, 0, 1], 0.0, atol=1e-6)
    assert fc.counts.model == 1 and fc.counts.fallback_short_history == 0


def test_calibration_scale_in_the_file_widens_the_covariance(tmp_path: Path) -> None:
    spec = ForecastModelSpec(dt_s=DT, history_steps=T, horizon_steps=K, covariance_scale=(2.0,) * K)
    plain = LearnedForecaster(load_forecast_model(write_cv_model(tmp_path / "a.onnx")), adapt=None)
    scaled = LearnedForecaster(
        load_forecast_model(write_cv_model(tmp_path / "b.onnx", spec)), adapt=None
    )
    for fc in (plain, scaled):
        walk(fc, [1], fps=25.0, seconds=0.8)
    a, b = plain.predict([1], [1.0]), scaled.predict([1], [1.0])
    np.testing.assert_allclose(b.mean_px, a.mean_px)
    np.testing.assert_allclose(b.cov_px2, 4.0 * a.cov_px2, rtol=1e-6)


def test_fifty_tracks_in_one_call_match_one_track_at_a_time(cv_model_path: Path) -> None:
    model = load_forecast_model(cv_model_path)
    together = LearnedForecaster(model)
    ids = list(range(100, 150))
    walk(together, ids, fps=30.0, seconds=0.6)
    batch = together.predict(ids, [1.0, 2.0])
    for i in (0, 17, 49):
        alone = LearnedForecaster(model)
        walk(alone, [ids[i]], fps=30.0, seconds=0.6)
        one = alone.predict([ids[i]], [1.0, 2.0])
        # the lone walker starts at x = 0, the batched one at x = 100 i
        np.testing.assert_allclose(batch.mean_px[i], one.mean_px[0] + [100.0 * i, 0.0], atol=1e-6)
        np.testing.assert_allclose(batch.cov_px2[i], one.cov_px2[0], rtol=1e-6)
    assert together.counts.model == 50


def test_a_dense_stream_keeps_the_whole_history_window(cv_model_path: Path) -> None:
    fc = LearnedForecaster(load_forecast_model(cv_model_path), buffer_length=48)
    walk(fc, [1], fps=120.0, seconds=2.0)  # 241 observations through a 48-slot buffer
    rows = np.array([0])
    feats = fc._features(rows)
    assert feats[0, :, 3].all()  # 1.1 s of history still covered
    np.testing.assert_allclose(feats[0, :, 0], -1.5 * DT * np.arange(T), atol=1e-6)


def test_young_tracks_fall_back_to_constant_velocity_and_are_counted(
    cv_model_path: Path,
) -> None:
    fc = LearnedForecaster(load_forecast_model(cv_model_path))
    cv = ConstantVelocityForecaster()
    rng = np.random.default_rng(1)
    # one observation, then a few jittery ones at irregular times (still < 0.2 s observed)
    times = [0.0, 0.03, 0.07, 0.1, 0.15]
    for k, t in enumerate(times):
        centre = [[50.0 + 300.0 * t + rng.normal(0, 2), 60.0 + rng.normal(0, 2)]]
        height = [80.0 + 4 * k]
        for f in (fc, cv):
            f.update([9], centre, t, height)
        got, want = fc.predict([9], [1.0, 2.0]), cv.predict([9], [1.0, 2.0])
        assert got.valid.all()
        np.testing.assert_allclose(got.mean_px, want.mean_px, rtol=1e-9)
        np.testing.assert_allclose(got.cov_px2, want.cov_px2, rtol=1e-9)
        # forecast from later than the latest observation: the filter extrapolates further
        later_got, later_want = fc.predict([9], [1.0], 0.4), cv.predict([9], [1.0], 0.4)
        np.testing.assert_allclose(later_got.mean_px, later_want.mean_px, rtol=1e-9)
    assert fc.counts.as_dict() == {
        "model": 0,
        "fallback_short_history": 2 * len(times),
        "beyond_horizon": 0,
        "leaning_cv": 0,
    }

    fc.reset()
    walk(fc, [9, 10], fps=30.0, seconds=0.3)  # observed 0.3 s >= min_history 0.2 s
    fc.update([11], [[0.0, 0.0]], 0.31, [50.0])  # a newcomer, one observation
    before = fc.counts.as_dict()
    fc.predict([9, 10, 11, 12], [1.0])  # 12 was never seen
    after = fc.counts.as_dict()
    assert after["model"] - before["model"] == 2
    assert after["fallback_short_history"] - before["fallback_short_history"] == 1


def test_the_blend_weighs_the_model_against_the_baseline_filter_itself(
    cv_model_path: Path,
) -> None:
    """Each track's constant-velocity filter, kept as it is updated, says what the
    constant-velocity forecaster says, long after the buffer has turned over."""
    fc = LearnedForecaster(load_forecast_model(cv_model_path))
    cv = ConstantVelocityForecaster()
    rng = np.random.default_rng(4)
    ids = np.array([3, 8, 21])
    t = 0.0
    for f in range(150):  # 5 s at 30 fps, jittery walkers turning, one missing a while
        t = f / 30.0
        seen = ids if not 40 <= f < 50 else ids[:2]
        n = len(seen)
        xs = 100.0 * seen + 60.0 * t + 20.0 * np.sin(t)
        centres = np.stack((xs, np.full(n, 300.0 + 10.0 * t)), axis=1)
        centres += rng.normal(0.0, 1.5, (n, 2))
        heights = 90.0 + 5.0 * np.sin(t + seen)
        for f_ in (fc, cv):
            f_.update(seen, centres, t, heights)
    rows = np.searchsorted(fc.track_ids, ids)
    grid = fc._cv_grid(rows)  # offsets in the latest box height, at k·dt
    steps = DT * np.arange(1, K + 1)
    want = cv.predict(ids, steps).mean_px
    latest = fc._obs[rows, -1]
    np.testing.assert_allclose(grid * latest[:, None, 2:3] + latest[:, None, :2], want, rtol=1e-9)


def test_unknown_and_long_gone_tracks_are_invalid(cv_model_path: Path) -> None:
    fc = LearnedForecaster(load_forecast_model(cv_model_path))
    walk(fc, [1], fps=30.0, seconds=0.5)
    out = fc.predict([1, 2], [1.0], timestamp_s=0.5 + 5.0)  # 5 s after its last sighting
    assert not out.valid.any() and np.isnan(out.mean_px).all()
    # seen 0.5 s ago: a 2 s forecast would need the model to reach 2.5 s
    stale = fc.predict([1], [1.0, 2.0], timestamp_s=1.0)
    assert not stale.valid[0] and fc.counts.beyond_horizon == 1


# ------------------------------------------------------------------------- bad requests


def test_horizons_past_the_models_reach_are_refused(cv_model_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"forecasts at most 2 s ahead; asked for 3 s"):
        StreamForecasters((1.0, 3.0), cv_model_path)
    fc = LearnedForecaster(load_forecast_model(cv_model_path))
    with pytest.raises(ConfigError, match="at most 2 s"):
        fc.predict([1], [2.5])


def test_a_source_slower_than_the_training_frame_rate_is_refused(tmp_path: Path) -> None:
    spec = ForecastModelSpec(dt_s=DT, history_steps=T, horizon_steps=K, min_frame_rate_fps=10.0)
    make = StreamForecasters((1.0, 2.0), write_cv_model(tmp_path / "m.onnx", spec))
    with pytest.raises(ConfigError, match=r"'cam' runs at 5 fps.*10 fps and more"):
        make(5.0, "cam")
    assert isinstance(make(25.0, "ok"), LearnedForecaster)
    assert isinstance(make(None, "live"), LearnedForecaster)  # unknown rate: no check


def test_without_a_file_streams_get_constant_velocity() -> None:
    make = StreamForecasters((1.0, 2.0))
    assert isinstance(make(30.0), ConstantVelocityForecaster)


def test_files_that_are_not_forecasters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_forecast_model(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot open forecaster"):
        load_forecast_model(tmp_path / "junk.onnx")
    with pytest.raises(ModelLoadError, match="no Tapetum metadata"):
        load_forecast_model(write_cv_model(tmp_path / "bare.onnx", meta=False))
    # metadata that disagrees with the graph (history 8 steps, graph takes 12)
    wrong = ForecastModelSpec(dt_s=DT, history_steps=8, horizon_steps=K)
    path = write_cv_model(tmp_path / "wrong.onnx")
    model = onnx.load(str(path))
    model.metadata_props[0].value = wrong.to_json()
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match="expected inputs"):
        load_forecast_model(path)
    # an ensemble's metadata on a one-network graph (no member axis)
    model.metadata_props[0].value = ForecastModelSpec(members=2).to_json()
    onnx.save(model, str(path))
    with pytest.raises(ModelLoadError, match=r"expected output 'mean' \(N, 2, 20, 2\)"):
        load_forecast_model(path)


def test_an_ensembles_forecast_is_the_mixture_of_its_members() -> None:
    means = np.zeros((1, 2, K, 2))
    means[0, 0, :, 0], means[0, 1, :, 0] = 1.0, 3.0  # members 2 box heights apart in x
    covs = np.zeros((1, 2, K, 3))
    covs[..., 0] = covs[..., 1] = 0.5
    mean, cov = mixture(means, covs)
    np.testing.assert_allclose(mean[0, :, 0], 2.0)
    np.testing.assert_allclose(cov[0, :, 0], 0.5 + 1.0)  # the spread of the means adds
    np.testing.assert_allclose(cov[0, :, 1], 0.5)
    np.testing.assert_allclose(cov[0, :, 2], 0.0)
    spec = ForecastModelSpec(context=True, context_neighbours=4, members=2)
    assert ForecastModelSpec.from_json(spec.to_json()) == spec
    assert spec.context_features == 5
    with pytest.raises(ModelLoadError, match="needs the context"):
        ForecastModelSpec(context_neighbours=4)
