"""Hand freed memory back to the operating system, for processes that run for months.

Frames are large (a 720p BGR frame is 2.7 MB, its model input 2 MB) and cross threads:
decoded in a reader, letterboxed, inferred, drawn and encoded in sink threads, freed
wherever the last reference drops. glibc's malloc serves each thread from an arena of its
own and keeps what is freed there for reuse; a freed block below the arena's top cannot be
returned, so the resident size (RSS) ratchets up with each new peak of frames in flight
and never comes down. On the crowd video that is 10-12 MB per server stream started and
stopped (five in a row: 411 → 458 MB) and steps of about 2.5 MB per pass of a looped file,
while the memory Python and NumPy hold stays level; ``malloc_trim(0)``, which returns the
free pages of every arena, brings it back to within 1 MB a stream.

:class:`MemoryTrimmer` does that every ``interval_s`` on a background thread (``tapetum
run`` and ``tapetum serve`` start one). Elsewhere than glibc (musl, macOS, Windows) it is a
no-op.

Example:
    >>> trimmer = MemoryTrimmer(interval_s=30.0).start()
    >>> trimmer.stop()
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from functools import cache

__all__ = ["MemoryTrimmer", "limit_malloc_arenas", "release_free_memory"]

#: ``mallopt`` parameter number of the arena limit (glibc's malloc.h ``M_ARENA_MAX``).
_M_ARENA_MAX = -8
#: Environment variables through which a user sets the arena limit themselves.
_ARENA_ENV = ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")

log = logging.getLogger(__name__)


@cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has ``malloc_trim``; musl has a ``mallopt`` that
    ignores every parameter), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (``mallopt(M_ARENA_MAX)``), before the threads
    that would each take one start.

    glibc gives threads arenas of their own, up to 8 per core. Frames allocated in one and
    freed in another, and the small blocks beside them, leave each arena fragmented to its
    own high-water mark, which :func:`release_free_memory` cannot return: a server whose
    streams come and go (new threads each time) spreads over more arenas, each holding
    free memory of its own. Two arenas serve a frame pipeline's few busy threads without
    contention worth measuring.

    Left alone when ``MALLOC_ARENA_MAX`` or ``GLIBC_TUNABLES`` is set (the user's choice),
    and where the C library is not glibc. Returns True when the cap was set.
    """
    if arenas < 1:
        raise ValueError(f"arenas must be >= 1, got {arenas}")
    if any(name in os.environ for name in _ARENA_ENV):
        return False
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Return the free pages of every malloc arena to the OS (glibc ``malloc_trim(0)``).

    Returns:
        True if the C library has it (whether or not anything was released).
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


class MemoryTrimmer:
    """Calls :func:`release_free_memory` every ``interval_s`` on a daemon thread.

    A trim walks the free lists of every arena, holding each arena's lock for a moment
    (about 1-5 ms on a 500 MB process); every 30 s that is noise beside a frame's work.

    Attributes:
        trims: trims done so far.
        busy_s: seconds spent trimming in all.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self.trims = 0
        self.busy_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MemoryTrimmer:
        """Start trimming (no thread where the C library cannot trim); returns self."""
        if self._thread is None and _glibc() is not None:
            self._thread = threading.Thread(target=self._run, name="memory-trim", daemon=True)
            self._thread.start()
        return self

    def trim_now(self) -> None:
        """One trim at once, from the calling thread."""
        t0 = time.perf_counter()
        if release_free_memory():
            self.trims += 1
            self.busy_s += time.perf_counter() - t0

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        log.debug("memory trims: %d, %.3f s in all", self.trims, self.busy_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.trim_now()
