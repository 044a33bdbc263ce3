"""How well identities hold on real footage, measured without ground truth.

What an operator can check on their own cameras, from the ``tracks.jsonl`` of a
``tapetum run --topology`` (each track with its ``global_id``) and the head count they see:

* **identities per person** — distinct global ids over the run divided by the number of
  people (``--people``): 1.0 is perfect, 6 means each person was split six ways;
* **local tracks per identity** — how many camera tracks each global id gathered;
* **identity changes per minute** — how often a local track's global id changed while it
  was on screen (a merge or a split), per minute of footage; rows without a global id
  (``-1``: the identity service had not confirmed the track's identity yet) are skipped;
* **simultaneous sightings sharing an id** — on every pair of overlapping cameras (links
  with ``overlap``), at every moment both cameras have a frame, the sightings that are
  the same person should carry the same global id. Which sightings are the same person is
  not known without ground truth, so two estimates are given:

  - *by position*: the two views' ground mapping is fitted **from the boxes alone** (the
    topology's homographies when given, else RANSAC over people moving in both views at
    once: :class:`~tapetum.identity.overlap.CoOccurrenceCalibrator` over the whole run),
    the sightings of each moment are matched one-to-one by position within the gate, and
    the share of matched pairs with equal global ids is reported. Global ids play no part
    in the matching, so the estimate does not favour the identity service's own links;
  - *by count* (conservative): per moment, at most ``min(n_a, n_b)`` people can be on
    both cameras; the share is ``|ids_a ∩ ids_b| / min(n_a, n_b)`` summed over moments. On
    views that only partly overlap it counts people outside the overlap as missed links,
    so it stays below the true share.

Example:
    >>> from tapetum.eval.identity_measures import identity_measures, load_traces
    >>> traces = load_traces("runs/campus4/tracks.jsonl")  # doctest: +SKIP
    >>> m = identity_measures(traces, topology, people=4)  # doctest: +SKIP
    >>> m.identities, m.identities_per_person  # doctest: +SKIP
    (7, 1.75)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tapetum._types import Float64Array, IntArray
from tapetum.errors import ConfigError
from tapetum.identity.overlap import (
    CoOccurrenceCalibrator,
    GroundPlaneGeometry,
    Moment,
    OverlapConfig,
    PairGeometry,
)
from tapetum.identity.topology import CameraTopology
from tapetum.track.assignment import linear_assignment

__all__ = [
    "CameraTrace",
    "IdentityMeasures",
    "PairMeasures",
    "identity_measures",
    "load_resolved_ids",
    "load_traces",
    "resolve_traces",
    "traces_from_records",
]


@dataclass(frozen=True, slots=True)
class CameraTrace:
    """One camera's tracked people over a run, one row per track per frame.

    Attributes:
        camera_id: the camera (stream ``source_id``).
        frame_times_s: (F,) timestamp of every frame processed, empty ones included.
        time_s: (R,) timestamp of each row's frame.
        track_id: (R,) the camera tracker's id.
        global_id: (R,) the identity service's id (-1 where none).
        xyxy: (R, 4) box, pixels.
    """

    camera_id: str
    frame_times_s: Float64Array
    time_s: Float64Array
    track_id: IntArray
    global_id: IntArray
    xyxy: Float64Array

    @property
    def duration_s(self) -> float:
        """Time from the first to the last frame, plus one frame interval."""
        t = self.frame_times_s
        if t.size < 2:
            return 0.0
        return float(t[-1] - t[0] + np.median(np.diff(t)))


def traces_from_records(records: Iterable[Mapping[str, Any]]) -> dict[str, CameraTrace]:
    """Per camera trace from JSONL records (``source_id``, ``timestamp_s``, ``tracks``
    with ``track_id``, ``global_id`` and ``xyxy``), in any order.

    Raises:
        ConfigError: a record lacks a field, or no track has a ``global_id``.
    """
    frames: dict[str, list[float]] = {}
    rows: dict[str, list[tuple[float, int, int, list[float]]]] = {}
    seen_gid = False
    for n, rec in enumerate(records, 1):
        try:
            cam, t = str(rec["source_id"]), float(rec["timestamp_s"])
            frames.setdefault(cam, []).append(t)
            for tr in rec["tracks"]:
                gid = tr.get("global_id")
                seen_gid |= gid is not None
                rows.setdefault(cam, []).append(
                    (t, int(tr["track_id"]), -1 if gid is None else int(gid), tr["xyxy"])
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"record {n}: not a tapetum tracks record ({exc!r})") from None
    if not frames:
        raise ConfigError("no records: the tracks file is empty")
    if not seen_gid:
        raise ConfigError(
            "no track has a global_id: run tapetum run with --topology (and --reid) to "
            "give tracks cross-camera identities"
        )
    out: dict[str, CameraTrace] = {}
    for cam, times in frames.items():
        r = sorted(rows.get(cam, []), key=lambda x: x[0])
        out[cam] = CameraTrace(
            cam,
            np.unique(np.asarray(times, np.float64)),
            np.asarray([x[0] for x in r], np.float64),
            np.asarray([x[1] for x in r], np.int64),
            np.asarray([x[2] for x in r], np.int64),
            np.asarray([x[3] for x in r], np.float64).reshape(-1, 4),
        )
    return out


def load_traces(path: str | Path) -> dict[str, CameraTrace]:
    """Read a ``tracks.jsonl`` written by ``tapetum run`` (see :func:`traces_from_records`).

    Raises:
        ConfigError: the file is missing or not a tracks file.
    """
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    try:
        records = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not JSON Lines ({exc})") from None
    return traces_from_records(records)


def load_resolved_ids(path: str | Path) -> dict[int, int]:
    """``{issued global id: the id it ended up as}`` from the ``identities.json`` that
    ``tapetum run --topology`` writes beside ``tracks.jsonl``.

    Raises:
        ConfigError: the file is missing or malformed.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return {int(k): int(v) for k, v in data["resolved"].items()}
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{file}: not an identities.json ({exc!r})") from None


