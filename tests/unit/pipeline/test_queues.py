import threading
import time

import pytest

from tapetum.errors import ConfigError
from tapetum.pipeline.queues import BoundedQueue, DropPolicy, QueueClosed
from tapetum.pipeline.stats import LatencyRecorder


def test_drop_oldest_keeps_freshest_and_counts() -> None:
    q: BoundedQueue[int] = BoundedQueue(3, DropPolicy.DROP_OLDEST)
    for i in range(10):
        q.put(i)
    assert [q.get(0) for _ in range(3)] == [7, 8, 9]
    assert q.dropped == 7


def test_drop_newest_keeps_oldest_and_counts() -> None:
    q: BoundedQueue[int] = BoundedQueue(3, DropPolicy.DROP_NEWEST)
    results = [q.put(i) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert [q.get(0) for _ in range(3)] == [0, 1, 2]
    assert q.dropped == 2


def test_block_waits_for_space_and_loses_nothing() -> None:
    q: BoundedQueue[int] = BoundedQueue(2, DropPolicy.BLOCK)
    got: list[int] = []

    def consume() -> None:
        while True:
            try:
                got.append(q.get(timeout=2))
            except QueueClosed:
                return
            time.sleep(0.001)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(50):
        assert q.put(i)
    q.close()
    t.join(5)
    assert got == list(range(50)) and q.dropped == 0


def test_block_gives_up_when_stopped() -> None:
    q: BoundedQueue[int] = BoundedQueue(1, DropPolicy.BLOCK)
    stop = threading.Event()
    q.put(0)
    threading.Timer(0.05, stop.set).start()
    t0 = time.monotonic()
    assert q.put(1, stop) is False
    assert time.monotonic() - t0 < 2
    assert q.dropped == 1


def test_close_drains_then_raises_and_rejects_puts() -> None:
    q: BoundedQueue[int] = BoundedQueue(4)
    q.put(1)
    q.close()
    assert q.put(2) is False and q.dropped == 1
    assert q.get() == 1
    with pytest.raises(QueueClosed):
        q.get()


def test_get_times_out() -> None:
    q: BoundedQueue[int] = BoundedQueue(1)
    with pytest.raises(TimeoutError):
        q.get(timeout=0.01)


def test_discard_pending_counts() -> None:
    q: BoundedQueue[int] = BoundedQueue(5)
    for i in range(4):
        q.put(i)
    assert q.discard_pending() == 4 and q.dropped == 4 and len(q) == 0


def test_policy_parse() -> None:
    assert DropPolicy.parse("drop-oldest") is DropPolicy.DROP_OLDEST
    with pytest.raises(ConfigError, match="unknown drop policy"):
        DropPolicy.parse("sometimes")
    with pytest.raises(ConfigError):
        BoundedQueue(0)


def test_latency_percentiles_and_ring_buffer() -> None:
    rec = LatencyRecorder(capacity=100)
    for v in range(1, 201):
        rec.add_ms(float(v))
    s = rec.summary()
    assert s.count == 200
    # only the last 100 samples (101..200) are kept
    assert s.p50_ms == pytest.approx(150.5) and s.max_ms == 200
    assert rec.summary(last=10).p50_ms == pytest.approx(195.5)
