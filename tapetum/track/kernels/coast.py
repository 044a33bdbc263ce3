"""Tracker-only frames: advance every track by its motion model, without detections.

When the detector runs only on some frames of a stream (a detection interval), the
frames in between still need boxes. A tracker *coasts* on them: each track's Kalman
state is predicted one frame ahead (and, where camera-motion compensation is on, moved by
the camera's warp), but nothing is matched, born, lost or deleted. The next detector
frame then predicts once more, from the state the coasted frames left, so the filter has
advanced exactly one step per frame of video and its covariance has grown with the gap.

The functions work in place on the trackers' own structure of arrays and follow their
prediction steps term by term:

- :func:`coast_byte`: ByteTrack and BoT-SORT (:mod:`tapetum.track.kernels.byte_step`):
  confirmed and lost tracks are predicted, a lost track's size velocity zeroed first as
  the reference does; unconfirmed ones are not (ByteTrack never predicts them); the camera
  warp moves every track.
- :func:`coast_ocsort`: OC-SORT (:mod:`tapetum.track.kernels.ocsort_step`): the filter
  of every track, a scale velocity that would make the area non-positive zeroed first.
  OC-SORT's observation bookkeeping (age, frames since the last observation, hit streak)
  stays in detector frames, so its lost-track lifetime counts detector frames; the tracker
  scales its reporting rule (``min_hits``) to frames of video
  (``OCSortTracker.predict``).
"""

from __future__ import annotations

import numpy as np

from tapetum._types import BoolArray, Float64Array, Int8Array
from tapetum.track.kernels import kalman8
from tapetum.track.kernels.jit import njit
from tapetum.track.kernels.ocsort_step import kalman_predict

#: ``byte_step.LOST`` (kept here so that this file reads on its own).
_LOST = 2


@njit
def coast_byte(  # noqa: PLR0917  (compiled: positional arrays)
    mean: Float64Array,
    cov: Float64Array,
    state: Int8Array,
    activated: BoolArray,
    n: int,
    affine: Float64Array,
    motion: int,
    std_position: float,
    std_velocity: float,
) -> None:
    """One tracker-only frame of a ByteTrack/BoT-SORT state (rows ``[:n]``), in place.

    Args:
        mean, cov, state, activated: the ``ByteState`` columns.
        n: live tracks.
        affine: (2, 3) camera warp of this frame, or an empty array for none.
        motion: ``kalman8.MOTION_XYAH`` (ByteTrack) or ``MOTION_XYWH`` (BoT-SORT).
        std_position, std_velocity: the filter's noise weights.
    """
    for i in range(n):
        lost = state[i] == _LOST
        if not (lost or activated[i]):
            continue
        if lost:
            mean[i, 7] = 0.0
            if motion == kalman8.MOTION_XYWH:
                mean[i, 6] = 0.0
        kalman8.predict(mean[i], cov[i], motion, std_position, std_velocity)
    if affine.shape[0] == 2:
        for i in range(n):
            kalman8.warp(mean[i], cov[i], affine)


@njit
def byte_boxes(mean: Float64Array, rows: np.ndarray, motion: int) -> Float64Array:
    """(len(rows), 4) corners of the state means of ``rows``."""
    out = np.empty((rows.shape[0], 4))
    for k in range(rows.shape[0]):
        kalman8.to_corners(mean[rows[k]], motion, out[k])
    return out


@njit
def coast_ocsort(mean: Float64Array, cov: Float64Array, n: int) -> Float64Array:
    """One tracker-only frame of an OC-SORT state (rows ``[:n]``), in place; returns the
    (n, 4) predicted corners."""
    boxes = np.empty((n, 4))
    for t in range(n):
        m = mean[t]
        if m[2] + m[6] <= 0:
            m[6] = 0.0
        kalman_predict(m, cov[t])
        w = np.sqrt(m[2] * m[3])
        h = np.divide(m[2], w)
        boxes[t, 0] = m[0] - 0.5 * w
        boxes[t, 1] = m[1] - 0.5 * h
        boxes[t, 2] = m[0] + 0.5 * w
        boxes[t, 3] = m[1] + 0.5 * h
    return boxes
