"""Per-client tracking sessions: one tracker per ``session_id``, in a bounded LRU with idle
expiry, so a client that sends frames of one camera gets persistent track ids while an
abandoned session (or a flood of new ids) cannot grow memory without bound.

Example:
    >>> from tapetum.track import make_tracker
    >>> sessions = SessionTrackers(lambda: make_tracker("bytetrack", 30.0), max_sessions=2)
    >>> a = sessions.get("cam-1"); a is sessions.get("cam-1")
    True
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from tapetum.track.base import Tracker

__all__ = ["SessionTracker", "SessionTrackers"]


@dataclass(slots=True)
class SessionTracker:
    """One session's tracker. Hold ``lock`` around ``tracker.update``: a tracker is
    stateful and not thread-safe, and two requests of one session may overlap."""

    tracker: Tracker
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used_s: float = 0.0


class SessionTrackers:
    """Bounded map ``session_id → SessionTracker`` (thread-safe).

    Args:
        factory: builds a fresh tracker for a new session.
        max_sessions: most sessions kept; the least recently used is evicted beyond it.
        idle_s: a session unused this long is dropped (its next request starts fresh ids).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        factory: Callable[[], Tracker],
        max_sessions: int = 256,
        idle_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._max = max(1, max_sessions)
        self._idle_s = idle_s
        self._clock = clock
        self._sessions: OrderedDict[str, SessionTracker] = OrderedDict()
        self._lock = threading.Lock()
        #: sessions dropped so far (LRU or idle).
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> SessionTracker:
        """The session's tracker, created on first use; marks it most recently used."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            entry = self._sessions.get(session_id)
            if entry is None:
                entry = SessionTracker(self._factory())
                self._sessions[session_id] = entry
                while len(self._sessions) > self._max:
                    self._sessions.popitem(last=False)
                    self.evicted += 1
            else:
                self._sessions.move_to_end(session_id)
            entry.last_used_s = now
            return entry

    def _expire(self, now: float) -> None:
        # Oldest first: stop at the first session still fresh.
        while self._sessions:
            sid, entry = next(iter(self._sessions.items()))
            if now - entry.last_used_s <= self._idle_s:
                break
            del self._sessions[sid]
            self.evicted += 1
