"""Multi-camera identity: one global id per person across every camera's local tracks.

Each camera runs its own tracker; its ``tracker_id`` is a *local* track id. The service
links local tracks into global identities in stages:

* **crops** — only crops fit for appearance (not occluded, not cut by the frame border,
  not under the camera's static mask, not too small; :mod:`tapetum.track.crops`) feed a
  track's appearance, a running mean of its embeddings (then a slow moving average);
* **re-link** — within each camera, a new track that continues one the tracker dropped
  (near where it was heading, soon after, alike) joins its identity
  (:mod:`tapetum.track.relink`);
* **overlapping views** — on cameras linked with ``overlap``, people seen on both at the
  same moment are matched one-to-one by position (the topology's ground-plane
  homographies, or a mapping learned online from co-occurrence) and appearance; a pair
  matched at enough moments unites its identities (:mod:`tapetum.identity.overlap`);

and, by appearance (ReID embeddings) under the camera topology's transit-time windows:

* **birth match** — a new local track's first embedding is matched against the gallery of
  tracks it could be (topology-feasible, cosine similarity ≥ ``match_threshold``), one-to-
  one per frame (optimal assignment) and per camera (a global id already on a track that
  is still visible on this camera is not available); no match mints a new global id;
* **merge** — while a track is young and its identity too (all the identity's tracks
  started within the last few seconds: missed at birth, e.g. its first crop was
  truncated, or just joined across overlapping views), its smoothed embedding is
  re-matched every few updates; a confident match to another global id unites the two
  (the older id survives, the younger becomes its alias, so the history of both stays
  reachable);
* **split** — a track that joined an existing identity but whose recent appearance has
  stayed below ``split_threshold`` against all the identity's other tracks for
  ``split_patience`` updates, while another box came near it (only there can a tracker
  swap people: alone, a look changes with light and pose), is moved to a new global id.
  A track young in its identity moves whole (its first match was wrong); one that held
  it for more than two seconds is **cut**: its past stays with the identity and only the
  segment from now on leaves (the tracker switched people), so both identities can
  still unite with the person's other tracks. The overlapping views cut and move tracks
  the same way when they see a tracker's switch. The part of a cut segment within a
  second of the cut is not held against unions (the switch is noticed after it
  happens), and a segment gathers its overlap votes afresh.

An identity is **shown** only once one of its tracks has lasted ``confirm_s`` and
``confirm_frames`` (like a tracker's confirmed tracks): until then its tracks read
``NO_GLOBAL_ID``. So the fresh id a new track holds for its first frames, before a
re-link, a birth match or the overlapping view gives it the person's identity, is never
shown, and a track too short to be a person (detector noise, someone glimpsed at the
frame border) adds no identity.

Per frame the work is array work: a searchsorted lookup of local ids, one vectorised
gallery update, one batched gallery query and one assignment for the frame's new tracks.

Memory is bounded: a track's appearance is dropped once no link can reach it any more,
and the track itself (its history for :meth:`IdentityService.where_seen`) once it has
been gone ``history_s``; the re-linker and the overlap matcher keep only recent tracks.

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
    ...         np.array([[0, 0, 40, 100]]), np.ones(1), np.zeros(1), np.array([track_id]), person
    ...     )
    >>> [int(svc.observe("a", 0.1 * i, seen(7))[0]) for i in range(7)]  # shown at 0.5 s
    [-1, -1, -1, -1, -1, 1, 1]
    >>> svc.observe("b", 3.0, seen(2)).tolist()  # joins a shown identity: at once
    [1]
    >>> [(s.camera_id, s.local_track_ids) for s in svc.where_seen(1)]
    [('a', (7,)), ('b', (2,))]
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt

from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray
from tapetum.core.detections import Detections
from tapetum.errors import ConfigError
from tapetum.identity.gallery import EmbeddingGallery, GalleryConfig, TrackKey, normalize_rows
from tapetum.identity.overlap import (
    GroundPlaneGeometry,
    Moment,
    OverlapConfig,
    OverlapPair,
    PairGeometry,
)
from tapetum.identity.topology import CameraTopology
from tapetum.track.assignment import linear_assignment
from tapetum.track.crops import CropFilter, usable_crops
from tapetum.track.relink import RelinkConfig, TrackletRelinker

#: Global id of a detection that has no local track (``tracker_id == NO_TRACK``).
NO_GLOBAL_ID = -1

#: An identity whose tracks all started within this many seconds is young: it may still
#: be re-matched to an older identity by appearance.
_YOUNG_IDENTITY_S = 3.0
#: After a split or a move, a track's identity is left alone by position evidence for this
#: many seconds (two people crossing at a border make the evidence flicker). A track that
#: has held its identity longer than this and must leave it is cut: its past stays.
_SETTLE_S = 2.0
#: A tracker swaps people only where boxes meet: a track drifts away from its identity
#: (and is split off) only if another box came near it within this many seconds.
_CROWD_MEMORY_S = 3.0
#: A cut is made when a tracker's switch is noticed, up to this long after it happened:
#: the segment before the cut is only sure to be its person until this long before it.
_SWITCH_SLACK_S = 1.0
#: Boxes are near when, widened by this fraction of their width on each side, they
#: intersect.
_NEAR_WIDEN = 0.25


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """Thresholds of the identity service.

    Attributes:
        match_threshold: cosine similarity a new track needs to join an identity.
            Calibrate it per model and site: with OSNet x0.25 on the grey top-down crowd
            test footage different people score ≈ 0.88 and 0.92 was needed
            (``tests/integration/identity/test_identity_real.py``).
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
        crops: which crops feed a track's appearance.
        relink: re-linking of each camera's dropped tracks; None turns it off.
        overlap: matching of simultaneous sightings on cameras linked with ``overlap``;
            None leaves such links to the appearance matches above.
        confirm_s: an identity is shown (:meth:`IdentityService.observe` returns it)
            once one of its tracks has been on screen this long...
        confirm_frames: ...and in this many frames. Until then its tracks read
            ``NO_GLOBAL_ID``: a track that joins a shown identity (birth match, re-link,
            overlapping view) shows it at once, and a track that never lasts this long
            (detector noise, someone glimpsed at the border) never shows an identity of
            its own. 0 and 1 show every identity from its first frame.
        history_s: a track gone this long is forgotten (``where_seen`` answers within
            this horizon; bounded memory on a stream that never ends).
        max_events: merges and splits kept for :attr:`IdentityService.events`.
    """

    match_threshold: float = 0.8
    merge_threshold: float | None = None
    split_threshold: float = 0.6
    split_patience: int = 5
    top_k: int = 20
    rematch_every: int = 5
    rematch_until: int = 30
    gallery: GalleryConfig = field(default_factory=GalleryConfig)
    crops: CropFilter = field(default_factory=CropFilter)
    relink: RelinkConfig | None = field(default_factory=RelinkConfig)
    overlap: OverlapConfig | None = field(default_factory=OverlapConfig)
    confirm_s: float = 0.5
    confirm_frames: int = 5
    history_s: float = 3600.0
    max_events: int = 10_000

    def __post_init__(self) -> None:
        for name in ("match_threshold", "split_threshold"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [-1, 1], got {getattr(self, name)}")
        if self.merge_threshold is not None and not -1.0 <= self.merge_threshold <= 1.0:
            raise ConfigError(f"merge_threshold must be in [-1, 1], got {self.merge_threshold}")
        if not (math.isfinite(self.confirm_s) and self.confirm_s >= 0):
            raise ConfigError(f"confirm_s must be ≥ 0, got {self.confirm_s}")
        for name in ("split_patience", "top_k", "rematch_every", "max_events", "confirm_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not (math.isfinite(self.history_s) and self.history_s > 0):
            raise ConfigError(f"history_s must be > 0, got {self.history_s}")

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
    ``split``: ``track`` left ``absorbed_id`` for ``global_id``: a new id (its appearance
    drifted away), or the identity it was matched to by position on an overlapping
    camera.
    """

    kind: Literal["merge", "split"]
    timestamp_s: float
    global_id: int
    absorbed_id: int
    track: TrackKey | None = None


