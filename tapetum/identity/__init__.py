"""Multi-camera identity: global ids for people across cameras' local tracks.

A :class:`CameraTopology` says which cameras connect and how long a walk between them
takes; an :class:`EmbeddingGallery` holds each local track's appearance (hnswlib HNSW
index, needs the ``identity`` extra); :class:`IdentityService` links local tracks into
global identities and answers where a person was seen.

Example::

    from tapetum.identity import IdentityService, load_topology

    service = IdentityService(load_topology("site.yaml"))
    for camera_id, frame, tracked in streams:          # tracked: Detections + embeddings
        global_ids = service.observe(camera_id, frame.timestamp_s, tracked)
    service.where_seen(int(global_ids[0]))
"""

from __future__ import annotations

from tapetum.identity.gallery import EmbeddingGallery, GalleryConfig, QueryResult, TrackKey
from tapetum.identity.service import (
    NO_GLOBAL_ID,
    IdentityConfig,
    IdentityEvent,
    IdentityService,
    Sighting,
)
from tapetum.identity.topology import (
    CameraLink,
    CameraTopology,
    TransitWindow,
    load_topology,
    topology_from_dict,
)

__all__ = [
    "NO_GLOBAL_ID",
    "CameraLink",
    "CameraTopology",
    "EmbeddingGallery",
    "GalleryConfig",
    "IdentityConfig",
    "IdentityEvent",
    "IdentityService",
    "QueryResult",
    "Sighting",
    "TrackKey",
    "TransitWindow",
    "load_topology",
    "topology_from_dict",
]
