"""The source interface and the counters every source keeps."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tapetum.core.frame import Frame


@dataclass(slots=True)
class SourceStats:
    """Counters a source updates from its reader thread (plain ints: reads are racy but safe).

    Attributes:
        frames_decoded: frames decoded and handed on.
        frames_corrupt: frames or packets that failed to decode or were flagged corrupt by
            the decoder; each is skipped, never fatal.
        reconnects: successful re-opens of a live stream after it dropped.
        errors: open/read failures seen (including failed reconnect attempts).
    """

    frames_decoded: int = 0
    frames_corrupt: int = 0
    reconnects: int = 0
    errors: int = 0


@runtime_checkable
class Source(Protocol):
    """Something that yields decoded frames: a file, a live stream, a folder of images."""

    @property
    def source_id(self) -> str:
        """Unique name of the source within a pipeline."""
        ...

    @property
    def is_live(self) -> bool:
        """True for real-time sources (streams), which are paced by their own clock and
        whose frames may be dropped under load; False for files and folders."""
        ...

    @property
    def fps(self) -> float | None:
        """Nominal frame rate, if the container states one."""
        ...

    @property
    def stats(self) -> SourceStats: ...

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yield frames until the source ends or ``stop`` is set.

        Reconnects live streams with backoff; counts and skips corrupt frames. Raises
        ``SourceError`` only when the source cannot be opened at all.
        """
        ...


class SourceBase:
    """The bookkeeping every source shares: its id, whether it is live, its nominal rate and
    its counters. A source sets these four attributes in its constructor (``_live`` may be a
    class attribute) and implements :meth:`Source.frames`."""

    _source_id: str
    _live: bool
    _fps: float | None
    _stats: SourceStats

    @property
    def source_id(self) -> str:
        return self._source_id

    @property
    def is_live(self) -> bool:
        return self._live

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def stats(self) -> SourceStats:
        return self._stats
