"""Camera topology: which camera a person can walk to from which, and how long it takes.

A topology is a set of cameras and directed links ``source → target`` with a transit-time
window ``[min_s, max_s]``: a person last seen on ``source`` at time ``t`` can first appear
on ``target`` between ``t + min_s`` and ``t + max_s``. Cameras whose views overlap get a
link with ``min_s = 0`` (the person can be on both at once). Re-entry into the same camera
(leave the view, come back) is a window of its own, or not allowed at all.

A link marked ``overlap`` joins two cameras whose views overlap: the identity service
then also matches people seen on both *at the same moment* by where they stand (see
:mod:`tapetum.identity.overlap`). Each camera may carry a ground-plane homography (its
image → a shared ground plane, so two cameras' foot points can be compared directly), a
static mask (rectangles and polygons over burned-in overlays: crops under it are not used
for appearance) and its frame size (to check the mask against).

Configs come from YAML or JSON and are validated by pydantic at that boundary (an error
names the field, e.g. ``cameras[1].homography``); inside, the topology is a frozen
dataclass holding (C, C) matrices so that a feasibility check over M candidates is one
fancy-indexing expression.

Example:
    >>> topo = CameraTopology.build(
    ...     cameras=["lobby", "hall"],
    ...     links=[CameraLink("lobby", "hall", min_s=2.0, max_s=30.0)],
    ... )
    >>> import numpy as np
    >>> topo.feasible("hall", 20.0, np.array([0, 0]), np.array([10.0, 19.5])).tolist()
    [True, False]
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tapetum._optional import import_optional
from tapetum._types import BoolArray, Float64Array
from tapetum.errors import ConfigError
from tapetum.track.crops import StaticMask


@dataclass(frozen=True, slots=True)
class TransitWindow:
    """Allowed gap in seconds between the last sighting on one camera and the first on the
    next: ``min_s <= gap <= max_s``."""

    min_s: float
    max_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_s) and math.isfinite(self.max_s)):
            raise ConfigError(f"transit window must be finite, got [{self.min_s}, {self.max_s}]")
        if self.min_s < 0 or self.max_s < self.min_s:
            raise ConfigError(
                f"transit window needs 0 <= min_s <= max_s, got [{self.min_s}, {self.max_s}]"
            )


@dataclass(frozen=True, slots=True)
class CameraLink:
    """A person can walk from ``source`` to ``target`` in ``[min_s, max_s]`` seconds.

    ``min_s = 0`` also covers overlapping views: the person may still be visible on
    ``source`` when they appear on ``target``. With ``overlap`` the views share ground, and
    people seen on both at the same moment are matched by position as well as appearance.

    Attributes:
        overlap: the two views overlap (needs ``min_s == 0``).
        max_distance: with ground-plane homographies on both cameras, the largest distance
            on the ground plane (its units, e.g. metres) between two simultaneous sightings
            of one person.
    """

    source: str
    target: str
    min_s: float
    max_s: float
    overlap: bool = False
    max_distance: float = 1.0

    def __post_init__(self) -> None:
        if self.source == self.target:
            raise ConfigError(
                f"link {self.source!r} → itself: set the topology's re-entry window instead"
            )
        TransitWindow(self.min_s, self.max_s)  # validates the numbers
        if self.overlap and self.min_s != 0:
            raise ConfigError(
                f"link {self.source!r} → {self.target!r}: overlapping views need min_s 0 "
                f"(a person is on both at once), got {self.min_s}"
            )
        if not (math.isfinite(self.max_distance) and self.max_distance > 0):
            raise ConfigError(
                f"link {self.source!r} → {self.target!r}: max_distance must be > 0, "
                f"got {self.max_distance}"
            )


def check_homography(value: Any, where: str) -> Float64Array:
    """A 3×3, finite, invertible matrix as float64, normalised so ``H[2, 2]`` is 1 when it
    can be.

    Raises:
        ConfigError: naming ``where`` (e.g. ``cameras[1].homography``).
    """
    try:
        h = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: must be a 3x3 matrix of numbers") from None
    if h.shape != (3, 3):
        raise ConfigError(
            f"{where}: must be a 3x3 matrix (3 rows of 3 numbers), got shape {list(h.shape)}"
        )
    if not np.all(np.isfinite(h)):
        raise ConfigError(f"{where}: has a non-finite entry")
    # Invertible in floating point: the smallest singular value must not vanish against
    # the largest (a determinant test depends on the matrix's scale).
    sv = np.linalg.svd(h, compute_uv=False)
    if sv[0] == 0 or sv[-1] / sv[0] < 1e-12:
        raise ConfigError(
            f"{where}: not invertible (determinant {np.linalg.det(h):.3g}); it must map the "
            "image plane onto the ground plane one-to-one"
        )
    if abs(h[2, 2]) > 1e-12:
        h = h / h[2, 2]
    h.setflags(write=False)
    return h


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """One camera of a topology.

    Attributes:
        id: the camera id (a stream's ``source_id``).
        homography: optional (3, 3) float64 mapping image pixels (a person's foot point,
            bottom centre of the box) to the shared ground plane.
        mask: static overlay regions; crops under them are not used for appearance.
        frame_size: ``(width, height)`` in pixels, when known (the mask is checked
            against it at load time; otherwise on the first frame).
    """

    id: str
    homography: Float64Array | None = field(default=None, compare=False)
    mask: StaticMask | None = None
    frame_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.homography is not None:
            object.__setattr__(
                self,
                "homography",
                check_homography(self.homography, f"camera {self.id!r} homography"),
            )
        if self.frame_size is not None:
            w, h = self.frame_size
            if w < 1 or h < 1:
                raise ConfigError(f"camera {self.id!r} frame_size must be positive, got {[w, h]}")
            if self.mask is not None:
                self.mask.check_inside((h, w))

    def to_ground(self, xy: npt.ArrayLike) -> Float64Array:
        """(N, 2) ground-plane points of (N, 2) image points (needs a homography)."""
        if self.homography is None:
            raise ConfigError(f"camera {self.id!r} has no homography")
        return apply_homography(self.homography, xy)


def apply_homography(h: Float64Array, xy: npt.ArrayLike) -> Float64Array:
    """(N, 2) points mapped by the (3, 3) homography ``h``; points sent to infinity (on the
    horizon line) come back as NaN. The sign of the homogeneous coordinate is not tested:
    a homography is defined up to scale, sign included."""
    p = np.asarray(xy, np.float64).reshape(-1, 2)
    q = p @ h[:, :2].T + h[:, 2]
    w = q[:, 2:3]
    ok = np.abs(w) > 1e-12
    out: Float64Array = np.where(ok, q[:, :2] / np.where(ok, w, 1.0), np.nan)
    return out


@dataclass(frozen=True, slots=True)
class CameraTopology:
    """Cameras, links between them and the same-camera re-entry window.

    Build with :meth:`build` (or :func:`load_topology` from a file); the matrices are
    derived from the links.

    Attributes:
        cameras: camera ids; a camera's index in this tuple is its integer id in arrays.
        min_gap_s: (C, C) float64, ``[source, target]`` shortest transit; ``+inf`` where
            there is no link (the diagonal holds the re-entry window).
        max_gap_s: (C, C) float64, longest transit; ``-inf`` where there is no link.
        specs: per camera, its homography, mask and frame size.
        overlap: (C, C) bool, symmetric: the two views overlap (a link either way says so).
        max_distance: (C, C) float64, ground-plane gate of overlapping pairs.
    """

    cameras: tuple[str, ...]
    links: tuple[CameraLink, ...]
    reentry: TransitWindow | None
    min_gap_s: Float64Array = field(repr=False, compare=False)
    max_gap_s: Float64Array = field(repr=False, compare=False)
    _index: Mapping[str, int] = field(repr=False, compare=False)
    specs: tuple[CameraSpec, ...] = field(default=(), repr=False, compare=False)
    overlap: BoolArray = field(
        default_factory=lambda: np.zeros((0, 0), np.bool_), repr=False, compare=False
    )
    max_distance: Float64Array = field(
        default_factory=lambda: np.zeros((0, 0)), repr=False, compare=False
    )

    @classmethod
    def build(
        cls,
        cameras: Sequence[str | CameraSpec],
        links: Iterable[CameraLink] = (),
        reentry: TransitWindow | None = None,
        *,
        bidirectional: bool = False,
    ) -> CameraTopology:
        """Validate and index a topology.

        Args:
            cameras: unique camera ids, or :class:`CameraSpec` for cameras with a
                homography, mask or frame size.
            links: directed links; with ``bidirectional`` each also adds its reverse.
            reentry: window for a person leaving a camera's view and coming back to the same
                camera; None = a new local track is never matched to the same camera.

        Raises:
            ConfigError: duplicate cameras, a link to an unknown camera, or two links for
                the same camera pair.
        """
        specs = tuple(c if isinstance(c, CameraSpec) else CameraSpec(c) for c in cameras)
        cams = tuple(c.id for c in specs)
        if len(set(cams)) != len(cams):
            raise ConfigError(f"camera ids must be unique, got {list(cams)}")
        index = {c: i for i, c in enumerate(cams)}
        all_links = list(links)
        if bidirectional:
            all_links += [
                CameraLink(k.target, k.source, k.min_s, k.max_s, k.overlap, k.max_distance)
                for k in all_links
            ]
        n = len(cams)
        lo = np.full((n, n), np.inf)
        hi = np.full((n, n), -np.inf)
        overlap = np.zeros((n, n), np.bool_)
        max_distance = np.full((n, n), np.inf)
        seen: set[tuple[str, str]] = set()
        for link in all_links:
            for cam in (link.source, link.target):
                if cam not in index:
                    raise ConfigError(
                        f"link {link.source!r} → {link.target!r} names unknown camera "
                        f"{cam!r}; cameras: {list(cams)}"
                    )
            pair = (link.source, link.target)
            if pair in seen:
                raise ConfigError(f"more than one link {link.source!r} → {link.target!r}")
            seen.add(pair)
            i, j = index[link.source], index[link.target]
            lo[i, j] = link.min_s
            hi[i, j] = link.max_s
            if link.overlap:
                overlap[i, j] = overlap[j, i] = True
                max_distance[i, j] = max_distance[j, i] = min(link.max_distance, max_distance[i, j])
        if reentry is not None:
            np.fill_diagonal(lo, reentry.min_s)
            np.fill_diagonal(hi, reentry.max_s)
        for arr in (lo, hi, overlap, max_distance):
            arr.setflags(write=False)
        return cls(
            cams, tuple(all_links), reentry, lo, hi, dict(index), specs, overlap, max_distance
        )

    def overlapping_pairs(self) -> list[tuple[int, int]]:
        """``(i, j)`` with ``i < j`` for every pair of cameras whose views overlap."""
        i, j = np.nonzero(np.triu(self.overlap, 1))
        return list(zip(i.tolist(), j.tolist(), strict=True))

    def spec(self, camera: str | int) -> CameraSpec:
        """The :class:`CameraSpec` of a camera id or index."""
        return self.specs[camera if isinstance(camera, int) else self.camera_index(camera)]

    def camera_index(self, camera_id: str) -> int:
        """Integer index of ``camera_id``.

        Raises:
            ConfigError: the camera is not in the topology.
        """
        try:
            return self._index[camera_id]
        except KeyError:
            raise ConfigError(
                f"camera {camera_id!r} is not in the topology; cameras: {list(self.cameras)}"
            ) from None

    @property
    def longest_transit_s(self) -> float:
        """Longest gap any link or re-entry allows (0 when there is none): a track last seen
        longer ago than this can never be matched again."""
        finite = self.max_gap_s[np.isfinite(self.max_gap_s)]
        return float(finite.max()) if finite.size else 0.0

    def pair_feasible(
        self, source: npt.ArrayLike, target: npt.ArrayLike, gap_s: npt.ArrayLike
    ) -> BoolArray:
        """Elementwise: can a person last seen on camera ``source`` be first seen on camera
        ``target`` ``gap_s`` seconds later?

        Args:
            source, target: (M,) camera indexes.
            gap_s: (M,) seconds from the last sighting on ``source`` to the first on
                ``target``; negative values (still visible on ``source``) count as 0.
        """
        src = np.asarray(source, np.int64)
        dst = np.asarray(target, np.int64)
        gap = np.maximum(np.asarray(gap_s, np.float64), 0.0)
        ok: BoolArray = (gap >= self.min_gap_s[src, dst]) & (gap <= self.max_gap_s[src, dst])
        return ok

    def feasible(
        self,
        camera_id: str,
        time_s: float,
        candidate_camera: npt.ArrayLike,
        candidate_last_seen_s: npt.ArrayLike,
    ) -> BoolArray:
        """Which candidates could be the person first seen on ``camera_id`` at ``time_s``.

        Args:
            camera_id: camera of the new observation.
            time_s: time of the new observation.
            candidate_camera: (M,) camera indexes of earlier sightings.
            candidate_last_seen_s: (M,) last time each candidate was seen.

        Returns:
            (M,) bool.
        """
        target = self.camera_index(camera_id)
        last = np.asarray(candidate_last_seen_s, np.float64)
        return self.pair_feasible(candidate_camera, np.full(last.shape, target), time_s - last)


def topology_from_dict(config: Mapping[str, Any]) -> CameraTopology:
    """Build a topology from a parsed config.

    Layout::

        cameras:                                # ids, or mappings for the options below
          - lobby
          - id: hall
            frame_size: [360, 288]              # width, height: the mask is checked now
            mask:                               # crops under these are not used
              - [140, 238, 360, 288]            # a rectangle x1, y1, x2, y2 (pixels)
              - [[0, 0], [40, 0], [0, 30]]      # a polygon
            homography: [[...], [...], [...]]  # image foot point -> ground plane
          - exit
        reentry: {min_s: 0.0, max_s: 5.0}     # optional; omit or null: no re-entry match
        links:
          - {source: lobby, target: hall, min_s: 2, max_s: 30, bidirectional: true}
          - {source: hall, target: exit, min_s: 0, max_s: 5, bidirectional: true,
             overlap: true, max_distance: 1.0}  # overlapping views

    Raises:
        ConfigError: the config does not validate; the message names the field
            (``links[0].target``, ``cameras[1].homography``, ``cameras[2].mask[0]``).
    """
    from pydantic import BaseModel, ConfigDict, ValidationError

    class _Window(BaseModel):
        model_config = ConfigDict(extra="forbid")
        min_s: float
        max_s: float

    class _Link(_Window):
        source: str
        target: str
        bidirectional: bool = False
        overlap: bool = False
        max_distance: float = 1.0

    class _Camera(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: str
        homography: list[list[float]] | None = None
        mask: list[tuple[float, float, float, float] | list[tuple[float, float]]] = []
        frame_size: tuple[int, int] | None = None

    class _Topology(BaseModel):
        model_config = ConfigDict(extra="forbid")
        cameras: list[Any]
        links: list[_Link] = []
        reentry: _Window | None = None

    def validate(model: type[BaseModel], data: Any, where: str) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid camera topology: {_describe(exc, where)}") from None

    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"invalid camera topology: {where}: {message}")

    spec = validate(_Topology, config, "")
    cameras: list[CameraSpec] = []
    for i, item in enumerate(spec.cameras):
        where = f"cameras[{i}]"
        if isinstance(item, str):
            cameras.append(CameraSpec(item))
            continue
        if not isinstance(item, Mapping):
            raise fail(where, f"a camera id or a mapping with an id, got {item!r}")
        cam = validate(_Camera, item, where)
        try:
            homography = (
                None
                if cam.homography is None
                else check_homography(cam.homography, f"{where}.homography")
            )
            rects = tuple(m for m in cam.mask if isinstance(m, tuple))
            polygons = tuple(tuple(m) for m in cam.mask if not isinstance(m, tuple))
            # keep the configured order for error messages: rectangles are numbered first
            mask = StaticMask(rects, polygons, field_name=f"{where}.mask") if cam.mask else None
            cameras.append(CameraSpec(cam.id, homography, mask, cam.frame_size))
        except ConfigError as exc:
            text = str(exc)
            raise ConfigError(
                "invalid camera topology: "
                + (text if text.startswith(where) else f"{where}: {text}")
            ) from None
    ids = [c.id for c in cameras]
    for i, cam_id in enumerate(ids):
        if cam_id in ids[:i]:
            raise fail(f"cameras[{i}]", f"camera id {cam_id!r} appears twice")
    links: list[CameraLink] = []
    for k, item in enumerate(spec.links):
        for name in ("source", "target"):
            cam_id = getattr(item, name)
            if cam_id not in ids:
                raise fail(f"links[{k}].{name}", f"unknown camera {cam_id!r}; cameras: {ids}")
        try:
            link = CameraLink(
                item.source, item.target, item.min_s, item.max_s, item.overlap, item.max_distance
            )
        except ConfigError as exc:
            raise fail(f"links[{k}]", str(exc)) from None
        links.append(link)
        if item.bidirectional:
            links.append(
                CameraLink(
                    item.target,
                    item.source,
                    item.min_s,
                    item.max_s,
                    item.overlap,
                    item.max_distance,
                )
            )
    try:
        reentry = (
            None if spec.reentry is None else TransitWindow(spec.reentry.min_s, spec.reentry.max_s)
        )
    except ConfigError as exc:
        raise fail("reentry", str(exc)) from None
    try:
        return CameraTopology.build(cameras, links, reentry)
    except ConfigError as exc:
        raise ConfigError(f"invalid camera topology: {exc}") from None


def _describe(exc: Any, prefix: str) -> str:
    """Pydantic's errors as ``field.path: message`` lines, paths written ``a[0].b``."""
    lines = []
    for err in exc.errors():
        path = prefix
        for part in err["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part in ("tuple[float, float, float, float]", "list[tuple[float, float]]"):
                continue  # the branch of the mask's rectangle-or-polygon union
            else:
                path += f".{part}" if path else str(part)
        lines.append(f"{path or 'topology'}: {err['msg']}")
    return "; ".join(dict.fromkeys(lines))


def load_topology(path: str | Path) -> CameraTopology:
    """Read a topology from a ``.yaml``/``.yml`` or ``.json`` file (see
    :func:`topology_from_dict` for the layout).

    Raises:
        ConfigError: the file is missing, unparseable, or does not validate.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read camera topology {file}: {exc.strerror}") from exc
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            yaml = import_optional("yaml", "identity", "reading a YAML topology")

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise ConfigError(f"cannot parse camera topology {file}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"camera topology {file} must be a mapping with a 'cameras' list")
    return topology_from_dict(data)
