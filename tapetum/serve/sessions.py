"""Per-client tracking sessions: one tracker per (owner, ``session_id``), in a bounded LRU
with idle expiry, so a client that sends frames of one camera gets persistent track ids
while an abandoned session (or a flood of new ids) cannot grow memory without bound.

Sessions belong to the principal that made them (its ``key_id``, see
:mod:`tapetum.serve.ownership`): two keys sending the same ``session_id`` get two trackers,
and each owner holds at most ``max_per_owner`` sessions. An owner over its share loses its
own least recently used session, never another owner's, so one key cannot evict everyone.

Example:
    >>> from tapetum.track import make_tracker
    >>> sessions = SessionTrackers(lambda: make_tracker("bytetrack", 30.0), max_sessions=2)
    >>> a = sessions.get("cam-1"); a is sessions.get("cam-1")
    True
    >>> a is sessions.get("cam-1", owner="another-key")
    False
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tapetum.track.base import Tracker

__all__ = ["SessionTracker", "SessionTrackers"]

#: Owner of sessions whose caller is not named (auth off).
_ANONYMOUS = "anonymous"


@dataclass(slots=True)
class SessionTracker:
    """One session's tracker. Hold ``lock`` around ``tracker.update``: a tracker is
    stateful and not thread-safe, and two requests of one session may overlap."""

    tracker: Tracker
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used_s: float = 0.0
    #: the session's classification state (the service's, with ``--classify``; under ``lock``)
    labels: Any = None


class SessionTrackers:
    """Bounded map ``(owner, session_id) → SessionTracker`` (thread-safe).

    Args:
        factory: builds a fresh tracker for a new session.
        max_sessions: most sessions kept in all; the least recently used is evicted beyond.
        idle_s: a session unused this long is dropped (its next request starts fresh ids).
        clock: monotonic seconds (injectable for tests).
        max_per_owner: most sessions one owner keeps (None: ``max_sessions``); its least
            recently used one is evicted beyond.
    """

    def __init__(
        self,
        factory: Callable[[], Tracker],
        max_sessions: int = 256,
        idle_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_per_owner: int | None = None,
    ) -> None:
        self._factory = factory
        self._max = max(1, max_sessions)
        self._max_per_owner = max(1, min(self._max, max_per_owner or self._max))
        self._idle_s = idle_s
        self._clock = clock
        self._sessions: OrderedDict[tuple[str, str], SessionTracker] = OrderedDict()
        self._per_owner: dict[str, int] = {}
        self._lock = threading.Lock()
        #: sessions dropped so far (LRU or idle).
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def owned_by(self, owner: str) -> int:
        """How many sessions ``owner`` holds."""
        with self._lock:
            return self._per_owner.get(owner, 0)

    def get(self, session_id: str, owner: str = _ANONYMOUS) -> SessionTracker:
        """The tracker of ``owner``'s session ``session_id``, created on first use; marks
        it most recently used."""
        now = self._clock()
        key = (owner, session_id)
        with self._lock:
            self._expire(now)
            entry = self._sessions.get(key)
            if entry is None:
                if self._per_owner.get(owner, 0) >= self._max_per_owner:
                    self._drop(next(k for k in self._sessions if k[0] == owner))
                entry = SessionTracker(self._factory())
                self._sessions[key] = entry
                self._per_owner[owner] = self._per_owner.get(owner, 0) + 1
                while len(self._sessions) > self._max:
                    self._drop(next(iter(self._sessions)))
            else:
                self._sessions.move_to_end(key)
            entry.last_used_s = now
            return entry

    def _drop(self, key: tuple[str, str]) -> None:
        del self._sessions[key]
        owner = key[0]
        left = self._per_owner[owner] - 1
        if left:
            self._per_owner[owner] = left
        else:
            del self._per_owner[owner]
        self.evicted += 1

    def _expire(self, now: float) -> None:
        # Oldest first: stop at the first session still fresh.
        while self._sessions:
            key, entry = next(iter(self._sessions.items()))
            if now - entry.last_used_s <= self._idle_s:
                break
            self._drop(key)
