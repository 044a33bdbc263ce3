"""Drift statistics against scipy, hysteresis, profiles and the live monitor on synthetic
frames (no model, no video)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from scipy import stats

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.errors import ConfigError, DriftProfileError
from tapetum.monitor import (
    DriftConfig,
    DriftEventWriter,
    DriftMonitor,
    DriftProfile,
    Hysteresis,
    ProfileRecorder,
    TrackLedger,
    image_features,
    ks_statistic,
    mmd2_rbf,
    psi,
)
from tapetum.monitor.drift_profile import calibrate
from tapetum.monitor.drift_signals import SIGNALS, SignalKind, fit_reference, score_window
from tapetum.monitor.drift_stats import bin_counts, median_bandwidth, quantile_edges

# ------------------------------------------------------------------------ statistics


@pytest.mark.parametrize(
    ("n", "m", "shift", "decimals"),
    [(200, 50, 0.0, None), (500, 80, 0.7, None), (50, 500, -1.5, None), (300, 100, 0.2, 1)],
)
def test_ks_statistic_equals_scipy(n: int, m: int, shift: float, decimals: int | None) -> None:
    rng = np.random.default_rng(n + m)
    ref = rng.normal(size=n)
    cur = rng.normal(loc=shift, size=m)
    if decimals is not None:  # many ties
        ref, cur = ref.round(decimals), cur.round(decimals)
    expected = stats.ks_2samp(ref, cur).statistic
    assert ks_statistic(np.sort(ref), cur) == pytest.approx(expected, abs=1e-12)


def test_ks_statistic_of_disjoint_samples_is_one_and_of_empty_is_zero() -> None:
    assert ks_statistic(np.arange(10.0), np.arange(20.0, 30.0)) == 1.0
    assert ks_statistic(np.arange(10.0), np.empty(0)) == 0.0


def test_psi_matches_the_formula_and_is_zero_for_the_same_shares() -> None:
    p = np.array([50.0, 30.0, 20.0])
    q = np.array([20.0, 30.0, 50.0])
    expected = float(np.sum((q / 100 - p / 100) * np.log((q / 100) / (p / 100))))
    assert psi(p, q, smoothing=0.0) == pytest.approx(expected)
    assert psi(p, p * 7, smoothing=0.0) == pytest.approx(0.0)
    assert 0.0 < psi(p, q) < expected  # smoothing pulls the shares together a little
    empty_bins = psi(np.array([10.0, 0.0]), np.array([0.0, 10.0]))
    assert 3.0 < empty_bins < 10.0  # finite, and still far over the 0.25 rule of thumb


def test_quantile_bins_split_the_reference_evenly_and_merge_ties() -> None:
    ref = np.arange(1000.0)
    edges = quantile_edges(ref, 10)
    counts = bin_counts(ref, edges)
    assert edges.size == 9 and np.all(np.abs(counts - 100) <= 1)
    assert quantile_edges(np.zeros(100), 10).size == 1  # one distinct value: one edge
    assert psi(bin_counts(ref, edges), bin_counts(ref + 2000, edges)) > 5


def test_mmd_separates_shifted_vectors_and_not_resampled_ones() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(200, 8))
    same = rng.normal(size=(100, 8))
    moved = rng.normal(loc=1.0, size=(100, 8))
    bw = median_bandwidth(ref)
    assert abs(mmd2_rbf(ref, same, bw)) < 0.02
    assert mmd2_rbf(ref, moved, bw) > 0.2
    assert median_bandwidth(np.zeros((5, 3))) == 1.0


def test_image_features_follow_brightness_blur_and_colour() -> None:
    import cv2

    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, size=(360, 640, 3), dtype=np.uint8)
    base, scene = image_features(image)
    dark, _ = image_features((image * 0.6).astype(np.uint8))
    blurred, _ = image_features(cv2.GaussianBlur(image, (0, 0), 3))
    redder = image.copy()
    redder[..., 2] = np.minimum(redder[..., 2].astype(np.int32) + 40, 255).astype(np.uint8)
    red, _ = image_features(redder)
    assert dark[0] == pytest.approx(base[0] * 0.6, rel=0.02)  # brightness
    assert blurred[2] < base[2] - 0.5  # sharpness (log10 of the Laplacian variance)
    assert red[3] > base[3] + 0.1  # colour_rg
    assert scene.shape == (144,) and np.linalg.norm(scene) == pytest.approx(1.0, rel=1e-5)


# ------------------------------------------------------------------------ hysteresis


def test_hysteresis_ignores_a_flicker_and_enters_on_a_sustained_score() -> None:
    h = Hysteresis(enter_checks=2, exit_checks=3, exit_ratio=0.7)
    changes = [h.update(s) for s in (1.5, 0.2, 1.5, 0.2, 1.5, 0.2)]
    assert not any(changes) and not h.drifting
    assert [h.update(s) for s in (1.1, 1.2)] == [False, True]
    assert h.drifting


def test_hysteresis_leaves_only_after_enough_low_scores() -> None:
    h = Hysteresis(enter_checks=1, exit_checks=3, exit_ratio=0.7)
    assert h.update(2.0)
    # 0.8 is under the line but over exit_ratio: it does not count towards leaving.
    assert [h.update(s) for s in (0.5, 0.5, 0.8, 0.5, 0.5)] == [False] * 5
    assert h.update(0.5) and not h.drifting


def test_hysteresis_a_check_without_a_score_breaks_the_streak() -> None:
    h = Hysteresis(enter_checks=2)
    assert [h.update(s) for s in (1.5, None, 1.5)] == [False, False, False]
    assert h.update(1.5)


def test_drift_config_refuses_nonsense() -> None:
    with pytest.raises(ConfigError):
        DriftConfig(exit_ratio=1.5)
    with pytest.raises(ConfigError):
        DriftConfig(check_every_s=0)


# ------------------------------------------------------------------------ tracks


def test_track_ledger_counts_births_deaths_and_a_rebirth_where_a_track_vanished() -> None:
    ledger = TrackLedger(lost_after_s=1.0, rebirth_window_s=1.0, rebirth_radius=0.5)
    boxes = np.array([[0, 0, 20, 20], [100, 100, 120, 120]], np.float32)
    first = ledger.update(np.array([1, 2]), boxes, 0.0)
    assert (first.births, first.active) == (2, 2)
    ledger.update(np.array([1, 2]), boxes, 0.4)
    # track 1 vanishes; id 3 appears 2 px away from where it was: an id switch.
    switched = ledger.update(np.array([3, 2]), boxes + np.array([2, 0, 2, 0], np.float32), 0.6)
    assert (switched.births, switched.rebirths) == (1, 1)
    far = ledger.update(np.array([4]), np.array([[500, 500, 520, 520]], np.float32), 0.7)
    assert (far.births, far.rebirths) == (1, 0)
    later = ledger.update(np.array([3, 4]), boxes, 1.5)  # track 1 unseen > 1 s: dead at 0.4 s
    assert later.lifetimes_s.tolist() == [pytest.approx(0.4)]
    assert later.active == 3  # 2 (last seen 0.6 s), 3, 4


def test_track_ledger_ignores_unconfirmed_boxes() -> None:
    ledger = TrackLedger()
    events = ledger.update(np.array([-1, -1]), np.zeros((2, 4), np.float32), 0.0)
    assert (events.births, events.active) == (0, 0)


# ------------------------------------------------------------------------ signals


def test_every_signal_kind_scores_zero_on_its_own_reference_and_more_when_shifted() -> None:
    rng = np.random.default_rng(3)
    cases = {
        SignalKind.SHIFT: (lambda k: rng.normal(10 + k, 1, size=1)),
        SignalKind.KS: (lambda k: rng.normal(k, 1, size=20)),
        SignalKind.PSI: (lambda k: rng.integers(0, 3 + 5 * k, size=20)),
        SignalKind.PSI_BINNED: (lambda k: rng.poisson(10 + 20 * k, size=1).astype(float)),
        SignalKind.MMD: (lambda k: rng.normal(k, 1, size=(1, 6))),
        SignalKind.RATE: (lambda k: rng.poisson(0.2 + k, size=1).astype(float)),
        SignalKind.SHARE: (lambda k: np.array([float(rng.random() < 0.2 + 0.6 * k), 1.0])),
    }
    specs = {s.kind: s for s in SIGNALS}
    for kind, draw in cases.items():
        spec = specs[kind]
        ref = fit_reference(spec, [draw(0) for _ in range(400)], 400.0)
        same = score_window(ref, [draw(0) for _ in range(200)], 200.0)
        moved = score_window(ref, [draw(1) for _ in range(200)], 200.0)
        assert same is not None and moved is not None, kind
        assert moved > 3 * max(same, 0.01), (kind, same, moved)


def test_a_window_with_too_few_values_is_not_scored() -> None:
    spec = next(s for s in SIGNALS if s.name == "confidence")
    ref = fit_reference(spec, [np.full(100, 0.5)], 10.0)
    assert score_window(ref, [np.array([0.9])], 4.0) is None


def test_calibration_sets_the_threshold_above_what_the_reference_itself_reached() -> None:
    spec = next(s for s in SIGNALS if s.name == "brightness")
    rng = np.random.default_rng(5)
    times = np.arange(0, 60, 0.2)
    # a slow trend with noise: the reference's own windows differ from each other
    payloads = [np.array([100 + 0.05 * t + rng.normal(0, 1)]) for t in times]
    ref = calibrate(spec, times, payloads, (0.0, 60.0), margin=1.5)
    assert ref.null_max is not None and ref.threshold is not None
    assert ref.threshold == pytest.approx(max(spec.floor, 1.5 * ref.null_max))
    short = calibrate(spec, times[:20], payloads[:20], (0.0, 4.0))
    assert short.threshold is None and "calibration needs 3" in short.note


# ------------------------------------------------------------------------ profiles and the monitor

FPS = 25.0


def _frames(n: int, brightness: float, start: int = 0, seed: int = 0) -> list[FrameResult]:
    """Synthetic camera: a fixed textured background at ``brightness``, mild noise."""
    rng = np.random.default_rng(seed)
    background = np.random.default_rng(42).integers(0, 80, size=(90, 160, 3))
    out = []
    for i in range(start, start + n):
        image = np.clip(background + brightness + rng.normal(0, 2, size=background.shape), 0, 255)
        det = Detections(
            np.array([[10, 10, 40, 60], [80, 20, 110, 70]], np.float32),
            rng.uniform(0.5, 0.9, size=2).astype(np.float32),
            np.array([0, 0]),
            np.array([1, 2]),
        )
        frame = Frame("cam", i, image.astype(np.uint8), i / FPS, 0.0)
        out.append(FrameResult(frame, det, ("person",)))
    return out


@pytest.fixture(scope="module")
def profile() -> DriftProfile:
    recorder = ProfileRecorder(fps=FPS)
    for result in _frames(500, 100.0):
        recorder.write(result)
    return recorder.build("cam", model="synthetic.onnx")


def test_profile_round_trips_through_json(profile: DriftProfile, tmp_path: Path) -> None:
    path = profile.save(tmp_path / "ref.json")
    loaded = DriftProfile.load(path)
    assert loaded.references.keys() == profile.references.keys()
    for name, ref in profile.references.items():
        got = loaded.references[name]
        assert (got.threshold, got.null_max, got.count, got.spec) == (
            ref.threshold,
            ref.null_max,
            ref.count,
            ref.spec,
        )
    scene = loaded.references["scene"].params["sample"]
    assert scene.shape == profile.references["scene"].params["sample"].shape
    assert "brightness" in [r.spec.name for r in loaded.scored()]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=9), "version"),
        (lambda d: d.pop("signals"), "signals"),
        (lambda d: d["signals"][0].update(kind="psychic"), "signals.0.kind"),
        (lambda d: d["signals"][5]["params"]["sample"].update(data="AAAA"), "signals.5.params"),
    ],
)
def test_a_malformed_profile_is_a_typed_error_naming_the_field(
    profile: DriftProfile, tmp_path: Path, edit: object, message: str
) -> None:
    data = profile.to_json()
    assert data["signals"][5]["name"] == "scene"
    edit(data)  # type: ignore[operator]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DriftProfileError, match=message):
        DriftProfile.load(path)


def test_loading_a_missing_or_non_json_profile_says_which(tmp_path: Path) -> None:
    with pytest.raises(DriftProfileError, match="does not exist"):
        DriftProfile.load(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DriftProfileError, match="not readable JSON"):
        DriftProfile.load(tmp_path / "x.json")


def test_an_unchanged_camera_raises_no_drift(profile: DriftProfile) -> None:
    monitor = DriftMonitor(profile, fps=FPS)
    for result in _frames(750, 100.0, seed=7):
        monitor.write(result)
    status = monitor.snapshot()["cam"]
    assert list(monitor.events) == []
    assert all(s.checks > 0 for s in status.values())
    assert max(s.max_score or 0 for s in status.values()) < 1.0


def test_a_darker_camera_enters_drift_once_within_the_window_and_writes_an_event(
    profile: DriftProfile, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = DriftEventWriter(tmp_path / "events.jsonl")
    monitor = DriftMonitor(profile, fps=FPS, on_event=[writer])
    registry = CollectorRegistry()
    registry.register(monitor)
    shift_at = 250
    with caplog.at_level(logging.WARNING, logger="tapetum.monitor.drift"):
        for result in _frames(shift_at, 100.0, seed=7) + _frames(250, 60.0, shift_at, seed=8):
            monitor.write(result)
    onsets = [e for e in monitor.events if e.signal == "brightness"]
    assert [e.state for e in onsets] == ["drift"]  # once: hysteresis holds it
    delay = onsets[0].frame_index - shift_at
    assert 0 < delay <= 4 * FPS + 2 * FPS  # within a window and two checks
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert any(json.loads(line)["signal"] == "brightness" for line in lines)
    assert "drift on cam: brightness" in caplog.text
    labels = {"source": "cam", "signal": "brightness"}
    assert registry.get_sample_value("tapetum_drift_state", labels) == 1.0
    assert registry.get_sample_value("tapetum_drift_events_total", labels) == 1.0
    assert registry.get_sample_value("tapetum_drift_score", labels) > 1.0
    assert registry.get_sample_value("tapetum_drift_active", {"source": "cam"}) == 1.0


def test_the_monitor_recovers_when_the_camera_comes_back(profile: DriftProfile) -> None:
    monitor = DriftMonitor(profile, fps=FPS)
    for result in (
        _frames(250, 100.0) + _frames(250, 60.0, 250, seed=1) + _frames(500, 100.0, 500, seed=2)
    ):
        monitor.write(result)
    states = [e.state for e in monitor.events if e.signal == "brightness"]
    assert states == ["drift", "ok"]
    assert not monitor.drifting("cam")


def test_frames_the_detector_skipped_feed_no_model_signal() -> None:
    from tapetum.monitor import FeatureExtractor

    extractor = FeatureExtractor(fps=FPS)
    detected, predicted = _frames(2, 100.0)
    predicted = FrameResult(predicted.frame, predicted.detections, ("person",), predicted=True)
    assert "confidence" in extractor.observe(detected)
    obs = extractor.observe(predicted)
    assert not {"detections", "confidence", "box_size", "class_mix"} & set(obs)
    assert "births" in obs  # tracking health still sees the predicted tracks


def test_reid_embeddings_become_the_appearance_signal_and_drift_when_people_change() -> None:
    rng = np.random.default_rng(11)
    base = rng.normal(size=(4, 16)).astype(np.float32)

    def frames(n: int, start: int, shift: float) -> list[FrameResult]:
        out = []
        for r in _frames(n, 100.0, start, seed=start):
            # the two tracks' embeddings: fixed people, a little noise; ``shift``: others
            emb = base[:2] + shift + rng.normal(0, 0.05, size=(2, 16)).astype(np.float32)
            det = r.detections
            with_emb = Detections(det.xyxy, det.confidence, det.class_id, det.tracker_id, emb)
            out.append(FrameResult(r.frame, with_emb, r.class_names))
        return out

    recorder = ProfileRecorder(fps=FPS)
    for r in frames(400, 0, 0.0):
        recorder.write(r)
    profile = recorder.build("cam")
    assert profile.references["appearance"].threshold is not None
    monitor = DriftMonitor(profile, fps=FPS, signals=["appearance"])
    for r in frames(200, 400, 0.0) + frames(200, 600, 1.0):  # other people from frame 600
        monitor.write(r)
    onsets = [e for e in monitor.events if e.state == "drift"]
    assert [e.signal for e in onsets] == ["appearance"]
    assert 600 < onsets[0].frame_index <= 600 + 150


def test_a_stream_without_a_profile_is_not_monitored(profile: DriftProfile) -> None:
    monitor = DriftMonitor({"other": profile}, fps=FPS)
    for result in _frames(200, 30.0):
        monitor.write(result)
    assert monitor.snapshot() == {}


def test_an_event_consumer_that_fails_does_not_stop_the_monitor(profile: DriftProfile) -> None:
    def broken(event: object) -> None:
        raise OSError("disk full")

    monitor = DriftMonitor(profile, fps=FPS, on_event=[broken])
    for result in _frames(250, 100.0) + _frames(200, 50.0, 250, seed=3):
        monitor.write(result)
    assert any(e.state == "drift" for e in monitor.events)
