"""DynamicBatcher: batching rules, per-caller results, errors and shutdown. Timing checks use
generous bounds (the test machine is shared); none asserts a tight latency."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from tapetum.detect.batcher import (
    BatcherClosedError,
    BatcherFullError,
    DynamicBatcher,
)


class Recorder:
    """``run_batch`` that records batch sizes and can block until released."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, items: list[tuple[str, int]]) -> list[tuple[str, int]]:
        self.sizes.append(len(items))
        self.started.set()
        self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        return [(p, i * 10) for p, i in items]


def test_each_caller_gets_its_own_result_in_submission_order() -> None:
    done: list[int] = []  # appended as futures complete (GIL-atomic list.append)
    with DynamicBatcher(Recorder(), max_batch=4, max_wait_ms=1) as batcher:
        futures = [batcher.submit(("a", i)) for i in range(23)]
        for f in futures:
            f.add_done_callback(lambda f: done.append(f.result()[1]))
        assert [f.result(5) for f in futures] == [("a", i * 10) for i in range(23)]
    assert done == [i * 10 for i in range(23)]


def test_full_batches_are_cut_at_max_batch() -> None:
    run = Recorder()
    run.gate.clear()  # hold the first batch so the rest pile up
    batcher = DynamicBatcher(run, max_batch=4, max_wait_ms=60_000)
    first = batcher.submit(("a", 0))
    futures = [batcher.submit(("a", i)) for i in range(1, 9)]
    # the first item waits for max_wait (a minute) unless 4 are queued: 9 are
    assert run.started.wait(5)
    run.gate.set()
    for f in [first, *futures[:-1]]:
        f.result(5)
    assert not futures[-1].done()
    assert run.sizes == [4, 4]  # the 9th stays until its batch fills or a minute passes
    assert batcher.close(drain=True) == 0
    assert run.sizes == [4, 4, 1]
    assert batcher.stats().batch_sizes == {1: 1, 4: 2}


def test_a_lone_item_runs_after_max_wait() -> None:
    run = Recorder()
    with DynamicBatcher(run, max_batch=8, max_wait_ms=30) as batcher:
        t0 = time.monotonic()
        assert batcher(("a", 1), timeout=5) == ("a", 10)
        waited = time.monotonic() - t0
    assert run.sizes == [1]
    assert 0.025 <= waited < 2.0  # honoured max_wait, did not wait for a full batch


def test_errors_reach_every_caller_of_the_failing_batch_only() -> None:
    def run(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("bad frame 13")
        return [i + 1 for i in items]

    with DynamicBatcher(run, max_batch=4, max_wait_ms=500) as batcher:
        bad = [batcher.submit(i) for i in (10, 11, 12, 13)]
        good = [batcher.submit(i) for i in (1, 2, 3, 4)]
        for f in bad:
            with pytest.raises(ValueError, match="bad frame 13"):
                f.result(5)
        assert [f.result(5) for f in good] == [2, 3, 4, 5]
    stats = batcher.stats()
    assert stats.failed == 4 and stats.completed == 4


def test_wrong_result_count_fails_the_batch() -> None:
    with DynamicBatcher(lambda xs: xs[:-1], max_batch=2, max_wait_ms=500) as batcher:
        futures = [batcher.submit(i) for i in range(2)]
        for f in futures:
            with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
                f.result(5)


def test_close_without_drain_fails_pending_futures_instead_of_hanging() -> None:
    run = Recorder()
    run.gate.clear()
    batcher = DynamicBatcher(run, max_batch=2, max_wait_ms=60_000)
    running = [batcher.submit(("a", i)) for i in range(2)]
    assert run.started.wait(5)
    queued = [batcher.submit(("a", i)) for i in range(2, 5)]
    closer = threading.Thread(target=batcher.close, kwargs={"drain": False})
    closer.start()
    while not batcher.closed:
        time.sleep(0.001)
    run.gate.set()  # the running batch finishes normally
    closer.join(10)
    assert not closer.is_alive()
    assert [f.result(5) for f in running] == [("a", 0), ("a", 10)]
    for f in queued:
        with pytest.raises(BatcherClosedError):
            f.result(5)
    with pytest.raises(BatcherClosedError):
        batcher.submit(("a", 9))


def test_close_with_drain_runs_what_is_queued() -> None:
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch=8, max_wait_ms=60_000)
    futures = [batcher.submit(("a", i)) for i in range(3)]
    assert batcher.close(drain=True) == 0
    assert [f.result(0) for f in futures] == [("a", 0), ("a", 10), ("a", 20)]


