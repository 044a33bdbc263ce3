import numpy as np
import pytest

from tapetum.detect.nms import nms
from tapetum.detect.yolox import YoloxDecoder


def _empty_head(num_anchors: int, num_classes: int = 80) -> np.ndarray:
    return np.zeros((num_anchors, 5 + num_classes), np.float32)


def test_anchor_layout_matches_strides() -> None:
    dec = YoloxDecoder((416, 416))
    assert dec.num_anchors == 52 * 52 + 26 * 26 + 13 * 13 == 3549
    # anchors are row-major per level: index 1 of level 0 is grid (x=1, y=0)
    np.testing.assert_array_equal(dec.grid[1], [1, 0])
    np.testing.assert_array_equal(dec.grid[52], [0, 1])
    assert dec.stride[0, 0] == 8 and dec.stride[2704, 0] == 16 and dec.stride[-1, 0] == 32


def test_decode_hand_checked_anchor() -> None:
    dec = YoloxDecoder((416, 416))
    raw = _empty_head(dec.num_anchors)
    # stride-8 cell (x=10, y=5): centre ((10 + 0.5) * 8, (5 + 0.25) * 8) = (84, 42)
    i = 5 * 52 + 10
    raw[i, :4] = [0.5, 0.25, np.log(4.0), np.log(2.0)]  # w = 4 * 8 = 32, h = 2 * 8 = 16
    raw[i, 4] = 0.9
    raw[i, 5 + 3] = 0.8
    # stride-32 cell (x=0, y=12), too weak to pass the threshold
    j = 2704 + 676 + 12 * 13
    raw[j, 4], raw[j, 5] = 0.5, 0.2
    xyxy, score, cls = dec.decode(raw, conf_threshold=0.25)
    np.testing.assert_allclose(xyxy, [[68, 34, 100, 50]], atol=1e-4)
    np.testing.assert_allclose(score, [0.72], atol=1e-6)
    np.testing.assert_array_equal(cls, [3])


def test_decode_picks_best_class_times_objectness() -> None:
    dec = YoloxDecoder((64, 64))
    raw = _empty_head(dec.num_anchors, num_classes=3)
    raw[0, 4] = 0.5
    raw[0, 5:] = [0.1, 0.9, 0.3]
    _, score, cls = dec.decode(raw, conf_threshold=0.0)
    assert cls[0] == 1 and score[0] == pytest.approx(0.45)


def test_nms_suppresses_overlaps_per_class() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # class-agnostic: box 3 (0.95) suppresses 0 and 1 (IoU 1.0 and 0.68)
    np.testing.assert_array_equal(nms(boxes, scores, None, 0.5), [3, 2])
    # per class: box 3 is another class, so 0 survives and suppresses 1
    np.testing.assert_array_equal(nms(boxes, scores, np.array([0, 0, 0, 1]), 0.5), [3, 0, 2])
    # a looser threshold keeps the 0.68-overlap pair
    np.testing.assert_array_equal(nms(boxes, scores, np.array([0, 0, 0, 1]), 0.7), [3, 0, 1, 2])
    assert nms(np.empty((0, 4), np.float32), np.empty(0, np.float32), None, 0.5).size == 0


def test_nms_caps_detections() -> None:
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(10)], np.float32)
    scores = np.linspace(0.1, 1.0, 10).astype(np.float32)
    keep = nms(boxes, scores, None, 0.5, max_detections=3)
    np.testing.assert_array_equal(keep, [9, 8, 7])