def resolve_traces(
    traces: Mapping[str, CameraTrace], resolved: Mapping[int, int]
) -> dict[str, CameraTrace]:
    """The traces with every global id replaced by the id it ended up as (the merges the
    service made later applied to the whole run, as ``where_seen`` answers)."""
    out = {}
    for cam, tr in traces.items():
        ids = np.asarray([resolved.get(int(g), int(g)) for g in tr.global_id], np.int64)
        out[cam] = CameraTrace(cam, tr.frame_times_s, tr.time_s, tr.track_id, ids, tr.xyxy)
    return out


@dataclass(frozen=True, slots=True)
class PairMeasures:
    """Simultaneous sightings on one pair of overlapping cameras.

    Attributes:
        cameras: the two camera ids.
        moments: moments where both cameras had a frame.
        matched_by_position: sighting pairs matched by position (see the module
            docstring); None when no ground mapping could be fitted.
        shared_by_position: of those, pairs with one global id.
        share_by_position: ``shared_by_position / matched_by_position``.
        possible_by_count: sum over moments of ``min(n_a, n_b)``.
        shared_by_count: sum over moments of ``|ids_a ∩ ids_b|``.
        share_by_count: ``shared_by_count / possible_by_count``.
        geometry: ``"given"`` (topology homographies), ``"fitted"`` or ``"none"``.
    """

    cameras: tuple[str, str]
    moments: int
    matched_by_position: int | None
    shared_by_position: int | None
    share_by_position: float | None
    possible_by_count: int
    shared_by_count: int
    share_by_count: float
    geometry: str


