"""Multi-object tracking: motion models, association and trackers behind one protocol.

Example:
    >>> from tapetum.track import make_tracker
    >>> tracker = make_tracker("bytetrack", frame_rate=25.0)
    >>> type(tracker).__name__
    'ByteTracker'
"""

from __future__ import annotations

from collections.abc import Callable

from tapetum.errors import ConfigError
from tapetum.track.base import Tracker
from tapetum.track.bytetrack import ByteTrackConfig, ByteTracker
from tapetum.track.ocsort import OCSortConfig, OCSortTracker

__all__ = [
    "ByteTrackConfig",
    "ByteTracker",
    "OCSortConfig",
    "OCSortTracker",
    "Tracker",
    "make_tracker",
]


def _bytetrack(frame_rate: float) -> Tracker:
    return ByteTracker(ByteTrackConfig(frame_rate=frame_rate))


def _ocsort(frame_rate: float) -> Tracker:
    return OCSortTracker(OCSortConfig(frame_rate=frame_rate))


_FACTORIES: dict[str, Callable[[float], Tracker]] = {"bytetrack": _bytetrack, "ocsort": _ocsort}


def make_tracker(name: str, frame_rate: float) -> Tracker:
    """Build a tracker by name with its default parameters.

    Args:
        name: tracker name, case-insensitive; one of ``"bytetrack"``, ``"ocsort"``.
        frame_rate: stream frame rate in frames per second (scales how long lost tracks
            are kept).

    Raises:
        ConfigError: the name is unknown, or ``frame_rate`` is not positive.
    """
    key = name.strip().lower()
    factory = _FACTORIES.get(key)
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise ConfigError(f"unknown tracker {name!r}; known trackers: {known}")
    return factory(frame_rate)
