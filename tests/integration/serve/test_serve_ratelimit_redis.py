"""Rate limits shared through a real Redis on 127.0.0.1:6379, as several replicas would."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

pytest.importorskip("limits", reason="rate limits need the serve extra (limits)")
pytest.importorskip("redis", reason="Redis storage needs the serve extra (redis)")

from tapetum.serve.ratelimit import RateLimit, RateLimiter

pytestmark = pytest.mark.integration

REDIS_URI = "redis://127.0.0.1:6379/0"


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_uri() -> str:
    if not _redis_answers():
        pytest.skip("no Redis answering PING on 127.0.0.1:6379 (start one: redis-server)")
    return REDIS_URI


@pytest.fixture
def prefix() -> str:
    """A namespace no other test run shares, so leftovers never count against us."""
    return f"tapetum-test-{uuid.uuid4().hex}"


def test_two_replicas_share_one_budget(redis_uri: str, prefix: str) -> None:
    limit = RateLimit(per_second=4, burst=4)
    replica_a = RateLimiter(limit, storage_uri=redis_uri, key_prefix=prefix)
    replica_b = RateLimiter(limit, storage_uri=redis_uri, key_prefix=prefix)

    decisions = [(replica_a if i % 2 else replica_b).hit("k1", "/v1/detect") for i in range(4)]
    assert all(d.allowed for d in decisions)
    assert decisions[-1].remaining == 0

    refused_a, refused_b = replica_a.hit("k1", "/v1/detect"), replica_b.hit("k1", "/v1/detect")
    assert not refused_a.allowed and not refused_b.allowed
    assert 0 < refused_a.retry_after_s <= 1.0 and 0 < refused_b.retry_after_s <= 1.0

    # Another key has its own budget on both replicas.
    assert replica_b.hit("k2", "/v1/detect").allowed

    time.sleep(max(refused_a.retry_after_s, refused_b.retry_after_s) + 0.05)
    assert replica_b.hit("k1", "/v1/detect").allowed


def test_per_route_budgets_are_shared_and_independent(redis_uri: str, prefix: str) -> None:
    routes = {"/v1/detect": RateLimit(per_second=1, burst=1)}
    replica_a = RateLimiter(RateLimit(2, 2), routes, storage_uri=redis_uri, key_prefix=prefix)
    replica_b = RateLimiter(RateLimit(2, 2), routes, storage_uri=redis_uri, key_prefix=prefix)
    assert replica_a.hit("k1", "/v1/detect").allowed
    assert not replica_b.hit("k1", "/v1/detect").allowed
    assert replica_b.hit("k1", "/v1/models").allowed
    assert replica_a.hit("k1", "/v1/models").allowed
    assert not replica_b.hit("k1", "/v1/models").allowed


def test_different_prefixes_do_not_share(redis_uri: str, prefix: str) -> None:
    limit = RateLimit(1, 1)
    first = RateLimiter(limit, storage_uri=redis_uri, key_prefix=prefix)
    second = RateLimiter(limit, storage_uri=redis_uri, key_prefix=prefix + "-other")
    assert first.hit("k1", "/r").allowed
    assert second.hit("k1", "/r").allowed