def test_close_gives_up_on_a_hung_batch_after_timeout() -> None:
    hang = threading.Event()
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        lambda xs: [x for x in xs if hang.wait(30)], max_batch=1, max_wait_ms=0
    )
    stuck = batcher.submit(1)
    time.sleep(0.05)
    queued = batcher.submit(2)
    assert batcher.close(drain=True, timeout=0.2) == 1
    with pytest.raises(BatcherClosedError):
        queued.result(1)
    hang.set()
    assert stuck.result(5) == 1


def test_cancelled_futures_are_skipped() -> None:
    run = Recorder()
    run.gate.clear()
    batcher = DynamicBatcher(run, max_batch=1, max_wait_ms=0)
    first = batcher.submit(("a", 0))
    assert run.started.wait(5)
    cancelled = batcher.submit(("a", 1))
    assert cancelled.cancel()
    last = batcher.submit(("a", 2))
    run.gate.set()
    assert last.result(5) == ("a", 20) and first.result(5) == ("a", 0)
    batcher.close()
    assert run.sizes == [1, 1] and batcher.stats().cancelled == 1


def test_full_queue_blocks_then_times_out() -> None:
    run = Recorder()
    run.gate.clear()
    batcher = DynamicBatcher(run, max_batch=1, max_wait_ms=0, max_queue=2)
    batcher.submit(("a", 0))
    assert run.started.wait(5)  # taken off the queue, now running
    batcher.submit(("a", 1))
    batcher.submit(("a", 2))
    with pytest.raises(BatcherFullError):
        batcher.submit(("a", 3), timeout=0.05)
    run.gate.set()
    assert batcher.submit(("a", 4), timeout=5).result(5) == ("a", 40)
    batcher.close()


def test_many_producers_each_get_their_own_results_in_order() -> None:
    producers, per_producer = 12, 40
    results: dict[str, list[tuple[str, int]]] = {}
    barrier = threading.Barrier(producers)

    def produce(name: str) -> None:
        barrier.wait()
        futures: list[Future[tuple[str, int]]] = [
            batcher.submit((name, i)) for i in range(per_producer)
        ]
        order: list[int] = []
        for f in futures:
            f.add_done_callback(lambda f: order.append(f.result()[1]))
        results[name] = [f.result(10) for f in futures]
        assert order == sorted(order)  # completed in this producer's submission order

    run = Recorder(delay_s=0.001)
    with DynamicBatcher(run, max_batch=8, max_wait_ms=2) as batcher:
        threads = [threading.Thread(target=produce, args=(f"p{k}",)) for k in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    for k in range(producers):
        assert results[f"p{k}"] == [(f"p{k}", i * 10) for i in range(per_producer)]
    stats = batcher.stats()
    assert stats.completed == producers * per_producer
    assert max(stats.batch_sizes) <= 8
    assert stats.mean_batch_size > 1.5  # concurrent producers did get batched together
    assert stats.queue_wait_p99_ms >= stats.queue_wait_p50_ms >= 0


def test_numpy_batches_and_several_workers() -> None:
    def double(items: list[np.ndarray]) -> np.ndarray:
        time.sleep(0.002)
        return np.stack(items) * 2

    with DynamicBatcher(double, max_batch=4, max_wait_ms=1, workers=2) as batcher:
        futures = [batcher.submit(np.full((2, 2), i, np.float32)) for i in range(50)]
        for i, f in enumerate(futures):
            np.testing.assert_array_equal(f.result(5), np.full((2, 2), 2 * i))


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(lambda xs: xs, max_batch=0)
    with pytest.raises(ValueError):
        DynamicBatcher(lambda xs: xs, max_wait_ms=-1)
