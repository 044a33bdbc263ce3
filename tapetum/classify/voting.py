"""Per-track labels from repeated classifications: when to classify, what to keep.

A track is classified on its first sighting, then again every ``every`` frames or as soon
as its box has grown by ``grow`` × in area since its last classification (a car that comes
closer shows more of itself). Each classification adds its probability vector to the
track's sum; the track's label is the arg-max of the mean, its confidence that mean's
value, and ``votes`` the number of classifications behind it. The mean of probabilities
(a soft vote) keeps a label from flickering on one ambiguous crop, while a new view that is
consistently different still wins over time.

With the asynchronous stage a classification has two moments: :meth:`TrackLabels.mark` when
the crop is sent (the track is not due again until ``every`` frames later, whether or not
the answer is back) and :meth:`TrackLabels.vote` when the answer arrives. :meth:`add` is
both at once (the synchronous stage).

Optionally a *settled* track is re-checked less often (DeepStream's re-inference interval):
once it has ``settle_votes`` classifications and its label leads the runner-up by
``settle_margin`` in mean probability, it is due every ``settled_every`` frames instead.

State is a structure of arrays over the tracks seen recently; tracks unseen for
``max_age_frames`` are dropped (ended tracks do not pile up), and at most
``max_tracks`` are kept (the longest unseen go first).

Example:
    >>> import numpy as np
    >>> state = TrackLabels(num_labels=2)
    >>> ids = np.array([7]); area = np.array([100.0])
    >>> state.due(ids, area, frame_index=0, every=10, grow=1.5).tolist()
    [True]
    >>> state.add(ids, np.array([[0.2, 0.8]], np.float32), area, frame_index=0)
    >>> state.due(ids, area, frame_index=5, every=10, grow=1.5).tolist()
    [False]
    >>> label, conf, votes = state.lookup(ids)
    >>> label.tolist(), conf.astype(float).round(2).tolist(), votes.tolist()
    ([1], [0.8], [1])
"""

from __future__ import annotations

import numpy as np

from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray

__all__ = ["TrackLabels"]


