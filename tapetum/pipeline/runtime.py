"""The stream runtime: sources → batched detection → per-stream tracking → sinks.

Threads and queues (every queue bounded, every drop counted)::

    reader[s] ──(source queue, policy per source)──┐
    reader[t] ──(source queue)──────────────────────┤→ detector (one, batches across
                                                    │   streams, ≤ max_wait_ms)
    tracker[s] ←──(post queue)──────────────────────┤
    tracker[t] ←──(post queue)──────────────────────┘
    tracker[*] ──→ sink workers (own queue + thread each) and the result iterator

Readers decode and letterbox (so preprocessing overlaps inference); trackers decode the
model output, run NMS and the tracker (so post-processing overlaps the next batch).

The detector can be replaced while running (:meth:`Pipeline.swap_detector`, e.g. when a
registry alias moves): each frame remembers the detector that preprocessed it and is
inferred and decoded by that one, so a swap loses no frame and trackers keep their ids.

Two hooks (:mod:`tapetum.pipeline.hooks`, used by A/B experiments): a ``router`` picks
each frame's detector as it is read (a canary share of streams or frames goes to another
model, on the same per-frame machinery as a swap), and ``taps`` see every batch with its
model inputs just before inference (a shadow model reuses the letterboxed tensors in its
own thread).

Detection intervals (``PipelineConfig.detect_every`` or ``scheduler``): a stream with
interval k sends every k-th frame to the detector; its reader passes the others on
without letterboxing them, and they reach the stream's tracker, in frame order, as soon
as the detector frame before them has been taken for inference; the tracker carries its
tracks through them by its motion model (``PredictingTracker.predict``) and the results
are marked ``predicted``. With a scheduler, a thread observes every stream each tick
(latency, oldest queued frame, motion) and sets the intervals
(:mod:`tapetum.pipeline.scheduler`)::

    scheduler ──(interval per stream)──→ reader[s]   (detector frame or predicted frame)
    tracker[s] ──(latency, motion)──────→ scheduler
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.detect.base import StagedDetector
from tapetum.detect.letterbox import LetterboxMeta
from tapetum.errors import ConfigError, QueueClosed, TapetumError
from tapetum.pipeline.hooks import BatchTap, DetectorRouter, TappedFrame, state_sizes_of
from tapetum.pipeline.queues import BoundedQueue, DropPolicy
from tapetum.pipeline.scheduler import (
    IntervalPolicy,
    MotionMonitor,
    Priority,
    SchedulerConfig,
    StreamObservation,
)
from tapetum.pipeline.sink_worker import SinkWorker
from tapetum.pipeline.stats import LatencyRecorder, LatencySummary, StageTimers
from tapetum.sinks.base import Sink
from tapetum.sources.base import Source
from tapetum.track.base import PredictingTracker, Tracker

log = logging.getLogger(__name__)

#: Stages timed for every frame, in pipeline order.
STAGES = ("preprocess", "queue_wait", "infer", "postprocess", "track", "end_to_end")


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Runtime knobs.

    Attributes:
        max_batch: frames per inference call; None = the sources shared out over the
            inference workers (``ceil(sources / workers)``), capped by the model; 1 where
            the detector says batches do not help (``batches_help``: a CPU provider).
        max_wait_ms: how long the first frame of a batch waits for others.
        source_queue_size: decoded frames buffered per source before the policy applies.
        post_queue_size: inferred frames buffered per stream before tracking.
        sink_queue_size: results buffered per sink.
        result_queue_size: results buffered for the Python iterator.
        drop_policy: policy of every source queue; None = ``DROP_OLDEST`` for live sources,
            ``BLOCK`` for files and folders.
        sink_policy: policy of sink queues; None = ``DROP_OLDEST`` if any source is live,
            else ``BLOCK`` (offline runs lose nothing, live runs never stall).
        sink_stall_timeout_s: at shutdown, how long a sink stuck in a write (no result
            written for that long) is waited for before it is given up, its queued results
            dropped and counted (:class:`~tapetum.pipeline.sink_worker.SinkWorker`).
        warmup: run one dummy batch before the first frame (keeps it out of the p99).
        inference_workers: threads running inference concurrently on the shared detector;
            0 = the detector's ``recommended_workers`` (1 if it has none). On a CPU, two
            single-threaded workers beat one two-threaded run: no straggler waits inside
            operators when decode or tracking takes a core for a moment. Results are put
            back in frame order per stream before tracking.
        detect_every: a fixed detection interval k for every stream: the detector sees
            frames 0, k, 2k, … of each; the tracker predicts the others (1: every frame).
        scheduler: adaptive intervals under a latency budget instead (then
            ``detect_every`` must stay 1); None: no scheduler.
    """

    max_batch: int | None = None
    max_wait_ms: float = 5.0
    source_queue_size: int = 4
    post_queue_size: int = 8
    sink_queue_size: int = 64
    result_queue_size: int = 32
    drop_policy: DropPolicy | None = None
    sink_policy: DropPolicy | None = None
    sink_stall_timeout_s: float = 10.0
    warmup: bool = True
    inference_workers: int = 0
    detect_every: int = 1
    scheduler: SchedulerConfig | None = None

    def __post_init__(self) -> None:
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"max_batch must be ≥ 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be ≥ 0, got {self.max_wait_ms}")
        if self.inference_workers < 0:
            raise ConfigError(f"inference_workers must be ≥ 0, got {self.inference_workers}")
        if self.sink_stall_timeout_s <= 0:
            raise ConfigError(f"sink_stall_timeout_s must be > 0, got {self.sink_stall_timeout_s}")
        if self.detect_every < 1:
            raise ConfigError(f"detect_every must be ≥ 1 frame, got {self.detect_every}")
        if self.scheduler is not None and self.detect_every != 1:
            raise ConfigError(
                f"a fixed detect_every ({self.detect_every}) and the adaptive scheduler "
                "exclude each other"
            )
        sizes = ("source_queue_size", "post_queue_size", "sink_queue_size", "result_queue_size")
        for name in sizes:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")


