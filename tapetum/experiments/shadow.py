"""A shadow variant: sees every frame the control infers, emits nothing, records all.

Fed by the pipeline's batch tap (:mod:`tapetum.pipeline.hooks`) just before the control's
inference, it runs in its own thread so the control's path only pays for a queue put::

    inference worker ──tap (frames + model inputs)──→ [bounded queue] ──→ shadow thread:
        stack the control's tensors (same preprocessing) or letterbox the frames itself
        → its own inference → decode → per-stream reorder → its own tracker → record

When the variant reads the same tensor as the control (same input size and preprocessing)
the frame is neither decoded nor resized again: the shadow costs its inference, decoding
and tracking.

A variant's latency is the one it would deliver in the control's place under the same
load: the frame's wait up to the batch both arms were handed (shared) plus the variant's
own work (its preprocessing when not shared, inference, decoding, tracking). Its wait in
the shadow queue is an artefact of running beside the control, reported apart
(``queue_wait_ms``), not counted.

The queue blocks on files (every frame compared, the run waits for the slower model) and
drops the oldest batch on live sources (the control never waits; drops are counted).
Frames may reach the tap out of order when several inference workers run; they are put
back in each stream's inference order (``seq``) before tracking.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.detect.base import StagedDetector
from tapetum.detect.letterbox import LetterboxMeta
from tapetum.errors import QueueClosed
from tapetum.experiments.agreement import AgreementBook
from tapetum.experiments.arms import LoadedArm
from tapetum.experiments.record import ArmRecorder
from tapetum.pipeline.hooks import TappedFrame
from tapetum.pipeline.queues import BoundedQueue, DropPolicy
from tapetum.track.base import Tracker

__all__ = ["ShadowRunner", "ShadowStats"]

log = logging.getLogger(__name__)

#: Frames a stream's reorder buffer holds before giving up on a missing one (a dropped
#: batch leaves a gap that never fills).
_REORDER_SLACK = 32


@dataclass(slots=True)
class ShadowStats:
    """What a shadow variant did.

    Attributes:
        frames: frames recorded (inferred or failed).
        failed: frames whose inference or decoding failed.
        dropped: frames lost to a full queue (live sources only).
        batches: inference calls.
        shared_input: frames that reused the control's model input.
        skipped_gaps: missing frames the reorder buffer stopped waiting for.
        queue_wait_ms: total time batches waited in the shadow queue (per frame:
            ``queue_wait_ms / frames``).
    """

    frames: int = 0
    failed: int = 0
    dropped: int = 0
    batches: int = 0
    shared_input: int = 0
    skipped_gaps: int = 0
    queue_wait_ms: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "frames": self.frames,
            "failed": self.failed,
            "dropped": self.dropped,
            "batches": self.batches,
            "shared_input": self.shared_input,
            "skipped_gaps": self.skipped_gaps,
            "queue_wait_ms_per_frame": round(self.queue_wait_ms / max(1, self.frames), 3),
        }


@dataclass(order=True, slots=True)
class _Done:
    """A decoded frame waiting for its turn at the tracker."""

    seq: int
    frame: Frame = field(compare=False)
    detections: Detections | None = field(compare=False)
    compute_ms: float = field(compare=False)
    #: when the batch was handed over (the end of the wait both arms share).
    handed_s: float = field(compare=False)


@dataclass(frozen=True, slots=True)
class _Batch:
    handed_s: float
    frames: tuple[TappedFrame, ...]


@dataclass(slots=True)
class _StreamState:
    tracker: Tracker
    expected: int = 0
    pending: list[_Done] = field(default_factory=list)


class ShadowRunner:
    """Runs one variant beside the control (see the module docstring).

    Args:
        arm: the variant.
        control: the control (its preprocessing decides whether tensors are shared).
        recorder: where the variant's results go.
        book: pairs the variant's results with the control's (agreement).
        tracks_path: write the variant's tracks as JSONL here (None: do not).
        queue_size: batches buffered.
        policy: ``BLOCK`` (files) or ``DROP_OLDEST`` (live sources).
    """

    def __init__(
        self,
        arm: LoadedArm,
        control: LoadedArm,
        recorder: ArmRecorder,
        book: AgreementBook,
        *,
        tracks_path: Path | None = None,
        queue_size: int = 8,
        policy: DropPolicy = DropPolicy.BLOCK,
    ) -> None:
        self.arm = arm
        self.shared = arm.shares_input_with(control)
        self.recorder = recorder
        self.book = book
        self.stats = ShadowStats()
        self._queue: BoundedQueue[_Batch] = BoundedQueue(queue_size, policy)
        self._streams: dict[str, _StreamState] = {}
        self._frame_rates: dict[str, float] = {}
        self._tracks_path = tracks_path
        self._out: IO[str] | None = None
        self._thread = threading.Thread(target=self._run, name=f"shadow-{arm.name}", daemon=True)
        self._abort = threading.Event()

    # ------------------------------------------------------------------ hooks
    def tap(self, batch: Sequence[TappedFrame], detector: StagedDetector) -> None:
        """The pipeline's batch tap: hand the batch to the shadow thread."""
        if batch:
            self._queue.put(_Batch(time.perf_counter(), tuple(batch)), self._abort)

    def set_frame_rate(self, source_id: str, fps: float) -> None:
        """The stream's frame rate, for its tracker (30 when never given)."""
        self._frame_rates[source_id] = fps

    # ------------------------------------------------------------------ lifecycle
    def start(self, warmup: bool = True) -> ShadowRunner:
        """Warm the model up (one zero batch) and start the thread."""
        if warmup:
            h, w = self.arm.detector.input_hw
            self.arm.detector.infer(np.zeros((1, 3, h, w), np.float32))
        if self._tracks_path is not None:
            self._tracks_path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self._tracks_path.open("w", encoding="utf-8")
        self._thread.start()
        return self

    def close(self, drain: bool = True, timeout_s: float | None = None) -> ShadowStats:
        """Stop taking batches; with ``drain`` finish those queued (else drop them)."""
        if not drain:
            self._abort.set()
            self._queue.discard_pending()
        self._queue.close()
        self._thread.join(timeout_s)
        if self._out is not None:
            self._out.close()
        self.stats.dropped = self._queue.dropped
        return self.stats

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while True:
            try:
                batch = self._queue.get()
            except QueueClosed:
                break
            self._process(batch)
        for name, state in self._streams.items():  # the run is over: no gap will fill
            self._release(name, state, flush=True)

    def _process(self, handed: _Batch) -> None:
        detector = self.arm.detector
        batch = handed.frames
        t0 = time.perf_counter()
        self.stats.queue_wait_ms += (t0 - handed.handed_s) * 1e3 * len(batch)
        try:
            tensors, metas = self._inputs(batch)
            raw = _infer_chunks(detector, tensors)
        except Exception as exc:
            log.error(
                "shadow %s: inference failed on a batch of %d: %s", self.arm.name, len(batch), exc
            )
            for item in batch:
                self._queue_done(item, None, 0.0, handed.handed_s)
            return
        infer_ms = (time.perf_counter() - t0) * 1e3
        self.stats.batches += 1
        for i, item in enumerate(batch):
            t1 = time.perf_counter()
            try:
                detections: Detections | None = detector.postprocess(raw[i], metas[i])
            except Exception as exc:
                log.error("shadow %s: decoding failed: %s", self.arm.name, exc)
                detections = None
            ms = infer_ms + (time.perf_counter() - t1) * 1e3
            self._queue_done(item, detections, ms, handed.handed_s)

    def _inputs(
        self, batch: tuple[TappedFrame, ...]
    ) -> tuple[npt.NDArray[np.float32], list[LetterboxMeta]]:
        if self.shared:
            self.stats.shared_input += len(batch)
            return np.stack([item.tensor for item in batch]), [item.meta for item in batch]
        prepared = [self.arm.detector.preprocess(item.frame.image) for item in batch]
        return np.stack([t for t, _ in prepared]), [m for _, m in prepared]

    def _queue_done(
        self, item: TappedFrame, detections: Detections | None, ms: float, handed_s: float
    ) -> None:
        source_id = item.frame.source_id
        state = self._streams.get(source_id)
        if state is None:
            tracker = self.arm.make_tracker(self._frame_rates.get(source_id, 30.0))
            state = self._streams[source_id] = _StreamState(tracker)
        heapq.heappush(state.pending, _Done(item.seq, item.frame, detections, ms, handed_s))
        self._release(source_id, state)

    def _release(self, source_id: str, state: _StreamState, *, flush: bool = False) -> None:
        """Track the frames that are next in the stream's order."""
        pending = state.pending
        while pending:
            head = pending[0]
            if head.seq < state.expected:  # a late frame after a skipped gap: too late
                heapq.heappop(pending)
                continue
            if head.seq != state.expected:
                if not flush and len(pending) <= _REORDER_SLACK:
                    return
                self.stats.skipped_gaps += head.seq - state.expected
                state.expected = head.seq
            heapq.heappop(pending)
            state.expected += 1
            self._track(state, head)

    def _track(self, state: _StreamState, done: _Done) -> None:
        frame = done.frame
        tracked: Detections | None = None
        t0 = time.perf_counter()
        if done.detections is not None:
            try:
                tracked = state.tracker.update(done.detections, frame)
            except Exception as exc:
                log.error("shadow %s: tracking failed: %s", self.arm.name, exc)
        finished = time.perf_counter()
        compute_ms = done.compute_ms + (finished - t0) * 1e3
        latency_ms = (done.handed_s - frame.arrival_s) * 1e3 + compute_ms
        row = self.recorder.add(
            frame,
            done_s=finished,
            latency_ms=latency_ms,
            compute_ms=compute_ms,
            detections=tracked,
        )
        self.stats.frames += 1
        if tracked is None:
            self.stats.failed += 1
            return
        self.book.variant(self.arm.name, (frame.source_id, frame.index), row, tracked)
        if self._out is not None:
            result = FrameResult(frame, tracked, self.arm.class_names)
            self._out.write(json.dumps(result.to_record(), separators=(",", ":")) + "\n")


def _infer_chunks(
    detector: StagedDetector, tensors: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Inference in batches the model takes."""
    step = max(1, detector.max_batch)
    if tensors.shape[0] <= step:
        return detector.infer(tensors)
    parts = [detector.infer(tensors[i : i + step]) for i in range(0, tensors.shape[0], step)]
    return np.concatenate(parts)
