"""Prometheus metrics of running pipelines, read where they are already counted.

Two narrow hooks, so the hot path pays almost nothing:

* :class:`PipelineMonitor` is a **sink**: it sees each :class:`~tapetum.core.result.FrameResult`
  in its own thread (behind the pipeline's bounded sink queue) and adds the frame's stage
  latencies, detection count, confidences by class and track births and deaths to numpy
  bucket counts (:class:`~tapetum.monitor.histogram.BucketCounts`, one vectorised update per
  histogram per frame);
* it is also a **collector**: at scrape time it reads :meth:`Pipeline.stats` and
  :meth:`Pipeline.queue_depths` (numbers the pipeline keeps anyway) and turns everything
  into metric families.

Labels are bounded: ``source`` (the stream's id), ``class`` (the model's class names),
and fixed sets (``stage``, ``queue``, ``state``, ``sink``). Nothing is labelled per track,
per frame or per request.

Every metric, by family (``_total`` is added to counters on exposition):

=================================================  =====================================
``tapetum_stream_frames_{read,processed,dropped,    counters per ``source``
failed,corrupt}_total``, ``..._reconnects_total``
``tapetum_stream_fps``                              processed frames per second, gauge
``tapetum_stream_live``, ``tapetum_stream_state``   1 for a live source; state one-hot
                                                    (``running``, ``finished``, ``failed``)
``tapetum_stream_last_frame_age_seconds``           since the stream's last result
``tapetum_stream_target_fps``                       the source's nominal frame rate
``tapetum_stream_{detector,tracker}_frames_total``  frames the detector saw / the tracker
                                                    predicted alone (a detection interval)
``tapetum_stream_detect_interval``                  the detection interval k now, gauge
``tapetum_scheduler_interval_changes_total``        the scheduler's changes per ``source``
                                                    and ``reason``
``tapetum_scheduler_ticks_total{load}``             its ticks: behind, steady, headroom,
                                                    saturated
``tapetum_queue_depth{source,queue}``               frames waiting (``source``, ``post``)
``tapetum_sink_queue_depth``, ``..._dropped_total``  per sink
``tapetum_state_entries{source,structure}``         per-track state held (tracker tracks,
``tapetum_sink_state_entries{sink,structure}``      forecasts, votes; trail points)
``tapetum_stage_latency_seconds{source,stage}``     histogram; buckets every 10 ms up to
                                                    the 100 ms SLO, then coarser
``tapetum_detections_per_frame``                    histogram per ``source``
``tapetum_detection_confidence{source,class}``      histogram
``tapetum_active_tracks``                           gauge per ``source``
``tapetum_track_births_total``, ``..._rebirths``     counters (re-birth: an id-switch proxy)
``tapetum_track_lifetime_seconds``                  histogram of ended tracks
``tapetum_model_info{model,version}``               1 for the model serving now
``tapetum_pipeline_batches_total``,                 counters
``tapetum_detector_swaps_total``
=================================================  =====================================

:func:`new_registry` adds the process (``process_cpu_seconds_total``,
``process_resident_memory_bytes``) and GPU (:mod:`tapetum.monitor.gpu`) collectors.

Example:
    >>> registry = new_registry()                                       # doctest: +SKIP
    >>> monitor = PipelineMonitor(model_info={"model": "yolox_nano"})   # doctest: +SKIP
    >>> pipe = Pipeline(sources, detector, sinks=[monitor])              # doctest: +SKIP
    >>> registry.register(monitor.attach(pipe))                          # doctest: +SKIP
    >>> MetricsServer(registry, port=9400).start()                       # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tapetum.core.result import FrameResult
from tapetum.monitor.histogram import BucketCounts
from tapetum.monitor.tracks import TrackLedger

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from tapetum.pipeline import Pipeline, PipelineStats

__all__ = [
    "CONFIDENCE_BUCKETS",
    "DETECTION_BUCKETS",
    "LATENCY_BUCKETS_S",
    "LIFETIME_BUCKETS_S",
    "STAGES",
    "CollectorGroup",
    "PipelineMonitor",
    "new_registry",
]

#: Latency buckets (seconds): every 10 ms up to the 100 ms SLO, so ``histogram_quantile``
#: places a p99 near the SLO within 10 ms; coarser beyond it.
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.06,
    0.07,
    0.08,
    0.09,
    0.1,
    0.125,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
    2.5,
)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DETECTION_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500)
LIFETIME_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

#: Stages timed per frame (the pipeline's, plus ``predict`` on frames the detector skips).
STAGES = ("preprocess", "queue_wait", "infer", "postprocess", "track", "predict", "end_to_end")
_STAGE_ROW = {s: i for i, s in enumerate(STAGES)}


class _StreamMetrics:
    """What the sink accumulates for one stream."""

    def __init__(self, fps: float) -> None:
        self.fps = fps if fps > 0 else 25.0
        self.latency = BucketCounts(LATENCY_BUCKETS_S, rows=len(STAGES))
        self.detections = BucketCounts(DETECTION_BUCKETS)
        self.confidence = BucketCounts(CONFIDENCE_BUCKETS)
        self.lifetimes = BucketCounts(LIFETIME_BUCKETS_S)
        self.ledger = TrackLedger()
        self.births = 0
        self.rebirths = 0
        self.results = 0
        self.last_result_wall: float | None = None
        self.class_names: tuple[str, ...] = ()
        self._stage_rows = np.empty(0, np.int64)
        self._stage_keys: tuple[str, ...] = ()

    def observe(self, result: FrameResult) -> None:
        timings = result.timings_ms
        keys = tuple(k for k in timings if k in _STAGE_ROW)
        if keys != self._stage_keys:  # frames of one kind share their stage set
            self._stage_keys = keys
            self._stage_rows = np.array([_STAGE_ROW[k] for k in keys], np.int64)
        self.latency.observe_rows(
            np.fromiter((timings[k] for k in keys), np.float64, len(keys)) / 1e3,
            self._stage_rows,
        )
        det = result.detections
        if not result.predicted:  # the model's own output, not the tracker's predictions
            self.detections.observe((float(len(det)),))
            if len(det):
                self.confidence.observe_rows(det.confidence, det.class_id)
        events = self.ledger.update(det.tracker_id, det.xyxy, result.frame.index / self.fps)
        self.births += events.births
        self.rebirths += events.rebirths
        if events.lifetimes_s.size:
            self.lifetimes.observe(events.lifetimes_s)
        self.class_names = result.class_names
        self.results += 1
        self.last_result_wall = time.time()


class PipelineMonitor:
    """Metrics of one pipeline: a sink for per-frame histograms and a collector that
    reads the pipeline's counters at scrape time.

    Args:
        model_info: labels of ``tapetum_model_info`` (e.g. ``{"model": "yolox_nano",
            "version": "3"}``), or a callable returning them (read at each scrape, so a
            swapped model shows).
        fps: the streams' nominal frame rates (track lifetimes are measured in video
            time, ``frame.index / fps``): one for all or per source id; 25 where unknown.
        pipeline: the pipeline to read counters from; or call :meth:`attach` once it
            exists (it takes this monitor among its sinks, so it is built after).

    An attached pipeline is held by a weak reference: the pipeline holds this monitor
    among its sinks, and a strong reference back made the two a reference cycle that
    outlived the stream, with the pipeline's latency rings, tracker and source (about
    2 MB a stream), until Python's full garbage collection, which in a server holding
    a model and its caches runs rarely: a server's memory rose about 2 MB per stream
    started and deleted. Whoever runs the pipeline holds it.
    """

    def __init__(
        self,
        *,
        model_info: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        fps: float | Mapping[str, float] = 25.0,
        pipeline: Pipeline | None = None,
    ) -> None:
        self._model_info = model_info
        self._fps = fps
        self._streams: dict[str, _StreamMetrics] = {}
        self._lock = threading.Lock()
        self._pipeline: Pipeline | None = pipeline
        self._attached: weakref.ref[Pipeline] | None = None

    @property
    def pipeline(self) -> Pipeline | None:
        """The pipeline read at scrape time (None once an attached one is gone)."""
        if self._attached is not None:
            return self._attached()
        return self._pipeline

    def attach(self, pipeline: Pipeline) -> PipelineMonitor:
        """Read counters from ``pipeline`` from now on (held weakly: it holds this
        monitor among its sinks); returns self (to register)."""
        self._pipeline = None
        self._attached = weakref.ref(pipeline)
        return self

    def _stream(self, source_id: str) -> _StreamMetrics:
        st = self._streams.get(source_id)
        if st is None:
            fps = self._fps
            if not isinstance(fps, int | float):
                fps = fps.get(source_id, 25.0)
            with self._lock:
                st = self._streams.setdefault(source_id, _StreamMetrics(float(fps)))
        return st

    # ------------------------------------------------------------------ sink
    def write(self, result: FrameResult) -> None:
        self._stream(result.source_id).observe(result)

    def close(self) -> None:
        """Nothing to flush (the sink protocol)."""

    # ------------------------------------------------------------------ collector
    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        pipeline = self.pipeline
        stats = pipeline.stats() if pipeline is not None else None
        if stats is not None:
            yield from _pipeline_families(stats)
        if pipeline is not None:
            yield from _queue_families(pipeline)
        with self._lock:
            streams = list(self._streams.items())
        yield from _stream_families(streams)
        yield from self._model_families(stats)

    def _model_families(self, stats: PipelineStats | None) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        info = self._model_info() if callable(self._model_info) else self._model_info
        if info:
            labels = sorted(info)
            model = GaugeMetricFamily(
                "tapetum_model_info", "The model serving now (value 1).", labels=labels
            )
            model.add_metric([str(info[k]) for k in labels], 1.0)
            yield model
        if stats is not None:
            swaps = CounterMetricFamily(
                "tapetum_detector_swaps", "Detectors swapped in while running."
            )
            swaps.add_metric([], stats.detector_swaps)
            batches = CounterMetricFamily(
                "tapetum_pipeline_batches", "Inference batches run by the pipeline."
            )
            batches.add_metric([], stats.batches)
            yield swaps
            yield batches


def _pipeline_families(stats: PipelineStats) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    counters = {
        "frames_read": "Frames decoded from the source.",
        "frames_processed": "Frames through detection and tracking.",
        "frames_dropped": "Frames dropped by a queue's policy (never processed).",
        "frames_failed": "Frames whose preprocessing, inference or tracking failed.",
        "frames_corrupt": "Frames or packets the decoder could not decode (skipped).",
        "reconnects": "Successful re-opens of a live stream after it dropped.",
        "detector_frames": "Frames the detector saw.",
        "tracker_frames": "Frames the tracker predicted alone: the detector skipped them "
        "(a detection interval).",
    }
    families = {
        key: CounterMetricFamily(f"tapetum_stream_{key}", doc, labels=["source"])
        for key, doc in counters.items()
    }
    fps = GaugeMetricFamily(
        "tapetum_stream_fps", "Processed frames per second while running.", labels=["source"]
    )
    live = GaugeMetricFamily(
        "tapetum_stream_live",
        "1 for a live source (camera, stream URL), 0 for a file.",
        labels=["source"],
    )
    state = GaugeMetricFamily(
        "tapetum_stream_state",
        "The stream's state, one-hot: running, finished (its source ended), failed.",
        labels=["source", "state"],
    )
    for s in stats.streams:
        for key, family in families.items():
            family.add_metric([s.source_id], getattr(s, key))
        fps.add_metric([s.source_id], s.fps)
        live.add_metric([s.source_id], float(s.is_live))
        now = "failed" if s.error else ("finished" if stats.finished else "running")
        for name in ("running", "finished", "failed"):
            state.add_metric([s.source_id, name], float(name == now))
    yield from families.values()
    yield from (fps, live, state)
    yield from _interval_families(stats)
    sink_drop = CounterMetricFamily(
        "tapetum_sink_dropped", "Results a slow sink never saw.", labels=["sink"]
    )
    sink_err = CounterMetricFamily(
        "tapetum_sink_errors", "Sink writes that failed.", labels=["sink"]
    )
    for name, n in stats.sink_dropped.items():
        sink_drop.add_metric([name], n)
    for name, n in stats.sink_errors.items():
        sink_err.add_metric([name], n)
    yield from (sink_drop, sink_err)


def _interval_families(stats: PipelineStats) -> Iterator[Any]:
    """Detection intervals and the scheduler's decisions (:mod:`tapetum.pipeline.scheduler`)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    interval = GaugeMetricFamily(
        "tapetum_stream_detect_interval",
        "The detection interval now: the detector on every k-th frame (1: every frame).",
        labels=["source"],
    )
    changes = CounterMetricFamily(
        "tapetum_scheduler_interval_changes",
        "Detection intervals the scheduler changed, by reason (raise_within_cap, "
        "raise_over_cap, lower_over_cap, lower_headroom).",
        labels=["source", "reason"],
    )
    for s in stats.streams:
        interval.add_metric([s.source_id], s.interval)
        for reason, n in s.interval_changes.items():
            changes.add_metric([s.source_id, reason], n)
    ticks = CounterMetricFamily(
        "tapetum_scheduler_ticks",
        "The scheduler's decisions by the load it saw: behind, steady, headroom, or "
        "saturated (behind with every stream at its largest interval: only drops left).",
        labels=["load"],
    )
    for load, n in ((stats.scheduler or {}).get("ticks") or {}).items():
        ticks.add_metric([load], n)
    yield from (interval, changes, ticks)


