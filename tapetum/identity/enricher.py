"""Pipeline stage that gives each camera's local tracks their global identities."""

from __future__ import annotations

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.identity.service import IdentityService
from tapetum.track.reid import ReidEmbedder


class IdentityEnricher:
    """Per-stream stage: ``data["global_id"]`` from a shared :class:`IdentityService`.

    The stream's ``source_id`` is its camera id in the topology. Detections that arrive
    without embeddings (any tracker but BoT-SORT with ReID) are embedded here first; BoT-SORT
    with ReID already carries them. The service's lock serialises the streams' calls.

    Example:
        >>> service = IdentityService(load_topology("site.yaml"))  # doctest: +SKIP
        >>> pipe = Pipeline(sources, detector, enrichers=[  # doctest: +SKIP
        ...     lambda src: IdentityEnricher(service, src.source_id, embedder)])
    """

    def __init__(self, service: IdentityService, camera_id: str, embedder: ReidEmbedder) -> None:
        service.topology.camera_index(camera_id)  # an unknown camera fails at build time
        self.service = service
        self.camera_id = camera_id
        self.embedder = embedder

    def __call__(self, frame: Frame, detections: Detections) -> Detections:
        if detections.embeddings is None:
            detections = self.embedder(detections, frame.image)
        detections.data["global_id"] = self.service.observe(
            self.camera_id, frame.timestamp_s, detections
        )
        return detections
