"""Redis goes away under the rate limiter: a real ``redis-server`` on a free loopback port,
started by the test, holds the counters of the REST app's limiter; it is killed mid-run,
then started again.

The documented behaviour: by default the limiter fails open (requests go through
unlimited, one warning in the log, each failed storage call counted in
``tapetum_ratelimit_storage_errors_total{policy="fail_open"}``); a limiter built with
``fail_open=False`` refuses with 503 ``service_unavailable`` and ``Retry-After``. Never a
500. When Redis is back the limits apply again and the recovery is logged. Every request
is counted: answered 200, refused 429 or (fail closed) 503."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytest.importorskip("limits", reason="rate limits need the serve extra (limits)")
pytest.importorskip("redis", reason="Redis storage needs the serve extra (redis)")
pytest.importorskip("fastapi")

from tapetum.serve.app import create_app
from tapetum.serve.ratelimit import RateLimit, RateLimiter
from tapetum.serve.settings import ServeSettings
from tests.integration.faults.conftest import wait_for
from tests.integration.serve_harness import LoopbackServer, free_port, wait_ready

pytestmark = pytest.mark.integration

ROUTE = "/v1/models"
#: 5 calls of ROUTE per 10 s window: a burst of 8 is 5 answered and 3 refused.
ROUTE_LIMIT = RateLimit(per_second=0.5, burst=5)
BURST = 8


@dataclass
class Redis:
    """``redis-server`` in a subprocess: ``kill`` (SIGKILL) and ``start`` again on one port."""

    exe: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self.answers, 20, "redis-server to answer PING")

    def answers(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn,
        ):
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
        return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def redis() -> Iterator[Redis]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    server = Redis(exe, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def _served(yolox_path: Path, limiter: RateLimiter) -> Iterator[httpx.Client]:
    settings = ServeSettings(model_path=yolox_path, require_auth=False, warmup=False)
    app = create_app(settings, rate_limiter=limiter)
    server = LoopbackServer(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            wait_ready(client, 60)
            yield client
    finally:
        server.stop()


def _burst(client: httpx.Client) -> Counter[int]:
    statuses: Counter[int] = Counter()
    for _ in range(BURST):
        resp = client.get(ROUTE)
        statuses[resp.status_code] += 1
        if resp.status_code != 200:
            body = resp.json()
            assert body["detail"] and body["code"] in {"rate_limited", "service_unavailable"}
            assert resp.headers.get("Retry-After"), resp.headers
    return statuses


def _storage_errors(client: httpx.Client, policy: str) -> int:
    text = client.get("/metrics").text
    found = re.search(
        rf'^tapetum_ratelimit_storage_errors_total\{{policy="{policy}"\}} (\S+)$', text, re.M
    )
    assert found, text
    return int(float(found.group(1)))


@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
def test_redis_killed_under_the_rate_limiter_follows_the_policy_and_never_500s(
    fail_open: bool,
    redis: Redis,
    yolox_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RateLimiter(
        RateLimit(per_second=1000, burst=1000),  # /metrics and the rest: never limited here
        {ROUTE: ROUTE_LIMIT},
        storage_uri=redis.uri,
        key_prefix=f"faults-{time.time_ns()}",
        fail_open=fail_open,
    )
    caplog.set_level(logging.WARNING, logger="tapetum")
    with _served(yolox_path, limiter) as client:
        before = limiter.storage_errors
        assert _burst(client) == Counter({200: 5, 429: 3})
        assert limiter.storage_errors == before == 0

        redis.kill()
        during = _burst(client)
        assert during == (Counter({200: BURST}) if fail_open else Counter({503: BURST}))
        assert limiter.storage_errors == BURST  # one failed storage call per request
        policy = "fail_open" if fail_open else "fail_closed"
        if not fail_open:  # /metrics goes through the limiter too: refused while it is down
            assert client.get("/metrics").status_code == 503
        else:
            assert _storage_errors(client, policy) == BURST + 1  # the scrape itself

        redis.start()  # empty: the windows start over
        after = _burst(client)
        assert after == Counter({200: 5, 429: 3})
        assert _storage_errors(client, policy) == limiter.storage_errors
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if fail_open:
        failed = [m for m in warnings if "allowing requests unlimited until it recovers" in m]
        assert len(failed) == 1, warnings  # once, not once per request
        assert redis.uri in failed[0]
    else:
        refused = [m for m in warnings if "RateLimitUnavailableError" in m]
        assert len(refused) == BURST + 1, warnings
    assert any("answers again" in m for m in warnings), warnings
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
