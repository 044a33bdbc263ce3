"""The MOT evaluation harness against references: py-motmetrics on its own TUD data, a perfect
tracker, the noise model's statistics, ByteTrack on MOT15 public detections, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tapetum.eval import (
    DetectionNoise,
    MotSequence,
    SequenceInfo,
    evaluate_runs,
    load_sequence,
    read_ground_truth,
    read_tracks,
    run_tracker,
    simulate_detections,
)
from tapetum.track import make_tracker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mot15(assets: Path) -> Path:
    return assets / "mot" / "MOT15" / "train"


@pytest.fixture(scope="module")
def mot17_02(assets: Path) -> MotSequence:
    return load_sequence(assets / "mot" / "MOT17" / "train" / "MOT17-02-FRCNN")


def _motmetrics_scores(gt_path: Path, test_path: Path) -> dict[str, float]:
    """MOTA, IDF1 and counts from py-motmetrics, following its own MOTChallenge recipe
    (``motmetrics/apps/eval_motchallenge.py``): gt loaded with ``min_confidence=1``, IoU
    distance with threshold 0.5."""
    mm = pytest.importorskip("motmetrics")
    gt = mm.io.loadtxt(str(gt_path), fmt="mot15-2D", min_confidence=1)
    test = mm.io.loadtxt(str(test_path), fmt="mot15-2D")
    acc = mm.utils.compare_to_groundtruth(gt, test, "iou", distth=0.5)
    names = ["mota", "idf1", "num_switches", "num_false_positives", "num_misses"]
    summary = mm.metrics.create().compute(acc, metrics=names, name="seq")
    return {k: float(summary[k].iloc[0]) for k in names}


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore:Operation with tuple is deprecated")
@pytest.mark.parametrize("name", ["TUD-Campus", "TUD-Stadtmitte"])
def test_mota_idf1_equal_motmetrics_on_its_own_data(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mm = pytest.importorskip("motmetrics")
    # motmetrics 1.4.0 calls np.asfarray, removed in numpy 2.0; restore it for the reference
    # only (same semantics: a float64 array).
    monkeypatch.setattr(
        np, "asfarray", lambda a, dtype=np.float64: np.asarray(a, dtype), raising=False
    )
    data = Path(mm.__file__).parent / "data" / name
    # Same preprocessing on both sides: MOT15 gt has no classes, so neither drops classes
    # or distractors; both drop gt rows with consider == 0 (motmetrics' min_confidence=1,
    # TrackEval's zero_marked). motmetrics shifts x, y by -1 (MATLAB origin) on gt and
    # tracks alike, which leaves every IoU unchanged. Both match at IoU >= 0.5.
    gt = read_ground_truth(data / "gt.txt")
    assert gt.benchmark == "MOT15"
    length = int(max(gt.frame.max(), np.loadtxt(data / "test.txt", delimiter=",")[:, 0].max()))
    seq = MotSequence(SequenceInfo(name, 25.0, length, 640, 480), gt=gt)
    ours = evaluate_runs([(seq, read_tracks(data / "test.txt", length))]).sequences[name]
    ref = _motmetrics_scores(data / "gt.txt", data / "test.txt")

    assert ours.mota == pytest.approx(ref["mota"], abs=1e-3)
    assert ours.idf1 == pytest.approx(ref["idf1"], abs=1e-3)
    assert ours.id_switches == ref["num_switches"]
    assert ours.false_positives == ref["num_false_positives"]
    assert ours.misses == ref["num_misses"]
    # The numbers motmetrics' README publishes for this tracker output.
    published = {"TUD-Campus": (0.526, 0.558), "TUD-Stadtmitte": (0.564, 0.645)}[name]
    assert (round(ours.mota, 3), round(ours.idf1, 3)) == published


def test_perfect_tracker_scores_one(mot15: Path, mot17_02: MotSequence) -> None:
    campus = load_sequence(mot15 / "TUD-Campus")
    runs = [
        (s, s.gt.as_tracks(s.info.length_frames)) for s in (campus, mot17_02) if s.gt is not None
    ]
    report = evaluate_runs(runs)
    for scores in (*report.sequences.values(), report.combined):
        assert scores.hota == pytest.approx(1.0)
        assert scores.mota == pytest.approx(1.0)
        assert scores.idf1 == pytest.approx(1.0)
        assert scores.id_switches == scores.false_positives == scores.misses == 0
    # MOTChallenge rules: only class-1 rows with consider == 1 count (MOT17-02 gt has 31k
    # rows, 18581 of them evaluated pedestrians).
    assert report.sequences["MOT17-02-FRCNN"].gt_dets == 18581


def test_noise_model_is_deterministic_per_seed(mot17_02: MotSequence) -> None:
    a, b = simulate_detections(mot17_02, seed=3), simulate_detections(mot17_02, seed=3)
    c = simulate_detections(mot17_02, seed=4)
    for field in ("frame", "xyxy", "confidence", "gt_row"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert len(a) != len(c) or not np.array_equal(a.xyxy, c.xyxy)


def test_noise_model_statistics_match_parameters(mot17_02: MotSequence) -> None:
    gt = mot17_02.gt
    assert gt is not None
    noise = DetectionNoise(
        miss_rate=0.15, occlusion_miss_rate=0.5, jitter=0.08, false_positives_per_frame=2.0
    )
    sim = simulate_detections(mot17_02, noise, seed=0)
    tp = sim.gt_row >= 0
    # Only evaluated pedestrians produce detections, each at most once.
    assert gt.evaluated[sim.gt_row[tp]].all()
    assert np.unique(sim.gt_row[tp]).size == tp.sum()

    evaluated = np.flatnonzero(gt.evaluated)
    detected = np.isin(evaluated, sim.gt_row[tp])
    expected_miss = noise.miss_probability(gt.visibility[evaluated])
    assert 1.0 - detected.mean() == pytest.approx(expected_miss.mean(), abs=0.015)
    occluded = gt.visibility[evaluated] < 0.3
    visible = gt.visibility[evaluated] > 0.9
    assert 1.0 - detected[occluded].mean() > 1.0 - detected[visible].mean() + 0.2

    # Jitter is proportional to box size: centre offset / size and log size ratio ~ N(0, 0.08).
    src = gt.tlwh[sim.gt_row[tp]]
    box = sim.xyxy[tp].astype(np.float64)
    size = box[:, 2:] - box[:, :2]
    centre_offset = (box[:, :2] + box[:, 2:]) / 2 - (src[:, :2] + src[:, 2:] / 2)
    rel_offset = centre_offset / src[:, 2:]
    assert np.abs(rel_offset.mean(axis=0)).max() < 0.005
    np.testing.assert_allclose(rel_offset.std(axis=0), noise.jitter, rtol=0.05)
    np.testing.assert_allclose(np.log(size / src[:, 2:]).std(axis=0), noise.jitter, rtol=0.05)

    n_fp = int((~tp).sum())
    assert n_fp / mot17_02.info.length_frames == pytest.approx(2.0, rel=0.1)
    assert sim.confidence[tp].mean() > sim.confidence[~tp].mean() + 0.3
    assert sim.confidence.min() >= 0.0
    assert sim.confidence.max() <= 1.0
    assert len(sim.per_frame()) == mot17_02.info.length_frames


def test_bytetrack_on_tud_campus_public_detections(mot15: Path) -> None:
    seq = load_sequence(mot15 / "TUD-Campus")
    run = run_tracker(partial(make_tracker, "bytetrack"), seq)
    scores = evaluate_runs([(seq, run.tracks)]).combined
    # Measured: HOTA 0.275, DetA 0.289, AssA 0.262, MOTA 0.401, IDF1 0.418, 4 IDSW (ACF
    # detections, scores rank-normalised). Bounds leave room for tracker tuning but catch a
    # broken association (AssA, IDF1) or a broken detection path (DetA, MOTA).
    assert 0.33 < scores.mota < 0.55
    assert 0.22 < scores.hota < 0.40
    assert 0.20 < scores.deta < 0.40
    assert 0.20 < scores.assa < 0.45
    assert 0.35 < scores.idf1 < 0.60
    assert scores.id_switches < 15
    assert run.frame_times_ms.shape == (71,)
    assert 0.0 < run.latency_ms(50) <= run.latency_ms(99) < 50.0


def _tapetum(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "160"},
    )


def test_cli_eval_track_prints_table_and_writes_json(mot15: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = _tapetum("eval", "track", "--data", mot15 / "TUD-Campus", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "TUD-Campus" in proc.stdout
    assert "combined" in proc.stdout
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["tracker"] == "bytetrack"
    assert result["detections"] == "public"
    campus = result["sequences"]["TUD-Campus"]
    assert campus["frames"] == 71
    assert campus["mota"] == pytest.approx(result["combined"]["mota"])
    assert f"{100 * campus['mota']:.1f}" in proc.stdout
    for key in ("hota", "deta", "assa", "idf1", "id_switches", "tracker_ms_p50", "tracker_ms_p99"):
        assert key in campus


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data", "{tmp}/missing"), "no such folder"),
        (("--data", "{tmp}"), "no MOTChallenge sequences"),
        (("--data", "{mot15}/TUD-Campus", "--tracker", "nope"), "unknown tracker 'nope'"),
        (("--data", "{mot15}/TUD-Campus", "--detections", "yolo"), "unknown --detections"),
    ],
)
def test_cli_eval_track_user_errors_are_one_line(
    args: tuple[str, ...], message: str, mot15: Path, tmp_path: Path
) -> None:
    proc = _tapetum("eval", "track", *(a.format(tmp=tmp_path, mot15=mot15) for a in args))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    assert message in lines[0]
