"""Detection evaluation on hand-made ground truth with known AP, and the dataset readers
(COCO json, YOLO labels, data.yaml) on small files written here."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from tapetum.core.detections import Detections
from tapetum.errors import ConfigError, DatasetError
from tapetum.eval.datasets import (
    DetectionDataset,
    load_coco_dataset,
    load_dataset,
    load_yolo_dataset,
    read_class_names,
    read_yolo_labels,
)
from tapetum.eval.detect import evaluate_detector, evaluate_predictions

pytest.importorskip("faster_coco_eval")

# 101 interpolated recall points: precision 1 up to recall r covers round(100 r) + 1 of them.
POINTS = 101

Box = tuple[float, float, float, float]


def _dataset(objects: dict[int, list[tuple[int, Box]]], names: dict[int, str]) -> DetectionDataset:
    """Ground truth from ``{image_id: [(category_id, (x, y, w, h)), …]}``, 640x480 images."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in objects]
    annotations = [
        {
            "id": n + 1,
            "image_id": image_id,
            "category_id": cat,
            "bbox": list(box),
            "area": box[2] * box[3],
            "iscrowd": 0,
        }
        for n, (image_id, cat, box) in enumerate(
            (i, c, b) for i, objs in objects.items() for c, b in objs
        )
    ]
    categories = [{"id": c, "name": n} for c, n in names.items()]
    return DetectionDataset(
        name="hand-made",
        layout="coco",
        ground_truth={"images": images, "annotations": annotations, "categories": categories},
        image_paths={i: Path(f"{i}.jpg") for i in objects},
    )


def _result(image_id: int, cat: int, box: Box, score: float) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score}


CATS = {1: "person", 3: "car"}
A: Box = (10, 10, 100, 100)
B: Box = (300, 200, 120, 80)
C: Box = (50, 300, 60, 60)


def test_perfect_predictions_score_one() -> None:
    ds = _dataset({1: [(1, A), (3, B)], 2: [(1, C)]}, CATS)
    report = evaluate_predictions(
        ds, [_result(1, 1, A, 0.9), _result(1, 3, B, 0.8), _result(2, 1, C, 0.7)]
    )
    for value in (report.map_50_95, report.map_50, report.map_75, report.recall_50):
        assert value == pytest.approx(1.0)
    assert report.per_class_ap == {"person": pytest.approx(1.0), "car": pytest.approx(1.0)}
    assert report.images == 2 and report.ground_truth_objects == 3 and report.detections == 3
    np.testing.assert_allclose(report.precision_50, 1.0)
    assert report.latency_p50_ms is None  # precomputed: no detector was timed


def test_a_missing_object_halves_recall() -> None:
    ds = _dataset({1: [(1, A), (1, B)]}, {1: "person"})
    report = evaluate_predictions(ds, [_result(1, 1, A, 0.9)])
    # Precision 1 for recall 0 … 0.5 (51 of 101 points), nothing beyond.
    assert report.map_50 == pytest.approx(51 / POINTS)
    assert report.recall_50 == pytest.approx(0.5)
    assert report.precision_50[50] == 1.0 and report.precision_50[51] == 0.0


def test_a_duplicate_is_a_false_positive() -> None:
    ds = _dataset({1: [(1, A), (1, B)]}, {1: "person"})
    preds = [_result(1, 1, A, 0.9), _result(1, 1, A, 0.8), _result(1, 1, B, 0.7)]
    report = evaluate_predictions(ds, preds)
    # Ranked: TP (P 1, R .5), duplicate FP (P .5), TP (P 2/3, R 1): interpolated precision is
    # 1 up to recall 0.5 and 2/3 after.
    assert report.map_50 == pytest.approx((51 + 50 * 2 / 3) / POINTS)
    assert report.recall_50 == pytest.approx(1.0)


def test_the_wrong_class_scores_nothing_for_either_class() -> None:
    ds = _dataset({1: [(1, A)], 2: [(3, B)]}, CATS)
    # The car is reported as a person: a false person, a missed car.
    report = evaluate_predictions(ds, [_result(1, 1, A, 0.9), _result(2, 1, B, 0.8)])
    assert report.per_class_ap == {"person": pytest.approx(1.0), "car": 0.0}
    assert report.map_50_95 == pytest.approx(0.5)
    assert report.recall_50 == pytest.approx(0.5)


def test_iou_between_thresholds_counts_only_below_it() -> None:
    ds = _dataset({1: [(1, (0, 0, 100, 100))]}, {1: "person"})
    report = evaluate_predictions(ds, [_result(1, 1, (0, 0, 100, 62), 0.9)])  # IoU 0.62
    assert report.map_50 == pytest.approx(1.0)
    assert report.map_75 == 0.0
    assert report.map_50_95 == pytest.approx(0.3)  # a hit at IoU 0.5, 0.55, 0.6 of 10
    assert (report.recall_50, report.recall_75) == (pytest.approx(1.0), 0.0)


