"""Tracklet re-linking and crop quality on synthetic tracks: people walking at constant
speed, dropped by the tracker for a while and picked up under a new id."""

from __future__ import annotations

import numpy as np
import pytest

from tapetum.core.detections import Detections
from tapetum.errors import ConfigError
from tapetum.track.crops import CropFilter, StaticMask, covered_fraction, usable_crops
from tapetum.track.relink import RelinkConfig, RelinkingTracker, TrackletRelinker

FPS = 25.0


def box_at(x: float, y: float = 50.0, w: float = 40.0, h: float = 100.0) -> np.ndarray:
    return np.array([x, y, x + w, y + h], np.float64)


def walk(
    relinker: TrackletRelinker,
    track_id: int,
    x0: float,
    speed_px_s: float,
    frames: range,
    *,
    embedding: np.ndarray | None = None,
) -> list[int]:
    """One track seen in ``frames``; x moves at ``speed_px_s``. Returns the ids out."""
    out = []
    for f in frames:
        t = f / FPS
        emb = None if embedding is None else embedding[None]
        ids = relinker.update(t, [track_id], box_at(x0 + speed_px_s * t)[None], emb)
        out.append(int(ids[0]))
    return out


def test_a_track_dropped_for_a_second_keeps_its_id_where_it_was_heading() -> None:
    r = TrackletRelinker()
    before = walk(r, 7, 0.0, 100.0, range(0, 50))  # 0-2 s, 100 px/s to the right
    after = walk(r, 8, 0.0, 100.0, range(75, 100))  # tracker's new id 8 after a 1 s gap
    assert set(before) == {1}
    assert set(after) == {1}
    assert r.links == 1


@pytest.mark.parametrize(
    ("why", "x0", "first_frame"),
    [
        ("far from where it was heading", 300.0, 75),  # 2.5 box heights off the path
        ("after max_gap_s", 0.0, 50 + int(2.5 * FPS)),
        ("before the old track ended", 0.0, 40),
    ],
)
def test_no_link_when_a_gate_fails(why: str, x0: float, first_frame: int) -> None:
    r = TrackletRelinker()
    walk(r, 7, 0.0, 100.0, range(0, 50))
    ids = walk(r, 8, x0, 100.0, range(first_frame, first_frame + 10))
    assert set(ids) == {2}, why


def test_appearance_gates_and_decides_between_two_candidates() -> None:
    """Two people walk side by side (20 px apart) and are dropped together; the new
    tracks start in swapped places. Position alone would swap them; appearance keeps them
    right."""
    rng = np.random.default_rng(0)
    a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 32)))
    r = TrackletRelinker()
    for f in range(50):
        t = f / FPS
        boxes = np.stack([box_at(100 * t), box_at(100 * t + 20)])
        r.update(t, [1, 2], boxes, np.stack([a, b]))
    out = []
    for f in range(60, 70):  # new ids 3, 4 with swapped boxes
        t = f / FPS
        boxes = np.stack([box_at(100 * t + 20), box_at(100 * t)])
        out.append(r.update(t, [3, 4], boxes, np.stack([a, b])).tolist())
    assert out[-1] == [1, 2]


def test_a_different_look_is_not_linked() -> None:
    rng = np.random.default_rng(1)
    a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 32)))
    r = TrackletRelinker()
    walk(r, 1, 0.0, 100.0, range(0, 50), embedding=a)
    assert set(walk(r, 2, 0.0, 100.0, range(60, 70), embedding=b)) == {2}


def test_unusable_crops_do_not_count_for_appearance() -> None:
    rng = np.random.default_rng(2)
    a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 32)))
    r = TrackletRelinker()
    for f in range(50):  # the old track's crops all look like b, but none is usable
        r.update(f / FPS, [1], box_at(100 * f / FPS)[None], b[None], usable=[False])
    # appearance unknown: position decides, and the new track (looking like a) is linked
    assert set(walk(r, 2, 0.0, 100.0, range(60, 70), embedding=a)) == {1}


