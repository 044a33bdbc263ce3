"""Detection intervals in the pipeline runtime (fixed and scheduled), with numpy-only fakes:
which frames reach the detector, order and accounting of predicted frames, the flags on
results, configuration errors, and the scheduler shedding load under overload."""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.errors import ConfigError
from tapetum.monitor import PipelineMonitor
from tapetum.pipeline import Pipeline, PipelineConfig
from tapetum.pipeline.scheduler import Priority, SchedulerConfig
from tapetum.sinks import CallbackSink
from tapetum.sources.base import Source
from tapetum.track.base import Tracker
from tests.unit.pipeline.test_pipeline_unit import FakeDetector, FakeSource, assert_accounted

pytestmark = pytest.mark.timeout(60)


class PerFrameDetector(FakeDetector):
    """Inference costs ``frame_s`` per frame of the batch (a CPU model's behaviour)."""

    def __init__(self, frame_s: float) -> None:
        super().__init__()
        self.frame_s = frame_s

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        time.sleep(self.frame_s * batch.shape[0])
        return super().infer(batch)


def test_a_fixed_interval_sends_every_kth_frame_to_the_detector() -> None:
    detector = FakeDetector(infer_s=0.005)
    sources = [FakeSource("a", 1, n_frames=20), FakeSource("b", 2, n_frames=20)]
    results: list[FrameResult] = []
    pipe = Pipeline(
        sources,
        detector,
        sinks=[CallbackSink(results.append)],
        config=PipelineConfig(detect_every=3, warmup=False),
    )
    stats = pipe.run()
    assert_accounted(stats)
    # Stream i (its phase) takes its first frame, then those whose ordinal plus i is a
    # multiple of 3: the two streams' detector frames alternate instead of coinciding.
    expected = {"a": [0, *range(3, 20, 3)], "b": [0, *range(2, 20, 3)]}
    for sid, detected in expected.items():
        mine = [r for r in results if r.source_id == sid]
        assert [r.frame.index for r in mine] == list(range(20))  # every frame, in order
        assert [r.frame.index for r in mine if not r.predicted] == detected
        for r in mine:  # the tracked person is on every frame, flagged per track
            assert r.detections.tracker_id.tolist() == [1]
            assert r.detections.data["predicted"].tolist() == [r.predicted]
            record = r.to_record()
            assert record.get("predicted", False) is r.predicted
            assert record["tracks"][0]["predicted"] is r.predicted  # type: ignore[index]
    for s in stats.streams:
        assert (s.detector_frames, s.tracker_frames) == (7, 13)
        assert s.detector_share == pytest.approx(7 / 20)
    streams = stats.as_dict()["streams"]
    assert streams[0]["detector_frames"] == 7 and streams[0]["tracker_frames"] == 13


def test_predicted_frames_never_overtake_the_detector_frame_before_them() -> None:
    # A slow detector: predicted frames are ready long before the detector frame ahead of
    # them has been inferred, yet every stream's results stay in frame order.
    detector = PerFrameDetector(frame_s=0.01)
    sources = [FakeSource(f"s{i}", i, n_frames=30, period_s=0.002) for i in range(3)]
    order: dict[str, list[int]] = {}
    for result in Pipeline(
        sources, detector, config=PipelineConfig(detect_every=4, max_batch=1, warmup=False)
    ):
        order.setdefault(result.source_id, []).append(result.frame.index)
    assert order == {f"s{i}": list(range(30)) for i in range(3)}


def test_without_an_interval_records_are_unchanged() -> None:
    results: list[FrameResult] = []
    Pipeline(
        [FakeSource("a", 1, n_frames=3)],
        FakeDetector(),
        sinks=[CallbackSink(results.append)],
        config=PipelineConfig(warmup=False),
    ).run()
    for r in results:
        assert not r.predicted
        assert "predicted" not in r.to_record()
        assert "predicted" not in r.detections.data


class UpdateOnlyTracker:
    def update(self, detections: Detections, frame: Frame | None = None) -> Detections:
        return detections

    def reset(self) -> None:
        pass


def test_an_interval_needs_a_tracker_that_can_predict() -> None:
    def factory(src: Source) -> Tracker:
        return UpdateOnlyTracker()

    with pytest.raises(ConfigError, match="UpdateOnlyTracker of stream 'a' has no predict"):
        Pipeline(
            [FakeSource("a", 1)], FakeDetector(), factory, config=PipelineConfig(detect_every=2)
        )


