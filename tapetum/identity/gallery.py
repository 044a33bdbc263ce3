"""Embedding gallery: one appearance vector per local track, searchable by cosine similarity.

Each entry is a local track ``(camera_id, local_track_id)`` with the mean of its
L2-normalised embeddings (a running mean of the first ``1 / (1 - momentum)``, then an
exponential moving average, EMA), a short-memory EMA of the same (what the
track looks like *now*, for drift checks) and its first/last seen timestamps.

Storage is split in two on purpose:

* dense numpy rows (``vectors``, ``recent``, ``camera``, ``first_s``, ``last_s``) are the
  truth; every score returned is an exact dot product on them;
* an hnswlib HNSW graph over the EMA vectors (inner product) proposes candidates when the
  feasible part of the gallery is too large to scan. An EMA moves slowly, so an entry is
  re-inserted into the graph only after it has drifted ``reindex_drift`` in cosine distance
  from its indexed copy, not on every frame.

Queries are filtered by a boolean mask over entries (topology feasibility, computed
vectorised by the caller); when few entries pass, the gallery scans just those rows
exactly, which is both faster and exact.

Example:
    >>> import numpy as np
    >>> g = EmbeddingGallery(dim=4)
    >>> e = np.eye(4, dtype=np.float32)
    >>> rows = g.upsert([("cam-a", 1), ("cam-a", 2)], [0, 0], e[:2], timestamp_s=10.0)
    >>> res = g.query(e[1:2], k=1)
    >>> [g.key(int(r)) for r in res.rows[0]], res.similarity[0].round(3).tolist()
    ([('cam-a', 2)], [1.0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tapetum._optional import import_optional
from tapetum._types import BoolArray, Float32Array, IntArray
from tapetum.errors import ConfigError

#: (camera_id, local_track_id): a track of one camera's own tracker.
TrackKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class GalleryConfig:
    """How the gallery stores and searches.

    Attributes:
        dim: embedding length D.
        momentum: EMA weight of the old vector per update (``ema = m·ema + (1-m)·new``);
            0.9 as in DeepSORT/BoT-SORT feature smoothing. The first updates are a plain
            running mean (weight ``1 - 1/(u+1)`` after ``u`` updates) until it reaches
            ``momentum``.
        recent_momentum: the short-memory EMA used for drift (split) checks.
        initial_capacity: rows preallocated; doubled when full.
        hnsw_m, hnsw_ef_construction, hnsw_ef: HNSW graph degree and search breadth.
        exact_below: scan exactly when at most this many entries pass the filter.
        oversample: ANN candidates fetched per wanted result before filtering.
        reindex_drift: cosine distance an EMA may move before its graph copy is replaced.
    """

    dim: int = 512
    momentum: float = 0.9
    recent_momentum: float = 0.5
    initial_capacity: int = 256
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    hnsw_ef: int = 64
    exact_below: int = 2048
    oversample: int = 8
    reindex_drift: float = 0.02

    def __post_init__(self) -> None:
        if self.dim < 1 or self.initial_capacity < 1:
            raise ConfigError("gallery dim and initial_capacity must be ≥ 1")
        for name in ("momentum", "recent_momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Top-k gallery rows per query; ``rows`` is -1 and ``similarity`` -inf where fewer
    than k entries passed the filter.

    Attributes:
        rows: (Q, k) int64 gallery rows, best first.
        similarity: (Q, k) float32 cosine similarity (exact).
    """

    rows: IntArray
    similarity: Float32Array


def normalize_rows(x: npt.ArrayLike) -> tuple[Float32Array, BoolArray]:
    """L2-normalise rows; returns ``(unit rows, valid)`` where ``valid`` is False for rows
    that are non-finite or (near) zero (left as zeros)."""
    arr = np.asarray(x, np.float32)
    arr = arr.reshape(arr.shape[0], -1) if arr.ndim else arr.reshape(1, -1)
    norm = np.linalg.norm(arr, axis=1)
    valid: BoolArray = np.isfinite(norm) & (norm > 1e-6)
    out = np.zeros_like(arr)
    out[valid] = arr[valid] / norm[valid, None]
    return out, valid


