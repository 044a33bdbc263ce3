"""Pipeline metrics: names, label cardinality, histogram semantics, the GPU collector's
absence, the merged collector and the metrics/dashboard server (no model, no video)."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.errors import MetricsServerError
from tapetum.monitor import CollectorGroup, GpuCollector, MetricsServer, PipelineMonitor
from tapetum.monitor.dashboard import DASHBOARD_CSP
from tapetum.monitor.histogram import BucketCounts
from tapetum.monitor.metrics import LATENCY_BUCKETS_S, STAGES, new_registry
from tapetum.pipeline import Pipeline, PipelineConfig
from tests.unit.pipeline.test_pipeline_unit import FakeDetector, FakeSource

CLASSES = ("person", "car", "bus")
TIMINGS = {
    "preprocess": 1.0,
    "queue_wait": 2.0,
    "infer": 15.0,
    "postprocess": 1.0,
    "track": 1.0,
    "end_to_end": 40.0,
}


def _result(index: int, n_tracks: int, first_id: int = 0, source: str = "cam") -> FrameResult:
    rng = np.random.default_rng(index)
    xy = rng.uniform(0, 600, size=(n_tracks, 2)).astype(np.float32)
    det = Detections(
        np.hstack([xy, xy + 20]),
        rng.uniform(0.1, 1.0, size=n_tracks).astype(np.float32),
        rng.integers(0, len(CLASSES), size=n_tracks),
        np.arange(first_id, first_id + n_tracks),
    )
    frame = Frame(source, index, np.zeros((4, 4, 3), np.uint8), index / 25.0, 0.0)
    return FrameResult(frame, det, CLASSES, dict(TIMINGS))


def _scrape(registry: CollectorRegistry) -> list[Any]:
    return list(text_string_to_metric_families(generate_latest(registry).decode()))


def _monitor_registry(monitor: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(monitor)
    return registry


# ------------------------------------------------------------------------ histograms


def test_bucket_counts_match_prometheus_client_histogram() -> None:
    values = np.array([0.0, 0.001, 0.0099, 0.01, 0.05, 0.1, 0.1000001, 3.0, 99.0])
    ours = BucketCounts(LATENCY_BUCKETS_S)
    ours.observe(values)
    theirs = Histogram("x", "x", buckets=LATENCY_BUCKETS_S, registry=CollectorRegistry())
    for v in values:
        theirs.observe(float(v))
    expected = {
        s.labels["le"]: s.value for s in theirs.collect()[0].samples if s.name == "x_bucket"
    }
    got, total = ours.samples(0)
    assert {le: float(n) for le, n in got} == expected
    assert total == pytest.approx(values.sum())


def test_bucket_counts_by_row_grow_on_demand() -> None:
    h = BucketCounts((0.5, 1.0), rows=1)
    h.observe_rows(np.array([0.2, 0.7, 0.9, 0.3]), np.array([0, 2, 2, 0]))
    assert h.rows == 3
    assert h.nonempty_rows() == [0, 2]
    assert h.samples(2) == ([("0.5", 0), ("1.0", 2), ("+Inf", 2)], pytest.approx(1.6))


# ------------------------------------------------------------------------ names and labels

#: Labels a tapetum_ series may carry; anything else (track id, frame, request) is a leak.
ALLOWED_LABELS = {
    "source", "class", "stage", "queue", "state", "sink", "signal", "gpu", "structure", "le",
}  # fmt: skip


def test_metric_names_follow_prometheus_conventions() -> None:
    monitor = PipelineMonitor(model_info={"model": "m", "version": "1"})
    for i in range(30):
        monitor.write(_result(i, 5))
    families = _scrape(_monitor_registry(monitor))
    assert families
    for family in families:
        assert re.fullmatch(r"tapetum_[a-z][a-z0-9_]*", family.name), family.name
        if family.type == "histogram":
            unitless = ("tapetum_detections_per_frame", "tapetum_detection_confidence")
            assert family.name.endswith("_seconds") or family.name in unitless
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)


def test_label_cardinality_does_not_grow_with_tracks_or_frames() -> None:
    def series(n_frames: int, n_tracks: int) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        monitor = PipelineMonitor()
        for i in range(n_frames):
            monitor.write(_result(i, n_tracks, first_id=i * n_tracks))  # new ids every frame
        out = set()
        for family in _scrape(_monitor_registry(monitor)):
            for s in family.samples:
                assert set(s.labels) <= ALLOWED_LABELS, s
                out.add((s.name, tuple(sorted(s.labels.items()))))
        return out

    few = series(10, 3)
    many = series(200, 60)  # 12 000 distinct track ids
    assert len(many) == len(few)
    values = {v for _, labels in many for k, v in labels if k != "le"}
    assert values <= {"cam", *CLASSES, *STAGES}  # no track id, frame or time in a label


def test_stage_histograms_and_confidence_by_class_are_exported() -> None:
    monitor = PipelineMonitor()
    for i in range(20):
        monitor.write(_result(i, 4))
    registry = _monitor_registry(monitor)
    e2e = {"source": "cam", "stage": "end_to_end"}
    assert registry.get_sample_value("tapetum_stage_latency_seconds_count", e2e) == 20
    assert (
        registry.get_sample_value("tapetum_stage_latency_seconds_bucket", {**e2e, "le": "0.04"})
        == 20
    )
    assert (
        registry.get_sample_value("tapetum_stage_latency_seconds_bucket", {**e2e, "le": "0.03"})
        == 0
    )
    conf = sum(
        registry.get_sample_value(
            "tapetum_detection_confidence_count", {"source": "cam", "class": c}
        )
        or 0
        for c in CLASSES
    )
    assert conf == 80
    assert registry.get_sample_value("tapetum_active_tracks", {"source": "cam"}) == 4
    assert registry.get_sample_value("tapetum_track_births_total", {"source": "cam"}) == 4


def test_a_predicted_frame_is_timed_by_its_own_stages_and_not_counted_as_detections() -> None:
    monitor = PipelineMonitor()
    result = _result(0, 1)
    timings = {"predict": 0.5, "end_to_end": 3.0}
    predicted = FrameResult(result.frame, result.detections, CLASSES, timings, predicted=True)
    monitor.write(result)
    monitor.write(predicted)
    registry = _monitor_registry(monitor)
    count = "tapetum_stage_latency_seconds_count"
    assert registry.get_sample_value(count, {"source": "cam", "stage": "predict"}) == 1
    assert registry.get_sample_value(count, {"source": "cam", "stage": "end_to_end"}) == 2
    assert registry.get_sample_value(count, {"source": "cam", "stage": "infer"}) == 1
    per_frame = "tapetum_detections_per_frame_count"
    assert registry.get_sample_value(per_frame, {"source": "cam"}) == 1  # the model's frame only


def test_counters_come_from_the_pipeline_and_agree_with_its_stats() -> None:
    monitor = PipelineMonitor(model_info=lambda: {"model": "fake", "version": "7"})
    src = FakeSource("cam", 1, n_frames=30)
    pipe = Pipeline([src], FakeDetector(), sinks=[monitor], config=PipelineConfig(warmup=False))
    monitor.attach(pipe)
    stats = pipe.run()
    registry = _monitor_registry(monitor)
    sid = stats.streams[0].source_id
    labels = {"source": sid}
    assert registry.get_sample_value("tapetum_stream_frames_read_total", labels) == 30
    assert registry.get_sample_value("tapetum_stream_frames_processed_total", labels) == 30
    assert registry.get_sample_value("tapetum_stream_state", {**labels, "state": "finished"}) == 1
    assert registry.get_sample_value("tapetum_queue_depth", {**labels, "queue": "source"}) == 0
    assert registry.get_sample_value("tapetum_model_info", {"model": "fake", "version": "7"}) == 1
    assert registry.get_sample_value("tapetum_pipeline_batches_total") == stats.batches


def test_a_finished_pipeline_is_freed_without_the_cycle_collector() -> None:
    """The pipeline holds the monitor among its sinks; the monitor must not hold it back,
    or both (with the pipeline's latency rings, tracker and source) wait for a full
    garbage collection: a server's memory rose about 2 MB per stream."""
    import gc
    import weakref

    monitor = PipelineMonitor()
    pipe = Pipeline(
        [FakeSource("cam", 1, n_frames=10)],
        FakeDetector(),
        sinks=[monitor],
        config=PipelineConfig(warmup=False),
    )
    monitor.attach(pipe)
    pipe.run()
    assert monitor.pipeline is pipe
    gone = weakref.ref(pipe)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        del pipe
        assert gone() is None, "the finished pipeline is still referenced (a cycle?)"
    finally:
        if was_enabled:
            gc.enable()
    assert monitor.pipeline is None
    text = generate_latest(_monitor_registry(monitor)).decode()  # still scrapes
    assert "tapetum_stream_frames_processed_total" not in text


def test_a_group_merges_families_of_two_pipelines_into_one() -> None:
    a, b = PipelineMonitor(), PipelineMonitor()
    for i in range(5):
        a.write(_result(i, 2, source="a"))
        b.write(_result(i, 2, source="b"))
    group = CollectorGroup([a, b])
    text = generate_latest(_monitor_registry(group)).decode()
    assert text.count("# TYPE tapetum_active_tracks gauge") == 1
    registry = _monitor_registry(group)
    assert registry.get_sample_value("tapetum_active_tracks", {"source": "a"}) == 2
    assert registry.get_sample_value("tapetum_active_tracks", {"source": "b"}) == 2
    group.remove(b)
    assert registry.get_sample_value("tapetum_active_tracks", {"source": "b"}) is None


# ------------------------------------------------------------------------ GPU


class FakeNvml:
    """The few NVML calls the collector makes, for two GPUs."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init = fail_init

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 - pynvml's names
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802 - pynvml's names
        return i

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:  # noqa: N802 - pynvml's names
        return SimpleNamespace(gpu=[35, 90][h], memory=10)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:  # noqa: N802 - pynvml's names
        return SimpleNamespace(used=2**30 * (h + 1), total=80 * 2**30, free=0)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:  # noqa: N802 - pynvml's names
        return 60 + h


def test_gpu_readings_are_exported_per_device() -> None:
    registry = _monitor_registry(GpuCollector(nvml=FakeNvml()))  # type: ignore[arg-type]
    assert registry.get_sample_value("tapetum_gpu_available") == 1
    assert registry.get_sample_value("tapetum_gpu_utilization_ratio", {"gpu": "1"}) == 0.9
    assert registry.get_sample_value("tapetum_gpu_memory_used_bytes", {"gpu": "0"}) == 2**30
    assert registry.get_sample_value("tapetum_gpu_temperature_celsius", {"gpu": "1"}) == 61


@pytest.mark.parametrize("nvml", [None, FakeNvml(fail_init=True)])
def test_without_a_gpu_the_gpu_series_are_absent_not_zero(nvml: Any) -> None:
    registry = _monitor_registry(GpuCollector(nvml=nvml))
    assert registry.get_sample_value("tapetum_gpu_available") == 0
    names = {s.name for f in _scrape(registry) for s in f.samples}
    assert names == {"tapetum_gpu_available"}


def test_this_machine_reports_gpus_only_if_nvml_sees_them() -> None:
    registry = new_registry()
    available = registry.get_sample_value("tapetum_gpu_available")
    util = registry.get_sample_value("tapetum_gpu_utilization_ratio", {"gpu": "0"})
    assert (util is not None) == (available == 1)
    assert registry.get_sample_value("process_resident_memory_bytes") > 0


# ------------------------------------------------------------------------ server


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    monitor = PipelineMonitor()
    monitor.write(_result(0, 3))
    registry = new_registry(gpu=False)
    registry.register(monitor)
    srv = MetricsServer(registry, port=0).start()
    yield srv
    srv.stop()


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_server_serves_metrics_dashboard_and_its_static_files(server: MetricsServer) -> None:
    status, headers, body = _get(server.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b'tapetum_active_tracks{source="cam"} 3.0' in body
    status, headers, page = _get(server.url + "/dashboard")
    assert status == 200 and headers["Content-Security-Policy"] == DASHBOARD_CSP
    assert b'<script src="/dashboard/static/dashboard.js"' in page
    assert b"<script>" not in page and b" style=" not in page  # nothing inline
    for name, ctype in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        status, headers, body = _get(f"{server.url}/dashboard/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(ctype) and body
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert _get(server.url + "/dashboard/static/../../etc/passwd")[0] == 404
    assert _get(server.url + "/nope")[0] == 404


def test_a_taken_port_is_a_typed_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(MetricsServerError, match="port is taken"):
            MetricsServer(new_registry(gpu=False), port=port).start()
    with pytest.raises(MetricsServerError, match="0-65535"):
        MetricsServer(new_registry(gpu=False), port=70000)


def test_scrapes_during_writes_are_consistent() -> None:
    monitor = PipelineMonitor()
    registry = _monitor_registry(monitor)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            monitor.write(_result(i, 8))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for family in _scrape(registry):
                if family.name != "tapetum_stage_latency_seconds":
                    continue
                by_series: dict[str, list[float]] = {}
                counts: dict[str, float] = {}
                for sample in family.samples:
                    stage = sample.labels["stage"]
                    if sample.name.endswith("_bucket"):
                        by_series.setdefault(stage, []).append(sample.value)
                    elif sample.name.endswith("_count"):
                        counts[stage] = sample.value
                for stage, buckets in by_series.items():
                    assert buckets == sorted(buckets)  # cumulative within one scrape
                    assert buckets[-1] == counts[stage]  # +Inf bucket is the count
    finally:
        stop.set()
        t.join()


def test_dashboard_assets_are_in_the_package() -> None:
    import tapetum.monitor

    static = Path(tapetum.monitor.__file__).parent / "static"
    assert {p.name for p in static.iterdir()} >= {"index.html", "dashboard.js", "dashboard.css"}
