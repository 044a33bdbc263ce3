"""One classifier shared by every stream, on a worker thread of its own.

Streams hand the service :class:`CropJob` s: one frame's crops, already cut and fitted on
the stream's thread (uint8, the model's input size; the frame itself is not kept). The
worker takes every job waiting, up to ``max_batch`` crops, normalises them into one
preallocated float32 batch, makes one model call, maps the probabilities to labels and
hands each job its rows::

    tracker[s] ── CropJob ──┐                                     ┌─→ inbox[s] (async)
    tracker[t] ── CropJob ──┴─→ bounded queue ──→ worker (1 call) ─┴─→ waiter  (sync)
                               (queue_crops crops)

An *asynchronous* job (DeepStream's ``classifier-async-mode``) is not waited for: its
answer goes to the stream's inbox, and the stream's enricher counts it on its next frame.
When the queue is full, the ``policy`` decides: ``DROP_OLDEST`` (live streams; default)
drops the oldest asynchronous job, ``DROP_NEWEST`` the new one (their crops counted in
``crops_dropped``), ``BLOCK`` (files: nothing lost) makes the stream wait for room. A
synchronous job is never dropped (its stream waits for it, which is back-pressure
enough). :meth:`ClassifierService.drain` waits until every queued crop has been answered
(the end of a stream, tests); :meth:`~ClassifierService.close` drains, then stops the
worker.

Every crop handed in is accounted for::

    crops_submitted = crops_classified + crops_dropped + failed_crops + crops_pending

Example:
    >>> service = ClassifierService(OnnxClassifier("cls.onnx"))          # doctest: +SKIP
    >>> probs, valid = service.classify(image, boxes)                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tapetum._types import BoolArray, Float32Array, IntArray, UInt8Array
from tapetum.classify.crops import cut_crops, normalize_batch
from tapetum.classify.labels import LabelMap
from tapetum.classify.spec import ClassifierSpec
from tapetum.errors import ClassifierError, ConfigError
from tapetum.pipeline.queues import DropPolicy

log = logging.getLogger(__name__)

__all__ = ["ClassifierService", "ClassifyStats", "CropClassifier", "CropJob", "JobOutcome"]


class CropClassifier(Protocol):
    """What the service needs of a classifier (``OnnxClassifier``, or a scripted one)."""

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def spec(self) -> ClassifierSpec: ...

    def predict(self, tensor: Float32Array) -> Float32Array: ...


class JobOutcome:
    """What became of a :class:`CropJob` (plain strings, for logs and tests)."""

    PENDING = "pending"
    DONE = "done"
    DROPPED = "dropped"
    FAILED = "failed"


@dataclass(slots=True, eq=False)
class CropJob:
    """One frame's crops of one stream, on their way through the classifier.

    Attributes:
        pixels: (M, H, W, 3) uint8 BGR crops at the model's input size.
        track_ids: (M,) the track of each crop.
        frame_index: the frame the crops were cut from.
        asynchronous: the stream does not wait (the job may be dropped when the queue is
            full, and its answer goes to ``inbox``).
        inbox: where the finished job is appended (the stream's enricher reads it).
        context: anything the submitter wants back with the answer (e.g. the frame for an
            observer).
        probs: (M, L) label probabilities once ``outcome`` is done.
        outcome: a :class:`JobOutcome` value.
        error: the model's error when the call failed.
        submitted_s: ``time.perf_counter()`` at submission.
    """

    pixels: UInt8Array
    track_ids: IntArray
    frame_index: int
    asynchronous: bool = False
    inbox: deque[CropJob] | None = None
    context: object = None
    probs: Float32Array | None = None
    outcome: str = JobOutcome.PENDING
    error: str | None = None
    submitted_s: float = 0.0
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def size(self) -> int:
        return int(self.pixels.shape[0])


#: Counter names of :class:`ClassifyStats`, in report order.
_COUNTERS = (
    "crops_submitted",
    "crops_classified",
    "crops_dropped",
    "crops_skipped",
    "calls",
    "failed_calls",
    "failed_crops",
    "queue_high_water_crops",
    "results_applied",
    "result_lag_frames_total",
    "result_lag_frames_max",
)


@dataclass(slots=True)
class ClassifyStats:
    """Counters of a service, all streams together.

    Attributes:
        crops_submitted: crops handed to the worker.
        crops_classified: crops that went through the model.
        crops_dropped: crops of asynchronous jobs dropped (oldest first) from a full queue.
        crops_skipped: boxes due for classification that could not be cropped (outside
            the frame, zero size, not finite).
        calls: model calls (each may hold several frames' and streams' crops).
        failed_calls / failed_crops: model calls that raised, and the crops they held.
        queue_high_water_crops: most crops waiting at once.
        results_applied: answers counted into a track's vote.
        result_lag_frames_total / _max: frames between a crop's frame and the frame its
            answer was counted on (0 when synchronous; the label's delay when not).
    """

    crops_submitted: int = 0
    crops_classified: int = 0
    crops_dropped: int = 0
    crops_skipped: int = 0
    calls: int = 0
    failed_calls: int = 0
    failed_crops: int = 0
    queue_high_water_crops: int = 0
    results_applied: int = 0
    result_lag_frames_total: int = 0
    result_lag_frames_max: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {name: int(getattr(self, name)) for name in _COUNTERS}

    def count_lag(self, results: int, lag_frames: int) -> None:
        """``results`` answers counted ``lag_frames`` frames after their crops' frame."""
        with self.lock:
            self.results_applied += results
            self.result_lag_frames_total += results * lag_frames
            self.result_lag_frames_max = max(self.result_lag_frames_max, lag_frames)


class ClassifierService:
    """One classifier shared by every stream; label-space probabilities out (see the
    module docstring).

    Args:
        classifier: the model (its ``spec`` says how to cut crops).
        label_map: classes → labels; None keeps the classifier's own classes.
        max_batch: most crops in one model call (on one CPU thread a crop costs the same in
            a batch of 8 as of 32: bigger calls only delay answers).
        queue_crops: most crops waiting (the policy applies beyond): it bounds how late an
            asynchronous label can be when the classifier falls behind (about
            ``queue_crops`` / crops per frame frames).
        max_wait_ms: how long the worker waits after the first job for more crops to join
            its call (0: take what is queued; jobs that arrive during a call join the next).
        policy: what a full queue does with an asynchronous job (see the module docstring).

    Raises:
        ConfigError: the label map does not fit the classifier, or a bad size.
    """

    def __init__(
        self,
        classifier: CropClassifier,
        label_map: LabelMap | None = None,
        *,
        max_batch: int = 16,
        queue_crops: int = 32,
        max_wait_ms: float = 0.0,
        policy: DropPolicy = DropPolicy.DROP_OLDEST,
    ) -> None:
        if label_map is not None and label_map.matrix.shape[0] != len(classifier.class_names):
            raise ConfigError(
                f"the label map covers {label_map.matrix.shape[0]} classes, the classifier "
                f"has {len(classifier.class_names)}"
            )
        if max_batch < 1 or queue_crops < 1 or max_wait_ms < 0:
            raise ConfigError(
                f"classifier service: max_batch and queue_crops must be ≥ 1 and max_wait_ms "
                f"≥ 0, got {max_batch}, {queue_crops}, {max_wait_ms}"
            )
        self.classifier = classifier
        self.spec = classifier.spec
        self.label_map = label_map
        self.labels: tuple[str, ...] = (
            label_map.labels if label_map is not None else tuple(classifier.class_names)
        )
        self.max_batch = max_batch
        self.queue_crops = queue_crops
        self.max_wait_s = max_wait_ms / 1e3
        self.policy = policy
        self.stats = ClassifyStats()
        self._queue: deque[CropJob] = deque()
        self._queued_crops = 0
        self._in_flight = 0
        self._closing = False
        self._cond = threading.Condition()
        self._batch = np.empty((0, 3, *self.spec.input_hw), np.float32)
        self._thread = threading.Thread(target=self._work, name="classify", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producers
    def cut(self, image: UInt8Array, xyxy: Float32Array) -> tuple[UInt8Array, BoolArray]:
        """Cut the crops of ``xyxy`` (N, 4) from ``image``: (M, H, W, 3) uint8 and the (N,)
        mask of the boxes that could be cropped (the others are counted as skipped)."""
        cut = cut_crops(image, np.asarray(xyxy, np.float32), self.spec)
        if cut.skipped:
            with self.stats.lock:
                self.stats.crops_skipped += cut.skipped
        return cut.pixels, cut.valid

    def submit(self, job: CropJob) -> CropJob:
        """Queue ``job`` (an empty one is done at once); for an asynchronous job, drop the
        oldest asynchronous jobs while the queue would hold more than ``queue_crops``.

        Raises:
            ConfigError: the service is closed.
        """
        job.submitted_s = time.perf_counter()
        if job.size == 0:
            job.probs = np.empty((0, len(self.labels)), np.float32)
            self._finish(job, JobOutcome.DONE)
            return job
        dropped: list[CropJob] = []
        with self._cond:
            if self._closing:
                raise ConfigError("the classifier service is closed")
            if job.asynchronous and self._full(job.size):
                if self.policy is DropPolicy.BLOCK:
                    self._cond.wait_for(lambda: not self._full(job.size) or self._closing)
                    if self._closing:
                        raise ConfigError("the classifier service is closed")
                elif self.policy is DropPolicy.DROP_OLDEST:
                    dropped = self._make_room(job.size)
                else:
                    dropped = [job]
            if dropped and dropped[-1] is job:
                with self.stats.lock:
                    self.stats.crops_submitted += job.size
                    self.stats.crops_dropped += job.size
                self._finish(job, JobOutcome.DROPPED)
                return job
            self._queue.append(job)
            self._queued_crops += job.size
            with self.stats.lock:
                self.stats.crops_submitted += job.size
                self.stats.crops_dropped += sum(d.size for d in dropped)
                self.stats.queue_high_water_crops = max(
                    self.stats.queue_high_water_crops, self._queued_crops
                )
            self._cond.notify_all()
        for old in dropped:
            self._finish(old, JobOutcome.DROPPED)
        return job

    def _full(self, incoming: int) -> bool:
        """No room for ``incoming`` more crops (a queue holding nothing always has room).
        Lock held."""
        return bool(self._queue) and self._queued_crops + incoming > self.queue_crops

    def _make_room(self, incoming: int) -> list[CropJob]:
        """Remove the oldest asynchronous jobs until ``incoming`` more crops fit (or none
        are left to remove). Called with the lock held."""
        dropped: list[CropJob] = []
        while self._queued_crops + incoming > self.queue_crops:
            oldest = next((j for j in self._queue if j.asynchronous), None)
            if oldest is None:
                break
            self._queue.remove(oldest)
            self._queued_crops -= oldest.size
            dropped.append(oldest)
        return dropped

    def classify(self, image: UInt8Array, xyxy: Float32Array) -> tuple[Float32Array, BoolArray]:
        """Label probabilities (M, L) of the boxes of ``xyxy`` that could be cropped, and
        the (N,) mask of which, waiting for the answer.

        Raises:
            ClassifierError: the model call failed (its error in the message).
        """
        pixels, valid = self.cut(image, xyxy)
        job = self.submit(CropJob(pixels, np.flatnonzero(valid), -1))
        job.done.wait()
        if job.outcome != JobOutcome.DONE or job.probs is None:
            raise ClassifierError(f"classification of {job.size} crops failed: {job.error}")
        return job.probs, valid

    # --------------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing and drained
                if self.max_wait_s and self._queued_crops < self.max_batch and not self._closing:
                    self._cond.wait_for(
                        lambda: self._queued_crops >= self.max_batch or self._closing,
                        self.max_wait_s,
                    )
                jobs = self._take()
            self._run(jobs)
            with self._cond:
                self._in_flight -= sum(j.size for j in jobs)
                self._cond.notify_all()

    def _take(self) -> list[CropJob]:
        """The oldest jobs, up to ``max_batch`` crops (at least one job). Lock held."""
        jobs = [self._queue.popleft()]
        total = jobs[0].size
        while self._queue and total + self._queue[0].size <= self.max_batch:
            jobs.append(self._queue.popleft())
            total += jobs[-1].size
        self._queued_crops -= total
        self._in_flight += total
        self._cond.notify_all()  # room for producers waiting under BLOCK
        return jobs

    def _run(self, jobs: list[CropJob]) -> None:
        """Normalise the jobs' crops into the reused batch, one model call, rows back."""
        sizes = [j.size for j in jobs]
        n = sum(sizes)
        if self._batch.shape[0] < n:
            self._batch = np.empty((max(n, self.max_batch), *self._batch.shape[1:]), np.float32)
        offset = 0
        for job in jobs:
            normalize_batch(job.pixels, self.spec, out=self._batch[offset : offset + job.size])
            offset += job.size
        try:
            probs = self.classifier.predict(self._batch[:n])
            if self.label_map is not None:
                probs = self.label_map.project(probs)
        except Exception as exc:
            log.warning("classification failed (%d crops, %d frames): %s", n, len(jobs), exc)
            with self.stats.lock:
                self.stats.failed_calls += 1
                self.stats.failed_crops += n
            for job in jobs:
                job.error = f"{type(exc).__name__}: {exc}"
                self._finish(job, JobOutcome.FAILED)
            return
        with self.stats.lock:
            self.stats.calls += 1
            self.stats.crops_classified += n
        for job, rows in zip(jobs, np.split(probs, np.cumsum(sizes)[:-1]), strict=True):
            job.probs = rows
            self._finish(job, JobOutcome.DONE)

    @staticmethod
    def _finish(job: CropJob, outcome: str) -> None:
        job.outcome = outcome
        if job.inbox is not None:
            job.inbox.append(job)
        job.done.set()

    # ------------------------------------------------------------------ lifecycle
    @property
    def pending_crops(self) -> int:
        """Crops queued or in the model now."""
        with self._cond:
            return self._queued_crops + self._in_flight

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every crop handed in has been answered (or dropped); False if
        ``timeout_s`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and self._in_flight == 0, timeout_s)

    def close(self) -> None:
        """Answer what is queued, then stop the worker (idempotent)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def __enter__(self) -> ClassifierService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
