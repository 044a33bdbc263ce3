"""The pipeline runtime on the real crowd video and YOLOX-nano: tracking quality, counters,
iterator and background APIs, cross-stream batching, live backpressure, slow sinks, damaged
files and a live HTTP stream that drops. Derived files are written to tmp_path only."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.detect import COCO80, RuntimeOptions, YoloxDetector
from tapetum.pipeline import DropPolicy, Pipeline, PipelineConfig, PipelineStats
from tapetum.sinks import CallbackSink, JsonlSink
from tapetum.sources import SourceStats, VideoSource, open_source
from tapetum.sources.paced import PacedSource
from tests.helpers import (
    CROWD_FRAMES,
    FlakyHttpStream,
    damage_middle,
    remux_to_mpegts,
)

pytestmark = pytest.mark.integration

TRACK_FIELDS = {"track_id", "class_id", "class_name", "confidence", "xyxy"}


def assert_accounted(stats: PipelineStats) -> None:
    """Every decoded frame of every stream was processed, dropped or failed."""
    assert stats.finished
    for s in stats.streams:
        assert s.frames_read == s.frames_processed + s.frames_dropped + s.frames_failed, s


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text.endswith("\n"), "the last line was cut short"
    return [json.loads(line) for line in text.splitlines()]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two (N, 4) xyxy arrays."""
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return np.asarray(inter / (area_a + area_b - inter))


@pytest.fixture(scope="module")
def detector(yolox_path: Path) -> YoloxDetector:
    return YoloxDetector(yolox_path, runtime=RuntimeOptions(intra_op_threads=2))


