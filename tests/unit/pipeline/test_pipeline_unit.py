"""The pipeline runtime driven by a numpy-only fake detector and synthetic sources: batching
rules, failure accounting and configuration errors (no model, no video)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.detect.letterbox import LetterboxMeta
from tapetum.errors import ConfigError, SourceError
from tapetum.pipeline import Pipeline, PipelineConfig, PipelineStats
from tapetum.sinks import CallbackSink
from tapetum.sources.base import SourceStats

pytestmark = pytest.mark.timeout(30)

HW = (8, 8)


class FakeDetector:
    """Numpy-only StagedDetector. A frame's tensor carries its (source tag, frame index) in
    its first two channels, so ``infer`` can record what each batch held; ``infer`` echoes
    its input and ``postprocess`` returns one fixed person box."""

    class_names = ("person",)
    input_hw = HW
    max_batch = 16

    def __init__(
        self,
        infer_s: float = 0.0,
        fail_infer: Callable[[list[tuple[int, int]]], bool] | None = None,
        fail_preprocess: Callable[[int], bool] | None = None,
    ) -> None:
        self.infer_s = infer_s
        self.fail_infer = fail_infer
        self.fail_preprocess = fail_preprocess
        self.batches: list[list[tuple[int, int]]] = []  # (source tag, frame index) per frame

    def preprocess(
        self, image: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.float32], LetterboxMeta]:
        tag, index = int(image[0, 0, 0]), int(image[0, 0, 1])
        if self.fail_preprocess is not None and self.fail_preprocess(index):
            raise ValueError(f"cannot letterbox frame {index}")
        tensor = np.zeros((3, *HW), np.float32)
        tensor[0], tensor[1] = tag, index
        return tensor, LetterboxMeta(1.0, 0.0, 0.0, (image.shape[0], image.shape[1]))

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        content = [(int(t[0, 0, 0]), int(t[1, 0, 0])) for t in batch]
        if self.infer_s:
            time.sleep(self.infer_s)
        if self.fail_infer is not None and self.fail_infer(content):
            raise RuntimeError("CUDA out of memory (fake)")
        self.batches.append(content)
        return batch.copy()

    def postprocess(self, raw: npt.NDArray[np.float32], meta: LetterboxMeta) -> Detections:
        return Detections(
            xyxy=np.array([[1.0, 1.0, 5.0, 6.0]], np.float32),
            confidence=np.array([0.9], np.float32),
            class_id=np.array([0], np.int64),
        )


class FakeSource:
    """Yields ``n_frames`` synthetic 16x16 frames, ``period_s`` apart, tagged with ``tag``.

    ``silent_s`` > 0 makes a source that yields nothing and ends after that long (or when
    stopped); ``fail_after`` raises ``SourceError`` once that many frames are out.
    """

    def __init__(
        self,
        source_id: str,
        tag: int,
        *,
        n_frames: int = 10,
        period_s: float = 0.0,
        is_live: bool = False,
        silent_s: float = 0.0,
        fail_after: int | None = None,
        error: Exception | None = None,
    ) -> None:
        self.source_id = source_id
        self.tag = tag
        self.n_frames = n_frames
        self.period_s = period_s
        self.is_live = is_live
        self.silent_s = silent_s
        self.fail_after = fail_after
        self.error = error or SourceError(f"camera {source_id} unplugged")
        self.fps = 25.0
        self.stats = SourceStats()

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        if self.silent_s:
            stop.wait(self.silent_s)
            return
        for i in range(self.n_frames):
            if self.fail_after is not None and i == self.fail_after:
                raise self.error
            if self.period_s and stop.wait(self.period_s):
                return
            if stop.is_set():
                return
            image = np.zeros((16, 16, 3), np.uint8)
            image[0, 0] = (self.tag, i, 0)
            self.stats.frames_decoded += 1
            yield Frame(self.source_id, i, image, i / self.fps, time.perf_counter())


def assert_accounted(stats: PipelineStats) -> None:
    assert stats.finished
    for s in stats.streams:
        assert s.frames_read == s.frames_processed + s.frames_dropped + s.frames_failed, s


def run_collecting(pipe: Pipeline) -> dict[str, list[int]]:
    """Run to the end through the iterator; frame indexes per source."""
    out: dict[str, list[int]] = {}
    for result in pipe:
        out.setdefault(result.source_id, []).append(result.frame.index)
    return out


@pytest.mark.parametrize("max_wait_ms", [5.0, 40.0])
def test_max_wait_bounds_how_long_a_lone_frame_waits_for_a_batch(max_wait_ms: float) -> None:
    detector = FakeDetector()
    # Frames 150 ms apart: without the bound a frame would wait for the next one.
    talker = FakeSource("talker", tag=1, n_frames=6, period_s=0.15, is_live=True)
    silent = FakeSource("silent", tag=2, silent_s=10.0, is_live=True)
    pipe = Pipeline(
        [talker, silent],
        detector,
        config=PipelineConfig(max_batch=2, max_wait_ms=max_wait_ms, warmup=False),
    )
    pipe.start()
    deadline = time.monotonic() + 5.0
    while pipe.stats().frames_processed < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    pipe.stop()
    assert pipe.join(timeout=2.0)

    stats = pipe.stats()
    assert_accounted(stats)
    assert stats.frames_processed == 6
    assert [len(b) for b in detector.batches] == [1] * 6  # nobody to batch with
    wait = stats.latency_ms["queue_wait"]
    slack_ms = 50.0  # thread wake-ups on a busy two-core machine
    assert wait.max_ms <= max_wait_ms + slack_ms
    assert wait.p50_ms >= 0.8 * max_wait_ms  # it did wait for a partner, up to the bound


def test_round_robin_fills_batches_with_one_frame_per_stream() -> None:
    detector = FakeDetector(infer_s=0.005)  # slower than the readers: queues stay full
    sources = [FakeSource(f"cam{t}", tag=t, n_frames=30) for t in (1, 2, 3)]
    pipe = Pipeline(
        sources, detector, config=PipelineConfig(max_batch=3, max_wait_ms=50.0, warmup=False)
    )
    results = run_collecting(pipe)

    stats = pipe.stats()
    assert_accounted(stats)
    assert stats.frames_processed == 90
    assert results == {f"cam{t}": list(range(30)) for t in (1, 2, 3)}  # in order per stream
    assert stats.batches == len(detector.batches) <= 32
    full = [b for b in detector.batches if len(b) == 3]
    assert len(full) >= 0.9 * len(detector.batches)
    # Round robin: a full batch takes one frame from each stream, never two from one.
    assert all(sorted(tag for tag, _ in b) == [1, 2, 3] for b in full)


def test_max_batch_caps_a_batch_and_a_stream_may_fill_it() -> None:
    detector = FakeDetector(infer_s=0.005)
    source = FakeSource("cam", tag=1, n_frames=40)
    pipe = Pipeline(
        [source],
        detector,
        config=PipelineConfig(max_batch=4, max_wait_ms=50.0, source_queue_size=8, warmup=False),
    )
    assert pipe.max_batch == 4
    results = run_collecting(pipe)

    assert results == {"cam": list(range(40))}
    assert max(len(b) for b in detector.batches) == 4
    assert sum(len(b) == 4 for b in detector.batches) >= 0.75 * len(detector.batches)


def test_max_batch_is_capped_by_the_model() -> None:
    detector = FakeDetector()
    detector.max_batch = 2
    pipe = Pipeline([FakeSource("cam", 1)], detector, config=PipelineConfig(max_batch=8))
    assert pipe.max_batch == 2


def test_inference_errors_count_frames_as_failed_not_a_crash() -> None:
    def poisoned(content: list[tuple[int, int]]) -> bool:
        return any(index % 5 == 0 for _, index in content)

    detector = FakeDetector(fail_infer=poisoned)
    pipe = Pipeline(
        [FakeSource("cam", tag=1, n_frames=20)],
        detector,
        config=PipelineConfig(max_batch=1, warmup=False),
    )
    results = run_collecting(pipe)

    stats = pipe.stats()
    assert_accounted(stats)
    (stream,) = stats.streams
    assert stream.frames_failed == 4  # frames 0, 5, 10, 15
    assert stream.frames_processed == 16
    assert stream.error is None  # a bad batch is not a broken stream
    assert results == {"cam": [i for i in range(20) if i % 5]}


def test_postprocess_errors_count_frames_as_failed() -> None:
    detector = FakeDetector()
    original = detector.postprocess
    calls = 0

    def flaky_postprocess(raw: npt.NDArray[np.float32], meta: LetterboxMeta) -> Detections:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ValueError("bad box")
        return original(raw, meta)

    detector.postprocess = flaky_postprocess  # type: ignore[method-assign]
    pipe = Pipeline([FakeSource("cam", tag=1, n_frames=10)], detector)
    stats = pipe.run()

    assert_accounted(stats)
    assert stats.frames_failed == 1
    assert stats.frames_processed == 9


def test_preprocess_error_fails_that_frame_only() -> None:
    detector = FakeDetector(fail_preprocess=lambda index: index == 3)
    pipe = Pipeline([FakeSource("cam", tag=1, n_frames=10)], detector)
    results = run_collecting(pipe)

    stats = pipe.stats()
    assert_accounted(stats)
    assert stats.frames_read == 10
    assert stats.frames_failed == 1
    assert results == {"cam": [0, 1, 2, 4, 5, 6, 7, 8, 9]}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (SourceError("camera cam unplugged"), "camera cam unplugged"),
        (RuntimeError("decoder bug"), "RuntimeError: decoder bug"),
    ],
)
def test_a_failing_reader_ends_its_stream_with_the_error(error: Exception, expected: str) -> None:
    broken = FakeSource("cam", tag=1, n_frames=10, fail_after=4, error=error)
    healthy = FakeSource("dock", tag=2, n_frames=10)
    pipe = Pipeline([broken, healthy], FakeDetector())
    stats = pipe.run()

    assert_accounted(stats)
    by_id = {s.source_id: s for s in stats.streams}
    assert by_id["cam"].error == expected
    assert by_id["cam"].frames_processed == 4
    assert by_id["dock"].error is None
    assert by_id["dock"].frames_processed == 10


def test_stop_without_drain_drops_and_counts_queued_frames() -> None:
    detector = FakeDetector(infer_s=0.05)
    pipe = Pipeline(
        [FakeSource("cam", tag=1, n_frames=200)], detector, config=PipelineConfig(warmup=False)
    )
    pipe.start()
    time.sleep(0.2)
    pipe.stop(drain=False)
    assert pipe.join(timeout=2.0)

    stats = pipe.stats()
    assert_accounted(stats)
    assert stats.frames_dropped > 0
    assert stats.frames_processed < 200


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch must be ≥ 1, got 0"),
        ({"max_wait_ms": -1.0}, "max_wait_ms must be ≥ 0, got -1.0"),
    ],
)
def test_config_validation(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PipelineConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field", ["source_queue_size", "post_queue_size", "sink_queue_size", "result_queue_size"]
)
def test_queue_sizes_must_be_positive(field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field} must be ≥ 1, got 0"):
        PipelineConfig(**{field: 0})  # type: ignore[arg-type]


def test_pipeline_needs_sources_with_unique_ids() -> None:
    with pytest.raises(ConfigError, match="at least one source"):
        Pipeline([], FakeDetector())
    with pytest.raises(ConfigError, match="source ids must be unique"):
        Pipeline([FakeSource("cam", 1), FakeSource("cam", 2)], FakeDetector())


def test_a_pipeline_runs_once() -> None:
    pipe = Pipeline([FakeSource("cam", 1, n_frames=2)], FakeDetector())
    pipe.run()
    with pytest.raises(RuntimeError, match="already started"):
        pipe.start()
    with pytest.raises(RuntimeError, match="before starting"):
        next(iter(pipe))


class JitteryDetector(FakeDetector):
    """Inference time varies per batch, so concurrent workers finish out of order."""

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        index = int(batch[0, 1, 0, 0])
        time.sleep(0.012 if index % 3 == 0 else 0.001)
        return batch.copy()

    def postprocess(self, raw: npt.NDArray[np.float32], meta: LetterboxMeta) -> Detections:
        # carry the frame index through, to check the order the tracker sees
        return Detections(
            xyxy=np.array([[0.0, 0.0, 1.0, 1.0]], np.float32),
            confidence=np.array([raw[1, 0, 0] / 1000.0], np.float32),
            class_id=np.array([0], np.int64),
        )


def test_concurrent_inference_workers_keep_frame_order_per_stream() -> None:
    seen: dict[str, list[int]] = {"a": [], "b": []}

    class RecordingTracker:
        def __init__(self, sid: str) -> None:
            self.sid = sid

        def update(self, detections: Detections, frame: Frame | None = None) -> Detections:
            assert frame is not None
            seen[self.sid].append(frame.index)
            return detections

        def reset(self) -> None:
            return None

    sources = [FakeSource("a", 1, n_frames=60), FakeSource("b", 2, n_frames=60)]
    pipe = Pipeline(
        sources,
        JitteryDetector(),
        tracker_factory=lambda src: RecordingTracker(src.source_id),
        config=PipelineConfig(inference_workers=3, max_batch=1),
    )
    stats = pipe.run()
    assert_accounted(stats)
    assert stats.frames_processed == 120
    assert seen == {"a": list(range(60)), "b": list(range(60))}


def test_concurrent_inference_workers_run_in_parallel() -> None:
    class CountingDetector(FakeDetector):
        active = 0
        most_active = 0
        lock = threading.Lock()

        def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            with self.lock:
                self.active += 1
                self.most_active = max(self.most_active, self.active)
            time.sleep(0.01)
            with self.lock:
                self.active -= 1
            return batch.copy()

    detector = CountingDetector()
    stats = Pipeline(
        [FakeSource("a", 1, n_frames=40)], detector, config=PipelineConfig(inference_workers=3)
    ).run()
    assert stats.frames_processed == 40
    assert detector.most_active >= 2


def test_inference_workers_follow_the_detector_unless_set() -> None:
    class SizedDetector(FakeDetector):
        recommended_workers = 3

    src = [FakeSource("a", 1, n_frames=1)]
    assert Pipeline(src, SizedDetector()).inference_workers == 3
    assert Pipeline(src, FakeDetector()).inference_workers == 1
    pinned = Pipeline(src, SizedDetector(), config=PipelineConfig(inference_workers=1))
    assert pinned.inference_workers == 1


def test_enrichers_run_per_stream_after_tracking_and_reach_the_records() -> None:
    calls: list[tuple[str, int]] = []

    class TagWithStream:
        def __init__(self, sid: str) -> None:
            self.sid = sid

        def __call__(self, frame: Frame, detections: Detections) -> Detections:
            calls.append((self.sid, frame.index))
            assert detections.is_tracked.all()  # runs after the tracker
            detections.data["forecast_xy"] = np.tile([[1.25, 2.5]], (len(detections), 1))
            return detections

    records: list[dict[str, object]] = []
    pipe = Pipeline(
        [FakeSource("a", 1, n_frames=5), FakeSource("b", 2, n_frames=5)],
        FakeDetector(),
        sinks=[CallbackSink(lambda r: records.append(r.to_record()))],
        enrichers=[lambda src: TagWithStream(src.source_id)],
    )
    stats = pipe.run()
    assert stats.frames_processed == 10
    assert sorted(calls) == [(s, i) for s in ("a", "b") for i in range(5)]
    tracks = [t for r in records for t in r["tracks"]]  # type: ignore[attr-defined]
    assert tracks and all(t["forecast_xy"] == [1.25, 2.5] for t in tracks)


def test_forecast_enricher_writes_forecasts_per_track() -> None:
    from tapetum.track.forecast import ConstantVelocityForecaster, ForecastEnricher

    records: list[dict[str, Any]] = []
    Pipeline(
        [FakeSource("a", 1, n_frames=6)],
        FakeDetector(),
        sinks=[CallbackSink(lambda r: records.append(r.to_record()))],
        enrichers=[lambda src: ForecastEnricher(ConstantVelocityForecaster(), (1.0, 2.0))],
    ).run()
    tracks = [t for r in records for t in r["tracks"]]
    assert tracks
    for t in tracks:
        assert len(t["forecast_xy"]) == 4 and len(t["forecast_cov"]) == 6
        # the fake box never moves: its forecast stays on its centre (3, 3.5)
        assert t["forecast_xy"] == pytest.approx([3.0, 3.5, 3.0, 3.5], abs=1e-3)
