"""Detection mAP on the shared coco128 images with YOLOX-nano, checked against pycocotools'
``COCOeval`` on the same ground truth and detections; ``tapetum eval detect`` end to end.

The detector runs once per split (module fixtures); the detections it produced are recorded
and handed to the reference, so both sides score identical inputs."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tapetum.core.detections import Detections
from tapetum.detect import DetectorConfig, RuntimeOptions, YoloxDetector
from tapetum.eval import (
    DetectionDataset,
    DetectionReport,
    evaluate_detector,
    evaluate_predictions,
    load_dataset,
)
from tapetum.eval.detect import COCO_STAT_NAMES

pytestmark = pytest.mark.integration

pytest.importorskip("faster_coco_eval")


class _Recording:
    """Wraps a detector and keeps what it returned, per image, in call order."""

    def __init__(self, detector: YoloxDetector) -> None:
        self.detector = detector
        self.class_names = detector.class_names
        self.config = detector.config
        self.outputs: list[Detections] = []

    def __call__(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        found = self.detector(images)
        self.outputs.extend(found)
        return found


@dataclass
class _Run:
    dataset: DetectionDataset
    report: DetectionReport
    predictions: dict[int, Detections]
    class_names: tuple[str, ...]
    gt_json: dict[str, Any]  # ground truth as the reference reads it


@pytest.fixture(scope="module")
def detector(yolox_path: Path) -> YoloxDetector:
    config = DetectorConfig(conf_threshold=0.001, nms_iou=0.65, max_detections=100)
    return YoloxDetector(yolox_path, config, RuntimeOptions(workers=1))


def _run(detector: YoloxDetector, dataset: DetectionDataset, gt_json: dict[str, Any]) -> _Run:
    recording = _Recording(detector)
    report = evaluate_detector(recording, dataset)
    predictions = dict(zip(dataset.image_ids, recording.outputs, strict=True))
    return _Run(dataset, report, predictions, tuple(detector.class_names), gt_json)


@pytest.fixture(scope="module")
def val_run(assets: Path, detector: YoloxDetector) -> _Run:
    dataset = load_dataset(assets / "coco128", split="val2017")  # YOLO labels
    return _run(detector, dataset, copy.deepcopy(dict(dataset.ground_truth)))


@pytest.fixture(scope="module")
def train_run(assets: Path, detector: YoloxDetector) -> _Run:
    path = assets / "coco128" / "annotations" / "instances_train2017.json"
    # The reference reads the original file: our normalised copy must not change anything.
    return _run(detector, load_dataset(path), json.loads(path.read_text()))


def _reference_results(run: _Run) -> list[dict[str, Any]]:
    """The recorded detections as COCO results, mapped to category ids by name here."""
    by_name = {c["name"]: c["id"] for c in run.gt_json["categories"]}
    results = []
    for image_id, det in run.predictions.items():
        for (x1, y1, x2, y2), score, cls in zip(
            det.xyxy.tolist(), det.confidence.tolist(), det.class_id.tolist(), strict=True
        ):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": by_name[run.class_names[cls]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    return results


def _pycocotools(run: _Run) -> tuple[np.ndarray, dict[str, float], np.ndarray]:
    """pycocotools' 12 stats, AP@[.5:.95] per class name and recall[T, K] (area all,
    100 detections)."""
    coco = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco.COCO()
        gt.dataset = copy.deepcopy(run.gt_json)
        gt.createIndex()
        dt = gt.loadRes(_reference_results(run))
        ev = cocoeval.COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"][:, :, :, 0, -1]
    names = {c["id"]: c["name"] for c in run.gt_json["categories"]}
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k]
        if (p > -1).any():
            per_class[names[cat_id]] = float(p[p > -1].mean())
    return np.asarray(ev.stats), per_class, ev.eval["recall"][:, :, 0, -1]


@pytest.mark.parametrize("split", ["val2017 (YOLO labels)", "train2017 (COCO json)"])
def test_metrics_match_pycocotools(split: str, val_run: _Run, train_run: _Run) -> None:
    run = val_run if split.startswith("val") else train_run
    stats, per_class, recall = _pycocotools(run)
    ours = np.array(run.report.coco_stats)
    np.testing.assert_allclose(ours, np.where(stats < 0, np.nan, stats), atol=1e-4)
    assert run.report.per_class_ap.keys() == per_class.keys()
    for name, ap in per_class.items():
        assert run.report.per_class_ap[name] == pytest.approx(ap, abs=1e-4), name
    # recall@IoU: COCO's recall at one threshold, the mean over classes with ground truth.
    has_gt = recall[0] > -1
    assert run.report.recall_50 == pytest.approx(recall[0][has_gt].mean(), abs=1e-4)
    assert run.report.recall_75 == pytest.approx(recall[5][has_gt].mean(), abs=1e-4)


def test_precomputed_predictions_score_the_same(val_run: _Run) -> None:
    again = evaluate_predictions(
        val_run.dataset, val_run.predictions, class_names=val_run.class_names
    )
    assert again.coco_stats == pytest.approx(val_run.report.coco_stats, nan_ok=True)
    assert again.per_class_ap == pytest.approx(val_run.report.per_class_ap)
    from_results = evaluate_predictions(val_run.dataset, _reference_results(val_run))
    assert from_results.map_50_95 == pytest.approx(val_run.report.map_50_95)


def test_yolox_nano_scores_near_its_published_level(val_run: _Run, train_run: _Run) -> None:
    # YOLOX-nano: 25.8 AP on COCO val2017 (5000 images). 128-image subsets are noisier and
    # easier; PROVENANCE measured 0.338 on val2017 with its own pipeline. A wrong colour
    # order or box decode loses 5+ points.
    for run in (val_run, train_run):
        assert 0.30 < run.report.map_50_95 < 0.38
        assert 0.45 < run.report.map_50 < 0.55
        assert run.report.images == 128 and run.report.images_skipped == 0
    assert val_run.report.ground_truth_objects == 898
    assert train_run.report.ground_truth_objects == 929  # 939 annotations, 10 crowd
    assert val_run.report.latency_p50_ms is not None and val_run.report.images_per_s


def _tapetum(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", "eval", "detect", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_writes_json_and_plot(
    assets: Path, yolox_path: Path, val_run: _Run, tmp_path: Path
) -> None:
    out, png = tmp_path / "r" / "val.json", tmp_path / "r" / "pr.png"
    proc = _tapetum(
        "-m", yolox_path, "--data", assets / "coco128", "--split", "val2017",
        "--json", out, "--plot", png, "--per-class",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "mAP" in proc.stdout and "AP per class" in proc.stdout
    result = json.loads(out.read_text())
    assert result["dataset"] == "coco128/val2017"
    assert result["settings"] == {
        "conf_threshold": 0.001,
        "nms_iou": 0.65,
        "max_detections": 100,
        "batch_size": 1,
    }
    # Same model, settings and images as the in-process run (batching aside).
    for name in COCO_STAT_NAMES[:3]:
        assert result[name] == pytest.approx(getattr(val_run.report, name), abs=1e-3)
    assert len(result["per_class"]) == len(val_run.report.per_class_ap)
    assert len(result["pr_curves"]["precision_50"]) == 101
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_cli_bad_inputs_exit_2(assets: Path, yolox_path: Path, tmp_path: Path) -> None:
    labels = tmp_path / "toy" / "labels" / "val"
    labels.mkdir(parents=True)
    (tmp_path / "toy" / "images").mkdir()
    (tmp_path / "toy" / "images" / "val").symlink_to(assets / "coco128" / "images" / "val2017")
    (tmp_path / "toy" / "classes.txt").write_text((assets / "coco128" / "classes.txt").read_text())
    (labels / "000000000139.txt").write_text("58 0.38 0.41 0.03 0.16\n58 0.5 0.5 0.1\n")
    cases = [
        (("--data", tmp_path / "toy", "--split", "val"), "000000000139.txt:2: 4 fields"),
        (("--data", assets / "coco128", "--split", "test"), "no split 'test'"),
        (("--data", assets / "coco128" / "annotations" / "instances_train2017.json",
          "--images", assets / "coco128" / "images" / "val2017"), "are not in"),
        (("--data", assets / "coco128", "--split", "val2017", "--conf", "2"), "conf_threshold"),
    ]  # fmt: skip
    for args, message in cases:
        proc = _tapetum("-m", yolox_path, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "error:" in proc.stderr and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    missing = _tapetum("-m", tmp_path / "none.onnx", "--data", assets / "coco128")
    assert missing.returncode == 2 and "none.onnx" in missing.stderr