@pytest.fixture(scope="module")
def clip_4s(crowd_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 4 s (100 frames) of the crowd video as MPEG-TS."""
    return remux_to_mpegts(crowd_video, tmp_path_factory.mktemp("clip") / "crowd_4s.ts", 4.0)


@pytest.fixture(scope="module")
def full_run(
    detector: YoloxDetector, crowd_video: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[PipelineStats, Path]:
    """One offline run over the whole video with a JSONL sink (shared: it takes seconds)."""
    out = tmp_path_factory.mktemp("full") / "tracks.jsonl"
    pipe = Pipeline([open_source(str(crowd_video))], detector, sinks=[JsonlSink(out)])
    return pipe.run(), out


def test_tracks_follow_walking_people_with_stable_ids(
    full_run: tuple[PipelineStats, Path],
) -> None:
    _, path = full_run
    boxes_by_id: dict[int, dict[int, list[float]]] = defaultdict(dict)
    for record in read_jsonl(path):
        for track in record["tracks"]:
            boxes_by_id[track["track_id"]][record["frame_index"]] = track["xyxy"]

    # A walker stays one id for ≥ 150 consecutive frames (6 s), its box moving smoothly
    # from frame to frame and travelling across the scene.
    walkers = []
    for track_id, boxes in boxes_by_id.items():
        frames = np.array(sorted(boxes))
        runs = np.split(frames, np.flatnonzero(np.diff(frames) != 1) + 1)
        longest = max(runs, key=len)
        if len(longest) < 150:
            continue
        xyxy = np.array([boxes[i] for i in longest])
        centres = (xyxy[:, :2] + xyxy[:, 2:]) / 2
        travelled_px = float(np.linalg.norm(centres[-1] - centres[0]))
        if box_iou(xyxy[:-1], xyxy[1:]).min() > 0.5 and travelled_px > 100:
            walkers.append(track_id)
    # The clip has about ten people crossing the frame for most of its length.
    assert len(walkers) >= 5, f"only {len(walkers)} walkers kept one id: {walkers}"

    # Id churn is bounded: ~50 ids for 341 frames of ~16 people (every id switch or
    # fragment would add one); never fewer than the people seen.
    assert 30 <= len(boxes_by_id) <= 100
    assert min(boxes_by_id) == 1


def test_file_run_counts_add_up(full_run: tuple[PipelineStats, Path]) -> None:
    stats, path = full_run
    records = read_jsonl(path)

    assert stats.frames_read == CROWD_FRAMES
    assert stats.frames_dropped == 0  # files block, they never drop
    assert stats.frames_failed == 0
    assert stats.frames_corrupt == 0
    assert_accounted(stats)
    assert stats.frames_processed == CROWD_FRAMES
    assert len(records) == stats.frames_processed
    assert stats.sink_dropped == {"0-JsonlSink": 0}
    assert stats.sink_errors == {"0-JsonlSink": 0}
    assert stats.latency_ms["end_to_end"].count == CROWD_FRAMES

    indexes = [r["frame_index"] for r in records]
    assert indexes == list(range(CROWD_FRAMES))
    for record in records:
        assert set(record) == {"source_id", "frame_index", "timestamp_s", "tracks"}
        assert record["source_id"] == "crowd_720p"
        for track in record["tracks"]:
            assert set(track) == TRACK_FIELDS
            assert track["track_id"] >= 1
            assert track["class_name"] in COCO80
            assert 0.0 <= track["confidence"] <= 1.0
            x1, y1, x2, y2 = track["xyxy"]
            assert x1 < x2 and y1 < y2
    timestamps = [r["timestamp_s"] for r in records]
    assert np.all(np.diff(timestamps) > 0)


def test_iterator_yields_in_order_and_stops_early(
    detector: YoloxDetector, crowd_video: Path
) -> None:
    pipe = Pipeline([open_source(str(crowd_video))], detector)
    seen: list[int] = []
    started = time.monotonic()
    for result in pipe:
        assert isinstance(result, FrameResult)
        seen.append(result.frame.index)
        if len(seen) == 20:
            break
    stopped_s = time.monotonic() - started

    assert seen == list(range(20))
    assert pipe.join(timeout=5.0)  # leaving the loop already joined; this must not wait
    assert stopped_s < 5.0
    stats = pipe.stats()
    assert_accounted(stats)
    assert 20 <= stats.frames_processed < CROWD_FRAMES
    assert stats.frames_read < CROWD_FRAMES  # reading stopped, not just reporting


def test_background_runner_stops_and_drains(
    detector: YoloxDetector, crowd_video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tracks.jsonl"
    pipe = Pipeline([open_source(str(crowd_video))], detector, sinks=[JsonlSink(out)])

    assert pipe.start() is pipe
    time.sleep(1.0)
    assert not pipe.finished
    pipe.stop(drain=True)
    assert pipe.join(timeout=10.0)

    stats = pipe.stats()
    assert_accounted(stats)
    assert stats.frames_dropped == 0  # drain processes what a BLOCK queue holds
    assert 0 < stats.frames_processed < CROWD_FRAMES
    records = read_jsonl(out)  # the sink was flushed and closed: only whole lines
    assert [r["frame_index"] for r in records] == list(range(stats.frames_processed))


def test_two_streams_share_batches_but_not_trackers(
    detector: YoloxDetector, clip_4s: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tracks.jsonl"
    sources = [open_source(str(clip_4s), source_id=sid) for sid in ("left", "right")]
    pipe = Pipeline(sources, detector, sinks=[JsonlSink(out)], config=PipelineConfig(max_batch=2))
    stats = pipe.run()

    assert_accounted(stats)
    frames_each = [s.frames_read for s in stats.streams]
    assert frames_each[0] == frames_each[1] >= 95
    assert [s.frames_processed for s in stats.streams] == frames_each
    total = sum(frames_each)
    assert stats.batches < 0.75 * total  # most inferences carried a frame of each stream

    by_stream: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in read_jsonl(out):
        by_stream[str(record["source_id"])].append(record)
    assert sorted(by_stream) == ["left", "right"]
    for sid, records in by_stream.items():
        assert [r["frame_index"] for r in records] == list(range(len(records))), sid
        ids = {t["track_id"] for r in records for t in r["tracks"]}
        first_ids = sorted(t["track_id"] for t in records[0]["tracks"])
        # Each stream has its own tracker: numbering starts at 1 in both.
        assert first_ids == list(range(1, len(first_ids) + 1)), sid
        assert min(ids) == 1


class _MemorySource:
    """Frames decoded beforehand: a "camera" whose own speed never limits the test."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images
        self.stats = SourceStats()

    source_id = "memory"
    is_live = False
    fps = 25.0

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        for i, image in enumerate(self.images):
            if stop.is_set():
                return
            self.stats.frames_decoded += 1
            yield Frame("memory", i, image, i / 25.0, time.perf_counter())


@pytest.fixture(scope="module")
def crowd_images(clip_4s: Path) -> list[np.ndarray]:
    """The first 40 frames of the crowd video, decoded."""
    frames = VideoSource(clip_4s).frames(threading.Event())
    return [next(frames).image for _ in range(40)]


def _camera(images: list[np.ndarray], fps: float, duration_s: float) -> PacedSource:
    return PacedSource(lambda: _MemorySource(images), fps, "cam", duration_s=duration_s)


def _camera_lag_s(results: list[tuple[float, float, float]]) -> np.ndarray:
    """How far behind the camera's clock each result was ready, in seconds.

    ``results`` holds (timestamp_s, arrival_s, done_s); the camera started at the earliest
    ``arrival_s - timestamp_s`` (a frame that left the camera on time).
    """
    ts, arrival, done = (np.array(c) for c in zip(*results, strict=True))
    camera_t0 = np.min(arrival - ts)
    return np.asarray(done - (camera_t0 + ts))


def _run_collecting(pipe: Pipeline) -> list[tuple[float, float, float]]:
    return [
        (r.frame.timestamp_s, r.frame.arrival_s, time.perf_counter())
        for r in pipe  # iterating runs the pipeline to its end
    ]


def test_live_source_drops_oldest_to_keep_latency_bounded(
    detector: YoloxDetector, crowd_images: list[np.ndarray]
) -> None:
    # 200 fps is several times what YOLOX-nano does on two cores.
    pipe = Pipeline([_camera(crowd_images, 200, 2.0)], detector)
    started = time.monotonic()
    results = _run_collecting(pipe)
    elapsed_s = time.monotonic() - started

    stats = pipe.stats()
    assert_accounted(stats)
    assert stats.frames_read == 400
    assert stats.frames_dropped > 0
    assert 0 < stats.frames_processed < stats.frames_read
    assert stats.latency_ms["end_to_end"].p99_ms < 1000
    lag_s = _camera_lag_s(results)
    assert lag_s.max() < 0.5  # kept up with the camera by dropping (typically < 0.1 s)
    assert elapsed_s < 2.0 + 1.5
    assert [r[0] for r in results] == sorted(r[0] for r in results)

    # The same camera with BLOCK loses nothing but falls further behind with every frame
    # (its frames wait in the reader, where no queue_wait or end_to_end timer sees them).
    blocking = Pipeline(
        [_camera(crowd_images, 200, 0.5)],
        detector,
        config=PipelineConfig(drop_policy=DropPolicy.BLOCK),
    )
    lag_block_s = _camera_lag_s(_run_collecting(blocking))
    stats_block = blocking.stats()
    assert_accounted(stats_block)
    assert stats_block.frames_dropped == 0
    assert stats_block.frames_processed == stats_block.frames_read == 100
    assert lag_block_s[-1] > lag_block_s[0] + 0.4  # typically 0.8 s after 0.5 s of camera
    assert lag_block_s[-1] > 3 * lag_s.max()


def test_slow_sink_does_not_stall_detection(
    detector: YoloxDetector, crowd_images: list[np.ndarray]
) -> None:
    written: list[int] = []

    def slow_write(result: FrameResult) -> None:
        time.sleep(0.2)
        written.append(result.frame.index)

    pipe = Pipeline(
        [_camera(crowd_images, 20, 2.0)],
        detector,
        sinks=[CallbackSink(slow_write)],
        config=PipelineConfig(sink_queue_size=4),
    )
    stats = pipe.run()

    assert_accounted(stats)
    assert stats.frames_read >= 35
    assert stats.frames_processed >= 0.8 * stats.frames_read
    (sink_dropped,) = stats.sink_dropped.values()
    assert sink_dropped > 0
    assert len(written) + sink_dropped == stats.frames_processed
    assert written == sorted(written)
    assert stats.latency_ms["end_to_end"].p99_ms < 1000


def test_damaged_video_is_survived(detector: YoloxDetector, clip_4s: Path, tmp_path: Path) -> None:
    damaged = damage_middle(clip_4s, tmp_path / "damaged.ts")
    stats = Pipeline([open_source(str(damaged))], detector).run()

    assert_accounted(stats)
    (stream,) = stats.streams
    assert stream.error is None
    assert stats.frames_corrupt > 0
    assert stats.frames_processed == stats.frames_read >= 80


def test_live_stream_that_drops_is_resumed_through_the_pipeline(
    detector: YoloxDetector, flaky_stream: FlakyHttpStream, live_clip: Path, tmp_path: Path
) -> None:
    first_part = tmp_path / "first_part.ts"
    first_part.write_bytes(live_clip.read_bytes()[: int(live_clip.stat().st_size * 0.4)])
    frames_before_cut = len(list(VideoSource(first_part).frames(threading.Event())))

    source = open_source(flaky_stream.url, reconnect_initial_delay_s=0.1, reconnect_max_attempts=2)
    indexes: list[int] = []
    # BLOCK: loopback delivers far faster than real time, and this test wants every frame.
    pipe = Pipeline(
        [source],
        detector,
        sinks=[CallbackSink(lambda r: indexes.append(r.frame.index))],
        config=PipelineConfig(drop_policy=DropPolicy.BLOCK, sink_policy=DropPolicy.BLOCK),
    )
    started = time.monotonic()
    pipe.start()
    finished = pipe.join(timeout=20.0)
    elapsed_s = time.monotonic() - started

    assert finished, "the pipeline did not end after the stream was gone"
    stats = pipe.stats()
    assert_accounted(stats)
    (stream,) = stats.streams
    assert stream.is_live
    assert stream.reconnects >= 1
    # giving up on a dead stream ends it, with the reason as its error
    assert stream.error is not None
    assert "gave up after 2 failed reconnect attempts" in stream.error
    assert stats.frames_processed > frames_before_cut
    assert stats.frames_processed == stats.frames_read
    # Indexes run on across the reconnect, and frames after it went through the pipeline;
    # a picture cut in half by the drop is flagged corrupt and skipped, leaving its gap.
    assert len(indexes) == stats.frames_processed
    assert indexes == sorted(set(indexes))
    assert indexes[-1] + 1 == stats.frames_processed + stats.frames_corrupt
    assert flaky_stream.requests == 4  # cut, whole, then two 404s and it gives up
    assert elapsed_s < 15.0
