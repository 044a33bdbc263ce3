"""Multi-camera identity: global ids for people across cameras' local tracks.

A :class:`CameraTopology` says which cameras connect, how long a walk between them takes,
which views overlap, and per camera an optional ground-plane homography and static mask;
an :class:`EmbeddingGallery` holds each local track's appearance (hnswlib HNSW index,
needs the ``identity`` extra); :class:`IdentityService` re-links each camera's dropped
tracks, matches simultaneous sightings on overlapping cameras by position, links local
tracks into global identities by appearance, and answers where a person was seen.

Example::

    from tapetum.identity import NO_GLOBAL_ID, IdentityService, load_topology

    service = IdentityService(load_topology("site.yaml"))
    for camera_id, frame, tracked in streams:          # tracked: Detections + embeddings
        global_ids = service.observe(camera_id, frame.timestamp_s, tracked)
    shown = global_ids[global_ids != NO_GLOBAL_ID]     # -1: not confirmed yet
    service.where_seen(int(shown[0]))
"""

from __future__ import annotations

from tapetum.identity.appearance import AppearanceConfig
from tapetum.identity.gallery import EmbeddingGallery, GalleryConfig, QueryResult, TrackKey
from tapetum.identity.overlap import OverlapConfig
from tapetum.identity.service import (
    NO_GLOBAL_ID,
    IdentityConfig,
    IdentityEvent,
    IdentityService,
    Sighting,
)
from tapetum.identity.topology import (
    CameraLink,
    CameraSpec,
    CameraTopology,
    TransitWindow,
    load_topology,
    topology_from_dict,
)

__all__ = [
    "NO_GLOBAL_ID",
    "AppearanceConfig",
    "CameraLink",
    "CameraSpec",
    "CameraTopology",
    "EmbeddingGallery",
    "GalleryConfig",
    "IdentityConfig",
    "IdentityEvent",
    "IdentityService",
    "OverlapConfig",
    "QueryResult",
    "Sighting",
    "TrackKey",
    "TransitWindow",
    "load_topology",
    "topology_from_dict",
]