def _queue_families(pipeline: Pipeline) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    queue = GaugeMetricFamily(
        "tapetum_queue_depth",
        "Frames waiting in a stream's queue: source (decoded, before inference) or post "
        "(inferred, before tracking).",
        labels=["source", "queue"],
    )
    for sid, by_queue in pipeline.queue_depths().items():
        for name, n in by_queue.items():
            queue.add_metric([sid, name], n)
    sinks = GaugeMetricFamily(
        "tapetum_sink_queue_depth", "Results waiting for a sink.", labels=["sink"]
    )
    for name, n in pipeline.sink_queue_depths().items():
        sinks.add_metric([name], n)
    state = GaugeMetricFamily(
        "tapetum_state_entries",
        "Per-track state held now by a stream's tracker and enrichers; level on a long "
        "run, as the state of ended tracks is dropped.",
        labels=["source", "structure"],
    )
    for sid, held in pipeline.state_sizes().items():
        for structure, n in held.items():
            state.add_metric([sid, structure], n)
    sink_state = GaugeMetricFamily(
        "tapetum_sink_state_entries",
        "Per-track state held now by a sink (the annotated video's trail points).",
        labels=["sink", "structure"],
    )
    for name, held in pipeline.sink_state_sizes().items():
        for structure, n in held.items():
            sink_state.add_metric([name, structure], n)
    yield from (queue, sinks, state, sink_state)