class _TrackTable:
    """Local tracks as parallel arrays indexed by a serial number. A forgotten track's
    slot is reused (``alive`` False until then), so the table stays as large as the
    tracks of the last ``history_s``, not of the stream's whole life."""

    _COLUMNS: ClassVar[dict[str, tuple[tuple[int, ...], type, float]]] = {
        "alive": ((), np.bool_, 0),
        "camera": ((), np.int64, 0),
        "local": ((), np.int64, 0),
        "chain": ((), np.int64, -1),
        "first_s": ((), np.float64, 0),
        "born_s": ((), np.float64, 0),
        "last_s": ((), np.float64, 0),
        "moved_s": ((), np.float64, -np.inf),
        "gid": ((), np.int64, NO_GLOBAL_ID),
        "row": ((), np.int64, -1),
        "drift": ((), np.int64, 0),
        "joined": ((), np.bool_, 0),
        "foot": ((2,), np.float64, 0),
        "velocity": ((2,), np.float64, 0),
        "height": ((), np.float64, 0),
        "hits": ((), np.int64, 0),
        "crowded_s": ((), np.float64, -np.inf),
        "sure_until_s": ((), np.float64, np.inf),
    }

    def __init__(self, capacity: int = 256) -> None:
        self.size = 0  # slots ever used: serials are < size
        for name, (shape, dtype, fill) in self._COLUMNS.items():
            setattr(self, name, np.full((capacity, *shape), fill, dtype))
        self._free: list[int] = []
        # typed views of the columns (set by setattr above)
        self.alive: BoolArray
        self.camera: IntArray
        self.local: IntArray
        self.chain: IntArray
        self.first_s: Float64Array
        self.born_s: Float64Array  # the local track's first sighting (a cut keeps it)
        self.last_s: Float64Array
        self.moved_s: Float64Array  # when a split or move last changed its identity
        self.gid: IntArray
        self.row: IntArray
        self.drift: IntArray
        self.joined: BoolArray
        self.foot: Float64Array
        self.velocity: Float64Array
        self.height: Float64Array
        self.hits: IntArray  # frames the local track was seen in (a cut keeps them)
        self.crowded_s: Float64Array  # when another box was last near it
        self.sure_until_s: Float64Array  # a segment cut at a switch: sure up to here

    @property
    def live(self) -> IntArray:
        """(L,) serials of the tracks kept."""
        return np.flatnonzero(self.alive[: self.size]).astype(np.int64)

    def append(self, camera: int, local: IntArray, t: float) -> IntArray:
        n = local.shape[0]
        reuse = [self._free.pop() for _ in range(min(n, len(self._free)))]
        fresh = n - len(reuse)
        if self.size + fresh > self.camera.shape[0]:
            cap = max(2 * self.camera.shape[0], self.size + fresh)
            for name, (shape, dtype, fill) in self._COLUMNS.items():
                old = getattr(self, name)
                new = np.full((cap, *shape), fill, dtype)
                new[: self.size] = old[: self.size]
                setattr(self, name, new)
        serials = np.array(reuse + list(range(self.size, self.size + fresh)), np.int64)
        self.size += fresh
        for name, (_, _, fill) in self._COLUMNS.items():
            getattr(self, name)[serials] = fill
        self.alive[serials] = True
        self.camera[serials] = camera
        self.local[serials] = local
        self.first_s[serials] = t
        self.born_s[serials] = t
        self.last_s[serials] = t
        return serials

    def release(self, serials: IntArray) -> None:
        self.alive[serials] = False
        self.gid[serials] = NO_GLOBAL_ID
        self._free.extend(serials.tolist())