@dataclass(slots=True)
class _Pending:
    """A frame on its way through the pipeline."""

    frame: Frame
    #: the letterboxed model input and its placement; None on a predicted frame.
    tensor: npt.NDArray[np.float32] | None
    meta: LetterboxMeta | None
    ready_s: float
    timings_ms: dict[str, float]
    #: position in its stream's inference order (assigned when a batch takes the frame).
    seq: int = -1
    raw: npt.NDArray[np.float32] | None = None
    failed: bool = False
    #: the detector that preprocessed the frame: it also infers and decodes it, so a frame
    #: in flight during :meth:`Pipeline.swap_detector` stays on one model.
    detector: StagedDetector | None = None
    #: the detector skips this frame (its stream's interval): the tracker predicts it.
    predicted: bool = False


def _is_predicted(item: _Pending) -> bool:
    return item.predicted


def _is_detector_frame(item: _Pending) -> bool:
    """Frames that take room in a source queue: a predicted frame holds no tensor."""
    return not item.predicted


def model_latency_ms(detector: StagedDetector, runs: int = 3) -> float:
    """A detector's own latency on one frame on this machine: the fastest of ``runs``
    inferences of a single zero frame, in milliseconds (no schedule can beat it)."""
    h, w = detector.input_hw
    frame = np.zeros((1, 3, h, w), np.float32)
    best = float("inf")
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        detector.infer(frame)
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


class Enricher(Protocol):
    """A per-stream stage after tracking: adds to the tracked detections of each frame
    (forecasts, global identities across cameras, zone events…), usually as
    ``detections.data`` columns, which the JSONL sink writes per track. Called from the
    stream's tracking thread, frames in order."""

    def __call__(self, frame: Frame, detections: Detections) -> Detections: ...


#: Builds a stream's enricher from its source (one instance per stream).
EnricherFactory = Callable[[Source], Enricher]


@dataclass(slots=True)
class _Stream:
    source: Source
    tracker: Tracker
    enrichers: list[Enricher]
    queue: BoundedQueue[_Pending]
    post: BoundedQueue[_Pending]
    processed: int = 0
    failed: int = 0
    next_seq: int = 0
    error: str | None = None
    started_s: float | None = None
    last_result_s: float | None = None
    #: detection interval k now (the scheduler changes it) and the largest it has been.
    interval: int = 1
    interval_max: int = 1
    #: frames read since the last detector frame was read; -1 before the first frame.
    since_detect: int = -1
    #: the stream's offset among the streams' detector frames (its index): streams at
    #: the same interval take their detector frames in turn, not all on the same tick.
    phase: int = 0
    detector_frames: int = 0
    tracker_frames: int = 0
    monitor: MotionMonitor = field(default_factory=MotionMonitor)
    #: end-to-end latency of this stream's recent frames, and how many the scheduler saw.
    latency: LatencyRecorder = field(default_factory=lambda: LatencyRecorder(1024))
    latency_seen: int = 0
    interval_changes: dict[str, int] = field(default_factory=dict)
    #: frames read so far, and as many as the scheduler had seen at its last tick.
    frames_in: int = 0
    frames_in_seen: int = 0
    detector_frames_seen: int = 0


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Counters of one stream. ``frames_read == processed + dropped + failed`` once the
    pipeline has finished (every decoded frame is accounted for)."""

    source_id: str
    is_live: bool
    frames_read: int
    frames_processed: int
    frames_dropped: int
    frames_failed: int
    frames_corrupt: int
    reconnects: int
    fps: float
    error: str | None
    #: frames the detector saw and frames the tracker predicted alone (a detection
    #: interval); ``detector_frames + tracker_frames == frames_processed``.
    detector_frames: int = 0
    tracker_frames: int = 0
    #: detection interval now, the largest it reached, and the scheduler's changes by
    #: reason (``IntervalChange.reason``).
    interval: int = 1
    interval_max: int = 1
    interval_changes: dict[str, int] = field(default_factory=dict)

    @property
    def detector_share(self) -> float:
        """Fraction of processed frames that went through the detector."""
        done = self.detector_frames + self.tracker_frames
        return self.detector_frames / done if done else 1.0


@dataclass(frozen=True, slots=True)
class PipelineStats:
    """A snapshot of the whole pipeline."""

    streams: tuple[StreamStats, ...]
    elapsed_s: float
    latency_ms: dict[str, LatencySummary]
    sink_dropped: dict[str, int]
    sink_errors: dict[str, int]
    batches: int
    finished: bool
    extra: dict[str, Any] = field(default_factory=dict)
    #: detectors swapped in while running (:meth:`Pipeline.swap_detector`).
    detector_swaps: int = 0
    #: the scheduler's account (:meth:`Pipeline.scheduler_summary`); None without one.
    scheduler: dict[str, Any] | None = None
    #: results each sink wrote; with ``sink_dropped`` and ``sink_errors`` they add up to
    #: ``frames_processed`` per sink once finished.
    sink_written: dict[str, int] = field(default_factory=dict)
    #: the first failed write (or the failed close) of each sink that had one.
    sink_failures: dict[str, str] = field(default_factory=dict)

    @property
    def frames_read(self) -> int:
        return sum(s.frames_read for s in self.streams)

    @property
    def frames_processed(self) -> int:
        return sum(s.frames_processed for s in self.streams)

    @property
    def frames_dropped(self) -> int:
        return sum(s.frames_dropped for s in self.streams)

    @property
    def frames_corrupt(self) -> int:
        return sum(s.frames_corrupt for s in self.streams)

    @property
    def frames_failed(self) -> int:
        return sum(s.frames_failed for s in self.streams)

    @property
    def fps(self) -> float:
        """Processed frames per second of wall time, all streams together."""
        return self.frames_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the CLI prints and saves this)."""
        return {
            "frames_read": self.frames_read,
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "frames_failed": self.frames_failed,
            "frames_corrupt": self.frames_corrupt,
            "elapsed_s": round(self.elapsed_s, 3),
            "fps": round(self.fps, 2),
            "batches": self.batches,
            "detector_swaps": self.detector_swaps,
            **({"scheduler": self.scheduler} if self.scheduler is not None else {}),
            "latency_ms": {k: v.as_dict() for k, v in self.latency_ms.items()},
            "sinks": {
                "written": self.sink_written,
                "dropped": self.sink_dropped,
                "errors": self.sink_errors,
                "failures": self.sink_failures,
            },
            "streams": [
                {
                    "source_id": s.source_id,
                    "is_live": s.is_live,
                    "frames_read": s.frames_read,
                    "frames_processed": s.frames_processed,
                    "frames_dropped": s.frames_dropped,
                    "frames_failed": s.frames_failed,
                    "frames_corrupt": s.frames_corrupt,
                    "reconnects": s.reconnects,
                    "fps": round(s.fps, 2),
                    "error": s.error,
                    "detector_frames": s.detector_frames,
                    "tracker_frames": s.tracker_frames,
                    "detector_share": round(s.detector_share, 4),
                    "interval": s.interval,
                    "interval_max": s.interval_max,
                    "interval_changes": dict(s.interval_changes),
                }
                for s in self.streams
            ],
        }