def test_a_priority_for_an_unknown_stream_is_refused() -> None:
    config = PipelineConfig(scheduler=SchedulerConfig(priorities={"cam9": Priority.HIGH}))
    with pytest.raises(ConfigError, match=r"unknown stream 'cam9'.*streams: cam0, cam1"):
        Pipeline([FakeSource("cam0", 1), FakeSource("cam1", 2)], FakeDetector(), config=config)


def test_a_budget_below_the_models_own_latency_is_refused_before_anything_runs() -> None:
    results: list[FrameResult] = []
    pipe = Pipeline(
        [FakeSource("a", 1)],
        FakeDetector(infer_s=0.03),  # 30 ms a batch
        sinks=[CallbackSink(results.append)],
        config=PipelineConfig(warmup=False, scheduler=SchedulerConfig(latency_budget_ms=10)),
    )
    with pytest.raises(ConfigError, match=r"latency budget 10 ms is below the model's own"):
        pipe.start()
    assert results == []


def test_interval_and_scheduler_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="detect_every must be ≥ 1 frame, got 0"):
        PipelineConfig(detect_every=0)
    with pytest.raises(ConfigError, match="exclude each other"):
        PipelineConfig(detect_every=2, scheduler=SchedulerConfig())


def test_the_scheduler_sheds_detector_load_instead_of_dropping_frames() -> None:
    # Four live streams at 40 FPS need 160 inferences a second; the detector does 100
    # (10 ms a frame): 1.6 times too much. The scheduler raises intervals within a few
    # ticks, after which latency stays under budget and almost nothing is dropped.
    detector = PerFrameDetector(frame_s=0.01)
    sources = [
        FakeSource(f"cam{i}", i, n_frames=200, period_s=0.025, is_live=True) for i in range(4)
    ]
    late: list[float] = []

    def record(result: FrameResult) -> None:
        if result.frame.index >= 100:  # the second half: after the scheduler has settled
            late.append(result.timings_ms["end_to_end"])

    scheduler = SchedulerConfig(latency_budget_ms=100, tick_s=0.1, max_interval=4)
    monitor = PipelineMonitor()
    pipe = Pipeline(
        sources,
        detector,
        sinks=[CallbackSink(record), monitor],
        config=PipelineConfig(max_batch=1, inference_workers=1, warmup=False, scheduler=scheduler),
    )
    monitor.attach(pipe)
    stats = pipe.run()
    assert_accounted(stats)
    summary = stats.as_dict()["scheduler"]
    assert summary["interval_changes"].get("raise_within_cap", 0) >= 2
    assert {d["source_id"] for d in summary["degraded"]}  # the summary names who gave way
    assert sum(s.detector_frames for s in stats.streams) < 0.8 * stats.frames_processed
    assert stats.frames_dropped <= 0.05 * stats.frames_read
    assert late and float(np.percentile(late, 99)) < 100.0
    # The metrics say the same: per stream, and every tick and change of the scheduler.
    metrics = _registry(monitor)
    for s in stats.streams:
        labels = {"source": s.source_id}
        assert metrics.get_sample_value("tapetum_stream_detect_interval", labels) == s.interval
        for reason, n in s.interval_changes.items():
            value = metrics.get_sample_value(
                "tapetum_scheduler_interval_changes_total", {**labels, "reason": reason}
            )
            assert value == n
    for load, n in summary["ticks"].items():
        assert metrics.get_sample_value("tapetum_scheduler_ticks_total", {"load": load}) == n


def _registry(monitor: PipelineMonitor) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(monitor)
    return registry


def test_metrics_count_detector_and_tracker_frames_per_stream() -> None:
    monitor = PipelineMonitor()
    pipe = Pipeline(
        [FakeSource("a", 1, n_frames=20)],
        FakeDetector(),
        sinks=[monitor],
        config=PipelineConfig(detect_every=3, warmup=False),
    )
    monitor.attach(pipe)
    pipe.run()
    metrics, labels = _registry(monitor), {"source": "a"}
    assert metrics.get_sample_value("tapetum_stream_detector_frames_total", labels) == 7
    assert metrics.get_sample_value("tapetum_stream_tracker_frames_total", labels) == 13
    assert metrics.get_sample_value("tapetum_stream_detect_interval", labels) == 3
    assert metrics.get_sample_value("tapetum_scheduler_ticks_total", {"load": "behind"}) is None
