"""Runs one sink in its own thread behind a bounded queue."""

from __future__ import annotations

import logging
import threading
import time

from tapetum.core.result import FrameResult
from tapetum.errors import QueueClosed
from tapetum.pipeline.queues import BoundedQueue, DropPolicy
from tapetum.pipeline.stats import LatencyRecorder
from tapetum.sinks.base import Sink

log = logging.getLogger(__name__)


class SinkWorker:
    """Feeds ``sink`` from a bounded queue so a slow sink cannot stall the pipeline.

    A full queue applies ``policy``; ``dropped`` counts results the sink never saw and
    ``errors`` counts writes that raised (logged once, then counted).
    """

    def __init__(self, sink: Sink, capacity: int, policy: DropPolicy, name: str) -> None:
        self.sink = sink
        self.name = name
        self.queue: BoundedQueue[FrameResult] = BoundedQueue(capacity, policy)
        self.latency = LatencyRecorder(capacity=50_000)
        self.written = 0
        self.errors = 0
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
                self.errors += 1
                if self.errors == 1:
                    log.error("sink %s failed to write a result: %s", self.name, exc)
            self.latency.add_ms((time.perf_counter() - t0) * 1e3)

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
            self.errors += 1
            log.error("sink %s failed to close: %s", self.name, exc)