class IdentityService:
    """Assigns global ids to the local tracks of many cameras.

    Feed it every camera's tracked frames in (roughly) time order through :meth:`observe`.
    One writer thread may call :meth:`observe` while others call the query methods: every
    public method holds the service's lock. No state is shared between instances.

    Args:
        topology: cameras, links, transit windows, and per camera an optional
            ground-plane homography and static mask.
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
        # Identities shown: one of their tracks lasted confirm_s and confirm_frames.
        self._shown: set[int] = set()
        self._next_gid = 1
        self._events: deque[IdentityEvent] = deque(maxlen=cfg.max_events)
        self._latest_s = -np.inf
        self._lock = threading.RLock()
        self._relinkers = [
            TrackletRelinker(cfg.relink) if cfg.relink is not None else None for _ in range(n_cams)
        ]
        # Per camera: re-linked chain id -> serial of the chain's latest track.
        self._chain_serial: list[dict[int, int]] = [{} for _ in range(n_cams)]
        self._pairs: list[OverlapPair] = []
        if cfg.overlap is not None:
            for a, b in topology.overlapping_pairs():
                self._pairs.append(OverlapPair(a, b, cfg.overlap, self._given_geometry(a, b)))
        self._overlap_cams = np.zeros((n_cams, n_cams), np.bool_)
        for pair in self._pairs:
            self._overlap_cams[pair.a, pair.b] = self._overlap_cams[pair.b, pair.a] = True

    def _given_geometry(self, a: int, b: int) -> PairGeometry | None:
        ha = self.topology.specs[a].homography
        hb = self.topology.specs[b].homography
        if ha is None or hb is None:
            return None
        return GroundPlaneGeometry(ha, hb, float(self.topology.max_distance[a, b]))

    # --- the per-frame entry point ---------------------------------------------------------

    def observe(
        self,
        camera_id: str,
        timestamp_s: float,
        detections: Detections,
        frame_hw: tuple[int, int] | None = None,
    ) -> IntArray:
        """Take one camera frame's tracked detections and return their global ids.

        Args:
            camera_id: a camera of the topology.
            timestamp_s: frame time in seconds, on a clock shared by all cameras.
            detections: the camera tracker's output with ``embeddings`` (N, D) set; a row
                whose embedding is zero or non-finite updates only the track's times and
                place.
            frame_hw: the frame's height and width in pixels: crops cut by its border or
                under the camera's mask are then not used for appearance.

        Returns:
            (N,) int64 global ids; ``NO_GLOBAL_ID`` where ``tracker_id`` is ``NO_TRACK``
            and where the track's identity is not confirmed yet (``confirm_s``).

        Raises:
            ConfigError: unknown camera, or the camera's mask lies outside this frame.
            ValueError: no embeddings, or a local track id twice in one frame.
        """
        with self._lock:
            return self._observe(camera_id, float(timestamp_s), detections, frame_hw)

    def _observe(
        self, camera_id: str, t: float, detections: Detections, frame_hw: tuple[int, int] | None
    ) -> IntArray:
        cam = self.topology.camera_index(camera_id)
        n = len(detections)
        out = np.full(n, NO_GLOBAL_ID, np.int64)
        if n == 0:
            self._observe_overlap(cam, t, np.empty(0, np.int64))
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
        xyxy = detections.xyxy[tracked].astype(np.float64)
        emb, valid = normalize_rows(detections.embeddings[tracked])
        usable = valid & usable_crops(
            xyxy,
            frame_hw,
            self.config.crops,
            self.topology.specs[cam].mask,
            others=detections.xyxy,
        )
        emb[~usable] = 0.0
        self._latest_s = max(self._latest_s, t)
        tt = self._tracks

        serials, is_new = self._lookup_or_add(cam, local, t)
        self._place(serials, xyxy, t)
        tt.crowded_s[serials[_near_others(xyxy, detections.xyxy, tracked)]] = t
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

        chained = self._relink(cam, t, serials, is_new, xyxy=xyxy, emb=emb, usable=usable)
        self.gallery.update(rows, emb, t)

        # Birth: new tracks with an appearance are matched; the rest get fresh ids now and
        # may merge once their first embedding arrives (see _rematch).
        born = is_new & usable & ~chained
        self._birth_match(cam, t, serials[born], emb[born])
        unmatched_new = serials[is_new & (tt.gid[serials] == NO_GLOBAL_ID)]
        tt.gid[unmatched_new] = self._mint(unmatched_new.shape[0])

        updates = self.gallery.updates[rows]
        young = (
            usable
            & ~is_new
            & (updates <= self.config.rematch_until)
            & ((updates == 1) | (updates % self.config.rematch_every == 0))
        )
        for s in serials[young].tolist():
            self._rematch(int(s), t)
        self._observe_overlap(cam, t, serials)
        self._check_drift(serials, usable & ~is_new, t)
        self._resolve_duplicates(serials, t)
        self._prune()
        out[tracked] = self._shown_ids(serials, t)
        return out

    def _shown_ids(self, serials: IntArray, t: float) -> IntArray:
        """(N,) the tracks' global ids where their identity is confirmed (one of its
        tracks lasted ``confirm_s`` and ``confirm_frames``), else ``NO_GLOBAL_ID``."""
        tt, cfg = self._tracks, self.config
        tt.hits[serials] += 1
        gids = tt.gid[serials]
        ripe = (t - tt.born_s[serials] >= cfg.confirm_s) & (tt.hits[serials] >= cfg.confirm_frames)
        self._shown.update(gids[ripe].tolist())
        shown = np.fromiter((g in self._shown for g in gids.tolist()), np.bool_, gids.shape[0])
        out: IntArray = np.where(shown, gids, NO_GLOBAL_ID)
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

    def _place(self, serials: IntArray, xyxy: Float64Array, t: float) -> None:
        """Foot point (bottom centre), height and foot velocity of each track."""
        tt = self._tracks
        foot = np.stack([(xyxy[:, 0] + xyxy[:, 2]) * 0.5, xyxy[:, 3]], axis=1)
        dt = t - tt.last_s[serials]
        step = (dt > 0) & (dt <= 0.5) & (tt.height[serials] > 0)
        inst = (foot - tt.foot[serials]) / np.maximum(dt, 1e-6)[:, None]
        # A short average: the matcher only asks "is this person walking?"
        tt.velocity[serials] = np.where(
            step[:, None], 0.7 * tt.velocity[serials] + 0.3 * inst, tt.velocity[serials]
        )
        tt.foot[serials] = foot
        tt.height[serials] = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1.0)

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
        busy = (
            tt.alive[:n]
            & (tt.camera[:n] == cam)
            & (tt.last_s[:n] >= t)
            & (tt.gid[:n] != NO_GLOBAL_ID)
        )
        return np.unique(tt.gid[:n][busy])

    def _still_on_overlapping(self, cam: int, t: float) -> BoolArray:
        """(R,) gallery rows of tracks on a camera overlapping ``cam`` seen within the
        last half second: those are matched by position, not by appearance alone."""
        g = self.gallery
        if not self._pairs:
            return np.zeros(g.camera.shape[0], np.bool_)
        overlapping = self._overlap_cams[cam][np.maximum(g.camera, 0)] & (g.camera >= 0)
        recent: BoolArray = overlapping & (np.nan_to_num(g.last_s, nan=-np.inf) >= t - 0.5)
        return recent

    # --- re-link -----------------------------------------------------------------------------

    def _relink(
        self,
        cam: int,
        t: float,
        serials: IntArray,
        is_new: BoolArray,
        *,
        xyxy: Float64Array,
        emb: Float32Array,
        usable: BoolArray,
    ) -> BoolArray:
        """Run the camera's re-linker; a track that continues a chain joins the chain's
        identity. Returns (N,) True where a new track did so at birth."""
        relinker = self._relinkers[cam]
        chained = np.zeros(serials.shape[0], np.bool_)
        if relinker is None:
            return chained
        tt, chains = self._tracks, self._chain_serial[cam]
        chain = relinker.update(t, tt.local[serials], xyxy, emb, usable)
        changed = np.flatnonzero(chain != tt.chain[serials])
        for i in changed.tolist():
            s, c = int(serials[i]), int(chain[i])
            prev = chains.get(c)
            tt.chain[s] = c
            chains[c] = s
            if prev is None or prev == s or not tt.alive[prev]:
                continue
            prev_gid = int(tt.gid[prev])
            if is_new[i]:
                # Born as the continuation of a dropped track: its identity, and its
                # appearance so far as a start.
                tt.gid[s] = prev_gid
                tt.joined[s] = True
                chained[i] = True
                self._inherit_appearance(prev, s)
            elif tt.gid[s] != prev_gid and self._can_unite(prev_gid, int(tt.gid[s])):
                self._merge(prev_gid, int(tt.gid[s]), t)
        return chained

    def _inherit_appearance(self, source: int, target: int) -> None:
        g, tt = self.gallery, self._tracks
        src, dst = int(tt.row[source]), int(tt.row[target])
        if src < 0 or dst < 0 or g.updates[src] == 0:
            return
        g.vectors[dst] = g.vectors[src]
        g.recent[dst] = g.recent[src]
        g.updates[dst] = g.updates[src]

    # --- overlapping views -------------------------------------------------------------------

    def _observe_overlap(self, cam: int, t: float, serials: IntArray) -> None:
        """Match this frame's people with the overlapping cameras' (by position and
        appearance, one-to-one) and act on the pairs:

        * a track born moments ago, still alone in its identity, takes its partner's
          identity at once (its own fresh id is then never shown);
        * other pairs unite their identities after ``min_votes`` matched moments, when
          each is the other's best partner;
        * a pair matched twice that often whose identities cannot unite (each holds a
          track the other's camera saw at the same time: a tracker switched people, or
          an earlier link was wrong) moves one of the two tracks into the other's
          identity, where it fits (an established track is cut and only its segment
          from now moves, see :meth:`_reassign`); if neither fits, the older track is
          cut: its past stays with its identity and it goes on, from now, as a new
          segment in its partner's (a tracker that kept one id while a second person
          took the first one's place, typically a box stuck at the frame border).

        ``serials`` is updated in place where a track was cut.
        """
        if not self._pairs:
            return
        tt = self._tracks
        moment = Moment(t, serials, tt.foot[serials], tt.height[serials], tt.velocity[serials])
        cfg = self.config.overlap
        assert cfg is not None
        for pair in self._pairs:
            if cam not in (pair.a, pair.b):
                continue
            for sa, sb, votes in pair.observe(cam, moment, self._similarity):
                if not (tt.alive[sa] and tt.alive[sb]):
                    continue
                ga, gb = int(tt.gid[sa]), int(tt.gid[sb])
                if ga == gb or NO_GLOBAL_ID in (ga, gb):
                    continue
                fresh = [s for s in (sa, sb) if self._fresh(s, t)]
                if fresh and self._can_unite(ga, gb):
                    self._merge(ga, gb, t)
                elif votes < cfg.min_votes or not pair.best_partner(sa, sb):
                    continue
                elif self._can_unite(ga, gb):
                    self._merge(ga, gb, t)
                elif max(tt.moved_s[sa], tt.moved_s[sb]) > t - _SETTLE_S:
                    continue  # just split or moved: let it settle rather than flip back
                elif votes >= 2 * cfg.min_votes:
                    younger, older = (sa, sb) if tt.first_s[sa] >= tt.first_s[sb] else (sb, sa)
                    for mover, host in ((younger, older), (older, younger)):
                        if self._can_join(mover, int(tt.gid[host]), t):
                            moved = self._reassign(mover, int(tt.gid[host]), t)
                            serials[serials == mover] = moved
                            break
                    else:
                        segment = self._cut(older, t)
                        serials[serials == older] = segment
                        if self._can_join(segment, int(tt.gid[younger]), t):
                            self._move_track(segment, int(tt.gid[younger]), t)

    def _fresh(self, serial: int, t: float) -> bool:
        """A local track first seen within the last half second (not a segment cut from
        an older one), still alone in its identity."""
        tt = self._tracks
        return bool(t - tt.born_s[serial] <= 0.5) and self._members(int(tt.gid[serial])).size == 1

    def _established(self, serial: int, t: float) -> bool:
        """The track has held its identity longer than ``_SETTLE_S``: if it must leave
        it now, its tracker switched people, and its past stays (see :meth:`_reassign`)."""
        return bool(t - self._tracks.first_s[serial] > _SETTLE_S)

    def _can_join(self, serial: int, gid: int, t: float) -> bool:
        """True when ``gid`` has no track on ``serial``'s camera at times that overlap the
        part of ``serial`` that would join it (from ``t`` on for an established track)."""
        tt = self._tracks
        start = t if self._established(serial, t) else tt.first_s[serial]
        m = self._members(gid)
        m = m[(m != serial) & (tt.camera[m] == tt.camera[serial])]
        overlap = (tt.first_s[m] <= tt.last_s[serial]) & (start <= self._until(m))
        return not bool(np.any(overlap))

    def _reassign(self, serial: int, gid: int | None, t: float) -> int:
        """Move a track into identity ``gid`` (a new one when None); returns its serial.

        A young track moves whole (its first match was wrong). An established one was
        right until its tracker switched people: it is cut, its past stays with its
        identity and only the segment from ``t`` moves, so that the identity it leaves
        and the one it joins can each still unite with the person's other tracks."""
        if self._established(serial, t):
            serial = self._cut(serial, t)
        if gid is None:
            tt = self._tracks
            old, new = int(tt.gid[serial]), int(self._mint(1)[0])
            tt.gid[serial] = new
            tt.joined[serial] = False
            tt.drift[serial] = 0
            tt.moved_s[serial] = t
            key = (self.topology.cameras[int(tt.camera[serial])], int(tt.local[serial]))
            self._events.append(IdentityEvent("split", t, new, old, key))
        else:
            self._move_track(serial, gid, t)
        return serial

    def _cut(self, serial: int, t: float) -> int:
        """End a track's current segment just before ``t``; its local id goes on as a new
        segment (a new serial, same identity until moved) from ``t``. The old segment's
        appearance, a mix of two people, is dropped, and so are its overlap votes: they
        were cast for the person before the switch."""
        tt, g = self._tracks, self.gallery
        cam, local = int(tt.camera[serial]), int(tt.local[serial])
        segment = int(self._tracks.append(cam, np.array([local]), t)[0])
        for name in ("gid", "chain", "foot", "velocity", "height", "born_s", "hits"):
            getattr(tt, name)[segment] = getattr(tt, name)[serial]
        tt.last_s[serial] = np.nextafter(t, -np.inf)
        tt.sure_until_s[serial] = max(tt.first_s[serial], t - _SWITCH_SLACK_S)
        row = int(tt.row[serial])
        if row >= 0:
            g.remove([g.key(row)])
            self._row_serial[row] = -1
            tt.row[serial] = -1
        new_row = int(g.add([(self.topology.cameras[cam], local)], cam, t)[0])
        self._grow_row_map()
        tt.row[segment] = new_row
        self._row_serial[new_row] = segment
        pos = np.flatnonzero(self._local_serials[cam] == serial)
        self._local_serials[cam][pos] = segment
        chains = self._chain_serial[cam]
        for c in [c for c, s in chains.items() if s == serial]:
            chains[c] = segment
        for pair in self._pairs:  # the segment gathers its own evidence from now
            pair.forget([serial])
        return segment

    def _move_track(self, serial: int, gid: int, t: float) -> None:
        """One track leaves its identity for another (a split followed by a join)."""
        tt = self._tracks
        old = int(tt.gid[serial])
        tt.gid[serial] = gid
        tt.joined[serial] = True
        tt.drift[serial] = 0
        tt.moved_s[serial] = t
        key = (self.topology.cameras[int(tt.camera[serial])], int(tt.local[serial]))
        self._events.append(IdentityEvent("split", t, gid, old, key))

    def _similarity(self, serials_a: IntArray, serials_b: IntArray) -> Float64Array:
        """(Na, Nb) cosine of the tracks' mean embeddings; NaN where one has none."""
        g, tt = self.gallery, self._tracks
        ra, rb = tt.row[serials_a], tt.row[serials_b]
        ka = (ra >= 0) & (g.updates[np.maximum(ra, 0)] > 0)
        kb = (rb >= 0) & (g.updates[np.maximum(rb, 0)] > 0)
        sim = g.vectors[np.maximum(ra, 0)].astype(np.float64) @ g.vectors[np.maximum(rb, 0)].T
        out: Float64Array = np.where(ka[:, None] & kb[None, :], sim, np.nan)
        return out

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
        allowed &= ~self._still_on_overlapping(cam, t)
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
        members = self._members(own)
        if members.shape[0] > 1 and tt.first_s[members].min() < t - _YOUNG_IDENTITY_S:
            # Only a young identity (a new track, or new tracks just joined across
            # overlapping views) looks for an older one: re-matching members of an
            # established identity would chain look-alikes together.
            return
        row = int(tt.row[serial])
        gids = self._row_gids()
        allowed = g.alive & (gids != NO_GLOBAL_ID) & (gids != own)
        allowed &= ~self._still_on_overlapping(int(tt.camera[serial]), t)
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
        return np.flatnonzero(self._tracks.alive[:n] & (self._tracks.gid[:n] == gid)).astype(
            np.int64
        )

    def _until(self, serials: IntArray) -> Float64Array:
        """(N,) last time each track is sure to have been its identity's person: its last
        sighting, or for a segment cut at a tracker's switch, ``_SWITCH_SLACK_S`` before
        the cut (the switch happened before it was noticed)."""
        tt = self._tracks
        out: Float64Array = np.minimum(tt.last_s[serials], tt.sure_until_s[serials])
        return out

    def _can_unite(self, a: int, b: int) -> bool:
        """True when no camera has a track of ``a`` and one of ``b`` at overlapping times."""
        tt = self._tracks
        ma, mb = self._members(a), self._members(b)
        same_cam = tt.camera[ma][:, None] == tt.camera[mb][None, :]
        overlap = (tt.first_s[ma][:, None] <= self._until(mb)[None, :]) & (
            tt.first_s[mb][None, :] <= self._until(ma)[:, None]
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
        if drop in self._shown:
            self._shown.add(keep)
        self._events.append(IdentityEvent("merge", t, keep, drop))

    # --- split -----------------------------------------------------------------------------

    def _check_drift(self, serials: IntArray, updated: BoolArray, t: float) -> None:
        """Count consecutive updates where a joined track's recent appearance is far from
        every other track of its identity while another box came near it (where a
        tracker can swap people; alone, a look changes with light and pose, not person);
        split it off after ``split_patience``. ``serials`` is updated in place where a
        track was cut."""
        tt, g = self._tracks, self.gallery
        cand = serials[updated & tt.joined[serials] & (tt.row[serials] >= 0)]
        cand = cand[g.updates[tt.row[cand]] > 0]
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
        crowded = t - tt.crowded_s[cand] <= _CROWD_MEMORY_S
        drifted = has_others & crowded & (best < self.config.split_threshold)
        tt.drift[cand] = np.where(drifted, tt.drift[cand] + 1, 0)
        for s in cand[tt.drift[cand] >= self.config.split_patience].tolist():
            segment = self._split(int(s), t)
            serials[serials == s] = segment

    def _split(self, serial: int, t: float) -> int:
        """A drifted track leaves its identity for a new one; returns its serial (a new
        segment when the track was established, see :meth:`_reassign`)."""
        tt = self._tracks
        members = self._members(int(tt.gid[serial]))
        founder = members[np.argmin(tt.first_s[members])]
        if founder == serial:  # the identity's first track keeps it
            tt.drift[serial] = 0
            return serial
        return self._reassign(serial, None, t)

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
                tt.moved_s[s] = t
                key = (self.topology.cameras[int(tt.camera[s])], int(tt.local[s]))
                self._events.append(IdentityEvent("split", t, new, int(gid), key))

    def _prune(self) -> None:
        """Drop appearance of tracks no link can reach any more, and tracks (with their
        history) gone longer than ``history_s``."""
        horizon = self.topology.longest_transit_s
        g = self.gallery
        old = g.alive & (g.last_s < self._latest_s - horizon - 1.0)
        if np.any(old):
            rows = np.flatnonzero(old)
            serials = self._row_serial[rows]
            g.remove([g.key(int(r)) for r in rows])
            self._tracks.row[serials] = -1
            self._row_serial[rows] = -1
        tt = self._tracks
        n = tt.size
        gone = np.flatnonzero(
            tt.alive[:n] & (tt.last_s[:n] < self._latest_s - self.config.history_s)
        )
        if gone.size:
            self._forget(gone.astype(np.int64))

    def _forget(self, serials: IntArray) -> None:
        tt = self._tracks
        rows = tt.row[serials]
        rows = rows[rows >= 0]
        if rows.size:
            self.gallery.remove([self.gallery.key(int(r)) for r in rows])
            self._row_serial[rows] = -1
        for cam in np.unique(tt.camera[serials]).tolist():
            keep = ~np.isin(self._local_serials[cam], serials)
            self._local_ids[cam] = self._local_ids[cam][keep]
            self._local_serials[cam] = self._local_serials[cam][keep]
            gone = set(serials.tolist())
            chains = self._chain_serial[cam]
            for c in [c for c, s in chains.items() if s in gone]:
                del chains[c]
        for pair in self._pairs:
            pair.forget(serials)
        tt.release(serials)
        # Aliases of identities with no track left answer nothing any more.
        live = set(np.unique(tt.gid[tt.live]).tolist())
        self._alias = {k: v for k, v in self._alias.items() if self._final(v) in live}
        self._shown &= live

    def _final(self, gid: int) -> int:
        while gid in self._alias:
            gid = self._alias[gid]
        return gid

    # --- queries ---------------------------------------------------------------------------

    def resolve(self, global_id: int) -> int:
        """The surviving id of ``global_id`` (itself unless it was merged away)."""
        with self._lock:
            return self._final(int(global_id))

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
        away id answers with its survivor's history. Tracks gone longer than
        ``history_s`` are forgotten: an identity whose tracks are all forgotten answers
        an empty list.

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
        """Merges and splits so far (the last ``max_events``), oldest first (a copy)."""
        with self._lock:
            return list(self._events)

    @property
    def num_identities(self) -> int:
        """Distinct global ids currently on some local track kept."""
        with self._lock:
            tt = self._tracks
            return int(np.unique(tt.gid[tt.live]).shape[0])

    @property
    def tracks_kept(self) -> int:
        """Local tracks the service holds (bounded by ``history_s``)."""
        with self._lock:
            return int(self._tracks.live.shape[0])

    def calibration(self) -> dict[tuple[str, str], dict[str, float | int | bool]]:
        """Per overlapping camera pair: whether position matching is available (given or
        learned), moments matched, and the learned mapping's support."""
        with self._lock:
            out: dict[tuple[str, str], dict[str, float | int | bool]] = {}
            for pair in self._pairs:
                geo = pair.geometry
                cal = pair.calibrator
                out[(self.topology.cameras[pair.a], self.topology.cameras[pair.b])] = {
                    "calibrated": geo is not None,
                    "learned": cal is not None,
                    "moments": pair.moments,
                    "fits_tried": cal.fits_tried if cal is not None else 0,
                    "fits_accepted": cal.fits_accepted if cal is not None else 0,
                    "inliers": getattr(geo, "inliers", 0),
                    "pairs": getattr(geo, "pairs", 0),
                }
            return out

    def relinks(self) -> int:
        """Links made by the cameras' re-linkers so far."""
        with self._lock:
            return sum(r.links for r in self._relinkers if r is not None)


def _near_others(xyxy: Float64Array, boxes: npt.ArrayLike, rows: IntArray) -> BoolArray:
    """(N,) True where the box ``xyxy[i]`` (row ``rows[i]`` of ``boxes``) comes near
    another of the frame's ``boxes`` (both widened by ``_NEAR_WIDEN`` of their width on
    each side, they intersect)."""
    other = np.asarray(boxes, np.float64).reshape(-1, 4)
    pad_a = _NEAR_WIDEN * (xyxy[:, 2] - xyxy[:, 0])
    pad_b = _NEAR_WIDEN * (other[:, 2] - other[:, 0])
    ix = np.minimum(xyxy[:, None, 2] + pad_a[:, None], other[None, :, 2] + pad_b[None, :])
    ix -= np.maximum(xyxy[:, None, 0] - pad_a[:, None], other[None, :, 0] - pad_b[None, :])
    iy = np.minimum(xyxy[:, None, 3], other[None, :, 3]) - np.maximum(
        xyxy[:, None, 1], other[None, :, 1]
    )
    near = (ix > 0) & (iy > 0)
    near[np.arange(rows.shape[0]), rows] = False
    out: BoolArray = np.any(near, axis=1)
    return out
