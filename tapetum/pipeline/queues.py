"""Bounded queues with an explicit policy for what happens when they are full."""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from tapetum.errors import ConfigError, QueueClosed

T = TypeVar("T")


class DropPolicy(enum.Enum):
    """What a full queue does with a new item.

    ``BLOCK``: the producer waits (backpressure; nothing is lost — files).
    ``DROP_OLDEST``: the oldest queued item is discarded and counted (live streams: the
    freshest frame matters most).
    ``DROP_NEWEST``: the new item is discarded and counted.
    """

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"

    @classmethod
    def parse(cls, value: str | DropPolicy) -> DropPolicy:
        if isinstance(value, DropPolicy):
            return value
        try:
            return cls(value.strip().lower().replace("-", "_"))
        except ValueError:
            known = ", ".join(p.value for p in cls)
            raise ConfigError(f"unknown drop policy {value!r}; use one of: {known}") from None


class BoundedQueue(Generic[T]):
    """A FIFO of fixed capacity with a drop policy, drop counter and close semantics.

    Several queues may share one ``condition`` so that a consumer can wait on all of them
    at once (the cross-stream batcher does).

    ``counts`` says which items take room: items it rejects (a stream's predicted frames,
    which cost nothing to hold) never make the queue full and are never dropped by its
    policy, so they cannot push a frame that does take room out of the queue.
    """

    def __init__(
        self,
        capacity: int,
        policy: DropPolicy = DropPolicy.BLOCK,
        condition: threading.Condition | None = None,
        counts: Callable[[T], bool] | None = None,
    ) -> None:
        if capacity < 1:
            raise ConfigError(f"queue capacity must be ≥ 1, got {capacity}")
        self.capacity = capacity
        self.policy = policy
        self.cond = condition or threading.Condition()
        self._items: deque[T] = deque()
        self._counts = counts
        self._counted = 0  # items that take room
        self._closed = False
        #: items discarded by the policy, or left behind by ``discard_pending``.
        self.dropped = 0

    def _takes_room(self, item: T) -> bool:
        return self._counts is None or self._counts(item)

    def _popleft(self) -> T:
        item = self._items.popleft()
        self._counted -= self._takes_room(item)
        return item

    def _drop_oldest_counted(self) -> None:
        for i, queued in enumerate(self._items):
            if self._takes_room(queued):
                del self._items[i]
                self._counted -= 1
                self.dropped += 1
                return

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T, stop: threading.Event | None = None) -> bool:
        """Add ``item``; returns False if it (or nothing) was dropped instead of queued.

        With ``BLOCK`` the call waits for space; it gives up (dropping and counting the item)
        only if ``stop`` is set or the queue is closed meanwhile.
        """
        with self.cond:
            if self._closed:
                self.dropped += 1
                return False
            room = self._takes_room(item)
            if room and self._counted >= self.capacity:
                if self.policy is DropPolicy.DROP_NEWEST:
                    self.dropped += 1
                    return False
                if self.policy is DropPolicy.DROP_OLDEST:
                    self._drop_oldest_counted()
                else:
                    while self._counted >= self.capacity:
                        if self._closed or (stop is not None and stop.is_set()):
                            self.dropped += 1
                            return False
                        self.cond.wait(0.05)
            self._items.append(item)
            self._counted += room
            self.cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T:
        """Take the oldest item, waiting up to ``timeout`` seconds.

        Raises:
            QueueClosed: closed and empty.
            TimeoutError: nothing arrived in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not self._items:
                if self._closed:
                    raise QueueClosed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                self.cond.wait(remaining)
            item = self._popleft()
            self.cond.notify_all()
            return item

    def get_nowait(self) -> T | None:
        """Take the oldest item if there is one (caller holds or doesn't need the condition)."""
        with self.cond:
            if not self._items:
                return None
            item = self._popleft()
            self.cond.notify_all()
            return item

    def peek(self) -> T | None:
        """The oldest item, left in place (None if empty)."""
        with self.cond:
            return self._items[0] if self._items else None

    def take_while(self, predicate: Callable[[T], bool]) -> list[T]:
        """Take the leading items for which ``predicate`` holds, up to the first that fails."""
        taken: list[T] = []
        with self.cond:
            while self._items and predicate(self._items[0]):
                taken.append(self._popleft())
            if taken:
                self.cond.notify_all()
        return taken

    def close(self) -> None:
        """No more puts; consumers drain what is left, then see ``QueueClosed``."""
        with self.cond:
            self._closed = True
            self.cond.notify_all()

    def discard_pending(self) -> int:
        """Drop everything queued (counted in ``dropped``); returns how many."""
        with self.cond:
            n = len(self._items)
            self._items.clear()
            self._counted = 0
            self.dropped += n
            self.cond.notify_all()
            return n