class Pipeline:
    """Real-time detection and tracking over one or more sources.

    Each source gets its own tracker (from ``tracker_factory``) and queues; all share one
    detector, batched across streams.

    Example:
        >>> from tapetum import Pipeline, YoloxDetector, open_source  # doctest: +SKIP
        >>> pipe = Pipeline(                                          # doctest: +SKIP
        ...     [open_source("crowd.mp4")], YoloxDetector("yolox_nano.onnx")
        ... )
        >>> for result in pipe:                                       # doctest: +SKIP
        ...     print(result.frame.index, result.detections.tracker_id)
        >>> print(pipe.stats().as_dict())                             # doctest: +SKIP

    Or in the background: ``pipe.start()``, … ``pipe.stop()``, ``pipe.join()``.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        detector: StagedDetector,
        tracker_factory: Callable[[Source], Tracker] | None = None,
        *,
        sinks: Sequence[Sink] = (),
        config: PipelineConfig | None = None,
        enrichers: Sequence[EnricherFactory] = (),
        taps: Sequence[BatchTap] = (),
        router: DetectorRouter | None = None,
    ) -> None:
        if not sources:
            raise ConfigError("a pipeline needs at least one source")
        ids = [s.source_id for s in sources]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"source ids must be unique, got {ids}")
        self.config = config or PipelineConfig()
        self.detector = detector
        self._taps = tuple(taps)
        self._router = router
        if tracker_factory is None:
            from tapetum.track import make_tracker

            def tracker_factory(src: Source) -> Tracker:
                return make_tracker("bytetrack", frame_rate=src.fps or 30.0)

        any_live = any(s.is_live for s in sources)
        self._batch_cond = threading.Condition()
        self._streams = [
            _Stream(
                source=src,
                tracker=tracker_factory(src),
                enrichers=[make(src) for make in enrichers],
                queue=BoundedQueue(
                    self.config.source_queue_size,
                    self.config.drop_policy
                    or (DropPolicy.DROP_OLDEST if src.is_live else DropPolicy.BLOCK),
                    self._batch_cond,
                    counts=_is_detector_frame,
                ),
                post=BoundedQueue(self.config.post_queue_size, DropPolicy.BLOCK),
                phase=i,
            )
            for i, src in enumerate(sources)
        ]
        sink_policy = self.config.sink_policy or (
            DropPolicy.DROP_OLDEST if any_live else DropPolicy.BLOCK
        )
        self._sinks = [
            SinkWorker(
                sink,
                self.config.sink_queue_size,
                sink_policy,
                f"{i}-{type(sink).__name__}",
                self.config.sink_stall_timeout_s,
            )
            for i, sink in enumerate(sinks)
        ]
        workers = self.config.inference_workers or int(getattr(detector, "recommended_workers", 1))
        self.inference_workers = max(1, workers)
        default_batch = -(-len(sources) // self.inference_workers)
        if not getattr(detector, "batches_help", True):
            default_batch = 1
        self.max_batch = max(1, min(self.config.max_batch or default_batch, detector.max_batch))
        self.timers = StageTimers()
        self._results: BoundedQueue[FrameResult] | None = None
        self._stop_sources = threading.Event()
        self._abort = threading.Event()
        self._finished = threading.Event()
        self._threads: dict[str, list[threading.Thread]] = {}
        self._count_lock = threading.Lock()
        self._supervisor: threading.Thread | None = None
        self._started_s: float | None = None
        self._finished_s: float | None = None
        self._batches = 0
        self._rr = 0
        self._swap_lock = threading.Lock()
        self._swaps = 0
        self._scheduler = self.config.scheduler
        self._intervals = self._scheduler is not None or self.config.detect_every > 1
        self._model_latency_ms: float | None = None
        self._ticks: dict[str, int] = {}
        self._ceiling: float | None = None
        self._infer_busy_s = 0.0  # inference time summed over workers
        if self._scheduler is not None:
            self._scheduler.check_streams(ids)
        if self._intervals:
            self._check_trackers_predict()
        for st in self._streams:
            st.interval = st.interval_max = self.config.detect_every

    def _check_trackers_predict(self) -> None:
        for st in self._streams:
            if not isinstance(st.tracker, PredictingTracker):
                raise ConfigError(
                    f"a detection interval needs a tracker that predicts tracks between "
                    f"detector frames; {type(st.tracker).__name__} of stream "
                    f"{st.source.source_id!r} has no predict()"
                )

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Pipeline:
        """Start every thread and return at once (background runner)."""
        if self._supervisor is not None:
            raise RuntimeError("pipeline already started")
        if self.config.warmup:
            h, w = self.detector.input_hw
            self.detector.infer(np.zeros((self.max_batch, 3, h, w), np.float32))
        if self._scheduler is not None:
            self._check_budget(self._scheduler.latency_budget_ms)
        for sink in self._sinks:
            sink.start()
        self._started_s = time.perf_counter()
        for st in self._streams:
            self._spawn("read", self._read_loop, st, f"read-{st.source.source_id}")
            self._spawn("track", self._track_loop, st, f"track-{st.source.source_id}")
        for i in range(self.inference_workers):
            self._spawn("detect", self._detect_loop, None, f"detect-{i}")
        if self._scheduler is not None:
            self._spawn("schedule", self._schedule_loop, self._scheduler, "scheduler")
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._supervisor.start()
        return self

    def _check_budget(self, budget_ms: float) -> None:
        """Raises ConfigError if the budget is below the model's own latency."""
        self._model_latency_ms = latency_ms = model_latency_ms(self.detector)
        if budget_ms < latency_ms:
            raise ConfigError(
                f"latency budget {budget_ms:g} ms is below the model's own latency "
                f"({latency_ms:.1f} ms for one frame on this machine): no schedule can meet "
                "it; raise the budget or use a faster model"
            )

    def _spawn(self, stage: str, fn: Callable[..., None], arg: Any, name: str) -> None:
        t = threading.Thread(target=fn, args=() if arg is None else (arg,), name=name, daemon=True)
        t.start()
        self._threads.setdefault(stage, []).append(t)

    def stop(self, drain: bool = True) -> None:
        """Stop reading sources.

        With ``drain`` the frames already queued are processed where the queue's policy is
        ``BLOCK`` and dropped (counted) where it is a drop policy; without it every queued
        frame is dropped and counted. Sinks still flush and close.
        """
        self._stop_sources.set()
        for st in self._streams:
            if not drain or st.queue.policy is not DropPolicy.BLOCK:
                st.queue.discard_pending()
        if not drain:
            self._abort.set()
            for st in self._streams:
                st.post.discard_pending()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every frame is accounted for and sinks are closed; True if finished."""
        return self._finished.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def run(self) -> PipelineStats:
        """Run to the end of every source (blocking) and return the final stats."""
        self.start()
        try:
            while not self.join(0.2):
                pass
        except KeyboardInterrupt:
            self.stop(drain=True)
            self.join()
        return self.stats()

    def swap_detector(self, detector: StagedDetector, *, warmup: bool = True) -> float:
        """Swap in another detector while the pipeline runs (a new model version).

        The new detector is warmed up first (one batch of zeros, in the calling thread,
        while the old one keeps serving), then takes over from the next frame read. Frames
        already preprocessed finish on the detector that preprocessed them (inference and
        decoding), so none is dropped or decoded with the wrong model's layout; trackers,
        enrichers and sinks are untouched, so track ids carry on. The old detector is
        released once its last frame is through. Safe to call from any thread.

        Returns:
            Seconds the warm-up took.

        Raises:
            ConfigError: the new detector takes smaller batches than the pipeline forms.
        """
        if detector.max_batch < self.max_batch:
            raise ConfigError(
                f"the new detector takes batches of up to {detector.max_batch}; this pipeline "
                f"forms batches of {self.max_batch}"
            )
        started = time.perf_counter()
        if warmup:
            h, w = detector.input_hw
            detector.infer(np.zeros((self.max_batch, 3, h, w), np.float32))
        warm_s = time.perf_counter() - started
        with self._swap_lock:
            self.detector = detector
            self._swaps += 1
        log.info("detector swapped (warm-up %.0f ms); %d swaps so far", warm_s * 1e3, self._swaps)
        return warm_s

    def __iter__(self) -> Iterator[FrameResult]:
        return self.results()

    def results(self) -> Iterator[FrameResult]:
        """Start the pipeline and yield results as they are produced (per stream in order).

        Leaving the loop early stops the pipeline and drops what is still queued.
        """
        if self._supervisor is not None:
            raise RuntimeError("iterate a pipeline before starting it, not after")
        results: BoundedQueue[FrameResult] = BoundedQueue(
            self.config.result_queue_size, DropPolicy.BLOCK
        )
        self._results = results
        self.start()
        completed = False
        try:
            while True:
                try:
                    yield results.get()
                except QueueClosed:
                    completed = True
                    return
        finally:
            if not completed:
                self.stop(drain=False)
                results.discard_pending()
                results.close()
                self.join()

    # ----------------------------------------------------------------- stages
    def _read_loop(self, st: _Stream) -> None:
        src = st.source
        try:
            for frame in src.frames(self._stop_sources):
                if st.started_s is None:
                    st.started_s = time.perf_counter()
                st.frames_in += 1
                if self._intervals and self._skip_detector(st):
                    self._put_predicted(st, frame)
                    continue
                t0 = time.perf_counter()
                detector = self.detector  # one model per frame, even across a swap
                if self._router is not None:
                    detector = self._router(src, frame) or detector
                try:
                    tensor, meta = detector.preprocess(frame.image)
                except Exception as exc:  # one bad frame fails, not the whole stream
                    st.failed += 1
                    log.error(
                        "preprocessing failed on %s frame %d: %s", src.source_id, frame.index, exc
                    )
                    continue
                t1 = time.perf_counter()
                item = _Pending(
                    frame, tensor, meta, t1, {"preprocess": (t1 - t0) * 1e3}, detector=detector
                )
                # A BLOCK queue waits for space until the pipeline is aborted; a frame
                # decoded while draining is still processed.
                if not self._intervals:
                    st.queue.put(item, self._abort)
                    continue
                with self._batch_cond:  # a dropped detector frame may uncover predicted ones
                    st.queue.put(item, self._abort)
                    ready = self._take_predicted(st)
                for ahead in ready:
                    st.post.put(ahead, self._abort)
        except TapetumError as exc:
            st.error = str(exc)
            log.error("%s", exc)
        except Exception as exc:  # a reader must never take the pipeline down
            st.error = f"{type(exc).__name__}: {exc}"
            log.exception("source %s failed", src.source_id)
        finally:
            st.queue.close()

    def _skip_detector(self, st: _Stream) -> bool:
        """Whether the frame just read goes to the tracker alone (the stream's interval).

        A stream at interval k takes the frames whose ordinal (0 for its first) plus its
        phase is a multiple of k, so that streams at the same interval (cameras started
        together, raised on the same tick) spread their detector frames over the k frame
        times instead of asking for them all at once: the detector sees an even load and
        small batches.
        The first frame always goes to the detector, and after a change of interval the
        gap is never longer than the larger of the two intervals.
        """
        k = st.interval
        if st.since_detect < 0 or k <= 1 or (st.frames_in - 1 + st.phase) % k == 0:
            st.since_detect = 0
            return False
        if st.since_detect + 1 >= k:  # the phase did not come round in time
            st.since_detect = 0
            return False
        st.since_detect += 1
        return True

    def _put_predicted(self, st: _Stream, frame: Frame) -> None:
        """Queue a frame the detector skips behind the stream's detector frames; it leaves
        for the tracker at once if none is waiting (else when the one before it is taken
        for inference, :meth:`_take_stream`)."""
        now = time.perf_counter()
        item = _Pending(frame, None, None, now, {}, predicted=True)
        with self._batch_cond:
            st.queue.put(item, self._abort)
            ready = self._take_predicted(st)
        for ahead in ready:
            st.post.put(ahead, self._abort)

    def _take_predicted(self, st: _Stream) -> list[_Pending]:
        """The predicted frames at the head of the stream's queue, numbered in frame order
        (caller holds the batch lock)."""
        ready = st.queue.take_while(_is_predicted)
        for item in ready:
            item.seq = st.next_seq
            st.next_seq += 1
        return ready

    def _take_stream(self, st: _Stream, forward: list[tuple[_Stream, _Pending]]) -> _Pending | None:
        """The stream's next detector frame, numbered; the predicted frames around it go
        to ``forward`` (caller holds the batch lock)."""
        forward.extend((st, p) for p in self._take_predicted(st))
        item = st.queue.get_nowait()
        if item is None:
            return None
        item.seq = st.next_seq  # under the batch lock: seqs follow frame order
        st.next_seq += 1
        forward.extend((st, p) for p in self._take_predicted(st))
        return item

    def _take_round_robin(
        self, batch: list[tuple[_Stream, _Pending]], forward: list[tuple[_Stream, _Pending]]
    ) -> bool:
        """Move at most one frame per stream into ``batch``; True if anything moved."""
        n = len(self._streams)
        moved = False
        for k in range(n):
            if len(batch) >= self.max_batch:
                break
            st = self._streams[(self._rr + k) % n]
            item = self._take_stream(st, forward)
            if item is not None:
                batch.append((st, item))
                moved = True
        self._rr = (self._rr + 1) % n
        return moved

    def _collect_batch(
        self, forward: list[tuple[_Stream, _Pending]]
    ) -> list[tuple[_Stream, _Pending]] | None:
        """Wait for the next batch; None once every source queue is closed and empty.
        Predicted frames met on the way are appended to ``forward``."""
        batch: list[tuple[_Stream, _Pending]] = []
        with self._batch_cond:
            while not self._take_round_robin(batch, forward):
                if all(st.queue.closed and len(st.queue) == 0 for st in self._streams):
                    return None
                if forward:  # hand them over before waiting
                    return batch
                self._batch_cond.wait(0.1)
            deadline = time.perf_counter() + self.config.max_wait_ms / 1e3
            while len(batch) < self.max_batch:
                if self._take_round_robin(batch, forward):
                    continue
                if all(st.queue.closed for st in self._streams):
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._batch_cond.wait(remaining)
        return batch

    def _detect_loop(self) -> None:
        buffers: dict[tuple[int, int], npt.NDArray[np.float32]] = {}
        forward: list[tuple[_Stream, _Pending]] = []
        while True:
            batch = self._collect_batch(forward)
            for st, item in forward:  # predicted frames: straight to their tracker
                st.post.put(item, self._abort)
            forward.clear()
            if batch is None:
                return
            if batch:
                for group in self._by_detector(batch):
                    self._infer_batch(group, buffers)

    def _by_detector(
        self, batch: list[tuple[_Stream, _Pending]]
    ) -> list[list[tuple[_Stream, _Pending]]]:
        """The batch split by the detector that preprocessed each frame: one group, except
        for the few batches that straddle a :meth:`swap_detector`."""
        first = batch[0][1].detector
        if all(item.detector is first for _, item in batch):
            return [batch]
        groups: dict[int, list[tuple[_Stream, _Pending]]] = {}
        for st, item in batch:
            groups.setdefault(id(item.detector), []).append((st, item))
        return list(groups.values())

    def _infer_batch(
        self,
        batch: list[tuple[_Stream, _Pending]],
        buffers: dict[tuple[int, int], npt.NDArray[np.float32]],
    ) -> None:
        detector = batch[0][1].detector or self.detector
        n = len(batch)
        buf = buffers.get(detector.input_hw)
        if buf is None:  # first batch, or a swapped-in model of another input size
            buf = np.empty((self.max_batch, 3, *detector.input_hw), np.float32)
            buffers[detector.input_hw] = buf
        for i, (_, item) in enumerate(batch):
            assert item.tensor is not None  # detector frames carry their input
            buf[i] = item.tensor
        if self._taps:
            tapped = [
                TappedFrame(item.frame, item.tensor, item.meta, item.seq)
                for _, item in batch
                if item.tensor is not None and item.meta is not None
            ]
            for tap in self._taps:
                tap(tapped, detector)
        t0 = time.perf_counter()
        try:
            raw = detector.infer(buf[:n])
        except Exception as exc:
            log.error("inference failed on a batch of %d: %s", n, exc)
            for st, item in batch:  # still delivered, so the reorder never stalls
                item.failed = True
                st.post.put(item, self._abort)
            return
        t1 = time.perf_counter()
        with self._count_lock:
            self._batches += 1
            self._infer_busy_s += t1 - t0
        infer_ms = (t1 - t0) * 1e3
        for i, (st, item) in enumerate(batch):
            item.raw = raw[i]
            item.timings_ms["queue_wait"] = (t0 - item.ready_s) * 1e3
            item.timings_ms["infer"] = infer_ms
            st.post.put(item, self._abort)

    def _in_order(self, st: _Stream) -> Iterator[_Pending]:
        """Items of one stream in inference order, whichever worker finished them first.

        A gap (an item discarded on abort) is skipped once the post queue closes.
        """
        pending: list[tuple[int, _Pending]] = []
        expected = 0
        while True:
            try:
                item = st.post.get()
            except QueueClosed:
                break
            heapq.heappush(pending, (item.seq, item))
            while pending and pending[0][0] == expected:
                expected += 1
                yield heapq.heappop(pending)[1]
        while pending:
            yield heapq.heappop(pending)[1]

    def _track_loop(self, st: _Stream) -> None:
        for item in self._in_order(st):
            if item.predicted:
                self._track_predicted(st, item)
                continue
            if item.failed or item.raw is None or item.meta is None:
                st.failed += 1
                continue
            detector = item.detector or self.detector
            try:
                t0 = time.perf_counter()
                detections = detector.postprocess(item.raw, item.meta)
                t1 = time.perf_counter()
                tracked = st.tracker.update(detections, item.frame)
                if self._intervals:
                    self._mark(st, item.frame, tracked, detections)
                for enrich in st.enrichers:
                    tracked = enrich(item.frame, tracked)
                t2 = time.perf_counter()
            except Exception as exc:
                st.failed += 1
                log.error(
                    "post-processing or tracking failed on %s frame %d: %s",
                    st.source.source_id,
                    item.frame.index,
                    exc,
                )
                continue
            timings = item.timings_ms
            timings["postprocess"] = (t1 - t0) * 1e3
            timings["track"] = (t2 - t1) * 1e3
            timings["end_to_end"] = (t2 - item.frame.arrival_s) * 1e3
            for stage in STAGES:
                self.timers.add_ms(stage, timings[stage])
            st.detector_frames += 1
            self._deliver(st, FrameResult(item.frame, tracked, detector.class_names, timings), t2)

    def _track_predicted(self, st: _Stream, item: _Pending) -> None:
        """A frame the detector skipped: the tracker's motion model alone."""
        try:
            t0 = time.perf_counter()
            tracker = st.tracker
            assert isinstance(tracker, PredictingTracker)  # checked when built
            tracked = tracker.predict(item.frame)
            self._mark(st, item.frame, tracked, None)
            for enrich in st.enrichers:
                tracked = enrich(item.frame, tracked)
            t1 = time.perf_counter()
        except Exception as exc:
            st.failed += 1
            log.error(
                "prediction failed on %s frame %d: %s", st.source.source_id, item.frame.index, exc
            )
            return
        timings = item.timings_ms
        timings["predict"] = (t1 - t0) * 1e3
        timings["end_to_end"] = (t1 - item.frame.arrival_s) * 1e3
        for stage in ("predict", "end_to_end"):
            self.timers.add_ms(stage, timings[stage])
        st.tracker_frames += 1
        names = self.detector.class_names
        self._deliver(st, FrameResult(item.frame, tracked, names, timings, predicted=True), t1)

    @staticmethod
    def _mark(
        st: _Stream, frame: Frame, tracked: Detections, detections: Detections | None
    ) -> None:
        """Flag each track as predicted (``detections`` None: the detector skipped the
        frame) or detected, and show the frame to the monitor."""
        detected = detections is not None
        tracked.data["predicted"] = np.full(len(tracked), not detected)
        st.monitor.observe(frame.index, tracked, detected, frame.width, detections)

    def _deliver(self, st: _Stream, result: FrameResult, done_s: float) -> None:
        st.processed += 1
        st.last_result_s = done_s
        st.latency.add_ms(result.timings_ms["end_to_end"])
        for sink in self._sinks:
            sink.submit(result, self._abort)
        if self._results is not None:
            self._results.put(result, self._abort)

    # ----------------------------------------------------------------- scheduler
    def _schedule_loop(self, config: SchedulerConfig) -> None:
        """Every tick: observe each stream, let the policy set the intervals, count."""
        policy = IntervalPolicy(config)
        calm, ceiling = 0, None
        last_s, last_busy_s = time.perf_counter(), 0.0
        while not self._finished.wait(config.tick_s):
            now = time.perf_counter()
            with self._count_lock:
                busy_s = self._infer_busy_s
            utilisation = (busy_s - last_busy_s) / ((now - last_s) * self.inference_workers)
            seen = {
                st.source.source_id: self._observe(st, config, now - last_s) for st in self._streams
            }
            last_s, last_busy_s = now, busy_s
            decision = policy.decide(seen, calm, min(1.0, utilisation), ceiling)
            log.debug(
                "scheduler tick: load %.2f (%s), detector utilisation %.2f, ceiling %s, "
                "intervals %s",
                decision.load,
                decision.state.value,
                utilisation,
                f"{decision.ceiling:.1f}/s" if decision.ceiling is not None else "none",
                decision.intervals,
            )
            calm, ceiling = decision.calm_ticks, decision.ceiling
            self._ceiling = ceiling
            with self._count_lock:
                state = "saturated" if decision.saturated else decision.state.value
                self._ticks[state] = self._ticks.get(state, 0) + 1
            by_id = {st.source.source_id: st for st in self._streams}
            for change in decision.changes:
                st = by_id[change.stream]
                st.interval = change.new
                st.interval_max = max(st.interval_max, change.new)
                st.interval_changes[change.reason] = st.interval_changes.get(change.reason, 0) + 1
                log.info(
                    "stream %s: detection interval %d → %d (%s, load %.2f)",
                    change.stream,
                    change.old,
                    change.new,
                    change.reason,
                    decision.load,
                )

    def _observe(self, st: _Stream, config: SchedulerConfig, tick_s: float) -> StreamObservation:
        """One stream as the policy sees it now, ``tick_s`` after the last look."""
        fresh = st.latency.count - st.latency_seen
        st.latency_seen = st.latency.count
        frames_in = st.frames_in
        fps = (frames_in - st.frames_in_seen) / tick_s if tick_s > 0 else float("nan")
        st.frames_in_seen = frames_in
        detected = st.detector_frames
        detector_fps = (detected - st.detector_frames_seen) / tick_s if tick_s > 0 else float("nan")
        st.detector_frames_seen = detected
        p95 = st.latency.summary(min(fresh, 1024)).p95_ms if fresh else float("nan")
        oldest = st.queue.peek()
        age_ms = (time.perf_counter() - oldest.frame.arrival_s) * 1e3 if oldest else 0.0
        return StreamObservation(
            interval=st.interval,
            latency_p95_ms=p95,
            queue_age_ms=age_ms,
            motion_rate=st.monitor.motion_rate,
            entering=st.monitor.entering,
            priority=config.priorities.get(st.source.source_id, Priority.NORMAL),
            fps=fps,
            detector_fps=detector_fps,
        )

    def scheduler_summary(self) -> dict[str, Any] | None:
        """What the scheduler did: ticks by load, interval changes by reason, and which
        streams it degraded (detector share below 1); None without a scheduler."""
        cfg = self._scheduler
        if cfg is None:
            return None
        changes: dict[str, int] = {}
        degraded = []
        for st in self._streams:
            for reason, n in st.interval_changes.items():
                changes[reason] = changes.get(reason, 0) + n
            done = st.detector_frames + st.tracker_frames
            if st.tracker_frames:
                degraded.append(
                    {
                        "source_id": st.source.source_id,
                        "detector_share": round(st.detector_frames / done, 4),
                        "interval_max": st.interval_max,
                        "interval_now": st.interval,
                    }
                )
        with self._count_lock:
            ticks = dict(self._ticks)
        return {
            "latency_budget_ms": cfg.latency_budget_ms,
            "max_interval": cfg.max_interval,
            "model_latency_ms": (
                round(self._model_latency_ms, 2) if self._model_latency_ms is not None else None
            ),
            "ticks": ticks,
            "detector_ceiling_fps": (
                round(self._ceiling, 1) if self._ceiling is not None else None
            ),
            "interval_changes": changes,
            "degraded": degraded,
        }

    def _supervise(self) -> None:
        """Shut stages down in data order: readers, inference, tracking, sinks."""
        for stage in ("read", "detect", "track"):
            for t in self._threads[stage]:
                t.join()
            if stage == "detect":
                for st in self._streams:
                    st.post.close()
        drain = not self._abort.is_set()
        for sink in self._sinks:
            sink.close(drain=drain)
        self._finished_s = time.perf_counter()
        if self._results is not None:
            self._results.close()
        self._finished.set()

    # ----------------------------------------------------------------- stats
    def stats(self) -> PipelineStats:
        """A consistent-enough snapshot, cheap to call from a progress bar."""
        now = self._finished_s or time.perf_counter()
        streams = []
        for st in self._streams:
            s = st.source.stats
            active = (st.last_result_s or now) - (st.started_s or now)
            dropped = st.queue.dropped + st.post.dropped
            streams.append(
                StreamStats(
                    source_id=st.source.source_id,
                    is_live=st.source.is_live,
                    frames_read=s.frames_decoded,
                    frames_processed=st.processed,
                    frames_dropped=dropped,
                    frames_failed=st.failed,
                    frames_corrupt=s.frames_corrupt,
                    reconnects=s.reconnects,
                    fps=st.processed / active if active > 0 else 0.0,
                    error=st.error,
                    detector_frames=st.detector_frames,
                    tracker_frames=st.tracker_frames,
                    interval=st.interval,
                    interval_max=st.interval_max,
                    interval_changes=dict(st.interval_changes),
                )
            )
        return PipelineStats(
            streams=tuple(streams),
            elapsed_s=now - (self._started_s or now),
            latency_ms=self.timers.summaries(),
            sink_dropped={s.name: s.dropped for s in self._sinks},
            sink_errors={s.name: s.errors for s in self._sinks},
            sink_written={s.name: s.written for s in self._sinks},
            sink_failures={
                s.name: failure
                for s in self._sinks
                if (failure := s.first_error or s.close_error) is not None
            },
            batches=self._batches,
            finished=self._finished.is_set(),
            detector_swaps=self._swaps,
            scheduler=self.scheduler_summary(),
        )

    def recent_latency_ms(self, stage: str = "end_to_end", last: int = 300) -> LatencySummary:
        """Percentiles over the most recent ``last`` frames (for live progress displays)."""
        return self.timers.recorder(stage).summary(last)

    def queue_depths(self) -> dict[str, dict[str, int]]:
        """Frames waiting now in each stream's queues: ``{source_id: {"source": n,
        "post": n}}`` (decoded, before inference; inferred, before tracking). For
        monitoring: lock-free reads, never blocks the pipeline."""
        return {
            st.source.source_id: {"source": len(st.queue), "post": len(st.post)}
            for st in self._streams
        }

    def sink_queue_depths(self) -> dict[str, int]:
        """Results waiting now for each sink, by sink name."""
        return {sink.name: len(sink.queue) for sink in self._sinks}

    def state_sizes(self) -> dict[str, dict[str, int]]:
        """Entries of per-track state held now (:class:`~tapetum.pipeline.hooks.StateSized`)
        by each stream's tracker and enrichers, by source id: ``{"cam1": {"tracker_tracks":
        14, "forecast_tracks": 14}}``. On a long run every number should stay level: the
        stages drop the state of tracks that ended. Lock-free reads, for monitoring."""
        sizes = {
            st.source.source_id: state_sizes_of((st.tracker, *st.enrichers)) for st in self._streams
        }
        return {source: held for source, held in sizes.items() if held}

    def sink_state_sizes(self) -> dict[str, dict[str, int]]:
        """The same for the sinks that keep per-track state, by sink name
        (``{"1-AnnotatedVideoSink": {"trail_points": 310}}``)."""
        sizes = {sink.name: state_sizes_of((sink.sink,)) for sink in self._sinks}
        return {name: held for name, held in sizes.items() if held}
