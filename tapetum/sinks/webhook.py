"""POST each frame result as JSON to an HTTP endpoint, behind a circuit breaker."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from tapetum.core.result import FrameResult
from tapetum.errors import SinkError, TapetumError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


class Breaker(Protocol):
    """What the sink needs of a circuit breaker (``tapetum.core.breaker.CircuitBreaker``
    fits); ``acquire`` raises a ``TapetumError`` (``CircuitOpenError``) to refuse a call."""

    def acquire(self) -> None: ...
    def record_success(self) -> None: ...
    def record_failure(self, reason: BaseException | str) -> None: ...


class WebhookSink:
    """POSTs ``FrameResult.to_record()`` (the JSONL line format) to ``url``, one request
    per result, from the sink's own thread with a synchronous httpx client.

    A failure (connection error, timeout, non-2xx status) counts towards ``breaker``; while
    the breaker is open, results are dropped at once and counted in ``dropped_open``, so a
    dead endpoint costs the pipeline nothing (a hanging one costs at most ``timeout_s`` per
    result until the breaker opens). The pipeline's sink queue policy decides what happens
    to results queued behind a slow endpoint (``DROP_OLDEST`` for live sources).

    Args:
        url: ``http://`` or ``https://`` endpoint.
        timeout_s: connect + read timeout of one POST.
        breaker: default ``CircuitBreaker(f"webhook:{url}", 5, 30 s)``.
        headers: extra request headers (e.g. an ``Authorization``).
        client: an httpx client to use (tests, custom transports); closed by ``close``.

    Example:
        >>> sink = WebhookSink("http://127.0.0.1:9000/events", timeout_s=1.0)  # doctest: +SKIP
        >>> Pipeline([source], detector, sinks=[sink]).run()                   # doctest: +SKIP
        >>> sink.sent, sink.failed, sink.dropped_open                          # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 2.0,
        breaker: Breaker | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - httpx ships with the serve extra
            from tapetum.errors import MissingDependencyError

            raise MissingDependencyError(
                "WebhookSink needs httpx: pip install 'tapetum[serve]'"
            ) from exc
        if not url.startswith(("http://", "https://")):
            raise SinkError(f"webhook URL must be http:// or https://, got {url!r}")
        if timeout_s <= 0:
            raise SinkError(f"webhook timeout_s must be > 0, got {timeout_s}")
        self.url = url
        if breaker is None:
            # Imported here: the breaker lives with the services (serve/), above the sinks.
            from tapetum.core.breaker import CircuitBreaker

            breaker = CircuitBreaker(f"webhook:{url}")
        self.breaker = breaker
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout_s), headers=dict(headers or {})
        )
        #: results delivered with a 2xx answer.
        self.sent = 0
        #: POSTs that failed (each counted towards the breaker).
        self.failed = 0
        #: results dropped without a try because the breaker was open.
        self.dropped_open = 0

    def write(self, result: FrameResult) -> None:
        try:
            self.breaker.acquire()
        except TapetumError:  # CircuitOpenError: the endpoint is resting
            self.dropped_open += 1
            return
        try:
            response = self._client.post(self.url, json=result.to_record())
        except Exception as exc:  # connection refused, timeout, protocol error
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        if response.is_success:
            self.sent += 1
            self.breaker.record_success()
        else:
            self._fail(f"HTTP {response.status_code} from {self.url}")

    def _fail(self, reason: str) -> None:
        self.failed += 1
        self.breaker.record_failure(reason)
        if self.failed == 1:
            log.warning("webhook %s failed: %s", self.url, reason)

    def close(self) -> None:
        self._client.close()
