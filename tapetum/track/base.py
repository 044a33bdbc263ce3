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


@runtime_checkable
class PredictingTracker(Tracker, Protocol):
    """A tracker that can also carry its tracks through a frame the detector skipped.

    A stream with a detection interval (the detector on every k-th frame) calls
    :meth:`predict` on the frames in between: the tracks move by the motion model alone.
    """

    def predict(self, frame: Frame | None = None) -> Detections:
        """Advance every track one frame by its motion model, without detections.

        Nothing is matched, started or deleted; the next :meth:`update` carries on from
        the predicted state, one motion step per frame of video in all.

        Args:
            frame: the frame skipped by the detector; trackers with camera-motion
                compensation measure the camera's motion on it, others ignore it.

        Returns:
            The tracks reported on the last ``update``, in its row order, with their
            predicted boxes; ``tracker_id``, ``confidence``, ``class_id`` and extra data
            are those of that update.
        """
        ...
