"""Track births, deaths and lifetimes of one stream, from the tracker's output alone.

No ground truth is needed: a :class:`TrackLedger` sees each frame's ``tracker_id`` and
boxes and keeps one row per live track (structure of arrays, sorted by id), so each frame
is a handful of vectorised operations whatever the number of tracks:

* a *birth* is an id seen for the first time;
* a *death* is a track not seen for ``lost_after_s`` (longer than any tracker keeps a lost
  track, so the id will not come back); its *lifetime* is last minus first sighting;
* a *re-birth* is a birth within ``rebirth_radius`` box sizes of a track that went missing
  at most ``rebirth_window_s`` before: the tracker most likely lost an object and gave it a
  new id (an id-switch proxy).

Example:
    >>> import numpy as np
    >>> ledger = TrackLedger(lost_after_s=1.0)
    >>> box = np.array([[0, 0, 10, 10]], np.float32)
    >>> ledger.update(np.array([7]), box, 0.0).births
    1
    >>> ledger.update(np.array([7]), box, 0.5).births
    0
    >>> ledger.update(np.array([], np.int64), box[:0], 2.0).lifetimes_s.tolist()
    [0.5]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tapetum._types import Float32Array, Float64Array, IntArray

__all__ = ["TrackEvents", "TrackLedger"]


@dataclass(frozen=True, slots=True)
class TrackEvents:
    """What one frame changed.

    Attributes:
        births: ids seen for the first time.
        rebirths: births near a track that had just gone missing (id-switch proxy).
        lifetimes_s: (K,) lifetimes in seconds of the tracks that died at this frame.
        active: tracks alive after the frame (seen within ``lost_after_s``).
    """

    births: int = 0
    rebirths: int = 0
    lifetimes_s: Float64Array = field(default_factory=lambda: np.empty(0, np.float64))
    active: int = 0


class TrackLedger:
    """Births, deaths, lifetimes and re-births of the tracks of one stream.

    Args:
        lost_after_s: a track unseen this long is dead.
        rebirth_window_s: how recently a track must have gone missing for a new one near
            it to count as a re-birth.
        rebirth_radius: how near, in units of the missing track's box size (the square
            root of its area).
    """

    def __init__(
        self,
        lost_after_s: float = 2.0,
        rebirth_window_s: float = 1.0,
        rebirth_radius: float = 0.5,
    ) -> None:
        self.lost_after_s = lost_after_s
        self.rebirth_window_s = rebirth_window_s
        self.rebirth_radius = rebirth_radius
        self._ids: IntArray = np.empty(0, np.int64)
        self._first: Float64Array = np.empty(0, np.float64)
        self._last: Float64Array = np.empty(0, np.float64)
        self._box: Float32Array = np.empty((0, 4), np.float32)
        self._oldest_last = np.inf  # no track can die before this + lost_after_s

    @property
    def active(self) -> int:
        return int(self._ids.size)

    def update(self, tracker_id: IntArray, xyxy: Float32Array, t_s: float) -> TrackEvents:
        """Record one frame: ``tracker_id`` (N,) (negative = unconfirmed, ignored),
        ``xyxy`` (N, 4) pixels, at time ``t_s`` seconds on the source's clock."""
        lifetimes = self._bury(t_s) if t_s - self.lost_after_s > self._oldest_last else _NONE
        ids = tracker_id
        boxes = xyxy
        if ids.size and ids.min() < 0:
            keep = ids >= 0
            ids, boxes = ids[keep], boxes[keep]
        pos = np.searchsorted(self._ids, ids)
        known = pos < self._ids.size
        known[known] = self._ids[pos[known]] == ids[known]
        rows = pos[known]
        self._last[rows] = t_s
        self._box[rows] = boxes[known]
        births = int(ids.size - rows.size)
        rebirths = 0
        if births:
            new = ~known
            rebirths = self._count_rebirths(boxes[new], t_s)
            self._insert(ids[new], t_s, boxes[new])
        return TrackEvents(births, rebirths, lifetimes, int(self._ids.size))

    def _bury(self, t_s: float) -> Float64Array:
        """Remove the tracks unseen for ``lost_after_s``; their lifetimes."""
        dead = self._last < t_s - self.lost_after_s
        lifetimes: Float64Array = self._last[dead] - self._first[dead]
        alive = ~dead
        self._ids, self._first, self._last = self._ids[alive], self._first[alive], self._last[alive]
        self._box = self._box[alive]
        self._oldest_last = float(self._last.min()) if self._last.size else np.inf
        return lifetimes

    def _count_rebirths(self, boxes: Float32Array, t_s: float) -> int:
        missing = (self._last < t_s) & (self._last >= t_s - self.rebirth_window_s)
        if not missing.any():
            return 0
        gone = self._box[missing].astype(np.float64)
        gone_centre = (gone[:, :2] + gone[:, 2:]) * 0.5
        gone_size = np.sqrt(np.maximum(np.prod(gone[:, 2:] - gone[:, :2], axis=1), 1.0))
        centre = (boxes[:, :2] + boxes[:, 2:]).astype(np.float64) * 0.5
        d = np.linalg.norm(centre[:, None, :] - gone_centre[None, :, :], axis=2)
        near = d <= self.rebirth_radius * gone_size[None, :]
        return int(near.any(axis=1).sum())

    def _insert(self, ids: IntArray, t_s: float, boxes: Float32Array) -> None:
        all_ids = np.concatenate([self._ids, ids])
        order = np.argsort(all_ids, kind="stable")
        n = ids.size
        self._ids = all_ids[order]
        self._first = np.concatenate([self._first, np.full(n, t_s)])[order]
        self._last = np.concatenate([self._last, np.full(n, t_s)])[order]
        self._box = np.concatenate([self._box, boxes.astype(np.float32)])[order]
        self._oldest_last = min(self._oldest_last, t_s)


_NONE: Float64Array = np.empty(0, np.float64)
