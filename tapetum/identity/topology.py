"""Camera topology: which camera a person can walk to from which, and how long it takes.

A topology is a set of cameras and directed links ``source → target`` with a transit-time
window ``[min_s, max_s]``: a person last seen on ``source`` at time ``t`` can first appear
on ``target`` between ``t + min_s`` and ``t + max_s``. Cameras whose views overlap get a
link with ``min_s = 0`` (the person can be on both at once). Re-entry into the same camera
(leave the view, come back) is a window of its own, or not allowed at all.

Configs come from YAML or JSON and are validated by pydantic at that boundary; inside, the
topology is a frozen dataclass holding two (C, C) matrices so that a feasibility check over
M candidates is one fancy-indexing expression.

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
    ``source`` when they appear on ``target``.
    """

    source: str
    target: str
    min_s: float
    max_s: float

    def __post_init__(self) -> None:
        if self.source == self.target:
            raise ConfigError(
                f"link {self.source!r} → itself: set the topology's re-entry window instead"
            )
        TransitWindow(self.min_s, self.max_s)  # validates the numbers


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
    """

    cameras: tuple[str, ...]
    links: tuple[CameraLink, ...]
    reentry: TransitWindow | None
    min_gap_s: Float64Array = field(repr=False, compare=False)
    max_gap_s: Float64Array = field(repr=False, compare=False)
    _index: Mapping[str, int] = field(repr=False, compare=False)

    @classmethod
    def build(
        cls,
        cameras: Sequence[str],
        links: Iterable[CameraLink] = (),
        reentry: TransitWindow | None = None,
        *,
        bidirectional: bool = False,
    ) -> CameraTopology:
        """Validate and index a topology.

        Args:
            cameras: unique camera ids.
            links: directed links; with ``bidirectional`` each also adds its reverse.
            reentry: window for a person leaving a camera's view and coming back to the same
                camera; None = a new local track is never matched to the same camera.

        Raises:
            ConfigError: duplicate cameras, a link to an unknown camera, or two links for
                the same camera pair.
        """
        cams = tuple(cameras)
        if len(set(cams)) != len(cams):
            raise ConfigError(f"camera ids must be unique, got {list(cams)}")
        index = {c: i for i, c in enumerate(cams)}
        all_links = list(links)
        if bidirectional:
            all_links += [CameraLink(k.target, k.source, k.min_s, k.max_s) for k in all_links]
        n = len(cams)
        lo = np.full((n, n), np.inf)
        hi = np.full((n, n), -np.inf)
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
            lo[index[link.source], index[link.target]] = link.min_s
            hi[index[link.source], index[link.target]] = link.max_s
        if reentry is not None:
            np.fill_diagonal(lo, reentry.min_s)
            np.fill_diagonal(hi, reentry.max_s)
        lo.setflags(write=False)
        hi.setflags(write=False)
        return cls(cams, tuple(all_links), reentry, lo, hi, dict(index))

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

        cameras: [lobby, hall, exit]
        reentry: {min_s: 0.0, max_s: 5.0}     # optional; omit or null: no re-entry match
        links:
          - {source: lobby, target: hall, min_s: 2, max_s: 30, bidirectional: true}
          - {source: lobby, target: exit, min_s: 0, max_s: 60}  # overlapping views: min 0

    Raises:
        ConfigError: the config does not validate (the message names the field).
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

    class _Topology(BaseModel):
        model_config = ConfigDict(extra="forbid")
        cameras: list[str]
        links: list[_Link] = []
        reentry: _Window | None = None

    try:
        spec = _Topology.model_validate(config)
    except ValidationError as exc:
        raise ConfigError(f"invalid camera topology: {exc}") from exc
    links: list[CameraLink] = []
    for item in spec.links:
        links.append(CameraLink(item.source, item.target, item.min_s, item.max_s))
        if item.bidirectional:
            links.append(CameraLink(item.target, item.source, item.min_s, item.max_s))
    reentry = (
        None if spec.reentry is None else TransitWindow(spec.reentry.min_s, spec.reentry.max_s)
    )
    return CameraTopology.build(spec.cameras, links, reentry)


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
