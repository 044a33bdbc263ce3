"""Circuit breakers: stop calling what keeps failing, try again after a pause.

A breaker is CLOSED (calls go through; consecutive failures are counted), OPEN (calls fail
fast with :class:`CircuitOpenError` for ``reset_timeout_s``), then HALF_OPEN (at most
``half_open_max_calls`` trial calls at once; a trial success closes it, a trial failure
opens it again for another ``reset_timeout_s``).

Metrics: every breaker made by a :class:`BreakerRegistry` is listed by
``registry.snapshot()``, which the app's Prometheus collector exports at scrape time as
``tapetum_breaker_state{name=...}`` (0 closed, 1 half-open, 2 open) and
``tapetum_breaker_transitions_total{name=..., to=...}``. ``on_transition`` callbacks see
every state change as it happens (logs, alerts).

Example:
    >>> breaker = CircuitBreaker("webhook", failure_threshold=3, reset_timeout_s=10)
    >>> breaker.call(lambda x: x + 1, 1)
    2
    >>> with breaker.guard():
    ...     pass  # an exception raised here counts as a failure
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from tapetum.errors import CircuitOpenError, ConfigError

__all__ = [
    "BreakerRegistry",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "TransitionListener",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class BreakerState(enum.IntEnum):
    """Breaker states; the values are what the ``tapetum_breaker_state`` gauge shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


#: Called as ``fn(breaker, old_state, new_state)`` on every transition, under no lock.
TransitionListener = Callable[["CircuitBreaker", BreakerState, BreakerState], None]


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """One breaker's state for metrics and status pages."""

    name: str
    state: BreakerState
    consecutive_failures: int
    transitions: dict[BreakerState, int]
    last_failure: str | None
    retry_after_s: float