def test_area_ranges_without_ground_truth_are_nan() -> None:
    ds = _dataset({1: [(1, A)]}, {1: "person"})  # one 100x100 box: "large"
    report = evaluate_predictions(ds, [_result(1, 1, A, 0.9)])
    assert report.map_large == pytest.approx(1.0)
    assert math.isnan(report.map_small) and math.isnan(report.map_medium)
    out = report.to_dict()
    assert out["map_small"] is None and out["map_large"] == 1.0
    json.dumps(out, allow_nan=False)


def test_detections_map_to_categories_by_name() -> None:
    # Dataset ids 1 and 3 (COCO style); detector classes 0..2 in another order.
    ds = _dataset({1: [(1, A), (3, B)], 2: []}, CATS)
    class_names = ["Car", "bicycle", "person"]
    preds = {1: Detections([[10, 10, 110, 110], [300, 200, 420, 280]], [0.9, 0.8], [2, 0])}
    report = evaluate_predictions(ds, preds, class_names=class_names)
    assert report.map_50_95 == pytest.approx(1.0)
    assert report.images == 2  # image 2 has no prediction entry and no objects


def test_detector_classes_unknown_to_the_dataset_are_ignored() -> None:
    ds = _dataset({1: [(1, A)]}, {1: "person"})
    preds = {1: Detections([[10, 10, 110, 110], [0, 0, 50, 50]], [0.9, 0.95], [0, 1])}
    report = evaluate_predictions(ds, preds, class_names=["person", "kite"])
    assert report.map_50_95 == pytest.approx(1.0)
    assert report.detections == 1


def test_unmatched_class_names_are_listed() -> None:
    ds = _dataset({1: [(1, A), (3, B)]}, CATS)
    with pytest.raises(DatasetError, match=r"car \(1 objects\)") as err:
        evaluate_predictions(ds, {}, class_names=["person", "truck"])
    assert "person" not in str(err.value).split("Model classes")[0]


def test_precomputed_results_are_checked() -> None:
    ds = _dataset({1: [(1, A)]}, {1: "person"})
    with pytest.raises(DatasetError, match="image_id 7"):
        evaluate_predictions(ds, [_result(7, 1, A, 0.9)])
    with pytest.raises(DatasetError, match="category_id 2"):
        evaluate_predictions(ds, [_result(1, 2, A, 0.9)])
    with pytest.raises(DatasetError, match=r"predictions\[0\]: needs"):
        evaluate_predictions(ds, [{"image_id": 1, "bbox": list(A)}])
    with pytest.raises(ConfigError, match="class_names"):
        evaluate_predictions(ds, {1: Detections.empty()})


# --------------------------------------------------------------------------- YOLO labels


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_yolo_labels_parse_boxes_and_polygons(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "a.txt",
        "0 0.5 0.5 0.2 0.4\n\n  2 0.1 0.1 0.2 0.2  \n1 0.1 0.2 0.3 0.2 0.2 0.6\n",
    )
    cls, boxes = read_yolo_labels(path, num_classes=3)
    np.testing.assert_array_equal(cls, [0, 2, 1])
    np.testing.assert_allclose(boxes[0], [0.5, 0.5, 0.2, 0.4])
    # The corner box 0.1 ± 0.1 is clipped by nothing; the polygon's bounds are x .1-.3, y .2-.6.
    np.testing.assert_allclose(boxes[2], [0.2, 0.4, 0.2, 0.4])
    empty_cls, empty_boxes = read_yolo_labels(_write(tmp_path / "e.txt", ""), 3)
    assert empty_cls.shape == (0,) and empty_boxes.shape == (0, 4)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.2", "4 fields"),
        ("0 0.5 0.5 0.2 0.2 0.9", "6 fields"),
        ("person 0.5 0.5 0.2 0.2", "not numbers"),
        ("5 0.5 0.5 0.2 0.2", r"class 5 is not an integer in 0\.\.2"),
        ("1.5 0.5 0.5 0.2 0.2", r"class 1\.5"),
        ("0 0.5 0.5 0 0.2", "width and height must be > 0"),
        ("0 320 240 50 60", r"outside \[0, 1\]"),
        ("0 0.5 nan 0.2 0.2", "non-finite"),
    ],
)
def test_malformed_label_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path / "bad.txt", f"0 0.5 0.5 0.2 0.2\n{line}\n")
    with pytest.raises(DatasetError, match=message) as err:
        read_yolo_labels(path, num_classes=3)
    assert f"{path}:2:" in str(err.value)


