"""Dynamic batching: single requests from many producers run as one model call.

A :class:`DynamicBatcher` holds submitted items in one bounded FIFO. A worker takes up to
``max_batch`` of them as soon as that many wait, or when the oldest has waited
``max_wait_ms``, calls ``run_batch`` once on the list and hands each caller its own
result through a :class:`concurrent.futures.Future`. The trade-off it exposes: a larger
``max_batch`` / ``max_wait_ms`` buys throughput (one call amortises per-call overhead)
with queueing latency.

Example:
    >>> import numpy as np
    >>> with DynamicBatcher(lambda xs: np.stack(xs) * 2, max_batch=4, max_wait_ms=2) as b:
    ...     futures = [b.submit(np.full(3, i)) for i in range(6)]
    ...     [int(f.result()[0]) for f in futures]
    [0, 2, 4, 6, 8, 10]
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np

from tapetum.errors import BatcherClosedError, BatcherFullError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

#: Recent queue waits and batch times kept for the percentiles.
_WINDOW = 10_000


class BatchResult(Protocol[R_co]):
    """What ``run_batch`` returns: one result per item, indexable (a list, an array)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> R_co: ...


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """Counters and latency percentiles of a batcher (milliseconds, recent window).

    Attributes:
        batch_sizes: {batch size: number of batches run at that size}.
        queue_wait_p50_ms / queue_wait_p99_ms: submit → start of the item's batch.
        batch_p50_ms / batch_p99_ms: duration of one ``run_batch`` call.
    """

    submitted: int
    completed: int
    failed: int
    cancelled: int
    pending: int
    batches: int
    batch_sizes: dict[int, int]
    mean_batch_size: float
    queue_wait_p50_ms: float
    queue_wait_p99_ms: float
    batch_p50_ms: float
    batch_p99_ms: float

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class _Entry(Generic[T, R]):
    item: T
    future: Future[R]
    submitted_s: float = field(default_factory=time.monotonic)