class CircuitBreaker:
    """A thread-safe circuit breaker.

    Args:
        name: shown in errors and metrics.
        failure_threshold: consecutive failures that open a closed breaker.
        reset_timeout_s: how long an open breaker refuses calls before a trial.
        half_open_max_calls: concurrent trial calls allowed while half-open.
        clock: monotonic seconds (tests inject a fake).
        on_transition: called on every state change (after the lock is released).
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        half_open_max_calls: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionListener | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_max_calls < 1:
            raise ConfigError(
                "failure_threshold and half_open_max_calls must be ≥ 1, got "
                f"{failure_threshold} and {half_open_max_calls}"
            )
        if reset_timeout_s <= 0:
            raise ConfigError(f"reset_timeout_s must be > 0, got {reset_timeout_s}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._listeners: list[TransitionListener] = [on_transition] if on_transition else []
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0  # trial calls in flight while half-open
        self._last_failure: str | None = None
        self._transitions = dict.fromkeys(BreakerState, 0)

    # ----------------------------------------------------------------- state
    def add_listener(self, listener: TransitionListener) -> None:
        self._listeners.append(listener)

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose timeout passed reads HALF_OPEN)."""
        with self._lock:
            changed = self._expire_locked()
            state = self._state
        self._notify(changed)
        return state

    @property
    def last_failure(self) -> str | None:
        return self._last_failure

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            changed = self._expire_locked()
            snap = BreakerSnapshot(
                name=self.name,
                state=self._state,
                consecutive_failures=self._failures,
                transitions=dict(self._transitions),
                last_failure=self._last_failure,
                retry_after_s=self._retry_after_locked(),
            )
        self._notify(changed)
        return snap

    def _retry_after_locked(self) -> float:
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())
        return 0.0

    def _move_locked(self, new: BreakerState) -> tuple[BreakerState, BreakerState] | None:
        old = self._state
        if old is new:
            return None
        self._state = new
        self._transitions[new] += 1
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
        self._trials = 0
        return old, new

    def _expire_locked(self) -> tuple[BreakerState, BreakerState] | None:
        if (
            self._state is BreakerState.OPEN
            and self._clock() >= self._opened_at + self.reset_timeout_s
        ):
            return self._move_locked(BreakerState.HALF_OPEN)
        return None

    def _notify(self, *changes: tuple[BreakerState, BreakerState] | None) -> None:
        for change in changes:
            if change is None:
                continue
            old, new = change
            level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
            log.log(level, "circuit %s: %s -> %s", self.name, old.name, new.name)
            for listener in self._listeners:
                try:
                    listener(self, old, new)
                except Exception:  # a metrics hook must never break the guarded call
                    log.exception("circuit %s: transition listener failed", self.name)

    # ----------------------------------------------------------------- protocol
    def acquire(self) -> None:
        """Ask to make one call; raises :class:`CircuitOpenError` if refused.

        Every successful ``acquire`` must be followed by ``record_success`` or
        ``record_failure`` (``call`` and ``guard`` do this).
        """
        with self._lock:
            changed = self._expire_locked()
            state = self._state
            if state is BreakerState.HALF_OPEN and self._trials < self.half_open_max_calls:
                self._trials += 1
                state = BreakerState.CLOSED  # admitted as a trial
            error = None
            if state is BreakerState.OPEN:
                error = CircuitOpenError(
                    self.name, self._retry_after_locked(), self._last_failure or "unknown"
                )
            elif state is BreakerState.HALF_OPEN:
                # Trials are in flight; their outcome decides within one call's time.
                error = CircuitOpenError(
                    self.name,
                    min(1.0, self.reset_timeout_s),
                    f"half-open, a trial call is in progress; last failure: {self._last_failure}",
                )
        self._notify(changed)
        if error is not None:
            raise error

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            changed = None
            if self._state is BreakerState.HALF_OPEN:
                changed = self._move_locked(BreakerState.CLOSED)
        self._notify(changed)

    def record_failure(self, reason: BaseException | str) -> None:
        text = reason if isinstance(reason, str) else (str(reason) or type(reason).__name__)
        with self._lock:
            self._last_failure = text
            self._failures += 1
            changed = None
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
            ):
                changed = self._move_locked(BreakerState.OPEN)
            elif self._state is BreakerState.OPEN:
                # A call admitted before the breaker opened failed late: restart the pause.
                self._opened_at = self._clock()
        self._notify(changed)

    def release(self) -> None:
        """Give back a trial slot without a verdict (the call was cancelled)."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN and self._trials > 0:
                self._trials -= 1

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` through the breaker; any exception counts as a failure."""
        with self.guard():
            return fn(*args, **kwargs)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run a block through the breaker; an ``Exception`` from it counts as a failure
        (and is re-raised); ``BaseException`` (cancellation) only frees the trial slot."""
        self.acquire()
        try:
            yield
        except Exception as exc:
            self.record_failure(exc)
            raise
        except BaseException:
            self.release()
            raise
        self.record_success()


class BreakerRegistry:
    """Named breakers of one app, made on first use, for metrics export.

    At most ``max_breakers`` are kept; beyond that the least recently used *closed* breaker
    is forgotten (open ones are kept: forgetting them would let failing calls through).
    """

    def __init__(self, max_breakers: int = 1024, **defaults: object) -> None:
        self.max_breakers = max_breakers
        self._defaults = defaults
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()
        self._lock = threading.Lock()
        self._listeners: list[TransitionListener] = []

    def add_listener(self, listener: TransitionListener) -> None:
        """Called on every transition of every breaker of this registry (also later ones)."""
        with self._lock:
            self._listeners.append(listener)
            breakers = list(self._breakers.values())
        for b in breakers:
            b.add_listener(listener)

    def get(self, name: str, **overrides: object) -> CircuitBreaker:
        """The breaker called ``name``, created with the registry's defaults if new."""
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is not None:
                self._breakers.move_to_end(name)
                return breaker
            options = {**self._defaults, **overrides}
            breaker = CircuitBreaker(name, **options)  # type: ignore[arg-type]
            for listener in self._listeners:
                breaker.add_listener(listener)
            self._breakers[name] = breaker
            if len(self._breakers) > self.max_breakers:
                for key, old in list(self._breakers.items()):
                    if old is not breaker and old._state is BreakerState.CLOSED:
                        del self._breakers[key]
                        break
            return breaker

    def register(self, breaker: CircuitBreaker) -> CircuitBreaker:
        """Add a breaker made elsewhere (e.g. a webhook sink's) to the metrics."""
        with self._lock:
            self._breakers[breaker.name] = breaker
            listeners = list(self._listeners)
        for listener in listeners:
            breaker.add_listener(listener)
        return breaker

    def snapshot(self) -> list[BreakerSnapshot]:
        with self._lock:
            breakers = list(self._breakers.values())
        return [b.snapshot() for b in breakers]

    def __len__(self) -> int:
        return len(self._breakers)
