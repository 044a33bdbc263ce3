"""Family decoders on hand-made output tensors (no model): each layout's boxes, scores and
classes, thresholds, padding rows, and shape checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tapetum.detect.families import build_family, infer_families, normalize_arch
from tapetum.detect.families.base import OutputInfo, cxcywh_to_xyxy
from tapetum.detect.families.yolox import head_is_decoded
from tapetum.detect.yolox import YoloxDecoder
from tapetum.errors import ConfigError, ModelLoadError

HW = (64, 64)  # grid points at strides 8/16/32: 64 + 16 + 4 = 84


def _out(*shape: int | str, name: str = "output0") -> list[OutputInfo]:
    return [OutputInfo(name, tuple(shape))]


# ----------------------------------------------------------------------------- YOLO heads


def test_ultralytics_layout_decodes_columns_of_boxes_then_class_scores() -> None:
    fam = build_family("yolov8", _out(1, 4 + 3, 84), HW)
    raw = np.zeros((7, 84), np.float32)
    raw[:4, 10] = [20, 30, 10, 6]  # cx, cy, w, h in input pixels
    raw[4 + 2, 10] = 0.9
    raw[:4, 50] = [40, 40, 8, 8]
    raw[4 + 0, 50] = 0.2  # under the threshold
    xyxy, score, cls = fam.decode(raw, 0.25)
    np.testing.assert_allclose(xyxy, [[15, 27, 25, 33]])
    np.testing.assert_allclose(score, [0.9])
    assert cls.tolist() == [2] and cls.dtype == np.int64
    assert fam.num_classes == 3 and fam.needs_nms


@settings(max_examples=40, deadline=None)
@given(
    raw=hnp.arrays(np.float32, (4 + 5, 30), elements=st.floats(0, 1, width=32)),
    conf=st.floats(0.05, 0.95),
)
def test_ultralytics_decode_matches_a_per_box_reference(raw: np.ndarray, conf: float) -> None:
    raw = raw.copy()
    raw[2:4] += 0.5  # positive sizes
    fam = build_family("yolov8", _out(1, 9, 30), HW)
    xyxy, score, cls = fam.decode(raw, conf)
    expected = [
        (j, raw[4:, j].argmax(), raw[4:, j].max()) for j in range(30) if raw[4:, j].max() >= conf
    ]
    assert cls.tolist() == [int(c) for _, c, _ in expected]
    np.testing.assert_allclose(score, [s for *_, s in expected], rtol=1e-6)
    for row, (j, _, _) in zip(xyxy, expected, strict=True):
        cx, cy, w, h = raw[:4, j]
        np.testing.assert_allclose(row, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-5)


def test_objectness_layout_multiplies_objectness_by_class_score() -> None:
    for family in ("yolov5", "yolox-decoded"):
        fam = build_family(family, _out(1, 84, 5 + 2), HW)
        raw = np.zeros((84, 7), np.float32)
        raw[3] = [32, 32, 16, 8, 0.8, 0.1, 0.5]  # score 0.4, class 1
        raw[4] = [10, 10, 4, 4, 0.3, 0.9, 0.0]  # objectness alone under 0.35
        xyxy, score, cls = fam.decode(raw, 0.35)
        np.testing.assert_allclose(xyxy, [[24, 28, 40, 36]])
        np.testing.assert_allclose(score, [0.4])
        assert cls.tolist() == [1]


def test_yolox_raw_head_decodes_grid_offsets() -> None:
    fam = build_family("yolox", _out(1, 84, 5 + 1), HW)
    raw = np.zeros((84, 6), np.float32)
    i = 1 * 8 + 2  # stride-8 cell x=2, y=1
    raw[i] = [0.5, 0.5, np.log(2.0), 0.0, 0.9, 1.0]
    xyxy, score, cls = fam.decode(raw, 0.5)
    np.testing.assert_allclose(xyxy, [[12, 8, 28, 16]])  # centre (20, 12), 16 x 8
    assert cls.tolist() == [0] and score.tolist() == pytest.approx([0.9])


def test_raw_and_decoded_yolox_heads_are_told_apart() -> None:
    dec = YoloxDecoder((416, 416))
    rng = np.random.default_rng(0)
    raw = np.zeros((dec.num_anchors, 85), np.float32)
    raw[:, :2] = rng.uniform(-1, 2, (dec.num_anchors, 2))  # offsets in cells
    raw[:, 2:4] = rng.uniform(-1, 2, (dec.num_anchors, 2))
    assert not head_is_decoded(raw, (416, 416))
    decoded = raw.copy()
    decoded[:, :2] = (raw[:, :2] + dec.grid) * dec.stride
    decoded[:, 2:4] = np.exp(raw[:, 2:4]) * dec.stride
    assert head_is_decoded(decoded, (416, 416))


# -------------------------------------------------------------------------------- DETR


def test_rtdetr_topk_layout_scales_normalised_boxes_to_the_input() -> None:
    fam = build_family("rtdetr", _out(1, 300, 6), (640, 320))  # h=640, w=320
    raw = np.zeros((300, 6), np.float32)
    raw[0] = [0.5, 0.5, 0.25, 0.5, 0.7, 3]
    raw[1] = [0.1, 0.1, 0.1, 0.1, 0.9, 7]
    xyxy, score, cls = fam.decode(raw, 0.5)
    np.testing.assert_allclose(score, [0.9, 0.7])  # best first
    assert cls.tolist() == [7, 3]
    np.testing.assert_allclose(xyxy[1], [120, 160, 200, 480])
    assert not fam.needs_nms


def test_rtdetr_scores_layout_keeps_each_querys_best_class() -> None:
    fam = build_family("rtdetr", _out(1, 300, 4 + 80), HW, 80)
    raw = np.zeros((300, 84), np.float32)
    raw[5, :4] = [0.5, 0.5, 0.5, 0.5]
    raw[5, 4 + 10] = 0.8
    raw[5, 4 + 11] = 0.6
    xyxy, score, cls = fam.decode(raw, 0.5)
    assert cls.tolist() == [10] and score.tolist() == pytest.approx([0.8])
    np.testing.assert_allclose(xyxy, [[16, 16, 48, 48]])


def test_rtdetr_logits_pair_takes_top_query_class_pairs() -> None:
    outputs = [OutputInfo("logits", (1, 10, 3)), OutputInfo("boxes", (1, 10, 4))]
    fam = build_family("rtdetr", outputs, HW, None, {"top_k": 3})
    boxes = np.full((1, 10, 4), 0.5, np.float32)
    logits = np.full((1, 10, 3), -10.0, np.float32)
    logits[0, 2, 0] = 3.0  # one query, two confident classes
    logits[0, 2, 1] = 2.0
    logits[0, 7, 2] = 1.0
    raw = fam.merge([logits, boxes])
    assert raw.shape == (1, 10, 7)
    _, score, cls = fam.decode(raw[0], 0.5)
    assert cls.tolist() == [0, 1, 2]
    np.testing.assert_allclose(score, 1 / (1 + np.exp(-np.array([3.0, 2.0, 1.0]))), rtol=1e-6)
    assert fam.num_classes == 3


# -------------------------------------------------------------------------------- effdet


def test_post_nms_rows_drop_padding_and_shift_classes() -> None:
    fam = build_family("effdet", _out(1, 100, 6), HW)
    raw = np.zeros((100, 6), np.float32)  # effdet pads with all-zero rows
    raw[0] = [1, 2, 30, 40, 0.6, 1]  # class 1 = person → 0
    raw[1] = [5, 5, 10, 10, 0.9, 3]
    xyxy, score, cls = fam.decode(raw, 0.0)
    assert cls.tolist() == [2, 0]
    np.testing.assert_allclose(xyxy, [[5, 5, 10, 10], [1, 2, 30, 40]])
    assert score.tolist() == pytest.approx([0.9, 0.6])


def test_post_nms_tf_layout_with_image_id_yxyx_and_normalised_boxes() -> None:
    options = {"box_order": "yxyx", "boxes_normalized": True, "class_offset": 0}
    fam = build_family("effdet", _out(1, 10, 7), (100, 200), None, options)
    out = np.zeros((1, 10, 7), np.float32)
    out[0, 0] = [0, 0.1, 0.2, 0.5, 0.4, 0.8, 4]  # image id, y1, x1, y2, x2, score, class
    raw = fam.merge([out])
    xyxy, _, cls = fam.decode(raw[0], 0.5)
    np.testing.assert_allclose(xyxy, [[40, 10, 80, 50]])
    assert cls.tolist() == [4]


def test_post_nms_separate_outputs_respect_the_detection_count() -> None:
    outputs = [
        OutputInfo("detection_boxes", (2, 5, 4)),
        OutputInfo("detection_scores", (2, 5)),
        OutputInfo("detection_classes", (2, 5)),
        OutputInfo("num_detections", (2,)),
    ]
    fam = build_family("effdet", outputs, HW, None, {"class_offset": 0})
    boxes = np.tile(np.array([0, 0, 10, 10], np.float32), (2, 5, 1))
    scores = np.full((2, 5), 0.9, np.float32)
    classes = np.ones((2, 5), np.float32)
    raw = fam.merge([boxes, scores, classes, np.array([2, 0], np.float32)])
    assert len(fam.decode(raw[0], 0.5)[1]) == 2
    assert len(fam.decode(raw[1], 0.5)[1]) == 0


# ------------------------------------------------------------------------ layout checks


@pytest.mark.parametrize(
    ("family", "shape", "classes", "message"),
    [
        ("yolox", (1, 8400, 85), 80, "not a YOLOX raw head"),
        ("yolov8", (1, 85, 84), None, "fewer rows than boxes"),
        ("yolov8", (1, 84, 8400), 20, "4 \\+ 20"),
        ("yolov5", (1, 84, 8400), None, "output is arch yolov8"),
        ("rtdetr", (1, 84, 8400), None, "not a DETR-style output"),
        ("effdet", (1, 84, 8400), None, "not post-NMS detections"),
    ],
)
def test_wrong_layout_is_a_clear_model_load_error(
    family: str, shape: tuple[int, ...], classes: int | None, message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message):
        build_family(family, _out(*shape), HW if family != "yolov8" else (640, 640), classes)


def test_shapes_pick_the_family() -> None:
    hw = (640, 640)
    assert infer_families(_out(1, 84, 8400), hw) == ["yolov8"]
    assert infer_families(_out(1, 25200, 85), hw) == ["yolov5"]
    assert infer_families(_out(1, 8400, 85), hw) == ["yolox", "yolox-decoded"]
    assert infer_families(_out(1, 300, 84), hw) == ["rtdetr"]
    separate = [
        OutputInfo("boxes", (1, 100, 4)),
        OutputInfo("scores", (1, 100)),
        OutputInfo("classes", (1, 100)),
    ]
    assert infer_families(separate, hw) == ["effdet"]
    pair = [OutputInfo("pred_boxes", (1, 300, 4)), OutputInfo("pred_logits", (1, 300, 80))]
    assert infer_families(pair, hw) == ["rtdetr"]
    # an end2end Ultralytics head and RT-DETR both give [B, 300, 6]: ambiguous
    assert sorted(infer_families(_out(1, 300, 6), hw)) == ["effdet", "rtdetr"]
    assert infer_families(_out(1, 1000), hw) == []


@pytest.mark.parametrize(
    ("arch", "family"),
    [
        ("yolox", "yolox"),
        ("YOLOX_nano", "yolox"),
        ("yolox-decoded", "yolox-decoded"),
        ("yolov5", "yolov5"),
        ("yolov5s", "yolov5"),
        ("yolov5nu", "yolov8"),
        ("yolov8n", "yolov8"),
        ("yolo11n", "yolov8"),
        ("rtdetr-l", "rtdetr"),
        ("RT-DETR", "rtdetr"),
        ("tf_efficientdet_d0", "effdet"),
        ("yolov10n", "effdet"),
    ],
)
def test_arch_names_normalise_to_families(arch: str, family: str) -> None:
    assert normalize_arch(arch) == family


def test_unknown_arch_lists_the_families() -> None:
    with pytest.raises(ConfigError, match=r"unknown arch 'resnet50'.*yolox, yolox-decoded"):
        normalize_arch("resnet50")


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, (7, 4), elements=st.floats(-1e4, 1e4, width=32)))
def test_centre_size_to_corners_keeps_centre_and_size(cxcywh: np.ndarray) -> None:
    xyxy = cxcywh_to_xyxy(cxcywh)
    np.testing.assert_allclose((xyxy[:, :2] + xyxy[:, 2:]) / 2, cxcywh[:, :2], atol=1e-2)
    np.testing.assert_allclose(xyxy[:, 2:] - xyxy[:, :2], cxcywh[:, 2:], atol=1e-2)
