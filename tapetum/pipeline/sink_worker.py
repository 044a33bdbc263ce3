"""Runs one sink in its own thread behind a bounded queue."""

from __future__ import annotations

import logging
import math
import threading
import time

from tapetum.core.result import FrameResult
from tapetum.errors import QueueClosed
from tapetum.pipeline.queues import BoundedQueue, DropPolicy
from tapetum.pipeline.stats import LatencyRecorder
from tapetum.sinks.base import Sink

log = logging.getLogger(__name__)

#: Failed writes are counted each; logged at most this often (a full disk fails them all).
_ERROR_LOG_INTERVAL_S = 30.0


class SinkWorker:
    """Feeds ``sink`` from a bounded queue so a slow sink cannot stall the pipeline.

    A full queue applies ``policy``; ``dropped`` counts results the sink never saw and
    ``errors`` counts writes that raised (the first logged with its reason and kept in
    ``first_error``; later ones counted, and logged at most every 30 s).
    Every result handed to :meth:`submit` ends up in exactly one of ``written``,
    ``dropped`` and ``errors`` once the worker is closed. A sink that fails to close is
    logged and its reason kept in ``close_error`` (no result is counted twice).

    A sink stuck in a write (a hung network share, a pipe nobody reads) cannot be
    interrupted; :meth:`close` waits for it while it makes progress and gives up once it
    has made none for ``stall_timeout_s``: the write under way counts as an error, what is
    queued as dropped, the sink is left unclosed (its daemon thread ends with the process)
    and ``close_error`` says so.
    """

    def __init__(
        self,
        sink: Sink,
        capacity: int,
        policy: DropPolicy,
        name: str,
        stall_timeout_s: float = 10.0,
    ) -> None:
        self.sink = sink
        self.name = name
        self.queue: BoundedQueue[FrameResult] = BoundedQueue(capacity, policy)
        self.latency = LatencyRecorder(capacity=50_000)
        self.stall_timeout_s = stall_timeout_s
        self.written = 0
        self.errors = 0
        self.first_error: str | None = None
        self.close_error: str | None = None
        self._logged_s = -math.inf
        self._lock = threading.Lock()
        self._writing = False
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name=f"sink-{name}", daemon=True)

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def start(self) -> None:
        self._thread.start()

    def submit(self, result: FrameResult, stop: threading.Event | None = None) -> None:
        self.queue.put(result, stop)

    def _run(self) -> None:
        while True:
            try:
                result = self.queue.get()
            except QueueClosed:
                return
            t0 = time.perf_counter()
            with self._lock:
                if self._abandoned:
                    return
                self._writing = True
            failure: Exception | None = None
            try:
                self.sink.write(result)
            except Exception as exc:
                failure = exc
            with self._lock:
                self._writing = False
                if self._abandoned:  # given up on meanwhile: counted as an error then
                    return
                if failure is None:
                    self.written += 1
                else:
                    self._write_failed(failure)
            self.latency.add_ms((time.perf_counter() - t0) * 1e3)

    def _write_failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = str(exc)
        now = time.monotonic()
        if now - self._logged_s >= _ERROR_LOG_INTERVAL_S:
            self._logged_s = now
            log.error(
                "sink %s failed to write a result (%d so far): %s", self.name, self.errors, exc
            )

    def close(self, drain: bool = True) -> None:
        """Stop accepting, write (or drop) what is queued, then close the sink."""
        if not drain:
            self.queue.discard_pending()
        self.queue.close()
        if not self._join_while_progressing():
            self._abandon()
            return
        try:
            self.sink.close()
        except Exception as exc:
            self.close_error = str(exc)
            log.error("sink %s failed to close: %s", self.name, exc)

    def _join_while_progressing(self) -> bool:
        """Wait for the thread while results keep leaving the queue; False once it has
        been stuck for ``stall_timeout_s``."""
        last, since = -1, time.monotonic()
        while self._thread.is_alive():
            self._thread.join(min(0.2, self.stall_timeout_s))
            done = self.written + self.errors
            if done != last:
                last, since = done, time.monotonic()
            elif time.monotonic() - since >= self.stall_timeout_s:
                return not self._thread.is_alive()
        return True

    def _abandon(self) -> None:
        """Give up on a sink stuck in a write: count it and what waits behind it."""
        with self._lock:
            self._abandoned = True
            stuck = int(self._writing)
            self.errors += stuck
        queued = self.queue.discard_pending()
        self.close_error = (
            f"stuck in a write for over {self.stall_timeout_s:g} s; {stuck} result in the "
            f"write and {queued} queued not written, the sink left unclosed"
        )
        log.error("sink %s %s", self.name, self.close_error)
