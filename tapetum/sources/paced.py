"""Replay any source as a live camera at a fixed frame rate (benchmarks, soak tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from tapetum.core.frame import Frame
from tapetum.errors import ConfigError
from tapetum.sources.base import Source, SourceBase, SourceStats


class PacedSource(SourceBase):
    """Emits the frames of a wrapped source at ``fps``, like a camera does.

    The wrapped source is opened with ``factory`` and, with ``loop``, re-opened when it
    ends, until ``duration_s`` has passed. Frames leave on the camera's clock
    (``t0 + k / fps``) whether or not the pipeline keeps up, so a slow consumer shows as
    drops and latency, not as a slower camera. ``is_live`` is True, so the pipeline applies
    its live-stream drop policy.

    Example:
        >>> cam = PacedSource(lambda: open_source("crowd.avi"), 15, "cam1", duration_s=10)
    """

    def __init__(
        self,
        factory: Callable[[], Source],
        fps: float,
        source_id: str,
        duration_s: float | None = None,
        loop: bool = True,
    ) -> None:
        if fps <= 0:
            raise ConfigError(f"paced fps must be positive, got {fps}")
        self._factory = factory
        self._period_s = 1.0 / float(fps)
        self._fps = float(fps)
        self._duration_s = duration_s
        self._loop = loop
        self._source_id = source_id
        self._stats = SourceStats()
        self._live = True

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        sid = self.source_id
        period_s = self._period_s
        t0 = time.perf_counter()
        k = 0
        while not stop.is_set():
            inner = self._factory()
            for frame in inner.frames(stop):
                due = t0 + k * period_s
                if self._duration_s is not None and due - t0 >= self._duration_s:
                    return
                wait = due - time.perf_counter()
                if wait > 0 and stop.wait(wait):
                    return
                self._stats.frames_decoded += 1
                # The camera delivered this frame at its due time; if we are late (the
                # consumer blocked), the wait counts as latency, as it would on a camera.
                yield Frame(sid, k, frame.image, k * period_s, min(due, time.perf_counter()))
                k += 1
            self._stats.frames_corrupt += inner.stats.frames_corrupt
            if not self._loop or k == 0:
                return
