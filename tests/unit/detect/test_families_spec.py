"""The preprocessing contract and model metadata: JSON round trip, Ultralytics metadata,
and the transform each contract gives (resize modes, channel order, scale, mean/std,
mapping boxes back)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapetum.detect.classes import COCO80
from tapetum.detect.families import default_preprocess
from tapetum.detect.letterbox import LetterboxTransform
from tapetum.detect.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    METADATA_KEY,
    ChannelOrder,
    ModelMeta,
    PreprocessSpec,
    ResizeMode,
    ultralytics_meta,
    write_model_meta,
)
from tapetum.errors import ModelLoadError

names_st = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=20).map(tuple)
spec_st = st.builds(
    PreprocessSpec,
    input_hw=st.tuples(st.integers(32, 1280), st.integers(32, 1280)),
    resize=st.sampled_from(ResizeMode),
    pad_value=st.one_of(st.integers(0, 255), st.tuples(*(st.integers(0, 255) for _ in range(3)))),
    channels=st.sampled_from(ChannelOrder),
    scale=st.sampled_from([1.0, 1 / 255]),
    mean=st.one_of(st.none(), st.just(IMAGENET_MEAN)),
    std=st.one_of(st.none(), st.just(IMAGENET_STD)),
)


@settings(max_examples=60, deadline=None)
@given(
    family=st.sampled_from(["yolox", "yolov8", "rtdetr", "effdet"]),
    spec=spec_st,
    names=names_st,
    arch=st.text(max_size=20),
    options=st.dictionaries(st.sampled_from(["class_offset", "top_k"]), st.integers(0, 300)),
)
def test_model_meta_round_trips_through_json(family, spec, names, arch, options) -> None:
    meta = ModelMeta(family, spec, names, arch=arch, source="x.pt", version="v", options=options)
    assert ModelMeta.from_json(meta.to_json()) == meta


def test_model_meta_goes_into_onnx_metadata_once() -> None:
    import onnx

    model = onnx.ModelProto()
    first = ModelMeta("yolox", PreprocessSpec((416, 416)), COCO80)
    write_model_meta(model, first)
    write_model_meta(model, ModelMeta("yolov8", PreprocessSpec((640, 640)), ("a",)))
    props = {p.key: p.value for p in model.metadata_props}
    assert list(props) == [METADATA_KEY]
    assert ModelMeta.from_json(props[METADATA_KEY]).family == "yolov8"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"schema": 99, "family": "yolox"}', "schema 99.*upgrade"),
        ('{"family": "yolox"}', "malformed"),
        ('{"family": "yolox", "input_hw": [0, 416]}', "input size"),
        ('{"family": "yolox", "input_hw": [416, 416], "preprocess": {"resize": "x"}}', "x"),
    ],
)
def test_bad_metadata_is_a_model_load_error(text: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        ModelMeta.from_json(text)


ULTRALYTICS_PROPS = {
    "description": "Ultralytics YOLO11n model trained on coco.yaml",
    "version": "8.4.190",
    "stride": "32",
    "task": "detect",
    "head": "Detect",
    "imgsz": "[480, 640]",
    "names": "{0: 'person', 1: 'bicycle', 2: 'car'}",
    "end2end": "False",
}


def test_ultralytics_metadata_gives_family_size_names_and_preprocessing() -> None:
    meta = ultralytics_meta(ULTRALYTICS_PROPS)
    assert meta is not None
    assert meta.family == "yolov8" and meta.arch == "YOLO11n"
    assert meta.input_hw == (480, 640)
    assert meta.class_names == ("person", "bicycle", "car")
    pre = meta.preprocess
    assert pre.resize is ResizeMode.LETTERBOX_CENTER and pre.channels is ChannelOrder.RGB
    assert pre.scale == pytest.approx(1 / 255) and pre.pad_value == 114
    rtdetr = ultralytics_meta({**ULTRALYTICS_PROPS, "head": "RTDETRDecoder"})
    assert rtdetr is not None and rtdetr.family == "rtdetr"
    assert rtdetr.preprocess.resize is ResizeMode.STRETCH
    end2end = ultralytics_meta({**ULTRALYTICS_PROPS, "head": "v10Detect", "end2end": "True"})
    assert end2end is not None and end2end.family == "effdet"
    assert end2end.options["class_offset"] == 0
    # the classic YOLOv5 exporter writes only stride and names: shapes decide the family
    classic = ultralytics_meta({"stride": "32", "names": "['a', 'b']"})
    assert classic is not None and classic.family == "" and classic.class_names == ("a", "b")
    assert ultralytics_meta({"author": "someone"}) is None


def test_ultralytics_models_of_other_tasks_are_refused() -> None:
    with pytest.raises(ModelLoadError, match="'segment' model; only 'detect'"):
        ultralytics_meta({**ULTRALYTICS_PROPS, "task": "segment"})
    with pytest.raises(ModelLoadError, match="class names"):
        ultralytics_meta({**ULTRALYTICS_PROPS, "names": "{0: 'a', "})


# --------------------------------------------------------------------------- transforms


def test_stretch_maps_boxes_back_per_axis() -> None:
    lb = LetterboxTransform.from_spec(PreprocessSpec((320, 640), ResizeMode.STRETCH))
    img = np.zeros((100, 400, 3), np.uint8)
    tensor, meta = lb(img)
    assert tensor.shape == (3, 320, 640)
    assert meta.scale_xy == (1.6, 3.2) and meta.pad_x_px == meta.pad_y_px == 0
    back = lb.boxes_to_source(np.array([[64, 32, 640, 320]], np.float32), meta)
    np.testing.assert_allclose(back, [[40, 10, 400, 100]])


@settings(max_examples=80, deadline=None)
@given(src_h=st.integers(1, 3000), src_w=st.integers(1, 3000), side=st.sampled_from([320, 640]))
def test_centred_letterbox_places_the_image_as_ultralytics_does(
    src_h: int, src_w: int, side: int
) -> None:
    lb = LetterboxTransform((side, side), centered=True)
    meta = lb.meta_for((src_h, src_w))
    # Ultralytics' LetterBox: round each side, then round(d / 2 - 0.1) on the left/top
    r = min(side / src_h, side / src_w)
    new_w, new_h = max(round(src_w * r), 1), max(round(src_h * r), 1)
    assert meta.pad_x_px == round((side - new_w) / 2 - 0.1)
    assert meta.pad_y_px == round((side - new_h) / 2 - 0.1)
    assert meta.scale_xy == (new_w / src_w, new_h / src_h)


def test_rgb_scale_and_mean_std_follow_the_formula() -> None:
    spec = default_preprocess("effdet", (64, 64))
    lb = LetterboxTransform.from_spec(spec)
    img = np.zeros((32, 64, 3), np.uint8)
    img[...] = (10, 20, 30)  # B, G, R
    tensor, meta = lb(img)
    rgb = np.array([30, 20, 10]) / 255
    expected = (rgb - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(tensor[:, 5, 5], expected, rtol=1e-5)
    # padding (bottom half) is the mean colour: about zero after normalising
    assert meta.pad_y_px == 0 and np.all(np.abs(tensor[:, 50, :]) < 0.02)


def test_family_defaults() -> None:
    yolox = default_preprocess("yolox", (416, 416))
    assert yolox.channels is ChannelOrder.BGR and yolox.scale == 1.0
    assert yolox.resize is ResizeMode.LETTERBOX
    assert default_preprocess("rtdetr", (640, 640)).resize is ResizeMode.STRETCH
    v5 = default_preprocess("yolov5", (640, 640))
    assert v5.resize is ResizeMode.LETTERBOX_CENTER and v5.channels is ChannelOrder.RGB


def test_preprocess_spec_rejects_nonsense() -> None:
    with pytest.raises(ModelLoadError, match="pad value"):
        PreprocessSpec((64, 64), pad_value=300)
    with pytest.raises(ModelLoadError, match="std must not contain 0"):
        PreprocessSpec((64, 64), std=(1.0, 0.0, 1.0))
    with pytest.raises(ModelLoadError, match="pixel scale"):
        PreprocessSpec((64, 64), scale=0.0)
