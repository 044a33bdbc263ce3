"""ByteTracker on hand-made scenes: identities a user would see in the output."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from tapetum.core.detections import Detections
from tapetum.errors import ConfigError
from tapetum.track import ByteTrackConfig, ByteTracker, Tracker, make_tracker

W, H = 40.0, 80.0


def _box(cx: float, cy: float, w: float = W, h: float = H) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _dets(
    boxes: Sequence[Sequence[float]],
    scores: Sequence[float] | None = None,
    class_ids: Sequence[int] | None = None,
) -> Detections:
    n = len(boxes)
    if n == 0:
        return Detections.empty()
    return Detections(
        xyxy=np.asarray(boxes, np.float32),
        confidence=np.asarray(scores if scores is not None else [0.9] * n, np.float32),
        class_id=np.asarray(class_ids if class_ids is not None else [0] * n, np.int64),
    )


def _id_near(out: Detections, cx: float, cy: float) -> int:
    """tracker_id of the output box whose centre is at (cx, cy); fails if there is none."""
    dist = np.hypot(*(out.center - np.array([cx, cy])).T)
    assert dist.size and dist.min() < 1.0, f"no output box at ({cx}, {cy})"
    return int(out.tracker_id[np.argmin(dist)])


def test_two_linear_movers_keep_their_ids_for_50_frames() -> None:
    tracker = ByteTracker()
    ids_a, ids_b = set(), set()
    for f in range(50):
        a = (100 + 4 * f, 100 + 2 * f)
        b = (600 - 3 * f, 300 + 1 * f)
        dets = _dets([_box(*a), _box(*b)], [0.9, 0.8], class_ids=[2, 7])
        dets.data["label"] = np.array(["car", "person"])
        out = tracker.update(dets)
        assert len(out) == 2
        ids_a.add(_id_near(out, *a))
        ids_b.add(_id_near(out, *b))
        # The detector's own boxes, scores, classes and extra data come back.
        np.testing.assert_array_equal(out.xyxy, dets.xyxy)
        np.testing.assert_array_equal(out.confidence, dets.confidence)
        assert out.class_id.tolist() == [2, 7]
        assert out.data["label"].tolist() == ["car", "person"]
    assert ids_a == {1} and ids_b == {2}


def test_object_reappearing_after_10_frame_occlusion_gets_old_id() -> None:
    tracker = ByteTracker()
    other = (700.0, 400.0)
    for f in range(40):
        pos = (100 + 5 * f, 200 + 1 * f)
        occluded = 20 <= f < 30
        boxes = [_box(*other)] if occluded else [_box(*pos), _box(*other)]
        out = tracker.update(_dets(boxes))
        if occluded:
            # A lost track is not reported.
            assert out.tracker_id.tolist() == [2]
        else:
            assert _id_near(out, *pos) == 1
            assert _id_near(out, *other) == 2


def test_crossing_objects_keep_ids() -> None:
    # Fast enough (12 px/frame, box 40 px wide) that matching on last positions alone
    # swaps the ids where the paths cross; the Kalman velocity keeps them apart.
    tracker = ByteTracker()
    for f in range(50):
        a = (100 + 12 * f, 200.0)
        b = (688 - 12 * f, 220.0)
        boxes = [_box(*a, h=100), _box(*b, h=100)]
        if f % 2:
            boxes.reverse()  # input order must not matter
        out = tracker.update(_dets(boxes))
        assert _id_near(out, *a) == 1, f"frame {f}"
        assert _id_near(out, *b) == 2, f"frame {f}"


@pytest.mark.parametrize(("low_score", "kept_alive"), [(0.3, True), (0.05, False)])
def test_low_score_detection_keeps_track_alive(low_score: float, kept_alive: bool) -> None:
    tracker = ByteTracker()
    for f in range(10):
        tracker.update(_dets([_box(100 + 3 * f, 200)]))
    for f in range(10, 20):
        out = tracker.update(_dets([_box(100 + 3 * f, 200)], [low_score]))
        if kept_alive:
            assert out.tracker_id.tolist() == [1]
            assert out.confidence.tolist() == pytest.approx([low_score])
        else:
            assert len(out) == 0


def test_low_score_detections_never_start_tracks() -> None:
    tracker = ByteTracker()
    for _ in range(20):
        # 0.3 is a second-association score; 0.55 passes track_thresh but not the new-track
        # threshold (track_thresh + 0.1).
        out = tracker.update(_dets([_box(100, 100), _box(400, 100)], [0.3, 0.55]))
        assert len(out) == 0
    out = tracker.update(_dets([_box(100, 100)], [0.65]))
    assert len(out) == 0  # born, unconfirmed
    out = tracker.update(_dets([_box(100, 100)], [0.65]))
    assert out.tracker_id.tolist() == [1]


def test_ids_start_at_one_are_unique_and_reset_restarts_them() -> None:
    tracker = ByteTracker()
    first = [_box(100, 100), _box(300, 100), _box(500, 100)]
    out = tracker.update(_dets(first))
    # Frame 1 activates tracks immediately.
    assert out.tracker_id.tolist() == [1, 2, 3]
    for _ in range(3):
        assert tracker.update(_dets(first)).tracker_id.tolist() == [1, 2, 3]
    # A newcomer after frame 1 is reported from its second detection, with a fresh id.
    late = [*first, _box(700, 300)]
    assert tracker.update(_dets(late)).tracker_id.tolist() == [1, 2, 3]
    assert tracker.update(_dets(late)).tracker_id.tolist() == [1, 2, 3, 4]

    other = ByteTracker()  # ids are per instance, not global
    assert other.update(_dets([_box(50, 50)])).tracker_id.tolist() == [1]

    tracker.reset()
    assert tracker.frame_id == 0
    assert tracker.update(_dets([_box(900, 500)])).tracker_id.tolist() == [1]


@pytest.mark.parametrize(
    ("frame_rate", "gap", "same_id"),
    [(30.0, 30, True), (30.0, 31, False), (15.0, 15, True), (15.0, 16, False)],
)
def test_lost_track_kept_for_buffer_scaled_by_frame_rate(
    frame_rate: float, gap: int, same_id: bool
) -> None:
    tracker = ByteTracker(ByteTrackConfig(frame_rate=frame_rate))
    seen = _dets([_box(200, 200)])
    for _ in range(5):
        tracker.update(seen)
    for _ in range(gap):
        tracker.update(Detections.empty())
    back = tracker.update(seen)
    again = tracker.update(seen)
    if same_id:
        assert back.tracker_id.tolist() == [1]
        assert again.tracker_id.tolist() == [1]
    else:
        assert len(back) == 0  # a new, unconfirmed track
        assert again.tracker_id.tolist() == [2]


def test_empty_frames_give_empty_output() -> None:
    tracker = ByteTracker()
    out = tracker.update(Detections.empty())
    assert len(out) == 0 and out.tracker_id.shape == (0,)


def test_make_tracker_builds_bytetrack_and_rejects_unknown_names() -> None:
    tracker = make_tracker("ByteTrack", frame_rate=15.0)
    assert isinstance(tracker, ByteTracker) and isinstance(tracker, Tracker)
    assert tracker.config.frame_rate == 15.0
    with pytest.raises(ConfigError, match="bytetrack"):
        make_tracker("sort", frame_rate=30.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"track_thresh": 1.5}, {"low_thresh": 0.6}, {"frame_rate": 0.0}, {"track_buffer": -1}],
)
def test_invalid_config_raises_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        ByteTrackConfig(**kwargs)  # type: ignore[arg-type]