class EmbeddingGallery:
    """Local tracks' appearance, searchable by cosine similarity. Not thread-safe: one
    owner (``IdentityService`` guards it with its lock)."""

    def __init__(self, config: GalleryConfig | None = None, *, dim: int | None = None) -> None:
        cfg = config or GalleryConfig()
        if dim is not None and dim != cfg.dim:
            cfg = replace(cfg, dim=dim)
        self.config = cfg
        cap = cfg.initial_capacity
        self.vectors = np.zeros((cap, cfg.dim), np.float32)
        self.recent = np.zeros((cap, cfg.dim), np.float32)
        self._indexed = np.zeros((cap, cfg.dim), np.float32)
        self.camera = np.full(cap, -1, np.int64)
        self.first_s = np.full(cap, np.nan)
        self.last_s = np.full(cap, np.nan)
        self.updates = np.zeros(cap, np.int64)
        self.alive = np.zeros(cap, np.bool_)
        self._keys: list[TrackKey | None] = [None] * cap
        self._rows: dict[TrackKey, int] = {}
        self._free: list[int] = list(range(cap - 1, -1, -1))
        self._index = self._new_index(cap)

    # --- storage -------------------------------------------------------------------------

    def _new_index(self, capacity: int) -> Any:
        hnswlib = import_optional("hnswlib", "identity", "the identity gallery")

        index = hnswlib.Index(space="ip", dim=self.config.dim)
        index.init_index(
            max_elements=capacity,
            ef_construction=self.config.hnsw_ef_construction,
            M=self.config.hnsw_m,
        )
        index.set_ef(self.config.hnsw_ef)
        # One thread: the gallery runs beside detection and ReID on the same cores.
        index.set_num_threads(1)
        return index

    def _grow(self) -> None:
        old = self.vectors.shape[0]
        new = 2 * old

        def pad(a: npt.NDArray[Any], fill: Any) -> npt.NDArray[Any]:
            out = np.full((new, *a.shape[1:]), fill, a.dtype)
            out[:old] = a
            return out

        self.vectors = pad(self.vectors, 0.0)
        self.recent = pad(self.recent, 0.0)
        self._indexed = pad(self._indexed, 0.0)
        self.camera = pad(self.camera, -1)
        self.first_s = pad(self.first_s, np.nan)
        self.last_s = pad(self.last_s, np.nan)
        self.updates = pad(self.updates, 0)
        self.alive = pad(self.alive, False)
        self._keys += [None] * (new - old)
        self._free = list(range(new - 1, old - 1, -1)) + self._free
        self._index.resize_index(new)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def row(self, key: TrackKey) -> int:
        """Row of ``key``; raises KeyError when absent."""
        return self._rows[key]

    def rows_of(self, keys: Sequence[TrackKey]) -> IntArray:
        """(N,) rows of ``keys``, -1 where absent."""
        return np.fromiter((self._rows.get(k, -1) for k in keys), np.int64, len(keys))

    def key(self, row: int) -> TrackKey:
        key = self._keys[row]
        if key is None:
            raise KeyError(f"gallery row {row} is empty")
        return key

    @property
    def live_rows(self) -> IntArray:
        """(L,) rows holding an entry."""
        return np.flatnonzero(self.alive).astype(np.int64)

    # --- add / update / remove -----------------------------------------------------------

    def add(
        self, keys: Sequence[TrackKey], camera_index: npt.ArrayLike, timestamp_s: float
    ) -> IntArray:
        """Add tracks with no appearance yet (zero vectors, never returned by a query until
        their first :meth:`update`). Keys already present keep their row.

        Returns:
            (N,) int64 rows of the keys.
        """
        n = len(keys)
        cams = np.broadcast_to(np.asarray(camera_index, np.int64), (n,))
        rows = self.rows_of(keys)
        for i in np.flatnonzero(rows < 0).tolist():
            if not self._free:
                self._grow()
            r = self._free.pop()
            rows[i] = r
            self._rows[keys[i]] = r
            self._keys[r] = keys[i]
            self.alive[r] = True
            self.camera[r] = cams[i]
            self.first_s[r] = timestamp_s
            self.last_s[r] = timestamp_s
            self.updates[r] = 0
            self.vectors[r] = 0.0
            self.recent[r] = 0.0
            self._indexed[r] = 0.0
        return rows

    def update(self, rows: npt.ArrayLike, embeddings: npt.ArrayLike, timestamp_s: float) -> None:
        """Fold one embedding per row into its EMAs and move its last-seen time, all at once.

        Args:
            rows: (N,) distinct live rows.
            embeddings: (N, D); rows that are zero or non-finite update only the timestamp.
            timestamp_s: when the embeddings were observed.
        """
        rows = np.asarray(rows, np.int64).reshape(-1)
        n = rows.shape[0]
        unit, valid = normalize_rows(np.asarray(embeddings, np.float32).reshape(n, -1))
        if n and unit.shape[1] != self.config.dim:
            raise ValueError(f"embeddings have {unit.shape[1]} dims, gallery has {self.config.dim}")
        if not np.all(self.alive[rows]):
            raise KeyError("update of a gallery row that holds no entry")
        self.last_s[rows] = np.maximum(self.last_s[rows], timestamp_s)
        upd = rows[valid]
        if not upd.size:
            return
        # A running mean of the first crops, then the moving average: weight 1 - 1/(u+1)
        # on the old vector after u updates, capped by the momentum. An average of the
        # track's crops from the start, rather than one dominated by its first crop.
        mean_weight = 1.0 - 1.0 / (self.updates[upd] + 1.0)
        m = np.minimum(mean_weight, self.config.momentum).astype(np.float32)[:, None]
        mr = np.minimum(mean_weight, self.config.recent_momentum).astype(np.float32)[:, None]
        new = unit[valid]
        self.vectors[upd] = _unit(m * self.vectors[upd] + (1.0 - m) * new)
        self.recent[upd] = _unit(mr * self.recent[upd] + (1.0 - mr) * new)
        self.updates[upd] += 1
        drift = 1.0 - np.einsum("ij,ij->i", self.vectors[upd], self._indexed[upd])
        stale = upd[drift > self.config.reindex_drift]
        if stale.size:
            # hnswlib replaces the vector of an existing label in place (and un-deletes a
            # reused one), so rows double as labels.
            self._index.add_items(self.vectors[stale], stale.astype(np.uint64))
            self._indexed[stale] = self.vectors[stale]

    def upsert(
        self,
        keys: Sequence[TrackKey],
        camera_index: npt.ArrayLike,
        embeddings: npt.ArrayLike,
        timestamp_s: float,
    ) -> IntArray:
        """:meth:`add` the new keys, then :meth:`update` all of them; returns their rows."""
        rows = self.add(keys, camera_index, timestamp_s)
        self.update(rows, embeddings, timestamp_s)
        return rows

    def remove(self, keys: Sequence[TrackKey]) -> int:
        """Forget ``keys`` (absent ones are ignored); returns how many were removed."""
        rows = [self._rows.pop(k) for k in keys if k in self._rows]
        for r in rows:
            self._keys[r] = None
            self.alive[r] = False
            if np.any(self._indexed[r]):
                self._index.mark_deleted(r)
            self._indexed[r] = 0.0
            self._free.append(r)
        return len(rows)

    def prune(self, last_seen_before_s: float) -> list[TrackKey]:
        """Remove entries last seen before ``last_seen_before_s``; returns their keys."""
        old = np.flatnonzero(self.alive & (self.last_s < last_seen_before_s))
        keys = [self.key(int(r)) for r in old]
        self.remove(keys)
        return keys

    # --- search --------------------------------------------------------------------------

    def query(
        self, embeddings: npt.ArrayLike, k: int, allowed: npt.ArrayLike | None = None
    ) -> QueryResult:
        """Top-``k`` entries by cosine similarity, per query.

        Args:
            embeddings: (Q, D) query vectors (normalised here).
            k: results per query.
            allowed: (Q, R) or (R,) bool over gallery rows (R = ``capacity``, as returned
                by :meth:`mask`); None = every live entry. Dead rows never match.
        """
        q, _ = normalize_rows(np.asarray(embeddings, np.float32).reshape(-1, self.config.dim))
        n_q = q.shape[0]
        cap = self.vectors.shape[0]
        searchable = self.alive & (self.updates > 0)
        allow = searchable if allowed is None else np.asarray(allowed, np.bool_) & searchable
        allow = np.broadcast_to(allow, (n_q, cap))
        rows = np.full((n_q, k), -1, np.int64)
        sims = np.full((n_q, k), -np.inf, np.float32)
        if k <= 0 or n_q == 0:
            return QueryResult(rows, sims)
        n_allowed = allow.sum(axis=1)
        exact = n_allowed <= self.config.exact_below
        if np.any(exact):
            cols = np.flatnonzero(allow[exact].any(axis=0))
            if cols.size:
                s = q[exact] @ self.vectors[cols].T
                s[~allow[exact][:, cols]] = -np.inf
                self._top_k(s, cols, k, rows_out=rows, sims_out=sims, targets=np.flatnonzero(exact))
        for i in np.flatnonzero(~exact).tolist():
            self._ann_one(
                q[i], allow[i], n_allowed=int(n_allowed[i]), k=k, rows_out=rows[i], sims_out=sims[i]
            )
        return QueryResult(rows, sims)

    def _ann_one(
        self,
        q: Float32Array,
        allow: BoolArray,
        *,
        n_allowed: int,
        k: int,
        rows_out: IntArray,
        sims_out: Float32Array,
    ) -> None:
        """HNSW candidates, then exact scores and the filter; widen the fetch until k pass.

        Filtering after the graph search (not inside it with hnswlib's per-node Python
        callback) keeps the search in C++; the fetch is scaled by how selective the filter
        is, and a search that still comes back short falls back to an exact scan.
        """
        n_live = int(np.count_nonzero(self.alive & (self.updates > 0)))
        fetch = min(n_live, k * self.config.oversample * max(1, n_live // max(n_allowed, 1)))
        cand = np.empty(0, np.int64)
        while fetch > 0:
            try:
                labels, _ = self._index.knn_query(q, k=fetch)
            except RuntimeError:  # graph could not return `fetch` results: scan instead
                cand = np.flatnonzero(allow)
                break
            found = labels[0].astype(np.int64)
            cand = np.unique(found[allow[found]])
            if cand.size >= k or fetch >= n_live:
                break
            fetch = min(n_live, fetch * 4)
        if cand.size:
            s = (self.vectors[cand] @ q)[None, :]
            self._top_k(
                s,
                cand,
                k,
                rows_out=rows_out[None],
                sims_out=sims_out[None],
                targets=np.zeros(1, np.int64),
            )

    @staticmethod
    def _top_k(
        scores: Float32Array,
        cols: IntArray,
        k: int,
        *,
        rows_out: IntArray,
        sims_out: Float32Array,
        targets: IntArray,
    ) -> None:
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        top = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        part = np.take_along_axis(part, order, axis=1)
        top = np.take_along_axis(top, order, axis=1)
        found = np.isfinite(top)
        rows_out[targets, :kk] = np.where(found, cols[part], -1)
        sims_out[targets, :kk] = top

    def mask(self) -> BoolArray:
        """(R,) all-False mask over rows, to fill in and pass as ``allowed``."""
        return np.zeros(self.vectors.shape[0], np.bool_)


def _unit(x: Float32Array) -> Float32Array:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    out: Float32Array = (x / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)
    return out