def test_class_names_from_txt_and_yaml(tmp_path: Path) -> None:
    assert read_class_names(_write(tmp_path / "classes.txt", "cat\n\ndog\n")) == ("cat", "dog")
    yaml_map = _write(tmp_path / "m.yaml", "names:\n  0: cat\n  1: dog\n")
    assert read_class_names(yaml_map) == ("cat", "dog")
    assert read_class_names(_write(tmp_path / "l.yaml", "names: [cat, dog]\n")) == ("cat", "dog")
    with pytest.raises(DatasetError, match=r"ids 0\.\.N-1"):
        read_class_names(_write(tmp_path / "g.yaml", "names:\n  0: cat\n  2: dog\n"))
    with pytest.raises(DatasetError, match="no class names"):
        read_class_names(_write(tmp_path / "empty.txt", "\n"))


def _image(path: Path, hw: tuple[int, int] = (100, 200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((*hw, 3), 127, np.uint8))
    return path


def _yolo_tree(root: Path) -> Path:
    """root/images/val/{a,b,c}.png (200x100), labels for a and b, classes.txt."""
    for name in "abc":
        _image(root / "images" / "val" / f"{name}.png")
    _write(root / "labels" / "val" / "a.txt", "1 0.5 0.5 0.5 0.5\n")
    _write(root / "labels" / "val" / "b.txt", "0 0.25 0.25 0.1 0.2\n0 0.75 0.75 0.1 0.2\n")
    _write(root / "classes.txt", "person\ncar\n")
    return root


def test_yolo_folder_becomes_coco_ground_truth_in_pixels(tmp_path: Path) -> None:
    ds = load_dataset(_yolo_tree(tmp_path / "toy"), split="val")
    assert ds.layout == "yolo" and ds.name == "toy/val" and len(ds) == 3
    assert ds.categories == {0: "person", 1: "car"}
    anns = ds.ground_truth["annotations"]
    assert [a["image_id"] for a in anns] == [1, 2, 2]  # c.png has no label file: no objects
    assert anns[0]["category_id"] == 1
    np.testing.assert_allclose(anns[0]["bbox"], [50, 25, 100, 50])  # 200x100 image
    assert anns[0]["area"] == pytest.approx(5000)
    assert ds.image_sizes[1] == (100, 200)


def test_label_files_without_an_image_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _yolo_tree(tmp_path / "toy")
    _write(root / "labels" / "val" / "zz.txt", "0 0.5 0.5 0.1 0.1\n")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(root, split="val")
    assert len(ds.ground_truth["annotations"]) == 3
    assert "1 label files have no image, ignored (zz.txt)" in caplog.text


def test_yolo_data_yaml_and_folder_forms_agree(tmp_path: Path) -> None:
    root = _yolo_tree(tmp_path / "toy")
    _write(
        root / "data.yaml", "path: .\ntrain: images/val\nval: images/val\nnames: [person, car]\n"
    )
    from_yaml = load_dataset(root / "data.yaml")
    from_images = load_yolo_dataset(root / "images" / "val")
    assert from_yaml.ground_truth["annotations"] == from_images.ground_truth["annotations"]
    with pytest.raises(DatasetError, match="no 'test' split"):
        load_dataset(root / "data.yaml", split="test")


def test_undecodable_image_is_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _yolo_tree(tmp_path / "toy")
    (root / "images" / "val" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(root, split="val")
    assert len(ds) == 2 and [p.name for p in ds.skipped_images] == ["b.png"]
    assert "b.png: cannot decode image, skipped" in caplog.text
    assert all(a["image_id"] != 2 for a in ds.ground_truth["annotations"])


def test_dataset_path_errors_say_what_is_missing(tmp_path: Path) -> None:
    root = _yolo_tree(tmp_path / "toy")
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"choose one as split \(val\)"):
        load_dataset(root)
    with pytest.raises(DatasetError, match=r"no split 'test'.*splits found: val"):
        load_dataset(root, split="test")
    (root / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="no class names"):
        load_dataset(root, split="val")
    _image(tmp_path / "loose" / "images" / "x.png")
    with pytest.raises(DatasetError, match="labels folder not found"):
        load_yolo_dataset(tmp_path / "loose" / "images", class_names=["a"])


# --------------------------------------------------------------------------- COCO json


def _coco_tree(root: Path) -> Path:
    _image(root / "images" / "val" / "1.jpg")
    _image(root / "images" / "val" / "2.jpg")
    doc = {
        "images": [
            {"id": 1, "file_name": "1.jpg", "width": 200, "height": 100},
            {"id": 2, "file_name": "2.jpg", "width": 200, "height": 100},
        ],
        "annotations": [
            {"id": 0, "image_id": 1, "category_id": 18, "bbox": [10, 10, 50, 40]},
            {"id": 5, "image_id": 2, "category_id": 1, "bbox": [0, 0, 20, 20], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    path = root / "annotations" / "instances_val.json"
    _write(path, json.dumps(doc, indent=1))
    return path


def test_coco_json_is_normalised_and_finds_its_images(tmp_path: Path) -> None:
    path = _coco_tree(tmp_path / "c")
    ds = load_dataset(path)
    assert ds.layout == "coco" and ds.name == "c/val"
    assert ds.image_paths[1] == tmp_path / "c" / "images" / "val" / "1.jpg"
    anns = ds.ground_truth["annotations"]
    assert [a["id"] for a in anns] == [1, 2]  # COCOeval reads id 0 as "unmatched"
    assert anns[0]["area"] == 2000 and anns[0]["iscrowd"] == 0 and anns[1]["iscrowd"] == 1
    assert ds.object_counts() == {1: 0, 18: 1}  # the crowd region is not an object
    assert load_dataset(tmp_path / "c", split="val").ground_truth == ds.ground_truth


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("categories"), "not a COCO instances file"),
        (lambda d: d["annotations"][1].update(bbox=[0, 0, 5]), r"annotations\[1\] needs a 'bbox'"),
        (lambda d: d["annotations"][0].update(image_id=9), r"\[0\] refers to image_id 9"),
        (lambda d: d["annotations"][0].update(category_id=2), "category_id 2"),
        (lambda d: d["images"][0].pop("width"), r"images\[0\] needs"),
        (lambda d: d["images"].append({"id": 3, "file_name": "3.jpg", "width": 1, "height": 1}),
         r"1 of the 3 images .* are not in"),
    ],
)  # fmt: skip
def test_malformed_coco_json_names_the_entry(tmp_path: Path, edit: Any, message: str) -> None:
    path = _coco_tree(tmp_path / "c")
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=message):
        load_coco_dataset(path)


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.json", '{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DatasetError, match=rf"{path}:2:12: invalid JSON"):
        load_coco_dataset(path, tmp_path)