class DynamicBatcher(Generic[T, R]):
    """Thread-safe collector of single items into batches (see the module docstring).

    Args:
        run_batch: ``list of items -> results`` (one per item, same order). An exception
            fails every item of that batch; a result of the wrong length too.
        max_batch: most items per call.
        max_wait_ms: longest the oldest item waits for the batch to fill.
        max_queue: items allowed to wait; ``submit`` blocks (up to its timeout) beyond.
        workers: threads calling ``run_batch``. With one (the default) results complete
            in submission order; with more, batches overlap (e.g. over a
            :class:`~tapetum.detect.replicas.ReplicaPool`) and a producer's futures can
            complete out of order, though each still gets its own result.
        name: thread name prefix and log label.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], BatchResult[R]],
        *,
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        workers: int = 1,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1 or workers < 1 or max_queue < 1:
            raise ValueError("max_batch, workers and max_queue must be ≥ 1")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be ≥ 0, got {max_wait_ms}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1e3
        self.max_queue = max_queue
        self.name = name
        self._queue: deque[_Entry[T, R]] = deque()
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._closed = False
        self._drain = True
        self._submitted = self._completed = self._failed = self._cancelled = 0
        self._sizes: Counter[int] = Counter()
        self._waits_ms: deque[float] = deque(maxlen=_WINDOW)
        self._batch_ms: deque[float] = deque(maxlen=_WINDOW)
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ producers

    def submit(self, item: T, *, timeout: float | None = None) -> Future[R]:
        """Queue one item; its future resolves to its own result.

        Blocks while ``max_queue`` items wait, up to ``timeout`` seconds (None: forever).

        Raises:
            BatcherClosedError: the batcher is closed (or closes while this waits).
            BatcherFullError: still full after ``timeout``.
        """
        entry: _Entry[T, R] = _Entry(item, Future())
        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            while len(self._queue) >= self.max_queue and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise BatcherFullError(
                        f"{self.name}: {self.max_queue} items waiting for {timeout} s"
                    )
                self._has_room.wait(remaining)
            if self._closed:
                raise BatcherClosedError(f"{self.name} is closed")
            entry.submitted_s = time.monotonic()
            self._queue.append(entry)
            self._submitted += 1
            if len(self._queue) >= self.max_batch or len(self._queue) == 1:
                self._has_work.notify()
        return entry.future

    def __call__(self, item: T, timeout: float | None = None) -> R:
        """Submit and wait: the item's result (or its batch's exception)."""
        return self.submit(item).result(timeout)

    # -------------------------------------------------------------------- workers

    def _take(self) -> list[_Entry[T, R]] | None:
        """Wait for a batch to be due and take it; None once closed and drained."""
        with self._lock:
            while True:
                if self._closed and (not self._drain or not self._queue):
                    return None
                if self._queue and (len(self._queue) >= self.max_batch or self._closed):
                    break
                if not self._queue:
                    self._has_work.wait()
                    continue
                remaining = self._queue[0].submitted_s + self.max_wait_s - time.monotonic()
                if remaining <= 0:
                    break
                self._has_work.wait(remaining)
            n = min(self.max_batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._has_room.notify(n)
            if self._queue:  # more due: let another worker look
                self._has_work.notify()
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            self._run(batch)

    def _run(self, batch: list[_Entry[T, R]]) -> None:
        start = time.monotonic()
        live = [e for e in batch if e.future.set_running_or_notify_cancel()]
        cancelled = len(batch) - len(live)
        if not live:
            with self._lock:
                self._cancelled += cancelled
            return
        error: BaseException | None = None
        results: BatchResult[R] | None = None
        try:
            results = self.run_batch([e.item for e in live])
            if len(results) != len(live):
                error = RuntimeError(
                    f"{self.name}: run_batch returned {len(results)} results for {len(live)} items"
                )
        except Exception as exc:
            error = exc
        elapsed_ms = (time.monotonic() - start) * 1e3
        with self._lock:
            self._cancelled += cancelled
            self._sizes[len(live)] += 1
            self._batch_ms.append(elapsed_ms)
            self._waits_ms.extend((start - e.submitted_s) * 1e3 for e in live)
            if error is None:
                self._completed += len(live)
            else:
                self._failed += len(live)
        if error is not None or results is None:
            log.debug("%s: batch of %d failed: %s", self.name, len(live), error)
            for e in live:
                e.future.set_exception(error or RuntimeError("no results"))
            return
        for i, e in enumerate(live):
            e.future.set_result(results[i])

    # ------------------------------------------------------------------- lifecycle

    def close(self, drain: bool = True, timeout: float | None = 10.0) -> int:
        """Stop taking items and stop the workers.

        ``drain=True`` runs what is queued first; ``drain=False`` fails it. Items still
        queued when the workers stop (or after ``timeout`` s, e.g. a hung ``run_batch``)
        get :class:`BatcherClosedError`. Returns how many futures were failed that way.
        Idempotent.
        """
        with self._lock:
            self._closed = True
            self._drain = self._drain and drain
            self._has_work.notify_all()
            self._has_room.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread is threading.current_thread():
                continue
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = list(self._queue)
            self._queue.clear()
            self._failed += len(left)
        for e in left:
            e.future.set_exception(BatcherClosedError(f"{self.name} closed before running it"))
        if left:
            log.info("%s closed: %d queued items failed", self.name, len(left))
        return len(left)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> DynamicBatcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> BatcherStats:
        """A snapshot of the counters and percentiles."""
        with self._lock:
            sizes = dict(sorted(self._sizes.items()))
            waits = list(self._waits_ms)
            times = list(self._batch_ms)
            batches = sum(sizes.values())
            items = sum(k * v for k, v in sizes.items())
            return BatcherStats(
                submitted=self._submitted,
                completed=self._completed,
                failed=self._failed,
                cancelled=self._cancelled,
                pending=len(self._queue),
                batches=batches,
                batch_sizes=sizes,
                mean_batch_size=items / batches if batches else 0.0,
                queue_wait_p50_ms=_pct(waits, 50),
                queue_wait_p99_ms=_pct(waits, 99),
                batch_p50_ms=_pct(times, 50),
                batch_p99_ms=_pct(times, 99),
            )


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


__all__ = [
    "BatchResult",
    "BatcherClosedError",
    "BatcherFullError",
    "BatcherStats",
    "DynamicBatcher",
]
