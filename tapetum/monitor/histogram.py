"""Prometheus histograms kept as numpy bucket counts: one vectorised update per frame.

``prometheus_client.Histogram.observe`` takes one value per call, under a lock; a frame
with 40 detections would be 40 calls for the confidence histogram alone. A
:class:`BucketCounts` holds the per-bucket counts of several label rows (one per class,
one per stage…) in one array and adds a frame's values with a single ``searchsorted`` and
``bincount``; at scrape time :meth:`BucketCounts.samples` yields the cumulative buckets
Prometheus expects.

Example:
    >>> import numpy as np
    >>> h = BucketCounts((0.5, 1.0))
    >>> h.observe(np.array([0.2, 0.5, 0.7, 3.0]))
    >>> [(le, n) for le, n in h.samples(0)[0]]
    [('0.5', 2), ('1.0', 3), ('+Inf', 4)]
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tapetum._types import Float64Array, IntArray

__all__ = ["BucketCounts"]


class BucketCounts:
    """Bucket counts and sums of ``rows`` label rows over the upper bounds ``buckets``
    (ascending; ``+Inf`` is implied). Rows grow on demand. Thread-safe."""

    def __init__(self, buckets: Sequence[float], rows: int = 1) -> None:
        self.bounds: Float64Array = np.asarray(buckets, np.float64)
        if self.bounds.ndim != 1 or np.any(np.diff(self.bounds) <= 0):
            raise ValueError("bucket bounds must be strictly increasing")
        self._counts: IntArray = np.zeros((rows, self.bounds.size + 1), np.int64)
        self._sums: Float64Array = np.zeros(rows, np.float64)
        self._lock = threading.Lock()

    @property
    def rows(self) -> int:
        return int(self._counts.shape[0])

    def _grow(self, rows: int) -> None:
        extra = rows - self._counts.shape[0]
        if extra > 0:
            zeros = np.zeros((extra, self._counts.shape[1]), np.int64)
            self._counts = np.vstack([self._counts, zeros])
            self._sums = np.concatenate([self._sums, np.zeros(extra)])

    def observe(self, values: npt.ArrayLike, row: int = 0) -> None:
        """Add ``values`` (any shape) to one row."""
        v = np.asarray(values, np.float64).reshape(-1)
        if v.size == 0:
            return
        # Bucket i counts values <= bounds[i] ("le"): the first bound not below the value.
        idx = np.searchsorted(self.bounds, v, side="left")
        add = np.bincount(idx, minlength=self.bounds.size + 1)
        with self._lock:
            self._grow(row + 1)
            self._counts[row] += add
            self._sums[row] += float(v.sum())

    def observe_rows(self, values: npt.ArrayLike, rows: npt.ArrayLike) -> None:
        """Add ``values[i]`` to row ``rows[i]`` (e.g. confidences by class id)."""
        v = np.asarray(values, np.float64).reshape(-1)
        r = np.asarray(rows, np.int64).reshape(-1)
        if v.size == 0:
            return
        width = self.bounds.size + 1
        n_rows = int(r.max()) + 1
        flat = r * width + np.searchsorted(self.bounds, v, side="left")
        add = np.bincount(flat, minlength=n_rows * width).reshape(n_rows, width)
        sums = np.bincount(r, weights=v, minlength=n_rows)
        with self._lock:
            self._grow(n_rows)
            self._counts[:n_rows] += add
            self._sums[:n_rows] += sums

    def snapshot(self) -> tuple[IntArray, Float64Array]:
        """Copies of the (rows, buckets + 1) counts and the (rows,) sums."""
        with self._lock:
            return self._counts.copy(), self._sums.copy()

    def samples(self, row: int) -> tuple[list[tuple[str, int]], float]:
        """``([(le, cumulative count)…, ("+Inf", total)], sum)`` of one row."""
        counts, sums = self.snapshot()
        return self.cumulative(counts[row]), float(sums[row])

    def cumulative(self, counts: IntArray) -> list[tuple[str, int]]:
        cum = np.cumsum(counts).tolist()
        les = [repr(float(b)) for b in self.bounds.tolist()] + ["+Inf"]
        return list(zip(les, (int(c) for c in cum), strict=True))

    def nonempty_rows(self) -> list[int]:
        counts, _ = self.snapshot()
        return np.flatnonzero(counts.sum(axis=1) > 0).tolist()
