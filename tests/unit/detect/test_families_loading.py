"""Choosing the family, class names and input size when loading: tiny ONNX graphs built
here whose outputs are fixed tables, so every box is known."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tapetum.detect import DetectorConfig, OnnxDetector, load_detector
from tapetum.detect.spec import (
    ChannelOrder,
    ModelMeta,
    PreprocessSpec,
    ResizeMode,
    write_model_meta,
)
from tapetum.errors import ConfigError, ModelLoadError


def table_model(
    path: Path,
    tables: Mapping[str, np.ndarray],
    hw: tuple[int | str, int | str] = (64, 64),
    props: Mapping[str, str] | None = None,
    meta: ModelMeta | None = None,
) -> Path:
    """An ONNX model whose outputs are ``tables`` (each (1, ...)) repeated over the batch:
    ``table + 0 * mean(images)``."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Flatten", ["mean"], ["mean_b1"], axis=1),  # (B, 1)
        helper.make_node("Mul", ["mean_b1", "zero"], ["zero_b1"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outputs = []
    for name, table in tables.items():
        extra = table.ndim - 2  # (B, 1) → (B, 1, ..., 1) to broadcast against the table
        shape = np.array([0, *([1] * (table.ndim - 1))], np.int64)
        inits += [
            numpy_helper.from_array(table.astype(np.float32), f"{name}_table"),
            numpy_helper.from_array(shape, f"{name}_shape"),
        ]
        src = "zero_b1"
        if extra >= 0:
            nodes.append(helper.make_node("Reshape", ["zero_b1", f"{name}_shape"], [f"{name}_z"]))
            src = f"{name}_z"
        else:
            nodes.append(helper.make_node("Flatten", ["zero_b1"], [f"{name}_z"], axis=0))
            src = f"{name}_z"
        nodes.append(helper.make_node("Add", [src, f"{name}_table"], [name]))
        dims: list[int | str] = ["batch", *table.shape[1:]]
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    graph = helper.make_graph(
        nodes,
        "table",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, *hw])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in (props or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    if meta is not None:
        write_model_meta(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def ultralytics_table(num_boxes: int = 84) -> np.ndarray:
    """(1, 4 + 2, N): box 3 is class 1 at 0.9, box 7 class 0 at 0.6, the rest near zero."""
    out = np.zeros((1, 6, num_boxes), np.float32)
    out[0, :4] = 1.0
    out[0, :4, 3] = [32, 16, 20, 10]
    out[0, 5, 3] = 0.9
    out[0, :4, 7] = [10, 40, 8, 8]
    out[0, 4, 7] = 0.6
    return out


def test_tapetum_metadata_gives_family_names_size_and_preprocessing(tmp_path: Path) -> None:
    spec = PreprocessSpec((64, 64), ResizeMode.STRETCH, 0, ChannelOrder.RGB, 1 / 255)
    meta = ModelMeta("yolov8", spec, ("cat", "dog"), arch="tiny", source="test")
    path = table_model(tmp_path / "m.onnx", {"out": ultralytics_table()}, ("h", "w"), meta=meta)

    det = load_detector(path, config=DetectorConfig(conf_threshold=0.5))

    assert det.meta.family == "yolov8" and det.meta.arch == "tiny"
    assert det.class_names == ("cat", "dog") and det.input_hw == (64, 64)
    assert det.letterbox.stretch and det.letterbox.rgb
    found = det([np.zeros((32, 128, 3), np.uint8)])[0]  # stretch: x / 2 then x2, y / 0.5
    assert found.class_id.tolist() == [1, 0]
    np.testing.assert_allclose(found.xyxy[0], [44, 5.5, 84, 10.5])


def test_dynamic_size_without_metadata_needs_a_size(tmp_path: Path) -> None:
    path = table_model(tmp_path / "m.onnx", {"out": ultralytics_table()}, ("h", "w"))
    with pytest.raises(ModelLoadError, match="no fixed size"):
        load_detector(path)
    det = load_detector(path, input_hw=(64, 64))
    assert det.meta.family == "yolov8" and det.class_names == ("class0", "class1")


def test_shapes_choose_the_family_when_the_file_says_nothing(tmp_path: Path) -> None:
    path = table_model(tmp_path / "m.onnx", {"out": ultralytics_table()})
    det = load_detector(path)
    assert det.meta.family == "yolov8"
    assert det.letterbox.centered and det.letterbox.rgb  # Ultralytics' contract


def test_ambiguous_or_unknown_shapes_ask_for_arch(tmp_path: Path) -> None:
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = [0.5, 0.5, 0.25, 0.25, 0.9, 2]
    ambiguous = table_model(tmp_path / "a.onnx", {"out": rows})
    with pytest.raises(ModelLoadError, match=r"\[batch, 300, 6\].*several families.*set arch"):
        load_detector(ambiguous)
    det = load_detector(ambiguous, arch="rtdetr", config=DetectorConfig(conf_threshold=0.5))
    found = det([np.zeros((64, 64, 3), np.uint8)])[0]
    np.testing.assert_allclose(found.xyxy, [[24, 24, 40, 40]])  # no NMS, normalised boxes
    unknown = table_model(tmp_path / "u.onnx", {"out": np.zeros((1, 10), np.float32)})
    with pytest.raises(ModelLoadError, match=r"cannot tell the model family.*set arch to one of"):
        load_detector(unknown)


def test_wrong_arch_or_class_count_is_a_clear_error(tmp_path: Path) -> None:
    path = table_model(tmp_path / "m.onnx", {"out": ultralytics_table()})
    with pytest.raises(ModelLoadError, match=r"m\.onnx: output shape .* not a YOLOX raw head"):
        load_detector(path, arch="yolox")
    with pytest.raises(ModelLoadError, match="4 \\+ 3"):
        load_detector(path, class_names=["a", "b", "c"])
    with pytest.raises(ConfigError, match="unknown arch 'yolo-nas'"):
        load_detector(path, arch="yolo-nas")
    props = {"stride": "32", "task": "detect", "names": "{0: 'a', 1: 'b', 2: 'c'}"}
    named = table_model(tmp_path / "n.onnx", {"out": ultralytics_table()}, props=props)
    with pytest.raises(ModelLoadError, match="not an Ultralytics detect output"):
        load_detector(named)


def test_ultralytics_metadata_names_the_classes(tmp_path: Path) -> None:
    props = {"stride": "32", "task": "detect", "names": "{0: 'cat', 1: 'dog'}", "imgsz": "[64, 64]"}
    path = table_model(tmp_path / "m.onnx", {"out": ultralytics_table()}, ("h", "w"), props)
    det = load_detector(path, config=DetectorConfig(conf_threshold=0.5, class_ids=frozenset({1})))
    assert det.class_names == ("cat", "dog") and det.input_hw == (64, 64)
    assert det([np.zeros((64, 64, 3), np.uint8)])[0].class_id.tolist() == [1]


def test_separate_post_nms_outputs_are_merged_per_image(tmp_path: Path) -> None:
    boxes = np.zeros((1, 5, 4), np.float32)
    boxes[0, :3] = [[1, 2, 11, 12], [20, 20, 30, 30], [5, 5, 6, 6]]
    scores = np.array([[0.9, 0.8, 0.7, 0.0, 0.0]], np.float32)
    classes = np.array([[1, 2, 1, 0, 0]], np.float32)
    path = table_model(
        tmp_path / "m.onnx",
        {"detection_boxes": boxes, "detection_scores": scores, "detection_classes": classes},
    )
    det = OnnxDetector(path, DetectorConfig(conf_threshold=0.5, max_detections=2))
    assert det.meta.family == "effdet"
    batch = np.zeros((2, 3, 64, 64), np.float32)
    raw = det.infer(batch)
    assert raw.shape == (2, 5, 6)  # raw[i] is image i's rows, as the pipeline expects
    _, meta = det.preprocess(np.zeros((64, 64, 3), np.uint8))
    found = det.postprocess(raw[1], meta)
    assert found.class_id.tolist() == [0, 1]  # effdet numbers classes from 1; capped at 2
    assert det.class_names[0] == "person"  # COCO's 90 category slots
