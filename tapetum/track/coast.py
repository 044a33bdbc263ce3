"""What a tracker reports on a frame the detector skipped (``PredictingTracker.predict``).

The tracks reported are those of the last detector frame (a coasted frame matches,
starts and loses nothing), each with its box predicted by the motion model; the rest of
a row (identity, confidence, class, extra data) is carried over from that frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tapetum._types import Float64Array, IntArray
from tapetum.core.detections import Detections

if TYPE_CHECKING:
    from tapetum.track.kernels.byte_step import ByteCore

__all__ = ["carry_forward", "coast_byte_core"]


def carry_forward(last: Detections, track_ids: IntArray, boxes_xyxy: Float64Array) -> Detections:
    """The rows of ``last`` with their boxes replaced by the predicted ones.

    Args:
        last: the tracker's output on its last ``update`` (``tracker_id`` set).
        track_ids: (T,) identities of the tracks the state holds.
        boxes_xyxy: (T, 4) their predicted boxes, pixels.

    Returns:
        ``last``'s rows, in its order, whose id is among ``track_ids``, each with its
        track's predicted box (float32).
    """
    if len(last) == 0 or track_ids.shape[0] == 0:
        return last[np.zeros(len(last), np.bool_)]
    order = np.argsort(track_ids, kind="stable")
    sorted_ids = track_ids[order]
    pos = np.minimum(np.searchsorted(sorted_ids, last.tracker_id), sorted_ids.shape[0] - 1)
    found = sorted_ids[pos] == last.tracker_id
    out = last[found]
    out.xyxy = boxes_xyxy[order[pos[found]]].astype(np.float32)
    return out


def coast_byte_core(
    core: ByteCore, last: Detections, affine: Float64Array | None = None
) -> Detections:
    """One tracker-only frame of a ByteTrack/BoT-SORT core: its tracks predicted (and moved
    by the camera ``affine``, (2, 3), if given) in place; returns ``last`` carried forward
    to the predicted boxes of the confirmed, tracked tracks."""
    from tapetum.track.kernels import byte_step as kernel  # numba: load on use
    from tapetum.track.kernels import coast

    s = core.state
    motion = int(core.flags[kernel.I_MOTION])
    no_affine = np.empty((0, 0))
    coast.coast_byte(
        s.mean,
        s.cov,
        s.state,
        s.activated,
        s.n,
        no_affine if affine is None else np.ascontiguousarray(affine, np.float64),
        motion,
        float(core.params[kernel.P_STD_POSITION]),
        float(core.params[kernel.P_STD_VELOCITY]),
    )
    live = s.state[: s.n]
    rows = np.flatnonzero((live == kernel.TRACKED) & s.activated[: s.n])
    return carry_forward(last, s.track_id[rows], coast.byte_boxes(s.mean, rows, motion))
