"""Per-track state stays bounded on a long stream: objects keep appearing and leaving for
thousands of frames, and every tracker and per-track stage holds about as many entries as
there are objects on screen (plus those it still remembers for a while), never one per
object ever seen. Sizes, not timings."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.pipeline.hooks import StateSized, state_sizes_of
from tapetum.track import make_tracker
from tapetum.track.forecast import ConstantVelocityForecaster, ForecastEnricher
from tapetum.track.relink import RelinkingTracker

FPS = 25.0
LANES = 6  # objects on screen at once, at most
LIFE_FRAMES = 40  # each object crosses in this many frames…
GAP_FRAMES = 15  # …then its lane stays empty this long
FRAMES = 3000  # 2 minutes at 25 FPS: about 330 objects come and go
H, W = 480, 640


def crowd(frames: int = FRAMES) -> Iterator[tuple[Frame, Detections]]:
    """Frames of objects walking left to right in ``LANES`` lanes, one after another in
    each lane (lanes staggered), so objects keep entering and leaving."""
    image = np.zeros((H, W, 3), np.uint8)
    period = LIFE_FRAMES + GAP_FRAMES
    for f in range(frames):
        boxes = []
        for lane in range(LANES):
            age = (f + lane * 7) % period
            if age < LIFE_FRAMES:
                x = 20.0 + 12.0 * age
                y = 20.0 + 75.0 * lane
                boxes.append([x, y, x + 30.0, y + 60.0])
        xyxy = np.array(boxes, np.float32).reshape(-1, 4)
        n = xyxy.shape[0]
        dets = Detections(xyxy, np.full(n, 0.9, np.float32), np.zeros(n, np.int64))
        yield Frame("cam", f, image, f / FPS, 0.0), dets


def objects_seen(frames: int = FRAMES) -> int:
    period = LIFE_FRAMES + GAP_FRAMES
    return sum(len(range(-lane * 7 % period, frames, period)) for lane in range(LANES))


class _RandomEmbedder:
    """Stands in for a ReID model: a random unit vector per box."""

    embedding_dim = 16

    def __init__(self) -> None:
        self._rng = np.random.default_rng(0)

    def embed(self, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        v = self._rng.normal(size=(len(np.asarray(xyxy)), self.embedding_dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _run(tracker: object, stages: tuple[object, ...] = ()) -> tuple[int, int, set[int]]:
    """Feed the crowd; the most tracker entries and stage entries held on any frame after
    the first objects have left, and every id reported."""
    most_tracker = most_stages = 0
    ids: set[int] = set()
    for frame, dets in crowd():
        tracked = tracker.update(dets, frame)  # type: ignore[attr-defined]
        for stage in stages:
            tracked = stage(frame, tracked)  # type: ignore[operator]
        ids.update(tracked.tracker_id.tolist())
        most_tracker = max(most_tracker, sum(state_sizes_of((tracker,)).values()))
        most_stages = max(most_stages, sum(state_sizes_of(stages).values()))
    return most_tracker, most_stages, ids


@pytest.mark.parametrize("name", ["bytetrack", "ocsort", "botsort"])
def test_a_tracker_holds_the_tracks_on_screen_not_every_track_ever(name: str) -> None:
    reid = _RandomEmbedder() if name == "botsort" else None
    tracker = make_tracker(name, FPS, reid)  # type: ignore[arg-type]
    assert isinstance(tracker, StateSized)

    most, _, ids = _run(tracker)

    assert objects_seen() > 300
    assert len(ids) >= 300  # ids kept coming: each object got its own
    # on screen (LANES) plus, per lane, the one that just left and is kept as lost for
    # the tracker's buffer (30 frames at 30 FPS, < the lane's period)
    assert 0 < most <= 2 * LANES + 2


def test_relinked_ids_and_tracklets_stay_bounded() -> None:
    tracker = RelinkingTracker(make_tracker("bytetrack", FPS), frame_rate=FPS)

    most, _, ids = _run(tracker)
    sizes = tracker.state_sizes()

    assert set(sizes) == {"tracker_tracks", "relink_tracklets"}
    assert len(ids) >= 150  # re-linking joins some; most objects still get their own id
    # the tracklets of the last forget_after_s (5 s: about 125 frames, 2.3 lane periods
    # per lane) plus those on screen, never the whole history
    per_lane = -(-(5 * FPS) // (LIFE_FRAMES + GAP_FRAMES)) + 1
    assert most <= 2 * LANES + 2 + LANES * per_lane


def test_forecasts_forget_tracks_that_ended() -> None:
    forecast = ForecastEnricher(ConstantVelocityForecaster(), (1.0,))
    tracker = make_tracker("bytetrack", FPS)

    _, most, ids = _run(tracker, (forecast,))

    assert len(ids) >= 300
    # tracks seen within max_age_s (1 s: 25 frames) only
    assert 0 < most <= 2 * LANES
    assert forecast.state_sizes()["forecast_tracks"] <= 2 * LANES


@pytest.mark.parametrize("name", ["bytetrack", "ocsort"])
def test_ids_run_on_in_63_bits_past_the_32_bit_range(name: str) -> None:
    """Ids are int64 from the kernel to the JSONL: a tracker that has issued 2**40 ids
    (a new object every microsecond for 12 days) carries on without wrapping."""
    tracker = make_tracker(name, FPS)
    start = 2**40
    if name == "bytetrack":
        tracker._core.next_id = start  # type: ignore[attr-defined]
    else:
        tracker._next_id = start  # type: ignore[attr-defined]
    ids: set[int] = set()
    for _, dets in crowd(200):
        ids.update(tracker.update(dets).tracker_id.tolist())

    assert min(ids) == start
    # every object one id (a tentative track that never confirmed may use one too)
    assert start + objects_seen(200) - LANES <= max(ids) < start + 2 * objects_seen(200)
    assert len(ids) >= objects_seen(200) - LANES  # distinct, none wrapped onto another
