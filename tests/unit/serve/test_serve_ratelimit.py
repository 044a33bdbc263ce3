"""Rate limits with in-memory storage: bursts, refusals with Retry-After, recovery, budgets."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("limits", reason="rate limits need the serve extra (limits)")

from limits.errors import StorageError

from tapetum.errors import ConfigError
from tapetum.serve.ratelimit import (
    RateDecision,
    RateLimit,
    RateLimiter,
    RateLimitStorageError,
    RateLimitUnavailableError,
)


def _drain(limiter: RateLimiter, key_id: str, route: str, count: int) -> list[RateDecision]:
    return [limiter.hit(key_id, route) for _ in range(count)]


def test_burst_is_allowed_then_refused_with_retry_after_then_recovers() -> None:
    limiter = RateLimiter(RateLimit(per_second=5, burst=5))
    allowed = _drain(limiter, "k1", "/v1/detect", 5)
    assert all(d.allowed for d in allowed)
    assert [d.remaining for d in allowed] == [4, 3, 2, 1, 0]
    assert all(d.retry_after_s == 0 for d in allowed)

    refused = limiter.hit("k1", "/v1/detect")
    assert not refused.allowed
    assert 0 < refused.retry_after_s <= 1.0
    assert refused.remaining == 0

    time.sleep(refused.retry_after_s + 0.05)
    recovered = limiter.hit("k1", "/v1/detect")
    assert recovered.allowed


def test_refused_requests_do_not_extend_the_wait() -> None:
    limiter = RateLimiter(RateLimit(per_second=2, burst=2))
    _drain(limiter, "k1", "/r", 2)
    first = limiter.hit("k1", "/r")
    for _ in range(20):
        limiter.hit("k1", "/r")
    later = limiter.hit("k1", "/r")
    assert not first.allowed and not later.allowed
    assert later.retry_after_s <= first.retry_after_s


def test_burst_over_a_longer_window() -> None:
    # 1/second with burst 2 -> 2 hits per 2-second moving window.
    limiter = RateLimiter(RateLimit.parse("1/second;burst=2"))
    assert [d.allowed for d in _drain(limiter, "k1", "/r", 3)] == [True, True, False]
    assert 1.0 < limiter.hit("k1", "/r").retry_after_s <= 2.0


def test_per_route_limits_have_independent_budgets() -> None:
    limiter = RateLimiter(
        RateLimit(per_second=3, burst=3),
        per_route={"/v1/detect": RateLimit(per_second=1, burst=1)},
    )
    assert limiter.hit("k1", "/v1/detect").allowed
    assert not limiter.hit("k1", "/v1/detect").allowed
    # The default budget is untouched by /v1/detect, and shared by the other routes.
    assert limiter.hit("k1", "/v1/models").allowed
    assert limiter.hit("k1", "/v1/health").allowed
    assert limiter.hit("k1", "/v1/models").allowed
    assert not limiter.hit("k1", "/v1/health").allowed
    assert limiter.limit_for("/v1/detect") == RateLimit(1, 1)
    assert limiter.limit_for("/anything") == RateLimit(3, 3)


def test_keys_have_independent_budgets() -> None:
    limiter = RateLimiter(RateLimit(per_second=2, burst=2))
    assert all(d.allowed for d in _drain(limiter, "alice", "/r", 2))
    assert not limiter.hit("alice", "/r").allowed
    assert all(d.allowed for d in _drain(limiter, "bob", "/r", 2))
    assert not limiter.hit("bob", "/r").allowed


def test_storage_failure_fails_open_by_default_and_closed_on_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_args: object, **_kwargs: object) -> bool:
        raise StorageError(ConnectionError("connection reset"))

    lenient = RateLimiter(RateLimit(1, 1))
    strict = RateLimiter(RateLimit(1, 1), fail_open=False)
    for limiter in (lenient, strict):
        monkeypatch.setattr(limiter._strategy, "hit", broken)
    assert all(lenient.hit("k1", "/r").allowed for _ in range(3))
    with pytest.raises(RateLimitUnavailableError, match="connection reset"):
        strict.hit("k1", "/r")


@pytest.mark.parametrize(
    ("text", "expected", "window_s"),
    [
        ("10/second;burst=20", RateLimit(10.0, 20), 2),
        ("10/s", RateLimit(10.0, 10), 1),
        ("600/minute", RateLimit(10.0, 600), 60),
        (" 120 / minutes ; burst = 4 ", RateLimit(2.0, 4), 2),
        ("0.5/sec", RateLimit(0.5, 1), 2),
        ("3600/hour;burst=5", RateLimit(1.0, 5), 5),
    ],
)
def test_parse(text: str, expected: RateLimit, window_s: int) -> None:
    parsed = RateLimit.parse(text)
    assert parsed == expected
    assert parsed.window_s == window_s
    assert RateLimit.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text", ["", "10", "10/day", "ten/second", "10/second;burst=", "10/second;rate=3", "-1/s"]
)
def test_parse_rejects_bad_syntax(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid rate limit"):
        RateLimit.parse(text)


@pytest.mark.parametrize(
    ("per_second", "burst", "message"),
    [(0, 1, "positive"), (float("nan"), 1, "positive"), (1, 0, "at least 1"), (10, 5, "burst")],
)
def test_invalid_limits_are_config_errors(per_second: float, burst: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RateLimit(per_second, burst)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("nosuch://host", "invalid rate-limit storage"),
        ("redis://127.0.0.1:notaport", "invalid rate-limit storage"),
        ("redis://:hunter2@127.0.0.1:1/0", "cannot reach"),
    ],
)
def test_bad_storage_uri_is_a_config_error(uri: str, message: str) -> None:
    with pytest.raises(RateLimitStorageError, match=message) as info:
        RateLimiter(RateLimit(1, 1), storage_uri=uri)
    assert isinstance(info.value, ConfigError)
    assert "hunter2" not in str(info.value)  # passwords never reach messages
