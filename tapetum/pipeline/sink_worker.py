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
    """

    def __init__(self, sink: Sink, capacity: int, policy: DropPolicy, name: str) -> None:
        self.sink = sink
        self.name = name
        self.queue: BoundedQueue[FrameResult] = BoundedQueue(capacity, policy)
        self.latency = LatencyRecorder(capacity=50_000)
        self.written = 0
        self.errors = 0
        self.first_error: str | None = None
        self.close_error: str | None = None
        self._logged_s = -math.inf
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
            try:
                self.sink.write(result)
                self.written += 1
            except Exception as exc:
                self._write_failed(exc)
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
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.sink.close()
        except Exception as exc:
            self.close_error = str(exc)
            log.error("sink %s failed to close: %s", self.name, exc)
