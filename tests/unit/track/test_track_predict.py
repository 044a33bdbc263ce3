"""Tracker-only frames (``PredictingTracker.predict``) on synthetic tracks: boxes follow the
motion model, identities survive the gap, nothing is started or lost on such a frame, and
BoT-SORT moves its tracks with the camera."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.track import make_tracker
from tapetum.track.base import PredictingTracker, Tracker
from tapetum.track.botsort import BoTSortConfig, BoTSortTracker
from tapetum.track.coast import carry_forward

TRACKERS = ("bytetrack", "ocsort", "botsort")


def _tracker(name: str) -> Tracker:
    if name == "botsort":
        return BoTSortTracker(BoTSortConfig(frame_rate=30, cmc_method="none"))
    return make_tracker(name, 30.0)


def _one(xyxy: list[float], score: float = 0.9) -> Detections:
    return Detections(
        np.array([xyxy], np.float32), np.array([score], np.float32), np.zeros(1, np.int64)
    )


def _walkers(t: int) -> Detections:
    """Two people: one walking right at 3 px/frame, one standing still."""
    x = 100.0 + 3.0 * t
    return Detections(
        np.array([[x, 50, x + 40, 130], [400, 300, 440, 380]], np.float32),
        np.array([0.9, 0.8], np.float32),
        np.array([0, 0]),
    )


@pytest.mark.parametrize("name", TRACKERS)
def test_every_tracker_can_predict(name: str) -> None:
    assert isinstance(_tracker(name), PredictingTracker)


@pytest.mark.parametrize("name", TRACKERS)
def test_predicted_boxes_follow_the_motion_and_ids_survive_the_gap(name: str) -> None:
    tracker = _tracker(name)
    assert isinstance(tracker, PredictingTracker)
    for t in range(12):
        seen = tracker.update(_walkers(t))
    assert sorted(seen.tracker_id.tolist()) == [1, 2]
    for t in range(12, 15):  # the detector skips three frames
        predicted = tracker.predict()
        truth = _walkers(t)
        order = np.argsort(predicted.tracker_id)
        # within 1.5 px of where the objects really are (a skipped frame's box)
        np.testing.assert_allclose(predicted.xyxy[order], truth.xyxy, atol=1.5)
        # the rest of each row is the last detector frame's
        np.testing.assert_allclose(predicted.confidence[order], [0.9, 0.8])
    after = tracker.update(_walkers(15))
    assert sorted(after.tracker_id.tolist()) == [1, 2]


@pytest.mark.parametrize("name", TRACKERS)
def test_a_predicted_frame_starts_and_loses_nothing(name: str) -> None:
    tracker = _tracker(name)
    assert isinstance(tracker, PredictingTracker)
    assert len(tracker.predict()) == 0  # nothing to carry before the first detector frame
    for t in range(6):
        before = tracker.update(_walkers(t))
    for _ in range(20):  # far longer than any association would tolerate
        carried = tracker.predict()
        assert sorted(carried.tracker_id.tolist()) == sorted(before.tracker_id.tolist())


def test_lost_tracks_age_on_predicted_frames() -> None:
    # ByteTrack keeps a lost track 30 frames at 30 fps and forgets it on the first
    # detector frame after that: predicted frames count, so a track lost and then skipped
    # over for longer is gone (it comes back with a new id), while after a shorter gap it
    # is found again.
    def rerun(gap: int) -> list[int]:
        tracker = make_tracker("bytetrack", 30.0)
        assert isinstance(tracker, PredictingTracker)
        still = _one([200, 200, 240, 280])
        for _ in range(5):
            tracker.update(still)
        tracker.update(Detections.empty())  # lost on a detector frame
        for _ in range(gap):
            tracker.predict()
        tracker.update(Detections.empty())
        tracker.update(still)
        ids: list[int] = tracker.update(still).tracker_id.tolist()
        return ids

    assert rerun(10) == [1]
    assert rerun(40) == [2]


def _texture(h: int, w: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    layers = [
        cv2.GaussianBlur(rng.uniform(0, 1, (h, w)).astype(np.float32), (0, 0), sigma)
        for sigma in (2.0, 6.0, 16.0)
    ]
    grey = sum((x - x.min()) / (x.max() - x.min()) for x in layers) / 3
    return np.repeat((np.asarray(grey) * 255).astype(np.uint8)[:, :, None], 3, axis=2)


def test_botsort_moves_predicted_tracks_with_the_camera() -> None:
    # A still person; on the skipped frames the camera pans 5 px left per frame, so the
    # person moves 5 px right in the picture: camera-motion compensation follows it.
    canvas = _texture(320, 520, seed=3)
    tracker = BoTSortTracker(BoTSortConfig(frame_rate=30))  # sparse optical flow CMC
    box = [150.0, 100.0, 190.0, 180.0]

    def frame(t: int, pan_px: int) -> Frame:
        x0 = 100 - pan_px
        return Frame("cam", t, canvas[20:260, x0 : x0 + 320], t / 30, 0.0)

    for t in range(5):
        out = tracker.update(_one(box), frame(t, 0))
    assert out.tracker_id.tolist() == [1]
    for t, pan in zip(range(5, 8), (5, 10, 15), strict=True):
        predicted = tracker.predict(frame(t, pan))
        np.testing.assert_allclose(
            predicted.xyxy[0, [0, 2]], [box[0] + pan, box[2] + pan], atol=1.5
        )
    out = tracker.update(_one([box[0] + 20, box[1], box[2] + 20, box[3]]), frame(8, 20))
    assert out.tracker_id.tolist() == [1]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 12),
    keep=st.lists(st.booleans(), min_size=12, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_carry_forward_keeps_rows_and_moves_boxes_by_id(
    n: int, keep: list[bool], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1, 40))[:n].astype(np.int64)
    last = Detections(
        rng.uniform(0, 100, (n, 4)).astype(np.float32),
        rng.uniform(0, 1, n).astype(np.float32),
        np.zeros(n, np.int64),
        tracker_id=ids,
    )
    alive = ids[np.array(keep[:n], bool)]
    state_ids = rng.permutation(np.concatenate([alive, np.arange(100, 103)]))  # + others
    boxes = (state_ids[:, None] * np.array([1.0, 2.0, 3.0, 4.0])).astype(np.float64)
    out = carry_forward(last, state_ids.astype(np.int64), boxes)
    assert out.tracker_id.tolist() == [i for i in ids.tolist() if i in set(alive.tolist())]
    np.testing.assert_allclose(out.xyxy, out.tracker_id[:, None] * np.array([1, 2, 3, 4]))
    np.testing.assert_array_equal(out.confidence, last.confidence[np.isin(ids, alive)])


@pytest.mark.parametrize(("interval", "unreported_updates"), [(1, 3), (2, 2), (4, 1)])
def test_ocsort_confirms_a_new_object_after_min_hits_frames_of_video(
    interval: int, unreported_updates: int
) -> None:
    # min_hits = 3 frames of video after its birth, however many of them the detector
    # skipped: at interval 4 the first observation after birth covers them (counted in
    # detector frames, the walker would stay hidden for 12 frames).
    tracker = make_tracker("ocsort", 30.0)
    assert isinstance(tracker, PredictingTracker)
    still = _one([400, 300, 440, 380])
    for _ in range(6):  # past the stream's first min_hits frames
        tracker.update(still)
    hidden = 0
    for t in range(40):
        if t % interval:
            tracker.predict()
            continue
        if len(tracker.update(Detections.merge([_walkers(t)[:1], still]))) == 2:
            break
        hidden += 1
    assert hidden == unreported_updates
