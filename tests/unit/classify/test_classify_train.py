"""Training data and scores of ``tapetum train classify`` without torch: crop sets read from
a folder per class and from a YOLO dataset made here, class selection, the per-class cap,
and the top-1 / recall / confusion arithmetic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tapetum.classify.datasets import load_crop_set
from tapetum.classify.spec import input_size
from tapetum.classify.train import ClassifyTrainConfig, evaluate_predictions, plot_confusion
from tapetum.errors import ConfigError, DatasetError


def write_image(path: Path, w: int = 64, h: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def test_a_folder_per_class_gives_one_whole_image_crop_per_file(tmp_path: Path) -> None:
    for name, n in (("cat", 3), ("dog", 2)):
        for i in range(n):
            write_image(tmp_path / "train" / name / f"{i}.jpg")
    crops = load_crop_set(tmp_path, split="train")
    assert crops.class_names == ("cat", "dog")
    assert crops.counts() == {"cat": 3, "dog": 2}
    assert np.isnan(crops.xyxy).all()  # the whole image


def test_yolo_boxes_become_crops_of_the_chosen_classes(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("person\ncar\nbus\n")
    write_image(tmp_path / "images" / "val" / "a.jpg", 100, 50)
    labels = tmp_path / "labels" / "val"
    labels.mkdir(parents=True)
    # person 20x10 px, car 40x20 px, bus 4x4 px (under the minimum size)
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.4 0.4\n2 0.9 0.9 0.04 0.08\n")
    crops = load_crop_set(tmp_path, split="val", classes=["Car", "person"])
    assert crops.class_names == ("car", "person")  # the order asked for
    assert crops.labels.tolist() == [1, 0]
    np.testing.assert_allclose(crops.xyxy[1], [10, 5, 50, 25], atol=0.01)
    with pytest.raises(DatasetError, match="no class 'plane'"):
        load_crop_set(tmp_path, split="val", classes=["plane"])
    with pytest.raises(DatasetError, match="no crops"):
        load_crop_set(tmp_path, split="val", classes=["bus"])


def test_capping_keeps_at_most_n_per_class_and_each_image_is_read_once(tmp_path: Path) -> None:
    for i in range(10):
        write_image(tmp_path / "many" / f"{i}.jpg")
    write_image(tmp_path / "few" / "0.jpg")
    crops = load_crop_set(tmp_path).capped(4, seed=1)
    assert crops.counts() == {"few": 1, "many": 4}
    images = [p for p, _ in crops.by_image()]
    assert len(images) == len(set(images)) == 5


def test_scores_count_misses_against_top1_and_recall() -> None:
    names = ("a", "b", "c")
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, -1, 2])  # one confusion, one miss
    ev = evaluate_predictions(labels, predicted, names)
    assert ev.top1 == pytest.approx(4 / 6)
    assert ev.per_class_recall == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0})
    assert ev.mean_recall == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert ev.confusion.tolist() == [[2, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    no_c = evaluate_predictions(np.array([0, 1]), np.array([0, 0]), names)
    assert np.isnan(no_c.per_class_recall["c"]) and no_c.mean_recall == pytest.approx(0.5)
    assert no_c.as_dict()["per_class_recall"]["c"] is None


def test_the_confusion_matrix_is_written_as_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ev = evaluate_predictions(np.array([0, 1, 1]), np.array([0, 1, 0]), ("x", "y"))
    path = plot_confusion(ev, tmp_path / "cm.png")
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "full"}, "mode must be"),
        ({"imgsz": 100}, "multiple of 32"),
        ({"imgsz": (128, 48)}, "multiple of 32"),
        ({"unfreeze_stages": 0}, "unfreeze_stages"),
        ({"max_per_class": 0}, "max_per_class"),
    ],
)
def test_bad_training_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClassifyTrainConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(224, (224, 224)), ("128", (128, 128)), ("128x64", (128, 64)), ((96, 64), (96, 64))],
)
def test_input_sizes_are_square_or_height_by_width(
    value: int | str | tuple[int, int], expected: tuple[int, int]
) -> None:
    assert input_size(value) == expected


@pytest.mark.parametrize("value", ["", "x64", "128x64x3", "tall", "100", "128x0"])
def test_bad_input_sizes_name_the_form(value: str) -> None:
    with pytest.raises(ConfigError, match="input size must be"):
        input_size(value)


def test_a_tall_size_is_kept_as_height_and_width_and_a_square_as_one_side() -> None:
    assert ClassifyTrainConfig(imgsz=(128, 64)).imgsz == (128, 64)
    assert ClassifyTrainConfig(imgsz=(128, 128)).imgsz == 128