def _histogram(
    name: str, doc: str, labels: list[str], rows: list[tuple[list[str], BucketCounts, int]]
) -> Any:
    from prometheus_client.core import HistogramMetricFamily

    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, counts, row in rows:
        buckets, total = counts.samples(row)
        family.add_metric(values, buckets, total)
    return family


def _stream_families(streams: list[tuple[str, _StreamMetrics]]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    latency_rows = []
    conf_rows = []
    for sid, st in streams:
        latency_rows += [([sid, STAGES[r]], st.latency, r) for r in st.latency.nonempty_rows()]
        names = st.class_names
        conf_rows += [
            ([sid, names[r] if r < len(names) else str(r)], st.confidence, r)
            for r in st.confidence.nonempty_rows()
        ]
    yield _histogram(
        "tapetum_stage_latency_seconds",
        "Per-frame latency of each pipeline stage (end_to_end: decoder to tracks ready).",
        ["source", "stage"],
        latency_rows,
    )
    yield _histogram(
        "tapetum_detections_per_frame",
        "Tracked objects reported per frame.",
        ["source"],
        [([sid], st.detections, 0) for sid, st in streams],
    )
    yield _histogram(
        "tapetum_detection_confidence",
        "Confidence of reported objects, by class.",
        ["source", "class"],
        conf_rows,
    )
    yield _histogram(
        "tapetum_track_lifetime_seconds",
        "Lifetime of ended tracks (first to last sighting), seconds of video.",
        ["source"],
        [([sid], st.lifetimes, 0) for sid, st in streams],
    )
    active = GaugeMetricFamily(
        "tapetum_active_tracks", "Tracks seen within the last 2 s of video.", labels=["source"]
    )
    births = CounterMetricFamily("tapetum_track_births", "New track ids.", labels=["source"])
    rebirths = CounterMetricFamily(
        "tapetum_track_rebirths",
        "New tracks born where a track had just been lost (an id-switch proxy).",
        labels=["source"],
    )
    age = GaugeMetricFamily(
        "tapetum_stream_last_frame_age_seconds",
        "Seconds since the stream's last result reached the monitor.",
        labels=["source"],
    )
    target = GaugeMetricFamily(
        "tapetum_stream_target_fps",
        "The stream's nominal frame rate (what a camera sends; 25 where unknown).",
        labels=["source"],
    )
    now = time.time()
    for sid, st in streams:
        target.add_metric([sid], st.fps)
        active.add_metric([sid], st.ledger.active)
        births.add_metric([sid], st.births)
        rebirths.add_metric([sid], st.rebirths)
        if st.last_result_wall is not None:
            age.add_metric([sid], now - st.last_result_wall)
    yield from (active, births, rebirths, age, target)


class CollectorGroup:
    """Several collectors exported as one: families of the same name are merged (a
    registry would print each collector's ``# TYPE`` line again, which Prometheus
    refuses), and samples with identical labels are summed (a counter kept by two
    pipelines). The server's streams each have a :class:`PipelineMonitor`; the group
    holds them, and collectors join and leave as streams start and are forgotten.

    Args:
        collectors: the members now, or a callable returning them at each scrape.
    """

    def __init__(
        self, collectors: Callable[[], Sequence[Any]] | Sequence[Any] | None = None
    ) -> None:
        self._source = collectors if callable(collectors) else None
        self._members: list[Any] = [] if callable(collectors) else list(collectors or [])
        self._lock = threading.Lock()

    def add(self, collector: Any) -> None:
        with self._lock:
            self._members.append(collector)

    def remove(self, collector: Any) -> None:
        with self._lock:
            if collector in self._members:
                self._members.remove(collector)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        with self._lock:
            members = list(self._members)
        if self._source is not None:
            members += list(self._source())
        merged: dict[str, Any] = {}
        for collector in members:
            for family in collector.collect():
                first = merged.get(family.name)
                if first is None:
                    merged[family.name] = family
                else:
                    first.samples.extend(family.samples)
        for family in merged.values():
            family.samples[:] = _sum_duplicates(family.samples)
            yield family


def _sum_duplicates(samples: list[Any]) -> list[Any]:
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    out: list[Any] = []
    for sample in samples:
        key = (sample.name, tuple(sorted(sample.labels.items())))
        at = seen.get(key)
        if at is None:
            seen[key] = len(out)
            out.append(sample)
        else:
            out[at] = out[at]._replace(value=out[at].value + sample.value)
    return out


def new_registry(*, process: bool = True, gpu: bool = True) -> CollectorRegistry:
    """A fresh Prometheus registry (never the global default one) with the process
    collector (CPU seconds, resident memory; Linux) and the NVML GPU collector (absent
    where there is no GPU)."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    from tapetum.monitor.gpu import GpuCollector

    registry = CollectorRegistry()
    if process:
        ProcessCollector(registry=registry)
    if gpu:
        registry.register(GpuCollector())
    return registry
