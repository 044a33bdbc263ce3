"""CircuitBreaker state machine with a fake clock."""

from __future__ import annotations

import threading

import pytest

from tapetum.core.breaker import (
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
)
from tapetum.errors import ConfigError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _boom() -> None:
    raise OSError("connection refused")


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(OSError):
            breaker.call(_boom)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("cam", failure_threshold=3, reset_timeout_s=10.0, clock=clock)


def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    _fail(breaker, 2)
    assert breaker.call(lambda: 7) == 7  # a success resets the count
    _fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    _fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_fails_fast_while_open_with_retry_after_and_reason(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    _fail(breaker, 3)
    calls = []
    clock.now += 4.0
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: calls.append(1))
    assert calls == [], "an open breaker must not call through"
    assert info.value.retry_after_s == pytest.approx(6.0)
    assert info.value.reason == "connection refused"
    assert "connection refused" in str(info.value) and "'cam'" in str(info.value)


def test_half_open_trial_success_closes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _fail(breaker, 3)
    clock.now += 10.0
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state is BreakerState.CLOSED
    _fail(breaker, 2)  # the failure count started over
    assert breaker.state is BreakerState.CLOSED


def test_half_open_trial_failure_reopens_for_a_full_timeout(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    _fail(breaker, 3)
    clock.now += 10.0
    _fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    clock.now += 9.9
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_admits_only_max_calls_at_once(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        "db", failure_threshold=1, reset_timeout_s=1.0, half_open_max_calls=2, clock=clock
    )
    _fail(breaker, 1)
    clock.now += 1.0
    inside = threading.Barrier(3)
    release = threading.Event()
    results: list[str] = []

    def trial() -> None:
        with breaker.guard():
            inside.wait(5)
            release.wait(5)
        results.append("done")

    threads = [threading.Thread(target=trial) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait(5)  # both trials are in flight
    with pytest.raises(CircuitOpenError, match="half-open"):
        breaker.call(lambda: None)
    release.set()
    for t in threads:
        t.join(5)
    assert results == ["done", "done"]
    assert breaker.state is BreakerState.CLOSED


def test_cancelled_trial_frees_its_slot(breaker: CircuitBreaker, clock: FakeClock) -> None:
    _fail(breaker, 3)
    clock.now += 10.0
    with pytest.raises(KeyboardInterrupt), breaker.guard():
        raise KeyboardInterrupt
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.call(lambda: 1) == 1


def test_transitions_are_reported_and_counted(clock: FakeClock) -> None:
    seen: list[tuple[str, BreakerState, BreakerState]] = []
    registry = BreakerRegistry(failure_threshold=1, reset_timeout_s=5.0, clock=clock)
    registry.add_listener(lambda b, old, new: seen.append((b.name, old, new)))
    breaker = registry.get("source:a")
    assert registry.get("source:a") is breaker
    _fail(breaker, 1)
    clock.now += 5.0
    breaker.call(lambda: None)
    assert seen == [
        ("source:a", BreakerState.CLOSED, BreakerState.OPEN),
        ("source:a", BreakerState.OPEN, BreakerState.HALF_OPEN),
        ("source:a", BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    (snap,) = registry.snapshot()
    assert snap.state is BreakerState.CLOSED
    assert snap.transitions == {
        BreakerState.CLOSED: 1,
        BreakerState.HALF_OPEN: 1,
        BreakerState.OPEN: 1,
    }


def test_registry_forgets_closed_breakers_first(clock: FakeClock) -> None:
    registry = BreakerRegistry(max_breakers=2, failure_threshold=1, clock=clock)
    _fail(registry.get("a"), 1)  # open: must be kept
    registry.get("b")
    registry.get("c")
    names = {s.name for s in registry.snapshot()}
    assert names == {"a", "c"}


def test_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ConfigError):
        CircuitBreaker("x", reset_timeout_s=0)
