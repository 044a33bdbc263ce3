"""Model families on the real asset models: YOLOX raw and decoded heads (the decoded one
built here from the raw export), the classic YOLOv5 layout, the Ultralytics layout against
Ultralytics' own predictor, and load errors a user would hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tapetum.core.detections import Detections
from tapetum.detect import DetectorConfig, RuntimeOptions, load_detector
from tapetum.detect.spec import ModelMeta, write_model_meta
from tapetum.detect.yolox import YoloxDecoder
from tapetum.errors import ConfigError, ModelLoadError
from tests.integration.ultralytics_env import offline_ultralytics

pytestmark = pytest.mark.integration

ONE_THREAD = RuntimeOptions(intra_op_threads=1, workers=1)


@pytest.fixture(scope="module")
def images(assets: Path) -> dict[str, np.ndarray]:
    return {n: cv2.imread(str(assets / "images" / f"{n}.jpg")) for n in ("bus", "zidane")}


@pytest.fixture(scope="module")
def yolov8_int8(assets: Path) -> Path:
    return assets / "models" / "yolov8n_int8_dynamic.onnx"


@pytest.fixture(scope="module")
def decoded_yolox(yolox_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """yolox_nano with the grid/stride decoding appended to its graph (no metadata)."""
    model = onnx.load(str(yolox_path))
    graph = model.graph
    raw_name = graph.output[0].name
    dec = YoloxDecoder((416, 416))
    consts = {
        "dec_grid": dec.grid[None],  # (1, A, 2)
        "dec_stride": dec.stride[None],  # (1, A, 1)
        "s0": np.array([0], np.int64),
        "s2": np.array([2], np.int64),
        "s4": np.array([4], np.int64),
        "s_end": np.array([1 << 30], np.int64),
        "axis2": np.array([2], np.int64),
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    graph.node.extend(
        [
            helper.make_node("Slice", [raw_name, "s0", "s2", "axis2"], ["dec_xy"]),
            helper.make_node("Slice", [raw_name, "s2", "s4", "axis2"], ["dec_wh"]),
            helper.make_node("Slice", [raw_name, "s4", "s_end", "axis2"], ["dec_rest"]),
            helper.make_node("Add", ["dec_xy", "dec_grid"], ["dec_xy_cells"]),
            helper.make_node("Mul", ["dec_xy_cells", "dec_stride"], ["dec_xy_px"]),
            helper.make_node("Exp", ["dec_wh"], ["dec_wh_cells"]),
            helper.make_node("Mul", ["dec_wh_cells", "dec_stride"], ["dec_wh_px"]),
            helper.make_node("Concat", ["dec_xy_px", "dec_wh_px", "dec_rest"], ["decoded"], axis=2),
        ]
    )
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info("decoded", onnx.TensorProto.FLOAT, [1, dec.num_anchors, 85])
    )
    path = tmp_path_factory.mktemp("yolox") / "yolox_nano_decoded.onnx"
    onnx.save(model, str(path))
    return path


def names_of(det: object, found: Detections) -> list[str]:
    return [det.class_names[c] for c in found.class_id]  # type: ignore[attr-defined]


def test_yolox_raw_head_is_recognised_without_arch(
    yolox_path: Path, images: dict[str, np.ndarray]
) -> None:
    det = load_detector(yolox_path, config=DetectorConfig(conf_threshold=0.35), runtime=ONE_THREAD)
    assert det.meta.family == "yolox" and det.input_hw == (416, 416)
    found = det([images["bus"]])[0]
    assert sorted(names_of(det, found)) == ["bus", "person", "person", "person"]
    np.testing.assert_allclose(np.sort(found.confidence)[::-1], [0.91, 0.85, 0.81, 0.69], atol=0.01)


@pytest.mark.parametrize("arch", [None, "yolox-decoded", "yolov5"])
def test_decoded_yolox_graph_gives_the_raw_heads_detections(
    arch: str | None, yolox_path: Path, decoded_yolox: Path, images: dict[str, np.ndarray]
) -> None:
    """The decoded graph holds the classic YOLOv5 layout too, so ``yolov5`` reads it."""
    config = DetectorConfig(conf_threshold=0.3)
    raw_det = load_detector(yolox_path, config=config, runtime=ONE_THREAD)
    det = load_detector(decoded_yolox, arch, config, ONE_THREAD)
    # with no arch the shapes fit both YOLOX heads; a probe run tells them apart
    assert det.meta.family == (arch or "yolox-decoded")
    if arch == "yolov5":  # the classic layout's default contract is RGB /255; YOLOX's is not
        det.letterbox = raw_det.letterbox
    for image in images.values():
        want, got = raw_det([image])[0], det([image])[0]
        assert len(want) >= 2
        np.testing.assert_array_equal(got.class_id, want.class_id)
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=0.05)
        np.testing.assert_allclose(got.confidence, want.confidence, atol=1e-4)


def test_metadata_written_into_a_file_is_read_back(
    decoded_yolox: Path, tmp_path: Path, images: dict[str, np.ndarray]
) -> None:
    det = load_detector(decoded_yolox, "yolox-decoded", runtime=ONE_THREAD)
    model = onnx.load(str(decoded_yolox))
    renamed = ("human", *det.class_names[1:])
    write_model_meta(model, ModelMeta("yolox-decoded", det.meta.preprocess, renamed, arch="nano"))
    path = tmp_path / "with_meta.onnx"
    onnx.save(model, str(path))

    loaded = load_detector(path, runtime=ONE_THREAD)

    assert loaded.meta.family == "yolox-decoded" and loaded.meta.arch == "nano"
    assert loaded.class_names[0] == "human" and loaded.input_hw == (416, 416)
    assert "human" in names_of(loaded, loaded([images["bus"]])[0])


@pytest.fixture(scope="module")
def ultralytics(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return offline_ultralytics(tmp_path_factory.mktemp("ultralytics-config"))


def test_ultralytics_layout_matches_ultralytics_predictor(
    ultralytics: ModuleType, yolov8_int8: Path, images: dict[str, np.ndarray]
) -> None:
    """Same file, same image: our preprocessing, decoding and NMS give Ultralytics' boxes."""
    det = load_detector(yolov8_int8, config=DetectorConfig(conf_threshold=0.25, nms_iou=0.7))
    assert det.meta.family == "yolov8" and det.input_hw == (640, 640)
    assert det.class_names[5] == "bus"  # from the file's Ultralytics metadata
    reference = ultralytics.YOLO(str(yolov8_int8), task="detect")
    for name, image in images.items():
        theirs = reference.predict(image, conf=0.25, iou=0.7, verbose=False)[0].boxes
        ours = det([image])[0]
        assert len(ours) == len(theirs) >= 3, name
        np.testing.assert_array_equal(ours.class_id, theirs.cls.numpy().astype(int))
        np.testing.assert_allclose(ours.xyxy, theirs.xyxy.numpy(), atol=1.0)
        np.testing.assert_allclose(ours.confidence, theirs.conf.numpy(), atol=1e-3)
    bus = det([images["bus"]])[0]
    assert sorted(names_of(det, bus))[:1] == ["bus"] and names_of(det, bus).count("person") >= 3


