"""Per-key, per-route rate limits for the serving API, on the ``limits`` library.

A limit is stated as a token bucket, ``RateLimit(per_second, burst)``: sustained
``per_second`` requests, up to ``burst`` at once. ``limits`` has no token bucket, so each
limit is enforced as a **moving window** of ``burst`` hits per ``window_s`` seconds, with
``window_s = ceil(burst / per_second)``:

- any ``window_s``-second span holds at most ``burst`` hits (the bucket's burst), and the
  long-run rate is ``burst / window_s`` (the bucket's rate; exactly it when
  ``burst / per_second`` is a whole number, as in ``10/second;burst=20`` -> 20 per 2 s;
  otherwise the window rounds up and the limiter errs strict);
- unlike a fixed window it never lets ``2 * burst`` through across a window boundary, and
  the time until the oldest hit leaves the window is exactly when the next one fits, which
  gives an honest ``Retry-After``. The cost is one stored timestamp per hit in the window
  (a Redis list of at most ``burst`` entries per key and route), fine for bursts up to a
  few thousand.

``limits`` counts in whole seconds (Redis ``EXPIRE``), so ``burst`` must be at least
``per_second``; :class:`RateLimit` says so when it is not.

Budgets: a route named in ``per_route`` has its own budget per key; every other route
shares the key's ``default`` budget. Storage is ``memory://`` (one process) or
``redis://host:6379/0`` so that several replicas share one budget. Replicas stamp hits with
their own clocks: keep them NTP-synchronised.

Example::

    from tapetum.serve.ratelimit import RateLimit, RateLimiter

    limiter = RateLimiter(
        RateLimit.parse("20/second;burst=40"),
        per_route={"/v1/detect": RateLimit.parse("5/second;burst=10")},
    )
    decision = limiter.hit("3f9a0c12ab45", "/v1/detect")
    if not decision.allowed:
        ...  # HTTP 429 with Retry-After: ceil(decision.retry_after_s)
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from limits import RateLimitItemPerSecond
from limits.errors import ConfigurationError, StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from tapetum.errors import ConfigError, RateLimitStorageError, RateLimitUnavailableError

logger = logging.getLogger(__name__)

_UNIT_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_UNIT_ALIASES = {"s": "second", "sec": "second", "m": "minute", "min": "minute", "h": "hour"}
_LIMIT_SYNTAX = re.compile(
    r"\s*(?P<amount>\d+(?:\.\d+)?)\s*/\s*(?P<unit>[a-z]+)\s*(?:;\s*burst\s*=\s*(?P<burst>\d+)\s*)?",
    re.IGNORECASE,
)
_REDIS_SCHEMES = {"redis", "rediss", "redis+unix"}
_STORAGE_TIMEOUT_S = 2.0
_MIN_RETRY_AFTER_S = 0.001
_FAIL_OPEN_LOG_INTERVAL_S = 30.0
_DEFAULT_BUCKET = "*"


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``per_second`` sustained requests, at most ``burst`` at once.

    Raises:
        ConfigError: ``per_second`` not positive, ``burst`` < 1, or ``burst`` < ``per_second``.
    """

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_second) and self.per_second > 0):
            raise ConfigError(f"rate limit must be a positive rate, got {self.per_second}/second")
        if self.burst < 1:
            raise ConfigError(f"rate limit burst must be at least 1, got {self.burst}")
        if self.burst < self.per_second:
            raise ConfigError(
                f"rate limit burst ({self.burst}) must be at least the per-second rate "
                f"({self.per_second:g}): limits are counted in whole-second windows; "
                f"use burst={math.ceil(self.per_second)} or more"
            )

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``"<amount>/<unit>[;burst=<n>]"``; unit is second, minute or hour.

        ``burst`` defaults to ``amount`` (at least 1), so ``"600/minute"`` means "600 in any
        minute" and ``"10/second;burst=20"`` means 10 per second sustained, 20 at once.
        Units may be plural or short (``s``, ``min``, ``h``)::

            RateLimit.parse("10/second;burst=20") == RateLimit(per_second=10.0, burst=20)
            RateLimit.parse("600/minute") == RateLimit(per_second=10.0, burst=600)

        Raises:
            ConfigError: the text does not follow the syntax, or the limit is invalid.
        """
        match = _LIMIT_SYNTAX.fullmatch(text)
        unit = match.group("unit").lower() if match else ""
        unit = _UNIT_ALIASES.get(unit, unit)
        if unit not in _UNIT_SECONDS and unit.removesuffix("s") in _UNIT_SECONDS:
            unit = unit.removesuffix("s")  # plural
        if match is None or unit not in _UNIT_SECONDS:
            raise ConfigError(
                f"invalid rate limit {text!r}: expected '<amount>/<second|minute|hour>"
                "[;burst=<n>]', e.g. '10/second;burst=20'"
            )
        amount = float(match.group("amount"))
        per_second = amount / _UNIT_SECONDS[unit]
        burst_text = match.group("burst")
        burst = int(burst_text) if burst_text is not None else max(1, math.ceil(amount))
        return cls(per_second=per_second, burst=burst)

    @property
    def window_s(self) -> int:
        """Length of the moving window that enforces this limit (whole seconds, >= 1)."""
        # round() first: 3 / 0.3 is 10.000000000000002 in floating point.
        return max(1, math.ceil(round(self.burst / self.per_second, 9)))

    def __str__(self) -> str:
        return f"{self.per_second:g}/second;burst={self.burst}"


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one request.

    ``retry_after_s``: seconds until the next request would fit (> 0 when refused, 0 when
    allowed). ``remaining``: requests left in the current window after this one.
    """

    allowed: bool
    retry_after_s: float
    remaining: int


