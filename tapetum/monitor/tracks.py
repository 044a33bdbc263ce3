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
import numpy.typing as npt

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
        self._centre: Float64Array = np.empty((0, 2), np.float64)
        self._size: Float64Array = np.empty(0, np.float64)

    @property
    def active(self) -> int:
        return int(self._ids.size)

    def update(self, tracker_id: IntArray, xyxy: Float32Array, t_s: float) -> TrackEvents:
        """Record one frame: ``tracker_id`` (N,) (negative = unconfirmed, ignored),
        ``xyxy`` (N, 4) pixels, at time ``t_s`` seconds on the source's clock."""
        keep = tracker_id >= 0
        ids = np.asarray(tracker_id[keep], np.int64)
        boxes = np.asarray(xyxy[keep], np.float64).reshape(-1, 4)
        centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5
        size = np.sqrt(np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1.0))
        lifetimes = self._bury(t_s)
        pos = np.searchsorted(self._ids, ids)
        known = pos < self._ids.size
        known[known] = self._ids[pos[known]] == ids[known]
        rows = pos[known]
        self._last[rows] = t_s
        self._centre[rows] = centre[known]
        self._size[rows] = size[known]
        new = ~known
        births = int(new.sum())
        rebirths = self._count_rebirths(centre[new], t_s) if births else 0
        if births:
            self._insert(ids[new], t_s, centre[new], size[new])
        return TrackEvents(births, rebirths, lifetimes, int(self._ids.size))

    def _bury(self, t_s: float) -> Float64Array:
        """Remove the tracks unseen for ``lost_after_s``; their lifetimes."""
        dead = self._last < t_s - self.lost_after_s
        if not dead.any():
            return np.empty(0, np.float64)
        lifetimes: Float64Array = self._last[dead] - self._first[dead]
        alive = ~dead
        self._ids, self._first, self._last = self._ids[alive], self._first[alive], self._last[alive]
        self._centre, self._size = self._centre[alive], self._size[alive]
        return lifetimes

    def _count_rebirths(self, centres: npt.NDArray[np.float64], t_s: float) -> int:
        missing = (self._last < t_s) & (self._last >= t_s - self.rebirth_window_s)
        if not missing.any():
            return 0
        gone = self._centre[missing]
        d = np.linalg.norm(centres[:, None, :] - gone[None, :, :], axis=2)
        near = d <= self.rebirth_radius * self._size[missing][None, :]
        return int(near.any(axis=1).sum())

    def _insert(self, ids: IntArray, t_s: float, centre: Float64Array, size: Float64Array) -> None:
        all_ids = np.concatenate([self._ids, ids])
        order = np.argsort(all_ids, kind="stable")
        n = ids.size
        self._ids = all_ids[order]
        self._first = np.concatenate([self._first, np.full(n, t_s)])[order]
        self._last = np.concatenate([self._last, np.full(n, t_s)])[order]
        self._centre = np.concatenate([self._centre, centre])[order]
        self._size = np.concatenate([self._size, size])[order]