def test_load_errors_are_clear(yolov8_int8: Path, yolox_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"\[1, 84, 8400\] is not a YOLOX raw head"):
        load_detector(yolov8_int8, "yolox")
    with pytest.raises(ModelLoadError, match=r"not a DETR-style output.*metadata says 'yolov8'"):
        load_detector(yolov8_int8, "rtdetr")
    with pytest.raises(ModelLoadError, match="is not an Ultralytics detect output"):
        load_detector(yolox_path, "yolov8")
    with pytest.raises(ConfigError, match="unknown arch 'yolo-world'"):
        load_detector(yolox_path, "yolo-world")
    with pytest.raises(ModelLoadError, match="model file not found"):
        load_detector(tmp_path / "missing.onnx")
    junk = tmp_path / "weights.onnx"
    junk.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ModelLoadError, match=r"cannot load .*weights\.onnx"):
        load_detector(junk)


def test_tapetum_run_loads_an_ultralytics_model_and_its_class_names(
    yolov8_int8: Path, assets: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("bus", "zidane"):
        (folder / f"{name}.jpg").write_bytes((assets / "images" / f"{name}.jpg").read_bytes())
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "tapetum", "run", str(folder), "--model", str(yolov8_int8)),
            *("--arch", "yolov8", "--classes", "bus,tie", "--conf", "0.25", "--no-video"),
            *("--out", str(out), "--quiet"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    seen = {obj["class_name"] for row in rows for obj in row["tracks"]}
    assert seen <= {"bus", "tie"} and "bus" in seen