def test_a_revived_track_and_its_continuation_never_share_an_id() -> None:
    r = TrackletRelinker()
    walk(r, 1, 0.0, 100.0, range(0, 50))
    walk(r, 2, 0.0, 100.0, range(60, 62))  # continuation of 1
    t = 62 / FPS
    ids = r.update(t, [1, 2], np.stack([box_at(100 * t), box_at(100 * t + 200)]))
    assert ids[0] == 1 and ids[1] not in (1, 2)


def test_memory_stays_bounded_on_a_long_stream() -> None:
    r = TrackletRelinker(RelinkConfig(forget_after_s=3.0))
    for k in range(300):  # a new person every second, each seen for half a second
        walk(r, k + 1, 50.0 * (k % 7), 0.0, range(25 * k, 25 * k + 12))
    assert len(r) <= 5


def test_relinking_tracker_wraps_a_tracker() -> None:
    from tapetum.track import make_tracker

    tracker = RelinkingTracker(make_tracker("bytetrack", FPS), frame_rate=FPS)
    ids = []
    for f in range(100):
        if 40 <= f < 70:  # missed for 1.2 s: longer than ByteTrack keeps a lost track
            dets = Detections.empty()
        else:  # walking 25 px/s
            dets = Detections(box_at(1.0 * f)[None], np.array([0.9]), np.array([0]))
        out = tracker.update(dets)
        ids += out.tracker_id.tolist()
    assert len(set(ids)) == 1


def test_relink_config_rejects_nonsense() -> None:
    with pytest.raises(ConfigError, match="max_gap_s"):
        RelinkConfig(max_gap_s=0)
    with pytest.raises(ConfigError, match="forget_after_s"):
        RelinkConfig(max_gap_s=5, forget_after_s=2)
    with pytest.raises(ConfigError, match="min_similarity"):
        RelinkConfig(min_similarity=1.0)


# --- crops ----------------------------------------------------------------------------


def test_covered_fraction_counts_occluders_not_the_box_itself() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]], np.float64)
    np.testing.assert_allclose(covered_fraction(boxes), [0.5, 0.5, 0.0])
    # the tracked box is among the detections: identical boxes are skipped
    np.testing.assert_allclose(covered_fraction(boxes[2:], others=boxes), [0.0])


def test_usable_crops_reject_small_truncated_masked_and_occluded() -> None:
    boxes = np.array(
        [
            [100, 50, 140, 150],  # fine
            [100, 50, 110, 70],  # too small
            [0, 50, 40, 150],  # at the left border
            [250, 150, 290, 250],  # under the mask
            [200, 50, 240, 150],  # half behind the next one
            [220, 50, 260, 150],
        ],
        np.float64,
    )
    mask = StaticMask(rects=((240.0, 200.0, 320.0, 240.0),))
    ok = usable_crops(boxes, (240, 320), CropFilter(min_height_px=40), mask)
    assert ok.tolist() == [True, False, False, False, False, False]
    # without the frame size only size and occlusion are judged
    assert usable_crops(boxes, None).tolist() == [True, False, True, True, False, False]


def test_mask_outside_the_frame_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.mask\[0\].*outside"):
        StaticMask(rects=((-5.0, 0.0, 10.0, 10.0),), field_name="cameras[0].mask")
    mask = StaticMask(rects=((300.0, 200.0, 400.0, 260.0),), field_name="cam.mask")
    with pytest.raises(ConfigError, match=r"cam\.mask\[0\].*320x240"):
        mask.covered_fraction(np.array([[0, 0, 10, 10]]), (240, 320))
    with pytest.raises(ConfigError, match="polygon needs at least 3"):
        StaticMask(polygons=(((0.0, 0.0), (1.0, 1.0)),))


def test_relinking_tracker_predicts_skipped_frames_with_relinked_ids() -> None:
    from tapetum.track import make_tracker

    tracker = RelinkingTracker(make_tracker("bytetrack", FPS), frame_rate=FPS)
    for f in range(5):
        tracker.update(Detections(box_at(1.0 * f)[None], np.array([0.9]), np.array([0])))
    predicted = tracker.predict()
    assert predicted.tracker_id.tolist() == [1]
    assert predicted.xyxy[0, 0] == pytest.approx(5.0, abs=0.5)