_NO_ROUTES: Mapping[str, RateLimit] = MappingProxyType({})


class RateLimiter:
    """Counts requests per API key and route; thread-safe.

    Args:
        default: budget for every route not in ``per_route`` (one shared budget per key).
        per_route: route (as the app names it, e.g. ``"/v1/detect"``) -> its own budget.
        storage_uri: ``memory://`` or a Redis URI (``redis://127.0.0.1:6379/0``,
            ``rediss://``, ``redis+unix://``) shared by several replicas.
        key_prefix: namespace of the counters in the storage (tests use a unique one).
        fail_open: when the storage fails mid-request, allow the request and log a warning
            (True), or raise :class:`RateLimitUnavailableError` (False; the servers answer
            503 with ``Retry-After``). Either way each failed call is counted in
            :attr:`storage_errors` (``tapetum_ratelimit_storage_errors_total``), and the
            first success after failures is logged as a recovery.

    Raises:
        RateLimitStorageError: unknown or unsupported storage, or a server that does not
            answer within 2 s.
    """

    def __init__(
        self,
        default: RateLimit,
        per_route: Mapping[str, RateLimit] = _NO_ROUTES,
        storage_uri: str = "memory://",
        *,
        key_prefix: str = "tapetum",
        fail_open: bool = True,
    ) -> None:
        self.default = default
        self.per_route: Mapping[str, RateLimit] = MappingProxyType(dict(per_route))
        self._storage_label = _redact(storage_uri)
        self._fail_open = fail_open
        self._last_failure_log = -math.inf
        self._log_lock = threading.Lock()
        #: storage calls that failed (each answered by the fail-open/closed policy).
        self.storage_errors = 0
        self._failing = False
        self._items = {
            limit: RateLimitItemPerSecond(limit.burst, limit.window_s, namespace=key_prefix)
            for limit in {default, *self.per_route.values()}
        }

        scheme = urllib.parse.urlsplit(storage_uri).scheme.lower()
        options: dict[str, Any] = {"wrap_exceptions": True}
        if scheme in _REDIS_SCHEMES:
            options |= {
                "socket_connect_timeout": _STORAGE_TIMEOUT_S,
                "socket_timeout": _STORAGE_TIMEOUT_S,
            }
        try:
            storage = storage_from_string(storage_uri, **options)
            self._strategy = MovingWindowRateLimiter(storage)
        except (ConfigurationError, ValueError) as exc:
            raise RateLimitStorageError(
                f"invalid rate-limit storage {self._storage_label!r}: {exc}; "
                "use 'memory://' or 'redis://host:6379/0'"
            ) from exc
        except NotImplementedError as exc:
            raise RateLimitStorageError(
                f"rate-limit storage {self._storage_label!r} does not support moving windows; "
                "use 'memory://' or 'redis://host:6379/0'"
            ) from exc
        if scheme != "memory" and not storage.check():
            raise RateLimitStorageError(
                f"cannot reach rate-limit storage {self._storage_label!r} (no answer within "
                f"{_STORAGE_TIMEOUT_S:g} s): is the server running and the URI right?"
            )

    def limit_for(self, route: str) -> RateLimit:
        """The limit that applies to ``route``."""
        return self.per_route.get(route, self.default)

    def hit(self, key_id: str, route: str) -> RateDecision:
        """Count one request by ``key_id`` on ``route`` and say whether it may proceed.

        Refused requests are not counted. With ``fail_open`` (the default) a storage failure
        allows the request (``remaining`` 0) and logs a warning at most every 30 s.

        Raises:
            RateLimitUnavailableError: the storage failed and ``fail_open`` is False.
        """
        limit = self.limit_for(route)
        item = self._items[limit]
        bucket = route if route in self.per_route else _DEFAULT_BUCKET
        try:
            allowed = self._strategy.hit(item, key_id, bucket)
            reset_time, remaining = self._strategy.get_window_stats(item, key_id, bucket)
        except StorageError as exc:
            return self._storage_failed(exc)
        self._storage_answered()
        if allowed:
            return RateDecision(allowed=True, retry_after_s=0.0, remaining=max(0, remaining))
        # Moving window: reset_time is when the oldest hit in the window expires, i.e. when
        # the next request fits. It may already have passed by now; still say "retry".
        retry_after_s = max(reset_time - time.time(), _MIN_RETRY_AFTER_S)
        return RateDecision(allowed=False, retry_after_s=retry_after_s, remaining=0)

    def peek(self, key_id: str, route: str) -> RateDecision:
        """Whether one more request by ``key_id`` on ``route`` would fit, without counting it.

        Storage failures answer "allowed" (with ``fail_open``) like :meth:`hit`.
        """
        limit = self.limit_for(route)
        item = self._items[limit]
        bucket = route if route in self.per_route else _DEFAULT_BUCKET
        try:
            if self._strategy.test(item, key_id, bucket):
                return RateDecision(allowed=True, retry_after_s=0.0, remaining=1)
            reset_time, _ = self._strategy.get_window_stats(item, key_id, bucket)
        except StorageError as exc:
            return self._storage_failed(exc)
        self._storage_answered()
        retry_after_s = max(reset_time - time.time(), _MIN_RETRY_AFTER_S)
        return RateDecision(allowed=False, retry_after_s=retry_after_s, remaining=0)

    @property
    def fail_open(self) -> bool:
        """Whether a storage failure lets requests through (else they are refused)."""
        return self._fail_open

    def _storage_answered(self) -> None:
        if self._failing:
            with self._log_lock:
                recovered, self._failing = self._failing, False
            if recovered:
                logger.warning(
                    "rate-limit storage %s answers again (%d failed calls so far); limits apply",
                    self._storage_label,
                    self.storage_errors,
                )

    def _storage_failed(self, exc: StorageError) -> RateDecision:
        cause = exc.storage_error
        with self._log_lock:
            self.storage_errors += 1
            self._failing = True
        if not self._fail_open:
            raise RateLimitUnavailableError(
                f"rate-limit storage {self._storage_label!r} failed: {cause}"
            ) from exc
        now = time.monotonic()
        with self._log_lock:
            should_log = now - self._last_failure_log >= _FAIL_OPEN_LOG_INTERVAL_S
            if should_log:
                self._last_failure_log = now
        if should_log:
            logger.warning(
                "rate-limit storage %s failed (%s); allowing requests unlimited until it recovers",
                self._storage_label,
                cause,
            )
        return RateDecision(allowed=True, retry_after_s=0.0, remaining=0)


