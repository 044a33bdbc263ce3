"""The sink interface."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from tapetum.core.result import FrameResult


@runtime_checkable
class Sink(Protocol):
    """Consumes frame results. Runs in its own thread behind a bounded queue, so a slow
    sink never stalls detection; ``write`` is called from that one thread only."""

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None:
        """Flush and release resources; called once, after the last ``write``."""
        ...