def test_coco_images_folder_not_found(tmp_path: Path) -> None:
    path = _coco_tree(tmp_path / "c")
    with pytest.raises(DatasetError, match="give their folder as images"):
        load_coco_dataset(path.rename(tmp_path / "instances_val.json"))


# --------------------------------------------------------------------------- evaluate_detector


class _OracleDetector:
    """Returns the ground truth of each image (found by its pixel size) as detections."""

    class_names = ("person", "car", "dog")

    def __init__(self, by_size: dict[tuple[int, int], Detections]) -> None:
        self.by_size = by_size
        self.calls: list[int] = []

    def __call__(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        self.calls.append(len(images))
        return [self.by_size[img.shape[:2]] for img in images]


def test_evaluate_detector_reads_batches_times_and_skips(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    _image(root / "images" / "val" / "a.png", (100, 200))
    _image(root / "images" / "val" / "b.png", (120, 200))
    _image(root / "images" / "val" / "c.png", (140, 200))
    _write(root / "labels" / "val" / "a.txt", "1 0.5 0.5 0.5 0.5\n")
    _write(root / "labels" / "val" / "c.txt", "0 0.5 0.5 0.5 0.5\n")
    _write(root / "classes.txt", "person\ncar\n")
    ds = load_dataset(root, split="val")
    (root / "images" / "val" / "b.png").write_bytes(b"broken after loading")
    oracle = _OracleDetector(
        {
            (100, 200): Detections([[50, 25, 150, 75]], [0.9], [1]),
            (140, 200): Detections([[50, 35, 150, 105], [0, 0, 9, 9]], [0.8, 0.5], [0, 2]),
        }
    )
    progress: list[tuple[int, int]] = []
    report = evaluate_detector(
        oracle, ds, batch_size=2, progress=lambda done, total: progress.append((done, total))
    )
    assert report.map_50_95 == pytest.approx(1.0)
    assert report.images == 2 and report.images_skipped == 1
    assert oracle.calls == [1, 1]  # batch 1: a (b unreadable); batch 2: c
    assert progress == [(2, 3), (3, 3)]
    assert report.detections == 2  # "dog" is not a dataset class
    assert report.latency_p50_ms is not None and report.latency_p50_ms >= 0
    assert report.images_per_s is not None and report.images_per_s > 0


def test_evaluate_detector_rejects_images_of_another_size(tmp_path: Path) -> None:
    path = _coco_tree(tmp_path / "c")
    ds = load_dataset(path)
    _image(tmp_path / "c" / "images" / "val" / "2.jpg", (50, 50))
    oracle = _OracleDetector({(100, 200): Detections.empty()})
    with pytest.raises(
        DatasetError, match=r"2\.jpg is 50x50 pixels but the annotations say 200x100"
    ):
        evaluate_detector(oracle, ds)
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate_detector(oracle, ds, batch_size=0)
