"""Hand each result to a Python callable."""

from __future__ import annotations

from collections.abc import Callable

from tapetum.core.result import FrameResult


class CallbackSink:
    """Calls ``fn(result)`` for every result, from the sink's own thread.

    Example:
        >>> counts = []
        >>> sink = CallbackSink(lambda r: counts.append(len(r.detections)))
    """

    def __init__(self, fn: Callable[[FrameResult], object]) -> None:
        self._fn = fn

    def write(self, result: FrameResult) -> None:
        self._fn(result)

    def close(self) -> None:
        return None