@dataclass(frozen=True, slots=True)
class IdentityMeasures:
    """Ground-truth-free measures of a multi-camera run (see the module docstring).

    Attributes:
        cameras: camera ids measured.
        duration_s: longest camera's footage, seconds.
        local_tracks: per camera, distinct tracker ids.
        identities: distinct global ids over all cameras.
        people: head count given by the operator, or None.
        identities_per_person: ``identities / people`` (None without ``people``).
        local_tracks_per_identity: all cameras' local tracks / identities.
        identity_changes: times a local track's global id changed between two of its
            frames.
        identity_changes_per_min: that, per minute of footage.
        pairs: simultaneous sightings on each overlapping pair.
    """

    cameras: tuple[str, ...]
    duration_s: float
    local_tracks: dict[str, int]
    identities: int
    people: int | None
    identities_per_person: float | None
    local_tracks_per_identity: float
    identity_changes: int
    identity_changes_per_min: float
    pairs: list[PairMeasures] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def identity_measures(
    traces: Mapping[str, CameraTrace],
    topology: CameraTopology | None = None,
    *,
    people: int | None = None,
    overlap: OverlapConfig | None = None,
) -> IdentityMeasures:
    """Measure a run's identities without ground truth.

    Args:
        traces: per camera, from :func:`load_traces`.
        topology: which cameras overlap (links with ``overlap``) and their homographies;
            None measures no simultaneous sightings.
        people: the number of people the operator counts in the footage.
        overlap: gate and fitting settings of the position matching (default
            :class:`OverlapConfig` with enough samples for a whole run).

    Raises:
        ConfigError: ``people`` is not positive, or the topology names no camera of the
            traces.
    """
    if people is not None and people < 1:
        raise ConfigError(f"--people must be ≥ 1, got {people}")
    cams = tuple(sorted(traces))
    gids = np.concatenate([traces[c].global_id for c in cams]) if cams else np.empty(0)
    identities = int(np.unique(gids[gids >= 0]).shape[0])
    local = {c: int(np.unique(traces[c].track_id).shape[0]) for c in cams}
    changes = sum(_identity_changes(traces[c]) for c in cams)
    duration = max((traces[c].duration_s for c in cams), default=0.0)
    pairs: list[PairMeasures] = []
    if topology is not None:
        known = [c for c in cams if c in topology.cameras]
        if cams and not known:
            raise ConfigError(
                f"the topology's cameras {list(topology.cameras)} are none of the run's "
                f"cameras {list(cams)}"
            )
        for i, j in topology.overlapping_pairs():
            a, b = topology.cameras[i], topology.cameras[j]
            if a in traces and b in traces:
                pairs.append(
                    _pair_measures(
                        traces[a], traces[b], topology=topology, i=i, j=j, overlap=overlap
                    )
                )
    return IdentityMeasures(
        cameras=cams,
        duration_s=round(duration, 3),
        local_tracks=local,
        identities=identities,
        people=people,
        identities_per_person=None if people is None else round(identities / people, 3),
        local_tracks_per_identity=round(sum(local.values()) / max(identities, 1), 3),
        identity_changes=changes,
        identity_changes_per_min=round(changes / max(duration / 60.0, 1e-9), 3)
        if duration
        else 0.0,
        pairs=pairs,
    )


def _identity_changes(trace: CameraTrace) -> int:
    """Changes of global id between consecutive rows of one local track that show one
    (a track's first id, shown once its identity is confirmed, is no change)."""
    order = np.lexsort((trace.time_s, trace.track_id))
    order = order[trace.global_id[order] >= 0]
    tid, gid = trace.track_id[order], trace.global_id[order]
    same_track = tid[1:] == tid[:-1]
    return int(np.count_nonzero(same_track & (gid[1:] != gid[:-1])))


def _moments(trace: CameraTrace, times: Float64Array) -> list[tuple[IntArray, Float64Array]]:
    """Rows of ``trace`` at each time in ``times`` (sorted): (row indexes, foot points)."""
    order = np.argsort(trace.time_s, kind="stable")
    t = trace.time_s[order]
    lo = np.searchsorted(t, times - 1e-6, side="left")
    hi = np.searchsorted(t, times + 1e-6, side="right")
    out = []
    for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
        rows = order[a:b]
        box = trace.xyxy[rows]
        foot = np.stack([(box[:, 0] + box[:, 2]) * 0.5, box[:, 3]], axis=1)
        out.append((rows, foot))
    return out


def _velocity(trace: CameraTrace) -> Float64Array:
    """(R, 2) foot velocity of each row from its track's neighbouring rows, px/s."""
    order = np.lexsort((trace.time_s, trace.track_id))
    tid, t = trace.track_id[order], trace.time_s[order]
    box = trace.xyxy[order]
    foot = np.stack([(box[:, 0] + box[:, 2]) * 0.5, box[:, 3]], axis=1)
    vel = np.zeros_like(foot)
    if foot.shape[0] > 2:
        same = (tid[2:] == tid[:-2]) & (t[2:] - t[:-2] < 0.5)
        v = (foot[2:] - foot[:-2]) / np.maximum(t[2:] - t[:-2], 1e-6)[:, None]
        vel[1:-1] = np.where(same[:, None], v, 0.0)
    out = np.empty_like(vel)
    out[order] = vel
    return out


