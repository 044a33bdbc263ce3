"""Core data types (array-backed detections, decoded frames, per-frame results) and the
circuit breaker every layer that calls something fallible can use.

Depends on nothing else in Tapetum."""

from tapetum.core.detections import NO_TRACK, Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult

__all__ = ["NO_TRACK", "Detections", "Frame", "FrameResult"]