class RateLimitCollector:
    """``/metrics`` of a :class:`RateLimiter`'s storage, read at scrape time:
    ``tapetum_ratelimit_storage_errors_total{policy}`` (calls that failed, ``policy``
    ``fail_open`` or ``fail_closed``)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        errors = CounterMetricFamily(
            "tapetum_ratelimit_storage_errors",
            "Rate-limit storage calls that failed (Redis unreachable): with fail_open the "
            "request went through unlimited, with fail_closed it was refused with 503.",
            labels=["policy"],
        )
        policy = "fail_open" if self.limiter.fail_open else "fail_closed"
        errors.add_metric([policy], float(self.limiter.storage_errors))
        yield errors


def _redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***``, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(uri)
        if parts.password is None:
            return uri
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparseable URI>"


_AUTH_FAILURE_ROUTE = "auth-failure"


class AuthFailureLimiter:
    """Failed authentications per client address, so that guessing keys or making the
    server verify junk credentials is refused with 429 after ``limit.burst`` failures.

    Only failures are counted (a bad, unknown, revoked or expired credential); a client
    over the limit is refused before its next credential is verified, except that a key
    the server verified recently (its cache) still works, so a client behind the same
    address as a guesser keeps working.

    Args:
        limit: failures allowed per address (default 20 per minute).
        storage_uri: as :class:`RateLimiter`'s (a Redis URI shares the count between
            replicas).

    Example::

        failures = AuthFailureLimiter()
        if not failures.check("203.0.113.9").allowed:
            ...  # 429 without verifying anything
        failures.record("203.0.113.9")  # after a failed verification
    """

    def __init__(
        self,
        limit: RateLimit | None = None,
        storage_uri: str = "memory://",
        *,
        key_prefix: str = "tapetum-auth",
    ) -> None:
        self.limit = limit if limit is not None else RateLimit(per_second=20 / 60, burst=20)
        self._limiter = RateLimiter(self.limit, storage_uri=storage_uri, key_prefix=key_prefix)

    def check(self, address: str) -> RateDecision:
        """Whether ``address`` may still try to authenticate (nothing is counted)."""
        return self._limiter.peek(address, _AUTH_FAILURE_ROUTE)

    def record(self, address: str) -> None:
        """Count one failed authentication from ``address``."""
        self._limiter.hit(address, _AUTH_FAILURE_ROUTE)
