"""Pipeline stage that gives each camera's local tracks their global identities, and the
summary of a run's identities written when it ends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.identity.appearance import AppearanceConfig, colour_signatures, join_appearance
from tapetum.identity.service import IdentityService
from tapetum.track.crops import usable_crops
from tapetum.track.reid import Embedder


class IdentityEnricher:
    """Per-stream stage: ``data["global_id"]`` from a shared :class:`IdentityService`.

    The stream's ``source_id`` is its camera id in the topology. Crops unfit for
    appearance (occluded, cut by the border, under the camera's mask, too small) are left
    out. Detections that arrive without embeddings (any tracker but BoT-SORT with ReID)
    have their usable crops embedded here; BoT-SORT with ReID already carries them. With
    ``appearance.colour_weight`` the service sees ReID joined with a colour signature
    (:mod:`tapetum.identity.appearance`): build the service with
    ``embedding_dim=appearance.dim(embedder.embedding_dim)``. The tracker's own
    ``embeddings`` are left as they are. The service's lock serialises the streams' calls.

    Example:
        >>> appearance = AppearanceConfig()  # doctest: +SKIP
        >>> service = IdentityService(load_topology("site.yaml"),
        ...     embedding_dim=appearance.dim(embedder.embedding_dim))  # doctest: +SKIP
        >>> pipe = Pipeline(sources, detector, enrichers=[
        ...     lambda src: IdentityEnricher(service, src.source_id, embedder, appearance)],
        ... )  # doctest: +SKIP
    """

    def __init__(
        self,
        service: IdentityService,
        camera_id: str,
        embedder: Embedder,
        appearance: AppearanceConfig | None = None,
    ) -> None:
        service.topology.camera_index(camera_id)  # an unknown camera fails at build time
        self.service = service
        self.camera_id = camera_id
        self.embedder = embedder
        self.appearance = appearance if appearance is not None else AppearanceConfig(0.0)
        self._mask = service.topology.spec(camera_id).mask

    def state_sizes(self) -> dict[str, int]:
        """Local tracks of every camera the shared service keeps (``history_s``)."""
        return {"identity_tracks": self.service.tracks_kept}

    def __call__(self, frame: Frame, detections: Detections) -> Detections:
        h, w = frame.image.shape[:2]
        hw = (int(h), int(w))
        usable = usable_crops(detections.xyxy, hw, self.service.config.crops, self._mask)
        reid = detections.embeddings
        if reid is None:
            reid = np.zeros((len(detections), self.embedder.embedding_dim), np.float32)
            if np.any(usable):
                reid[usable] = self.embedder.embed(frame.image, detections.xyxy[usable])
        reid = np.where(usable[:, None], reid, 0.0).astype(np.float32)
        colour = None
        if self.appearance.colour_weight > 0:
            colour = np.zeros((len(detections), self.appearance.dim(0)), np.float32)
            if np.any(usable):
                colour[usable] = colour_signatures(frame.image, detections.xyxy[usable])
        seen = Detections(
            detections.xyxy,
            detections.confidence,
            detections.class_id,
            detections.tracker_id,
            join_appearance(reid, colour, self.appearance) if len(detections) else None,
        )
        detections.data["global_id"] = self.service.observe(
            self.camera_id, frame.timestamp_s, seen, hw
        )
        return detections


class IdentitySummarySink:
    """A sink that writes the run's identity summary when the pipeline closes it:
    which global id each issued id ended up as (merges resolved), the merges and splits,
    each overlapping pair's calibration and the re-links made, as JSON at ``path``.
    ``tapetum eval identity`` reads it to measure identities after the late merges too.
    """

    def __init__(self, service: IdentityService, path: str | Path) -> None:
        self.service = service
        self.path = Path(path)
        # Global ids are issued in sequence from 1: a flag per id seen, one byte where a
        # set of ints took ~90 (a 24/7 run at one new identity a second: 86 KB a day).
        self._seen = np.zeros(1024, np.bool_)

    def write(self, result: FrameResult) -> None:
        gid = result.detections.data.get("global_id")
        if gid is None:
            return
        ids = np.asarray(gid, np.int64)
        ids = ids[ids > 0]
        if ids.size:
            top = int(ids.max())
            if top >= self._seen.size:
                grown = np.zeros(max(2 * self._seen.size, top + 1), np.bool_)
                grown[: self._seen.size] = self._seen
                self._seen = grown
            self._seen[ids] = True

    @property
    def issued(self) -> list[int]:
        """Global ids seen in the results so far, ascending."""
        return np.flatnonzero(self._seen).tolist()

    def close(self) -> None:
        svc = self.service
        issued = self.issued
        resolved = {g: svc.resolve(g) for g in issued}
        summary = {
            "resolved": {str(g): r for g, r in resolved.items()},
            "identities_issued": len(issued),
            "identities_resolved": len(set(resolved.values())),
            "relinks": svc.relinks(),
            "events": [
                {
                    "kind": e.kind,
                    "timestamp_s": round(e.timestamp_s, 3),
                    "global_id": e.global_id,
                    "absorbed_id": e.absorbed_id,
                    "track": list(e.track) if e.track is not None else None,
                }
                for e in svc.events
            ],
            "overlap": [
                {"cameras": list(pair), **stats} for pair, stats in svc.calibration().items()
            ],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(summary, indent=2) + "\n")