def _pair_measures(
    ta: CameraTrace,
    tb: CameraTrace,
    *,
    topology: CameraTopology,
    i: int,
    j: int,
    overlap: OverlapConfig | None,
) -> PairMeasures:
    times = np.intersect1d(np.round(ta.frame_times_s, 6), np.round(tb.frame_times_s, 6))
    ma, mb = _moments(ta, times), _moments(tb, times)
    possible = shared = 0
    for (ra, _), (rb, _) in zip(ma, mb, strict=True):
        possible += min(ra.shape[0], rb.shape[0])
        shared += np.intersect1d(ta.global_id[ra], tb.global_id[rb]).shape[0]
    geometry, kind = _pair_geometry(
        ta, tb, topology=topology, i=i, j=j, ma=ma, mb=mb, overlap=overlap
    )
    matched = same = None
    if geometry is not None:
        matched = same = 0
        ha = ta.xyxy[:, 3] - ta.xyxy[:, 1]
        hb = tb.xyxy[:, 3] - tb.xyxy[:, 1]
        for (ra, fa), (rb, fb) in zip(ma, mb, strict=True):
            if ra.size == 0 or rb.size == 0:
                continue
            zero_a, zero_b = np.zeros((ra.size, 2)), np.zeros((rb.size, 2))
            d = geometry.distance(
                Moment(0.0, ra, fa, np.maximum(ha[ra], 1.0), zero_a),
                Moment(0.0, rb, fb, np.maximum(hb[rb], 1.0), zero_b),
            )
            matches, _, _ = linear_assignment(np.where(d <= 1.0, d, 1e6), 1.0)
            matched += matches.shape[0]
            ga = ta.global_id[ra[matches[:, 0]]]
            gb = tb.global_id[rb[matches[:, 1]]]
            same += int(np.count_nonzero((ga == gb) & (ga >= 0)))
    return PairMeasures(
        cameras=(ta.camera_id, tb.camera_id),
        moments=int(times.shape[0]),
        matched_by_position=matched,
        shared_by_position=same,
        share_by_position=None if not matched else round(same / matched, 4),  # type: ignore[operator]
        possible_by_count=possible,
        shared_by_count=shared,
        share_by_count=round(shared / possible, 4) if possible else math.nan,
        geometry=kind,
    )


def _pair_geometry(
    ta: CameraTrace,
    tb: CameraTrace,
    *,
    topology: CameraTopology,
    i: int,
    j: int,
    ma: list[tuple[IntArray, Float64Array]],
    mb: list[tuple[IntArray, Float64Array]],
    overlap: OverlapConfig | None,
) -> tuple[PairGeometry | None, str]:
    ha, hb = topology.specs[i].homography, topology.specs[j].homography
    if ha is not None and hb is not None:
        return GroundPlaneGeometry(ha, hb, float(topology.max_distance[i, j])), "given"
    rows = sum(min(ra.size, rb.size) for (ra, _), (rb, _) in zip(ma, mb, strict=True))
    cfg = overlap or OverlapConfig(max_samples=max(20_000, 4 * rows), min_samples=150)
    calibrator = CoOccurrenceCalibrator(cfg)
    va, vb = _velocity(ta), _velocity(tb)
    ha_px = np.maximum(ta.xyxy[:, 3] - ta.xyxy[:, 1], 1.0)
    hb_px = np.maximum(tb.xyxy[:, 3] - tb.xyxy[:, 1], 1.0)
    for (ra, fa), (rb, fb) in zip(ma, mb, strict=True):
        if ra.size and rb.size:
            calibrator.add(
                Moment(0.0, ta.track_id[ra], fa, ha_px[ra], va[ra]),
                Moment(0.0, tb.track_id[rb], fb, hb_px[rb], vb[rb]),
            )
    if len(calibrator) < cfg.min_samples:
        return None, "none"
    fitted = calibrator.fit()
    return (fitted, "fitted") if fitted is not None else (None, "none")