class TrackLabels:
    """Classification history of the tracks of one stream (see the module docstring).

    Args:
        num_labels: width of the probability vectors added (labels after any label map).
        max_age_frames: a track unseen for this many frames is forgotten.
        max_tracks: most tracks kept at once.
    """

    def __init__(self, num_labels: int, max_age_frames: int = 150, max_tracks: int = 4096) -> None:
        if num_labels < 1 or max_age_frames < 1 or max_tracks < 1:
            raise ValueError("num_labels, max_age_frames and max_tracks must be ≥ 1")
        self.num_labels = num_labels
        self.max_age_frames = max_age_frames
        self.max_tracks = max_tracks
        self.ids: IntArray = np.empty(0, np.int64)
        self.last_seen: IntArray = np.empty(0, np.int64)
        self.last_classified: IntArray = np.empty(0, np.int64)
        self.last_area: Float64Array = np.empty(0, np.float64)
        self.votes: IntArray = np.empty(0, np.int64)
        self.prob_sum: Float64Array = np.empty((0, num_labels), np.float64)

    def __len__(self) -> int:
        return int(self.ids.size)

    def _rows(self, track_ids: IntArray) -> IntArray:
        """Row of each id in the state, -1 where the track is not known."""
        if self.ids.size == 0:
            return np.full(track_ids.shape, -1, np.int64)
        order = np.argsort(self.ids, kind="stable")
        pos = np.searchsorted(self.ids[order], track_ids)
        pos = np.minimum(pos, order.size - 1)
        rows = order[pos]
        return np.where(self.ids[rows] == track_ids, rows, -1)

    def due(  # noqa: PLR0917 - the cadence's knobs, all numbers
        self,
        track_ids: IntArray,
        area: Float64Array,
        frame_index: int,
        every: int,
        grow: float,
        settled_every: int | None = None,
        settle_votes: int = 3,
        settle_margin: float = 0.3,
    ) -> BoolArray:
        """(N,) True for tracks to classify now: never classified, last classified ``every``
        or more frames ago (``settled_every`` for a settled track, when given), or grown
        ``grow`` × in area since."""
        rows = self._rows(track_ids)
        known = rows >= 0
        r = np.where(known, rows, 0)
        if self.ids.size == 0:
            return ~known
        interval = np.full(r.size, every, np.int64)
        if settled_every is not None and r.size:
            interval[self.settled(r, settle_votes, settle_margin)] = settled_every
        stale = frame_index - self.last_classified[r] >= interval
        grown = area >= grow * self.last_area[r]
        return ~known | stale | grown

    def settled(self, rows: IntArray, min_votes: int, margin: float) -> BoolArray:
        """(N,) True for the rows whose vote is decisive: at least ``min_votes``
        classifications and the label's mean probability ``margin`` above the runner-up's."""
        votes = self.votes[rows]
        sums = self.prob_sum[rows]
        if sums.shape[1] < 2:
            return np.asarray(votes >= min_votes, np.bool_)
        top2 = -np.partition(-sums, 1, axis=1)[:, :2]
        lead = (top2[:, 0] - top2[:, 1]) / np.maximum(votes, 1)
        return np.asarray((votes >= min_votes) & (lead >= margin), np.bool_)

    def add(
        self, track_ids: IntArray, probs: Float32Array, area: Float64Array, frame_index: int
    ) -> None:
        """Count one classification per track: ``probs`` (M, L) for ``track_ids`` (M,)
        (:meth:`mark` and :meth:`vote` at once)."""
        self.mark(track_ids, area, frame_index)
        self.vote(track_ids, probs)

    def mark(self, track_ids: IntArray, area: Float64Array, frame_index: int) -> None:
        """Record that ``track_ids`` (M,) were sent for classification at ``frame_index``
        with box areas ``area`` (M,): the cadence restarts from here."""
        if track_ids.size == 0:
            return
        rows = self._rows(track_ids)
        new = rows < 0
        if new.any():
            rows = rows.copy()
            rows[new] = self._append(track_ids[new], frame_index)
        self.last_classified[rows] = frame_index
        self.last_area[rows] = area
        self.last_seen[rows] = np.maximum(self.last_seen[rows], frame_index)

    def vote(self, track_ids: IntArray, probs: Float32Array) -> int:
        """Add the probabilities ``probs`` (M, L) to the tracks ``track_ids`` (M,); tracks
        forgotten meanwhile (an answer that came back after the track expired) are left
        out. Returns how many votes were counted."""
        if track_ids.size == 0:
            return 0
        rows = self._rows(track_ids)
        known = rows >= 0
        rows, probs = rows[known], probs[known]
        # np.add.at: one track may appear twice (two answers in one delivery)
        np.add.at(self.prob_sum, rows, probs)
        np.add.at(self.votes, rows, 1)
        return int(rows.size)

    def _append(self, track_ids: IntArray, frame_index: int) -> IntArray:
        n, k = self.ids.size, track_ids.size
        self.ids = np.concatenate((self.ids, track_ids))
        self.last_seen = np.concatenate((self.last_seen, np.full(k, frame_index, np.int64)))
        self.last_classified = np.concatenate((self.last_classified, np.zeros(k, np.int64)))
        self.last_area = np.concatenate((self.last_area, np.zeros(k, np.float64)))
        self.votes = np.concatenate((self.votes, np.zeros(k, np.int64)))
        self.prob_sum = np.concatenate((self.prob_sum, np.zeros((k, self.num_labels))))
        return np.arange(n, n + k, dtype=np.int64)

    def lookup(self, track_ids: IntArray) -> tuple[IntArray, Float32Array, IntArray]:
        """Per track: label index (-1 if never classified), mean probability of that label
        (NaN if none), number of classifications."""
        rows = self._rows(track_ids)
        known = rows >= 0
        r = np.where(known, rows, 0)
        if self.ids.size == 0:
            n = track_ids.size
            return np.full(n, -1, np.int64), np.full(n, np.nan, np.float32), np.zeros(n, np.int64)
        votes = np.where(known, self.votes[r], 0)
        sums = self.prob_sum[r]
        label = np.where(votes > 0, sums.argmax(axis=1), -1)
        top = sums[np.arange(r.size), np.maximum(label, 0)]
        conf = np.where(votes > 0, top / np.maximum(votes, 1), np.nan).astype(np.float32)
        return label.astype(np.int64), conf, votes.astype(np.int64)

    def touch(self, track_ids: IntArray, frame_index: int) -> None:
        """Mark tracks as seen in this frame, then forget those unseen for too long."""
        rows = self._rows(track_ids)
        self.last_seen[rows[rows >= 0]] = frame_index
        keep = frame_index - self.last_seen <= self.max_age_frames
        if keep.sum() > self.max_tracks:  # a pathological stream: keep the most recent
            newest = np.argsort(-self.last_seen, kind="stable")[: self.max_tracks]
            keep = np.zeros_like(keep)
            keep[newest] = True
        if not keep.all():
            self._keep(keep)

    def _keep(self, keep: BoolArray) -> None:
        self.ids = self.ids[keep]
        self.last_seen = self.last_seen[keep]
        self.last_classified = self.last_classified[keep]
        self.last_area = self.last_area[keep]
        self.votes = self.votes[keep]
        self.prob_sum = self.prob_sum[keep]
