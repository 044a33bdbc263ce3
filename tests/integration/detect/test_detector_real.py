"""The YOLOX-nano export on real images (expected values from the asset's PROVENANCE)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from tapetum.detect import DetectorConfig, RuntimeOptions, YoloxDetector
from tapetum.errors import ConfigError, ModelLoadError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def detector(yolox_path: Path) -> YoloxDetector:
    return YoloxDetector(yolox_path, DetectorConfig(conf_threshold=0.35), RuntimeOptions(1))


def test_bus_image_finds_bus_and_three_people(detector: YoloxDetector, assets: Path) -> None:
    img = cv2.imread(str(assets / "images" / "bus.jpg"))
    det = detector([img])[0]
    names = [detector.class_names[c] for c in det.class_id]
    assert sorted(names) == ["bus", "person", "person", "person"]
    np.testing.assert_allclose(np.sort(det.confidence)[::-1], [0.91, 0.85, 0.81, 0.69], atol=0.01)
    bus = det[np.array(names) == "bus"]
    # the bus spans most of the 810-px-wide photo
    assert bus.xyxy[0, 0] < 60 and bus.xyxy[0, 2] > 780
    assert np.all(det.xyxy[:, 2] <= img.shape[1]) and np.all(det.xyxy[:, 3] <= img.shape[0])


def test_batch_equals_single(detector: YoloxDetector, assets: Path) -> None:
    bus = cv2.imread(str(assets / "images" / "bus.jpg"))
    zidane = cv2.imread(str(assets / "images" / "zidane.jpg"))
    assert detector.max_batch > 1, "the batch-1 export should have been made dynamic"
    batched = detector([bus, zidane])
    single = [detector([bus])[0], detector([zidane])[0]]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=1e-2)
        np.testing.assert_array_equal(b.class_id, s.class_id)


def test_class_filter(yolox_path: Path, assets: Path) -> None:
    det = YoloxDetector(yolox_path, DetectorConfig(conf_threshold=0.35, class_ids=frozenset({5})))
    out = det([cv2.imread(str(assets / "images" / "bus.jpg"))])[0]
    assert list(out.class_id) == [5]


def test_model_errors_are_clear(tmp_path: Path, yolox_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        YoloxDetector(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(ModelLoadError, match="cannot load"):
        YoloxDetector(junk)
    with pytest.raises(ConfigError, match="does not match the model's fixed input 416x416"):
        YoloxDetector(yolox_path, input_hw=(640, 640))


def test_non_yolox_model_is_rejected(assets: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a YOLOX raw head"):
        YoloxDetector(assets / "models" / "yolov8n_int8_dynamic.onnx")
