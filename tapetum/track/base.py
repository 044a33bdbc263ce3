"""The tracker interface every multi-object tracker implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame


@runtime_checkable
class Tracker(Protocol):
    """Turns per-frame detections of one stream into identities.

    One tracker instance belongs to one stream: it holds that stream's track state.
    """

    def update(self, detections: Detections, frame: Frame | None = None) -> Detections:
        """Associate this frame's detections with existing tracks.

        Args:
            detections: this frame's detections (any ``tracker_id`` is ignored).
            frame: the frame they came from; trackers that need pixels (camera-motion
                compensation, appearance) read it, others ignore it.

        Returns:
            The detections that belong to confirmed tracks, with ``tracker_id`` set
            (ids are positive and unique within this tracker's lifetime). Boxes are the
            detector's boxes, not the motion model's smoothed ones.
        """
        ...

    def reset(self) -> None:
        """Forget every track and restart id numbering."""
        ...
