"""The offline bootstrap matcher against the reference: with every image weighted once it
must give faster-coco-eval's mAP and recall exactly (crowd regions, several classes, more
than 100 boxes in an image), and an image weight of 0 must be the same as leaving the
image out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tapetum.core.detections import Detections
from tapetum.eval.datasets import DetectionDataset
from tapetum.experiments.offline import coco_metrics, match_coco

pytest.importorskip("faster_coco_eval")

from tapetum.eval.detect import evaluate_predictions

NAMES = ("person", "car", "dog")
METRICS = ("map_50_95", "map_50", "recall_50", "recall_75")


def _scene(seed: int, images: int = 24) -> tuple[DetectionDataset, dict[int, Detections]]:
    rng = np.random.default_rng(seed)
    annotations: list[dict[str, Any]] = []
    predictions: dict[int, Detections] = {}
    for image_id in range(1, images + 1):
        n = int(rng.integers(0, 8))
        xy = rng.uniform(0, 500, (n, 2))
        wh = rng.uniform(10, 120, (n, 2))
        cls = rng.integers(0, len(NAMES), n)
        for k in range(n):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls[k]) + 1,
                    "bbox": [*xy[k].tolist(), *wh[k].tolist()],
                    "area": float(wh[k].prod()),
                    "iscrowd": 0,
                }
            )
        if image_id % 5 == 0:  # a crowd region that absorbs detections inside it
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [300.0, 300.0, 200.0, 200.0],
                    "area": 40000.0,
                    "iscrowd": 1,
                }
            )
        # detections: jittered ground truth (some missed), false positives, crowd hits
        keep = rng.random(n) < 0.8
        jitter = rng.normal(0, 6, (n, 4))
        boxes = np.column_stack([xy, xy + wh]) + jitter
        extra = 130 if image_id == 3 else int(rng.integers(0, 5))  # > 100 in one image
        fxy = rng.uniform(0, 560, (extra, 2))
        fp = np.column_stack([fxy, fxy + rng.uniform(10, 80, (extra, 2))])
        crowd_hits = np.array([[320.0, 320.0, 360.0, 380.0]] * (image_id % 5 == 0))
        xyxy = np.vstack([boxes[keep], fp, crowd_hits.reshape(-1, 4)])
        classes = np.concatenate(
            [cls[keep], rng.integers(0, len(NAMES), extra), np.zeros(len(crowd_hits), np.int64)]
        )
        scores = np.round(rng.uniform(0.05, 1.0, len(xyxy)), 2).astype(np.float32)  # ties
        predictions[image_id] = Detections(xyxy, scores, classes)
    gt = {
        "images": [
            {"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 640}
            for i in range(1, images + 1)
        ],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)],
    }
    paths = {i: Path(f"{i}.jpg") for i in range(1, images + 1)}
    return DetectionDataset("synthetic", "coco", gt, paths), predictions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unit_weights_reproduce_faster_coco_eval(seed: int) -> None:
    dataset, predictions = _scene(seed)
    reference = evaluate_predictions(dataset, predictions, class_names=NAMES)
    mine = coco_metrics(match_coco(dataset, predictions, NAMES))
    for metric in METRICS:
        assert float(mine[metric][0]) == pytest.approx(getattr(reference, metric), abs=1e-9)


def test_a_zero_weight_is_the_image_left_out() -> None:
    dataset, predictions = _scene(7)
    ids = dataset.image_ids
    kept = ids[::2]
    subset = dataset.subset(kept)
    reference = evaluate_predictions(subset, {i: predictions[i] for i in kept}, class_names=NAMES)
    weights = np.isin(np.asarray(ids), kept).astype(np.float64)[None, :]
    mine = coco_metrics(match_coco(dataset, predictions, NAMES), weights)
    for metric in METRICS:
        assert float(mine[metric][0]) == pytest.approx(getattr(reference, metric), abs=1e-9)


def test_resampling_images_gives_an_interval_around_the_estimate() -> None:
    dataset, predictions = _scene(4, images=60)
    matches = match_coco(dataset, predictions, NAMES)
    point = float(coco_metrics(matches)["map_50"][0])
    rng = np.random.default_rng(0)
    weights = rng.multinomial(60, np.full(60, 1 / 60), size=400).astype(np.float64)
    samples = coco_metrics(matches, weights)["map_50"]
    lo, hi = np.quantile(samples, [0.025, 0.975])
    assert lo < point < hi
    assert 0.01 < hi - lo < 0.5
