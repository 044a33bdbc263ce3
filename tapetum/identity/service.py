"""Multi-camera identity: one global id per person across every camera's local tracks.

Each camera runs its own tracker; its ``tracker_id`` is a *local* track id. The service
links local tracks into global identities by appearance (ReID embeddings) under the
camera topology's transit-time windows:

* **birth match** — a new local track's first embedding is matched against the gallery of
  tracks it could be (topology-feasible, cosine similarity ≥ ``match_threshold``), one-to-
  one per frame (optimal assignment) and per camera (a global id already on a track that
  is still visible on this camera is not available); no match mints a new global id;
* **merge** — while a track is young and still alone in its identity (missed at birth,
  e.g. its first crop was truncated), its smoothed embedding is re-matched every few
  updates; a confident match to another global id unites the two (the older id survives,
  the younger becomes its alias, so the history of both stays reachable);
* **split** — a track that joined an existing identity but whose recent appearance has
  stayed below ``split_threshold`` against all the identity's other tracks for
  ``split_patience`` updates is moved to a new global id (the first match was wrong).

Per frame the work is array work: a searchsorted lookup of local ids, one vectorised
gallery update, one batched gallery query and one assignment for the frame's new tracks.

Example:
    >>> import numpy as np
    >>> from tapetum.core.detections import Detections
    >>> from tapetum.identity import CameraLink, CameraTopology, IdentityService
    >>> topo = CameraTopology.build(
    ...     ["a", "b"], [CameraLink("a", "b", 0.0, 10.0)], bidirectional=True
    ... )
    >>> svc = IdentityService(topo, embedding_dim=4)
    >>> person = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    >>> def seen(track_id):
    ...     return Detections(
    ...         np.zeros((1, 4)), np.ones(1), np.zeros(1), np.array([track_id]), person
    ...     )
    >>> svc.observe("a", 0.0, seen(7)).tolist(), svc.observe("b", 3.0, seen(2)).tolist()
    ([1], [1])
    >>> [(s.camera_id, s.local_track_ids) for s in svc.where_seen(1)]
    [('a', (7,)), ('b', (2,))]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tapetum._types import BoolArray, Float32Array, IntArray
from tapetum.core.detections import Detections
from tapetum.errors import ConfigError
from tapetum.identity.gallery import EmbeddingGallery, GalleryConfig, TrackKey, normalize_rows
from tapetum.identity.topology import CameraTopology
from tapetum.track.assignment import linear_assignment

#: Global id of a detection that has no local track (``tracker_id == NO_TRACK``).
NO_GLOBAL_ID = -1


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """Thresholds of the identity service.

    Attributes:
        match_threshold: cosine similarity a new track needs to join an identity.
            Calibrate it per model and site: with OSNet x0.25 on the grey top-down crowd
            test footage different people score ≈ 0.88 and 0.92 was needed
            (``tests/integration/test_identity_real.py``).
        merge_threshold: similarity of two young tracks' smoothed embeddings to unite their
            identities (None = ``match_threshold``).
        split_threshold: a joined track whose recent appearance stays below this against
            every other track of its identity is split off.
        split_patience: consecutive drifted updates before a split (one bad crop is not
            enough).
        top_k: gallery entries fetched per query before grouping by identity.
        rematch_every: a young track is re-matched (for merges) every this many updates...
        rematch_until: ...until it has had this many.
        gallery: storage and index settings (``gallery.dim`` is the embedding length).
    """

    match_threshold: float = 0.8
    merge_threshold: float | None = None
    split_threshold: float = 0.6
    split_patience: int = 5
    top_k: int = 20
    rematch_every: int = 5
    rematch_until: int = 30
    gallery: GalleryConfig = field(default_factory=GalleryConfig)

    def __post_init__(self) -> None:
        for name in ("match_threshold", "split_threshold"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [-1, 1], got {getattr(self, name)}")
        if self.merge_threshold is not None and not -1.0 <= self.merge_threshold <= 1.0:
            raise ConfigError(f"merge_threshold must be in [-1, 1], got {self.merge_threshold}")
        for name in ("split_patience", "top_k", "rematch_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")

    @property
    def effective_merge_threshold(self) -> float:
        return self.match_threshold if self.merge_threshold is None else self.merge_threshold


@dataclass(frozen=True, slots=True)
class Sighting:
    """One visit of a person to one camera: consecutive local tracks of that camera.

    Attributes:
        camera_id: the camera.
        local_track_ids: the camera tracker's ids, in order of appearance.
        first_s, last_s: first and last time seen in this visit, seconds.
    """

    camera_id: str
    local_track_ids: tuple[int, ...]
    first_s: float
    last_s: float


@dataclass(frozen=True, slots=True)
class IdentityEvent:
    """A change to identities after their birth.

    ``merge``: ``absorbed_id`` became an alias of ``global_id`` (the older id).
    ``split``: ``track`` left ``absorbed_id`` for the new ``global_id``.
    """

    kind: Literal["merge", "split"]
    timestamp_s: float
    global_id: int
    absorbed_id: int
    track: TrackKey | None = None


class _TrackTable:
    """Every local track ever seen, as parallel arrays indexed by a serial number (kept
    after the gallery forgets a track's appearance, so history stays queryable)."""

    def __init__(self, capacity: int = 256) -> None:
        self.size = 0
        self.camera = np.zeros(capacity, np.int64)
        self.local = np.zeros(capacity, np.int64)
        self.first_s = np.zeros(capacity)
        self.last_s = np.zeros(capacity)
        self.gid = np.full(capacity, NO_GLOBAL_ID, np.int64)
        self.row = np.full(capacity, -1, np.int64)
        self.drift = np.zeros(capacity, np.int64)
        self.joined = np.zeros(capacity, np.bool_)

    def append(self, camera: int, local: IntArray, t: float) -> IntArray:
        n = local.shape[0]
        if self.size + n > self.camera.shape[0]:
            cap = max(2 * self.camera.shape[0], self.size + n)
            for name in ("camera", "local", "first_s", "last_s", "gid", "row", "drift", "joined"):
                old = getattr(self, name)
                new = np.full(cap, NO_GLOBAL_ID if name in ("gid", "row") else 0, old.dtype)
                new[: self.size] = old[: self.size]
                setattr(self, name, new)
        serials = np.arange(self.size, self.size + n, dtype=np.int64)
        self.camera[serials] = camera
        self.local[serials] = local
        self.first_s[serials] = t
        self.last_s[serials] = t
        self.size += n
        return serials


class IdentityService:
    """Assigns global ids to the local tracks of many cameras.

    Feed it every camera's tracked frames in (roughly) time order through :meth:`observe`.
    One writer thread may call :meth:`observe` while others call the query methods: every
    public method holds the service's lock. No state is shared between instances.

    Args:
        topology: cameras, links and transit windows.
        config: thresholds; default :class:`IdentityConfig`.
        embedding_dim: shorthand for ``config.gallery.dim``.
    """

    def __init__(
        self,
        topology: CameraTopology,
        config: IdentityConfig | None = None,
        *,
        embedding_dim: int | None = None,
    ) -> None:
        cfg = config or IdentityConfig()
        self.topology = topology
        self.config = cfg
        self.gallery = EmbeddingGallery(cfg.gallery, dim=embedding_dim)
        self._tracks = _TrackTable()
        n_cams = len(topology.cameras)
        # Per camera: sorted local ids and their serials (searchsorted lookup per frame).
        self._local_ids: list[IntArray] = [np.empty(0, np.int64) for _ in range(n_cams)]
        self._local_serials: list[IntArray] = [np.empty(0, np.int64) for _ in range(n_cams)]
        self._row_serial = np.full(self.gallery.vectors.shape[0], -1, np.int64)
        self._alias: dict[int, int] = {}
        self._next_gid = 1
        self._events: list[IdentityEvent] = []
        self._latest_s = -np.inf
        self._lock = threading.RLock()

    # --- the per-frame entry point ---------------------------------------------------------

    def observe(self, camera_id: str, timestamp_s: float, detections: Detections) -> IntArray:
        """Take one camera frame's tracked detections and return their global ids.

        Args:
            camera_id: a camera of the topology.
            timestamp_s: frame time in seconds, on a clock shared by all cameras.
            detections: the camera tracker's output with ``embeddings`` (N, D) set; a row
                whose embedding is zero or non-finite updates only the track's times.

        Returns:
            (N,) int64 global ids; ``NO_GLOBAL_ID`` where ``tracker_id`` is ``NO_TRACK``.

        Raises:
            ConfigError: unknown camera.
            ValueError: no embeddings, or a local track id twice in one frame.
        """
        with self._lock:
            return self._observe(camera_id, float(timestamp_s), detections)

    def _observe(self, camera_id: str, t: float, detections: Detections) -> IntArray:
        cam = self.topology.camera_index(camera_id)
        n = len(detections)
        out = np.full(n, NO_GLOBAL_ID, np.int64)
        if n == 0:
            return out
        if detections.embeddings is None:
            raise ValueError(
                f"IdentityService.observe needs embeddings on the detections of {camera_id!r} "
                "(run a ReID embedder such as tapetum.track.reid.ReidEmbedder first)"
            )
        tracked = np.flatnonzero(detections.is_tracked)
        local = detections.tracker_id[tracked]
        if np.unique(local).shape[0] != local.shape[0]:
            raise ValueError(f"a local track id appears twice in one frame of {camera_id!r}")
        emb, valid = normalize_rows(detections.embeddings[tracked])
        self._latest_s = max(self._latest_s, t)
        tt = self._tracks

        serials, is_new = self._lookup_or_add(cam, local, t)
        tt.last_s[serials] = np.maximum(tt.last_s[serials], t)
        rows = tt.row[serials]
        missing = rows < 0  # new, or forgotten by the gallery after a long absence
        if np.any(missing):
            keys = [(camera_id, int(x)) for x in local[missing]]
            new_rows = self.gallery.add(keys, cam, t)
            self._grow_row_map()
            rows[missing] = new_rows
            tt.row[serials[missing]] = new_rows
            self._row_serial[new_rows] = serials[missing]
        self.gallery.update(rows, emb, t)

        # Birth: new tracks with an appearance are matched; the rest get fresh ids now and
        # may merge once their first embedding arrives (see _rematch).
        born = is_new & valid
        self._birth_match(cam, t, serials[born], emb[born])
        unmatched_new = serials[is_new & (tt.gid[serials] == NO_GLOBAL_ID)]
        tt.gid[unmatched_new] = self._mint(unmatched_new.shape[0])

        updates = self.gallery.updates[rows]
        young = (
            valid
            & ~is_new
            & (updates <= self.config.rematch_until)
            & ((updates == 1) | (updates % self.config.rematch_every == 0))
        )
        for s in serials[young].tolist():
            self._rematch(int(s), t)
        self._check_drift(serials[valid & ~is_new], t)
        self._resolve_duplicates(serials, t)
        self._prune()
        out[tracked] = tt.gid[serials]
        return out

    # --- bookkeeping -----------------------------------------------------------------------

    def _lookup_or_add(self, cam: int, local: IntArray, t: float) -> tuple[IntArray, BoolArray]:
        ids, ser = self._local_ids[cam], self._local_serials[cam]
        pos = np.searchsorted(ids, local)
        hit = pos < ids.shape[0]
        hit[hit] = ids[pos[hit]] == local[hit]
        serials = np.full(local.shape[0], -1, np.int64)
        serials[hit] = ser[pos[hit]]
        is_new = ~hit
        if np.any(is_new):
            fresh = self._tracks.append(cam, local[is_new], t)
            serials[is_new] = fresh
            all_ids = np.concatenate([ids, local[is_new]])
            all_ser = np.concatenate([ser, fresh])
            order = np.argsort(all_ids, kind="stable")
            self._local_ids[cam], self._local_serials[cam] = all_ids[order], all_ser[order]
        return serials, is_new

    def _grow_row_map(self) -> None:
        cap = self.gallery.vectors.shape[0]
        if self._row_serial.shape[0] < cap:
            grown = np.full(cap, -1, np.int64)
            grown[: self._row_serial.shape[0]] = self._row_serial
            self._row_serial = grown

    def _mint(self, n: int) -> IntArray:
        ids = np.arange(self._next_gid, self._next_gid + n, dtype=np.int64)
        self._next_gid += n
        return ids

    def _row_gids(self) -> IntArray:
        """(R,) global id of each gallery row (-1 for empty rows and unassigned tracks)."""
        serial = self._row_serial
        gids = np.full(serial.shape[0], NO_GLOBAL_ID, np.int64)
        used = (serial >= 0) & self.gallery.alive[: serial.shape[0]]
        gids[used] = self._tracks.gid[serial[used]]
        return gids

    def _busy_on_camera(self, cam: int, t: float) -> IntArray:
        """Global ids on a track of camera ``cam`` still visible at ``t``: not available to
        another track of that camera (one-to-one per camera)."""
        tt = self._tracks
        n = tt.size
        busy = (tt.camera[:n] == cam) & (tt.last_s[:n] >= t) & (tt.gid[:n] != NO_GLOBAL_ID)
        return np.unique(tt.gid[:n][busy])

    # --- birth match -----------------------------------------------------------------------

    def _birth_match(self, cam: int, t: float, serials: IntArray, emb: Float32Array) -> None:
        if serials.size == 0 or len(self.gallery) == 0:
            return
        g = self.gallery
        gids = self._row_gids()
        allowed = g.alive & (gids != NO_GLOBAL_ID)
        allowed &= self.topology.pair_feasible(
            g.camera, np.full(g.camera.shape, cam), t - np.nan_to_num(g.last_s, nan=-np.inf)
        )
        allowed &= ~np.isin(gids, self._busy_on_camera(cam, t))
        if not np.any(allowed):
            return
        res = g.query(emb, self.config.top_k, allowed)
        found = res.rows >= 0
        cand_gid = np.where(found, gids[np.maximum(res.rows, 0)], NO_GLOBAL_ID)
        uniq = np.unique(cand_gid[found])
        if uniq.size == 0:
            return
        # Best similarity of each new track to each candidate identity.
        sim = np.full((serials.shape[0], uniq.shape[0]), -np.inf)
        qi, ki = np.nonzero(found)
        np.maximum.at(sim, (qi, np.searchsorted(uniq, cand_gid[qi, ki])), res.similarity[qi, ki])
        cost = np.where(np.isfinite(sim), 1.0 - sim, 1e6)
        matches, _, _ = linear_assignment(cost, 1.0 - self.config.match_threshold)
        if matches.size:
            chosen = serials[matches[:, 0]]
            self._tracks.gid[chosen] = uniq[matches[:, 1]]
            self._tracks.joined[chosen] = True

    # --- merge -----------------------------------------------------------------------------

    def _rematch(self, serial: int, t: float) -> None:
        """Re-match a young track's smoothed embedding; unite identities on a confident hit."""
        tt, g = self._tracks, self.gallery
        own = int(tt.gid[serial])
        if self._members(own).shape[0] > 1:
            # Only a track still alone in its identity looks for one: re-matching members of
            # a confirmed identity would chain look-alikes together.
            return
        row = int(tt.row[serial])
        gids = self._row_gids()
        allowed = g.alive & (gids != NO_GLOBAL_ID) & (gids != own)
        if not np.any(allowed):
            return
        # Transit from whichever of the two tracks started first to the other one.
        first, last = g.first_s, np.nan_to_num(g.last_s, nan=-np.inf)
        me_first, me_last, me_cam = tt.first_s[serial], tt.last_s[serial], tt.camera[serial]
        me_later = first <= me_first
        src = np.where(me_later, g.camera, me_cam)
        dst = np.where(me_later, me_cam, g.camera)
        gap = np.where(me_later, me_first - last, first - me_last)
        allowed &= self.topology.pair_feasible(src, dst, np.nan_to_num(gap, nan=np.inf))
        if not np.any(allowed):
            return
        res = g.query(g.vectors[row : row + 1], self.config.top_k, allowed)
        for r, s in zip(res.rows[0].tolist(), res.similarity[0].tolist(), strict=True):
            if r < 0 or s < self.config.effective_merge_threshold:
                return
            other = int(gids[r])
            if self._can_unite(own, other):
                self._merge(own, other, t)
                return

    def _members(self, gid: int) -> IntArray:
        n = self._tracks.size
        return np.flatnonzero(self._tracks.gid[:n] == gid).astype(np.int64)

    def _can_unite(self, a: int, b: int) -> bool:
        """True when no camera has a track of ``a`` and one of ``b`` at overlapping times."""
        tt = self._tracks
        ma, mb = self._members(a), self._members(b)
        same_cam = tt.camera[ma][:, None] == tt.camera[mb][None, :]
        overlap = (tt.first_s[ma][:, None] <= tt.last_s[mb][None, :]) & (
            tt.first_s[mb][None, :] <= tt.last_s[ma][:, None]
        )
        return not bool(np.any(same_cam & overlap))

    def _merge(self, a: int, b: int, t: float) -> None:
        keep, drop = min(a, b), max(a, b)
        tt = self._tracks
        moved = self._members(drop)
        tt.gid[moved] = keep
        tt.joined[moved] = True
        tt.drift[moved] = 0
        self._alias[drop] = keep
        self._events.append(IdentityEvent("merge", t, keep, drop))

    # --- split -----------------------------------------------------------------------------

    def _check_drift(self, serials: IntArray, t: float) -> None:
        """Count consecutive updates where a joined track's recent appearance is far from
        every other track of its identity; split it off after ``split_patience``."""
        tt, g = self._tracks, self.gallery
        cand = serials[tt.joined[serials]]
        if cand.size == 0:
            return
        gids = self._row_gids()
        rows = tt.row[cand]
        others = np.flatnonzero(np.isin(gids, tt.gid[cand]) & (g.updates > 0))
        sim = g.recent[rows] @ g.vectors[others].T
        same_id = tt.gid[cand][:, None] == gids[others][None, :]
        sim[~same_id | (rows[:, None] == others[None, :])] = -np.inf
        best = sim.max(axis=1, initial=-np.inf)
        has_others = np.isfinite(best)
        drifted = has_others & (best < self.config.split_threshold)
        tt.drift[cand] = np.where(drifted, tt.drift[cand] + 1, 0)
        for s in cand[tt.drift[cand] >= self.config.split_patience].tolist():
            self._split(int(s), t)

    def _split(self, serial: int, t: float) -> None:
        tt = self._tracks
        old = int(tt.gid[serial])
        members = self._members(old)
        founder = members[np.argmin(tt.first_s[members])]
        if founder == serial:  # the identity's first track keeps it
            tt.drift[serial] = 0
            return
        new = int(self._mint(1)[0])
        tt.gid[serial] = new
        tt.joined[serial] = False
        tt.drift[serial] = 0
        key = (self.topology.cameras[int(tt.camera[serial])], int(tt.local[serial]))
        self._events.append(IdentityEvent("split", t, new, old, key))

    def _resolve_duplicates(self, serials: IntArray, t: float) -> None:
        """One camera frame never shows one global id twice: the later-born track of a
        duplicate pair (e.g. a local track re-found after its id was re-used) is split."""
        tt = self._tracks
        gids = tt.gid[serials]
        uniq, counts = np.unique(gids, return_counts=True)
        for gid in uniq[counts > 1].tolist():
            dup = serials[gids == gid]
            dup = dup[np.argsort(tt.first_s[dup], kind="stable")]
            for s in dup[1:].tolist():
                new = int(self._mint(1)[0])
                tt.gid[s] = new
                tt.joined[s] = False
                key = (self.topology.cameras[int(tt.camera[s])], int(tt.local[s]))
                self._events.append(IdentityEvent("split", t, new, int(gid), key))

    def _prune(self) -> None:
        """Drop appearance of tracks no link can reach any more (history stays)."""
        horizon = self.topology.longest_transit_s
        old = self.gallery.alive & (self.gallery.last_s < self._latest_s - horizon - 1.0)
        if not np.any(old):
            return
        rows = np.flatnonzero(old)
        serials = self._row_serial[rows]
        self.gallery.remove([self.gallery.key(int(r)) for r in rows])
        self._tracks.row[serials] = -1
        self._row_serial[rows] = -1

    # --- queries ---------------------------------------------------------------------------

    def resolve(self, global_id: int) -> int:
        """The surviving id of ``global_id`` (itself unless it was merged away)."""
        with self._lock:
            gid = int(global_id)
            while gid in self._alias:
                gid = self._alias[gid]
            return gid

    def global_id_of(self, camera_id: str, local_track_id: int) -> int | None:
        """Current global id of a local track, or None if it was never observed."""
        with self._lock:
            cam = self.topology.camera_index(camera_id)
            ids = self._local_ids[cam]
            pos = int(np.searchsorted(ids, local_track_id))
            if pos >= ids.shape[0] or ids[pos] != local_track_id:
                return None
            return int(self._tracks.gid[self._local_serials[cam][pos]])

    def where_seen(self, global_id: int) -> list[Sighting]:
        """Where and when a person was seen, in time order.

        Consecutive local tracks on the same camera form one :class:`Sighting`. A merged-
        away id answers with its survivor's history.

        Raises:
            KeyError: the id was never issued.
        """
        with self._lock:
            if not 1 <= global_id < self._next_gid:
                raise KeyError(f"global id {global_id} was never issued")
            gid = self.resolve(global_id)
            tt = self._tracks
            members = self._members(gid)
            members = members[np.lexsort((tt.last_s[members], tt.first_s[members]))]
            sightings: list[Sighting] = []
            for s in members.tolist():
                cam_id = self.topology.cameras[int(tt.camera[s])]
                first, last, local = float(tt.first_s[s]), float(tt.last_s[s]), int(tt.local[s])
                prev = sightings[-1] if sightings else None
                if prev is not None and prev.camera_id == cam_id:
                    sightings[-1] = Sighting(
                        cam_id,
                        (*prev.local_track_ids, local),
                        prev.first_s,
                        max(prev.last_s, last),
                    )
                else:
                    sightings.append(Sighting(cam_id, (local,), first, last))
            return sightings

    @property
    def events(self) -> list[IdentityEvent]:
        """Merges and splits so far, oldest first (a copy)."""
        with self._lock:
            return list(self._events)

    @property
    def num_identities(self) -> int:
        """Distinct global ids currently on some local track."""
        with self._lock:
            n = self._tracks.size
            return int(np.unique(self._tracks.gid[:n]).shape[0]) if n else 0
