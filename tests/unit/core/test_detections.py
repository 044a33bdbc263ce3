import numpy as np
import pytest
import supervision as sv

from tapetum.core import NO_TRACK, Detections
from tapetum.core.boxes import box_iou


def _dets() -> Detections:
    return Detections(
        xyxy=np.array([[0, 0, 10, 10], [5, 5, 15, 25], [100, 100, 110, 120]]),
        confidence=[0.9, 0.4, 0.7],
        class_id=[0, 2, 0],
        data={"name": np.array(["a", "b", "c"])},
    )


def test_defaults_and_masking() -> None:
    d = _dets()
    assert len(d) == 3 and d.xyxy.dtype == np.float32
    np.testing.assert_array_equal(d.tracker_id, [NO_TRACK] * 3)
    people = d[d.class_id == 0]
    assert len(people) == 2 and list(people.data["name"]) == ["a", "c"]
    assert len(d[1]) == 1 and d[1].confidence[0] == pytest.approx(0.4)
    assert len(d[-1]) == 1 and d[-1].class_id[0] == 0
    np.testing.assert_allclose(d.area, [100, 200, 200])
    np.testing.assert_allclose(d.center[1], [10, 15])


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="confidence"):
        Detections(np.zeros((2, 4)), [0.1], [0, 0])


def test_merge_and_empty() -> None:
    d = _dets()
    m = Detections.merge([d, Detections.empty(), d[:1]])
    assert len(m) == 4 and list(m.data["name"]) == ["a", "b", "c", "a"]
    assert len(Detections.merge([])) == 0


def test_supervision_round_trip() -> None:
    d = _dets()
    d.tracker_id = np.array([3, -1, 7])
    s = d.to_supervision()
    assert isinstance(s, sv.Detections)
    back = Detections.from_supervision(s)
    np.testing.assert_allclose(back.xyxy, d.xyxy)
    np.testing.assert_array_equal(back.tracker_id, [3, -1, 7])
    np.testing.assert_array_equal(back.class_id, d.class_id)
    bare = Detections.from_supervision(sv.Detections(xyxy=np.zeros((2, 4), np.float32)))
    np.testing.assert_array_equal(bare.tracker_id, [NO_TRACK, NO_TRACK])


def test_box_iou_matches_hand_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30]])
    iou = box_iou(a, b)
    np.testing.assert_allclose(iou[0], [25 / 175, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(iou[1], [0, 0, 0])
    assert box_iou(np.empty((0, 4)), b).shape == (0, 3)


def test_an_empty_frame_keeps_its_embedding_width() -> None:
    """A frame with no detections from a detector that also embeds (BoT-SORT fed embeddings
    with its boxes) is (0, D), not a reshape error."""
    empty = Detections(
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int64),
        embeddings=np.zeros((0, 128), np.float32),
    )
    assert empty.embeddings is not None and empty.embeddings.shape == (0, 128)
    assert empty[np.zeros(0, bool)].embeddings.shape == (0, 128)  # type: ignore[union-attr]
