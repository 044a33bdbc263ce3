"""Training data for the learned forecaster: samples are built exactly as the online
forecaster builds its input, targets are the true future in box heights, and the validation
split is by track. No torch needed: these are numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tapetum.errors import ConfigError, DatasetError
from tapetum.eval.mot import GroundTruth, MotSequence, SequenceInfo
from tapetum.learn.forecast import ForecastTrainConfig, build_samples, recipe_key
from tapetum.track.forecast_model import ForecastModelSpec, LearnedForecaster, load_forecast_model
from tests.unit.track.test_forecast_model import write_cv_model

FPS = 14.0  # MOT17-05's rate: the history grid (0.1 s) falls between frames


def synthetic_sequence(n_tracks: int = 6, frames: int = 60, name: str = "SYN-01") -> MotSequence:
    """Tracks on curved paths with growing boxes; track 2 has a 5-frame gap."""
    rows = []
    for track in range(1, n_tracks + 1):
        start = 1 + 3 * (track - 1)
        for f in range(start, frames + 1):
            if track == 2 and 20 <= f < 25:
                continue
            t = (f - 1) / FPS
            h = 80.0 + 10.0 * track + 5.0 * t
            cx = 100.0 * track + 60.0 * t + 20.0 * np.sin(2.0 * t + track)
            cy = 400.0 - 15.0 * t * t
            rows.append((f, track, cx - 0.2 * h, cy - 0.5 * h, 0.4 * h, h))
    arr = np.array(sorted(rows))
    gt = GroundTruth(
        frame=arr[:, 0].astype(np.int64),
        track_id=arr[:, 1].astype(np.int64),
        tlwh=arr[:, 2:6],
        consider=np.ones(len(arr), bool),
        class_id=np.ones(len(arr), np.int64),
        visibility=np.ones(len(arr), np.float32),
        benchmark="MOT17",
    )
    return MotSequence(SequenceInfo(name, FPS, frames, 1920, 1080), gt)


@pytest.mark.parametrize(
    ("neighbours", "padding"), [(0, "extrapolate"), (2, "extrapolate"), (0, "repeat")]
)
def test_training_features_are_what_the_online_forecaster_builds(
    tmp_path: Path, neighbours: int, padding: str
) -> None:
    seq = synthetic_sequence()
    config = ForecastTrainConfig(
        context=True, context_neighbours=neighbours, history_padding=padding
    )
    samples = build_samples([seq], config)
    spec = ForecastModelSpec(context=True, context_neighbours=neighbours, history_padding=padding)
    fc = LearnedForecaster(load_forecast_model(write_cv_model(tmp_path / "cv.onnx", spec)))
    gt = seq.gt
    assert gt is not None
    tlwh, centers = gt.tlwh, gt.tlwh[:, :2] + 0.5 * gt.tlwh[:, 2:]
    online_feats, online_ctx = [], []
    for f in range(1, seq.info.length_frames + 1):
        rows = gt.frame == f
        fc.update(gt.track_id[rows], centers[rows], (f - 1) / FPS, tlwh[rows, 3])
        all_rows = np.arange(len(fc))
        feats, ctx = fc._inputs(all_rows)
        assert ctx is not None
        observed_s = fc._t[all_rows, -1] - fc._start_s[all_rows]
        ready = observed_s >= config.min_history_s - 1e-9
        now = fc._t[:, -1] == (f - 1) / FPS  # not track 2 while it is missing
        has_future = (fc._t[:, -1] + config.dt_s) <= (seq.info.length_frames - 1) / FPS
        for r in np.flatnonzero(ready & now & has_future):
            online_feats.append((int(fc._ids[r]), f, feats[r]))
            online_ctx.append((int(fc._ids[r]), f, ctx[r]))
    # build_samples orders samples by track, then time
    online_feats.sort(key=lambda x: (x[0], x[1]))
    online_ctx.sort(key=lambda x: (x[0], x[1]))
    assert len(samples) == len(online_feats)
    np.testing.assert_allclose(samples.features, np.stack([x[2] for x in online_feats]), atol=1e-5)
    np.testing.assert_allclose(samples.context, np.stack([x[2] for x in online_ctx]), atol=1e-5)
    without_context = build_samples(
        [seq], ForecastTrainConfig(context=False, history_padding=padding)
    )
    np.testing.assert_array_equal(without_context.features, samples.features)


def test_targets_are_the_true_future_in_box_heights_and_end_with_the_track() -> None:
    seq = synthetic_sequence(n_tracks=1, frames=40)
    config = ForecastTrainConfig()
    samples = build_samples([seq], config)
    gt = seq.gt
    assert gt is not None
    first_sample_frame = 1 + int(np.ceil(config.min_history_s * FPS - 1e-9))  # 0.2 s observed
    i = 0
    t0 = (first_sample_frame - 1) / FPS
    h0 = gt.tlwh[first_sample_frame - 1, 3]
    c = gt.tlwh[:, :2] + 0.5 * gt.tlwh[:, 2:]
    times = (gt.frame - 1) / FPS
    for k in (0, 4, 9):
        t = t0 + config.dt_s * (k + 1)
        want = (np.interp(t, times, c[:, 0]) - c[first_sample_frame - 1, 0]) / h0
        assert samples.targets[i, k, 0] == pytest.approx(want, abs=1e-5)
    last = times[-1]
    sample_t0 = t0 + np.arange(len(samples)) / FPS
    horizon_t = sample_t0[:, None] + config.dt_s * np.arange(1, config.horizon_steps + 1)
    np.testing.assert_array_equal(samples.target_valid, horizon_t <= last + 1e-9)


def test_targets_across_a_long_gap_are_not_trained_on() -> None:
    seq = synthetic_sequence(n_tracks=2, frames=60)
    short_gap = build_samples([seq], ForecastTrainConfig(max_target_gap_s=1.0))
    strict = build_samples([seq], ForecastTrainConfig(max_target_gap_s=0.2))  # gap: 6 frames
    assert strict.target_valid.sum() < short_gap.target_valid.sum()


def test_validation_holds_out_whole_tracks_deterministically() -> None:
    seq = synthetic_sequence(n_tracks=40, frames=30)
    a = build_samples([seq], ForecastTrainConfig(validation_every=4))
    b = build_samples([seq], ForecastTrainConfig(validation_every=4))
    np.testing.assert_array_equal(a.validation, b.validation)
    assert 0.1 < a.validation.mean() < 0.45


def test_recipes_and_data_change_the_cache_key() -> None:
    seqs = [synthetic_sequence(name="A"), synthetic_sequence(name="B")]
    base = recipe_key(ForecastTrainConfig(), seqs)
    assert recipe_key(ForecastTrainConfig(), seqs[::-1]) == base
    assert recipe_key(ForecastTrainConfig(epochs=3), seqs) != base
    assert recipe_key(ForecastTrainConfig(), seqs[:1]) != base


def test_bad_recipes_and_empty_data_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="min_history_s must be within the history window"):
        ForecastTrainConfig(min_history_s=5.0)
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        ForecastTrainConfig(epochs=0)
    with pytest.raises(DatasetError, match="nothing to train on"):
        build_samples([synthetic_sequence(n_tracks=1, frames=2)])
    no_gt = MotSequence(SequenceInfo("X", 30.0, 10, 640, 480))
    with pytest.raises(DatasetError, match="no ground truth"):
        build_samples([no_gt])
