"""Multi-object tracking: motion models, association and trackers behind one protocol.

Example:
    >>> from tapetum.track import make_tracker
    >>> tracker = make_tracker("bytetrack", frame_rate=25.0)
    >>> type(tracker).__name__
    'ByteTracker'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tapetum.errors import ConfigError
from tapetum.track.base import PredictingTracker, Tracker
from tapetum.track.bytetrack import ByteTrackConfig, ByteTracker
from tapetum.track.ocsort import OCSortConfig, OCSortTracker
from tapetum.track.relink import RelinkConfig, RelinkingTracker, TrackletRelinker

if TYPE_CHECKING:
    from tapetum.track.reid import Embedder

__all__ = [
    "ByteTrackConfig",
    "ByteTracker",
    "OCSortConfig",
    "OCSortTracker",
    "PredictingTracker",
    "RelinkConfig",
    "RelinkingTracker",
    "Tracker",
    "TrackletRelinker",
    "make_tracker",
]


def _bytetrack(frame_rate: float) -> Tracker:
    return ByteTracker(ByteTrackConfig(frame_rate=frame_rate))


def _ocsort(frame_rate: float) -> Tracker:
    return OCSortTracker(OCSortConfig(frame_rate=frame_rate))


def _botsort(frame_rate: float, reid: Embedder | None = None) -> Tracker:
    from tapetum.track.botsort import BoTSortConfig, BoTSortTracker  # OpenCV: load on use

    return BoTSortTracker(BoTSortConfig(frame_rate=frame_rate, with_reid=reid is not None), reid)


_FACTORIES: dict[str, Callable[[float], Tracker]] = {
    "bytetrack": _bytetrack,
    "ocsort": _ocsort,
    "botsort": _botsort,
}


def make_tracker(name: str, frame_rate: float, reid: Embedder | None = None) -> Tracker:
    """Build a tracker by name with its default parameters.

    Args:
        name: tracker name, case-insensitive; one of ``"bytetrack"``, ``"ocsort"``,
            ``"botsort"``.
        frame_rate: stream frame rate in frames per second (scales how long lost tracks
            are kept).
        reid: an appearance embedder (BoT-SORT only); one embedder may serve every stream.

    Raises:
        ConfigError: the name is unknown, ``frame_rate`` is not positive, or ``reid`` is
            given to a tracker without an appearance model.
    """
    key = name.strip().lower()
    factory = _FACTORIES.get(key)
    if factory is None:
        known = ", ".join(sorted(_FACTORIES))
        raise ConfigError(f"unknown tracker {name!r}; known trackers: {known}")
    if reid is not None:
        if key != "botsort":
            raise ConfigError(f"reid needs the botsort tracker ({name!r} has no appearance model)")
        return _botsort(frame_rate, reid)
    return factory(frame_rate)
