"""Tracklet re-linking: join a track that ended to the new track that continues it.

An online tracker drops a track after a short occlusion, a missed detection run or a
jump its motion model did not expect, and the person comes back under a new id. The
re-linker sits after the tracker and gives the new track the old track's id when

1. **time** — the new track started after the old one ended, at most ``max_gap_s`` later;
2. **position** — the new track's first box lies near where the old track was heading:
   its last box moved on at its velocity (constant velocity, at most
   ``max_extrapolation_s``), within a radius of ``max_distance_h`` box heights that grows
   by ``distance_growth_h_per_s`` per second of gap, and with a similar height;
3. **appearance** (when the tracks carry embeddings) — the track-level embeddings, means
   of the L2-normalised embeddings of the usable crops (see :mod:`tapetum.track.crops`),
   have cosine similarity at least ``min_similarity``.

Pairs that pass every gate are scored (normalised distance + weighted appearance
distance) and matched one-to-one per frame with the tracker's assignment solver. A new
track may be linked during its first ``decide_within_frames`` frames: on its first frame
it has one box, a few frames later its appearance is an average. A chain of links shares
one id and one appearance (a continuation inherits the chain's embedding sum).

Ids come from the re-linker's own counter, so they never collide with the tracker's. If
the tracker revives an old track while its continuation is visible (both on screen with
one id), the continuation gets a fresh id from that frame on.

State is parallel arrays over the tracks seen in the last ``forget_after_s`` (plus those
on screen): a track that can no longer be continued is dropped, so memory stays bounded on a
24/7 stream.

Example:
    >>> import numpy as np
    >>> relinker = TrackletRelinker(RelinkConfig(min_track_frames=2))
    >>> def box(x):
    ...     return np.array([[x, 0.0, x + 20.0, 50.0]], np.float32)
    >>> [int(relinker.update(0.1 * i, np.array([7]), box(10.0 * i))[0]) for i in range(3)]
    [1, 1, 1]
    >>> int(relinker.update(0.6, np.array([9]), box(60.0))[0])  # tracker's new id 9
    1
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError
from tapetum.track.assignment import linear_assignment
from tapetum.track.base import Tracker
from tapetum.track.crops import CropFilter, StaticMask, usable_crops

_GATED = 1e6


@dataclass(frozen=True, slots=True)
class RelinkConfig:
    """Gates and weights of tracklet re-linking.

    Attributes:
        max_gap_s: longest time from an old track's last box to the new track's first.
        min_track_frames: an old track needs this many boxes to be continued (one- or
            two-box tracks are mostly detector noise).
        max_distance_h: gate radius at zero gap, in heights of the old track's last box.
        distance_growth_h_per_s: the radius grows by this many heights per second of gap
            (a walking person covers about one body height per second).
        max_extrapolation_s: the old track's velocity is followed for at most this long.
        max_height_ratio: largest ratio between the two tracks' box heights.
        min_similarity: appearance gate (cosine of track-level embeddings), applied when
            both tracks have at least one usable crop.
        appearance_weight: weight of the appearance distance in the matching cost.
        decide_within_frames: a new track may be linked during this many of its first
            frames (1: at birth only).
        velocity_momentum: weight of the old velocity in the per-frame velocity average.
        forget_after_s: a track unseen this long is forgotten (≥ ``max_gap_s``). Keep it
            longer than the tracker keeps lost tracks (ByteTrack: 30 frames at 30 fps),
            or a track the tracker revives comes back as a new one.
    """

    max_gap_s: float = 2.0
    min_track_frames: int = 5
    max_distance_h: float = 0.3
    distance_growth_h_per_s: float = 0.3
    max_extrapolation_s: float = 0.5
    max_height_ratio: float = 1.3
    min_similarity: float = 0.75
    appearance_weight: float = 1.0
    decide_within_frames: int = 3
    velocity_momentum: float = 0.8
    forget_after_s: float = 5.0

    def __post_init__(self) -> None:
        positive = (
            "max_gap_s",
            "max_distance_h",
            "max_height_ratio",
        )
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"RelinkConfig.{name} must be > 0, got {value}")
        for name in ("distance_growth_h_per_s", "max_extrapolation_s", "appearance_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"RelinkConfig.{name} must be ≥ 0, got {value}")
        if self.max_height_ratio < 1:
            raise ConfigError(
                f"RelinkConfig.max_height_ratio must be ≥ 1, got {self.max_height_ratio}"
            )
        if not -1.0 <= self.min_similarity < 1.0:
            raise ConfigError(
                f"RelinkConfig.min_similarity must be in [-1, 1), got {self.min_similarity}"
            )
        if not 0.0 <= self.velocity_momentum < 1.0:
            raise ConfigError(
                f"RelinkConfig.velocity_momentum must be in [0, 1), got {self.velocity_momentum}"
            )
        if not self.forget_after_s >= self.max_gap_s:
            raise ConfigError(
                f"RelinkConfig.forget_after_s ({self.forget_after_s}) must be ≥ max_gap_s "
                f"({self.max_gap_s})"
            )
        for name in ("min_track_frames", "decide_within_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"RelinkConfig.{name} must be ≥ 1, got {getattr(self, name)}")


class _Tracklets:
    """Parallel arrays over the tracklets the re-linker still remembers."""

    _COLUMNS = (
        "local",
        "out",
        "first_s",
        "last_s",
        "frames",
        "centre",
        "first_centre",
        "height",
        "velocity",
        "successor",
        "pending",
        "emb_sum",
        "emb_n",
    )

    def __init__(self, dim: int, capacity: int = 64) -> None:
        self.n = 0
        self.dim = dim
        self.local = np.zeros(capacity, np.int64)
        self.out = np.zeros(capacity, np.int64)
        self.first_s = np.zeros(capacity)
        self.last_s = np.zeros(capacity)
        self.frames = np.zeros(capacity, np.int64)
        self.centre = np.zeros((capacity, 2))
        self.first_centre = np.zeros((capacity, 2))
        self.height = np.zeros(capacity)
        self.velocity = np.zeros((capacity, 2))
        self.successor = np.full(capacity, -1, np.int64)  # local id of the continuation
        self.pending = np.zeros(capacity, np.bool_)
        self.emb_sum = np.zeros((capacity, dim), np.float32)
        self.emb_n = np.zeros(capacity, np.int64)

    def grow(self, need: int) -> None:
        cap = self.local.shape[0]
        if self.n + need <= cap:
            return
        new_cap = max(2 * cap, self.n + need)
        for name in self._COLUMNS:
            old = getattr(self, name)
            fill = -1 if name == "successor" else 0
            new = np.full((new_cap, *old.shape[1:]), fill, old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def set_dim(self, dim: int) -> None:
        """Embedding length (fixed on the first embedding; all rows empty until then)."""
        self.dim = dim
        self.emb_sum = np.zeros((self.local.shape[0], dim), np.float32)

    def keep(self, rows: BoolArray) -> None:
        """Compact to the rows where ``rows`` (over ``0..n``) is True."""
        idx = np.flatnonzero(rows)
        k = idx.shape[0]
        for name in self._COLUMNS:
            arr = getattr(self, name)
            arr[:k] = arr[idx]
        self.n = k


class TrackletRelinker:
    """Online re-linking of one camera's tracks (see the module docstring).

    Args:
        config: gates and weights; default :class:`RelinkConfig`.

    Not thread-safe: one instance per stream, called from that stream's thread.
    """

    def __init__(self, config: RelinkConfig | None = None) -> None:
        self.config = config if config is not None else RelinkConfig()
        self._t = _Tracklets(dim=0)
        self._sorted_local = np.empty(0, np.int64)
        self._sorted_rows = np.empty(0, np.int64)
        self._next_id = 1
        #: Links made so far (a continuation took an old track's id).
        self.links = 0

    def __len__(self) -> int:
        """Tracklets remembered (on screen, or ended and still within ``max_gap_s``)."""
        return self._t.n

    def reset(self) -> None:
        """Forget every tracklet; ids restart at 1."""
        self.__init__(self.config)  # type: ignore[misc]

    # --- the per-frame entry point ---------------------------------------------------------

    def update(
        self,
        timestamp_s: float,
        track_ids: npt.ArrayLike,
        xyxy: npt.ArrayLike,
        embeddings: npt.ArrayLike | None = None,
        usable: npt.ArrayLike | None = None,
    ) -> IntArray:
        """Take one frame's tracks and return their re-linked ids.

        Args:
            timestamp_s: frame time in seconds (increasing).
            track_ids: (N,) the tracker's ids, unique in the frame.
            xyxy: (N, 4) boxes in pixels.
            embeddings: optional (N, D) appearance vectors (L2-normalised here); zero rows
                carry no appearance.
            usable: optional (N,) bool, crops fit for appearance (default: all).

        Returns:
            (N,) int64 ids, stable across the links made.
        """
        t = float(timestamp_s)
        ids = np.asarray(track_ids, np.int64).reshape(-1)
        boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
        if ids.shape[0] != boxes.shape[0]:
            raise ValueError(f"{ids.shape[0]} track ids but {boxes.shape[0]} boxes")
        rows, born = self._lookup_or_add(ids, t, boxes)
        self._observe(rows, born, t, boxes, embeddings=embeddings, usable=usable)
        self._link(rows, t)
        self._split_duplicates(rows)
        out = self._t.out[rows].copy()
        self._forget(rows, t)
        return out

    # --- bookkeeping ---------------------------------------------------------------------------

    def _lookup_or_add(
        self, ids: IntArray, t: float, boxes: Float64Array
    ) -> tuple[IntArray, BoolArray]:
        pos = np.searchsorted(self._sorted_local, ids)
        hit = pos < self._sorted_local.shape[0]
        hit[hit] = self._sorted_local[pos[hit]] == ids[hit]
        rows = np.full(ids.shape[0], -1, np.int64)
        rows[hit] = self._sorted_rows[pos[hit]]
        born = ~hit
        k = int(born.sum())
        if k:
            tt = self._t
            tt.grow(k)
            new = np.arange(tt.n, tt.n + k)
            tt.n += k
            centre = _centres(boxes[born])
            tt.local[new] = ids[born]
            tt.out[new] = np.arange(self._next_id, self._next_id + k)
            self._next_id += k
            tt.first_s[new] = t
            tt.last_s[new] = t
            tt.frames[new] = 0
            tt.centre[new] = centre
            tt.first_centre[new] = centre
            tt.height[new] = boxes[born, 3] - boxes[born, 1]
            tt.velocity[new] = 0.0
            tt.successor[new] = -1
            tt.pending[new] = True
            tt.emb_sum[new] = 0.0
            tt.emb_n[new] = 0
            rows[born] = new
            self._reindex()
        return rows, born

    def _reindex(self) -> None:
        tt = self._t
        order = np.argsort(tt.local[: tt.n], kind="stable")
        self._sorted_local = tt.local[: tt.n][order]
        self._sorted_rows = order.astype(np.int64)

    def _observe(
        self,
        rows: IntArray,
        born: BoolArray,
        t: float,
        boxes: Float64Array,
        *,
        embeddings: npt.ArrayLike | None,
        usable: npt.ArrayLike | None,
    ) -> None:
        tt, cfg = self._t, self.config
        centre = _centres(boxes)
        seen = rows[~born]
        dt = t - tt.last_s[seen]
        # Velocity from consecutive sightings only: across a gap the track's own box
        # jumped (tracker re-found it elsewhere), which is no speed.
        step = (dt > 0) & (dt <= 0.5)
        inst = (centre[~born] - tt.centre[seen]) / np.maximum(dt, 1e-6)[:, None]
        first_step = tt.frames[seen] <= 1
        m = np.where(first_step, 0.0, cfg.velocity_momentum)[:, None]
        vel = np.where(step[:, None], m * tt.velocity[seen] + (1 - m) * inst, tt.velocity[seen])
        tt.velocity[seen] = vel
        tt.centre[rows] = centre
        tt.height[rows] = boxes[:, 3] - boxes[:, 1]
        tt.last_s[rows] = t
        tt.frames[rows] += 1
        if embeddings is None:
            return
        emb = np.asarray(embeddings, np.float32).reshape(rows.shape[0], -1)
        if emb.shape[1] != tt.dim:
            if tt.n and np.any(tt.emb_n[: tt.n]):
                raise ValueError(f"embedding length changed from {tt.dim} to {emb.shape[1]}")
            tt.set_dim(emb.shape[1])
        norm = np.linalg.norm(emb, axis=1)
        ok = np.isfinite(norm) & (norm > 1e-6)
        if usable is not None:
            ok &= np.asarray(usable, np.bool_).reshape(-1)
        if np.any(ok):
            tt.emb_sum[rows[ok]] += emb[ok] / norm[ok, None]
            tt.emb_n[rows[ok]] += 1

    # --- linking -------------------------------------------------------------------------------

    def _link(self, rows: IntArray, t: float) -> None:
        tt, cfg = self._t, self.config
        n = tt.n
        new = rows[tt.pending[rows]]
        if new.size == 0:
            return
        visible = np.zeros(n, np.bool_)
        visible[rows] = True
        old = np.flatnonzero(
            ~visible
            & (tt.last_s[:n] >= t - cfg.max_gap_s)
            & (tt.frames[:n] >= cfg.min_track_frames)
            & (tt.successor[:n] < 0)
            & ~np.isin(tt.out[:n], tt.out[rows])
        )
        if old.size:
            cost = self._cost(old, new)
            matches, _, _ = linear_assignment(cost, 1.0 + cfg.appearance_weight)
            for o, p in zip(old[matches[:, 0]].tolist(), new[matches[:, 1]].tolist(), strict=True):
                tt.out[p] = tt.out[o]
                tt.successor[o] = tt.local[p]
                tt.pending[p] = False
                tt.emb_sum[p] += tt.emb_sum[o]
                tt.emb_n[p] += tt.emb_n[o]
                self.links += 1
        expired = new[tt.frames[new] >= cfg.decide_within_frames]
        tt.pending[expired] = False

    def _cost(self, old: IntArray, new: IntArray) -> Float64Array:
        """(O, P) matching cost of continuing old tracklet o with new tracklet p; gated
        pairs cost ``_GATED``."""
        tt, cfg = self._t, self.config
        gap = tt.first_s[new][None, :] - tt.last_s[old][:, None]
        ahead = np.minimum(np.clip(gap, 0.0, None), cfg.max_extrapolation_s)
        predicted = tt.centre[old][:, None, :] + tt.velocity[old][:, None, :] * ahead[..., None]
        h_old = np.maximum(tt.height[old], 1.0)[:, None]
        dist = np.linalg.norm(predicted - tt.first_centre[new][None, :, :], axis=2) / h_old
        radius = cfg.max_distance_h + cfg.distance_growth_h_per_s * np.clip(gap, 0.0, None)
        ratio = tt.height[new][None, :] / h_old
        ok = (gap > 0) & (gap <= cfg.max_gap_s) & (dist <= radius)
        ok &= (ratio <= cfg.max_height_ratio) & (ratio >= 1.0 / cfg.max_height_ratio)
        cost = dist / radius
        has = (tt.emb_n[old][:, None] > 0) & (tt.emb_n[new][None, :] > 0)
        if np.any(has):
            a = _unit_rows(tt.emb_sum[old])
            b = _unit_rows(tt.emb_sum[new])
            sim = a @ b.T
            ok &= ~has | (sim >= cfg.min_similarity)
            app = np.clip((1.0 - sim) / (1.0 - cfg.min_similarity), 0.0, 1.0)
            cost = cost + cfg.appearance_weight * np.where(has, app, 0.5)
        else:
            cost = cost + 0.5 * cfg.appearance_weight
        result: Float64Array = np.where(ok, cost, _GATED)
        return result

    def _split_duplicates(self, rows: IntArray) -> None:
        """One id on two boxes of a frame: the tracker revived an old track while its
        continuation is on screen. The continuation (born later) takes a fresh id."""
        tt = self._t
        out = tt.out[rows]
        uniq, counts = np.unique(out, return_counts=True)
        for dup in uniq[counts > 1].tolist():
            members = rows[out == dup]
            members = members[np.argsort(tt.first_s[members], kind="stable")]
            for r in members[1:].tolist():
                tt.out[r] = self._next_id
                self._next_id += 1
                tt.emb_sum[r] = 0.0
                tt.emb_n[r] = 0
            tt.successor[members[0]] = -1

    def _forget(self, rows: IntArray, t: float) -> None:
        tt, cfg = self._t, self.config
        n = tt.n
        visible = np.zeros(n, np.bool_)
        visible[rows] = True
        stale = ~visible & (tt.last_s[:n] < t - cfg.forget_after_s)
        if np.any(stale):
            tt.keep(~stale)
            self._reindex()


class RelinkingTracker:
    """A tracker whose ids are re-linked across its dropped tracks (implements
    ``Tracker``, and ``PredictingTracker`` when the wrapped tracker does).

    Args:
        tracker: the stream's tracker.
        config: re-linking gates; default :class:`RelinkConfig`.
        frame_rate: frames per second, for timestamps when ``update`` gets no frame.
        crop_filter: which crops count for appearance (trackers that return embeddings,
            such as BoT-SORT with ReID).
        mask: the camera's static overlay, if any.

    Example:
        >>> from tapetum.track import make_tracker
        >>> tracker = RelinkingTracker(make_tracker("bytetrack", 25.0), frame_rate=25.0)
    """

    def __init__(
        self,
        tracker: Tracker,
        config: RelinkConfig | None = None,
        *,
        frame_rate: float = 30.0,
        crop_filter: CropFilter | None = None,
        mask: StaticMask | None = None,
    ) -> None:
        if not frame_rate > 0:
            raise ConfigError(f"frame_rate must be > 0 fps, got {frame_rate}")
        self.tracker = tracker
        self.relinker = TrackletRelinker(config)
        self.frame_rate = frame_rate
        self.crop_filter = crop_filter
        self.mask = mask
        self._frames = 0

    def update(self, detections: Detections, frame: Frame | None = None) -> Detections:
        tracked = self.tracker.update(detections, frame)
        self._frames += 1
        t = frame.timestamp_s if frame is not None else (self._frames - 1) / self.frame_rate
        usable = None
        if tracked.embeddings is not None:
            hw = frame.image.shape[:2] if frame is not None else None
            # Occlusion is judged against every detection of the frame, tracked or not.
            usable = usable_crops(
                tracked.xyxy,
                (int(hw[0]), int(hw[1])) if hw is not None else None,
                self.crop_filter,
                self.mask,
                others=detections.xyxy,
            )
        tracked.tracker_id = self.relinker.update(
            t, tracked.tracker_id, tracked.xyxy, tracked.embeddings, usable
        )
        return tracked

    def predict(self, frame: Frame | None = None) -> Detections:
        """A frame the detector skipped: the wrapped tracker's prediction (it must be a
        ``PredictingTracker``), with re-linked ids; predicted boxes keep the tracks' places
        fresh but add no appearance."""
        predict = getattr(self.tracker, "predict", None)
        if predict is None:
            raise ConfigError(
                f"{type(self.tracker).__name__} cannot predict frames the detector skips"
            )
        tracked: Detections = predict(frame)
        self._frames += 1
        t = frame.timestamp_s if frame is not None else (self._frames - 1) / self.frame_rate
        tracked.tracker_id = self.relinker.update(t, tracked.tracker_id, tracked.xyxy)
        return tracked

    def reset(self) -> None:
        self.tracker.reset()
        self.relinker.reset()
        self._frames = 0

    def state_sizes(self) -> dict[str, int]:
        """The wrapped tracker's state (when it reports it) and the tracklets the re-linker
        remembers."""
        inner = getattr(self.tracker, "state_sizes", None)
        sizes: dict[str, int] = dict(inner()) if callable(inner) else {}
        return {**sizes, "relink_tracklets": len(self.relinker)}


def _centres(boxes: Float64Array) -> Float64Array:
    out: Float64Array = np.stack(
        [(boxes[:, 0] + boxes[:, 2]) * 0.5, (boxes[:, 1] + boxes[:, 3]) * 0.5], axis=1
    )
    return out


def _unit_rows(x: Float32Array) -> Float64Array:
    a = np.asarray(x, np.float64)
    out: Float64Array = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    return out
