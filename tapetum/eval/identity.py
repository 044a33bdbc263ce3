"""Cross-camera identity on real footage: two overlapping crops of the crowd video act as
two cameras, each with its own tracker and ReID embeddings; ground truth comes from the
same detector + tracker on the full frames.

Set-up (kept honest, made fast):

* camera A sees x ∈ [0, 760), camera B x ∈ [520, 1280) of each 1280x720 frame; camera B
  has its own exposure (gamma 0.7, gain 0.9, +10) and a slight blur, so a person in the
  overlap does not give the same pixels, hence the same embedding, on both cameras;
* YOLOX-nano runs once per frame on the full frame; each camera keeps the detections with
  at least half their box inside its view, clipped to it, in its own coordinates, and
  tracks them with its own ByteTrack (the cameras never share track state);
* OSNet embeds a camera's crops from that camera's image: a new track at once, every
  track every third frame (the rows in between have zero embeddings, which only move the
  track's timestamps);
* ground truth: the full-frame tracker's id whose box, clipped and shifted into the
  camera's view, overlaps the crop track's box at IoU > 0.5 in at least half its frames.

Every camera-A / camera-B pair of local tracks is a link the service should make (same
ground-truth person) or not; precision and recall are over those pairs, with each local
track's final global id (after merges and splits). Measured on 200 frames (8 s at 25 fps):
43 local tracks, 10 true cross-camera links; at ``match_threshold`` 0.92 precision 1.00,
recall 0.80 (0.90: precision 0.64, recall 0.70; 0.95: precision 1.00, recall 0.30 - on this
grey top-down footage OSNet scores different people ≈ 0.88).

Recording (detector, tracker and ReID, the slow part) is done once; the recording can then
be replayed through any number of topologies and :class:`IdentityConfig` settings.

The detector, ReID, video and OpenCV imports happen inside
:func:`record_two_camera_crops`; nothing imports this module when ``tapetum`` or
``tapetum.eval`` is imported.

Example:
    >>> from tapetum.eval.identity import (
    ...     default_two_camera_topology, link_scores, record_two_camera_crops, replay)
    >>> from tapetum.identity import IdentityConfig
    >>> rec = record_two_camera_crops(
    ...     "crowd_720p.avi", "yolox_nano.onnx", "osnet_x0_25_msmt17.onnx")  # doctest: +SKIP
    >>> service = replay(rec, default_two_camera_topology(),
    ...                  IdentityConfig(match_threshold=0.92))  # doctest: +SKIP
    >>> link_scores(rec, service).precision  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, cast

import numpy as np
import numpy.typing as npt

from tapetum.core.boxes import box_iou
from tapetum.core.detections import Detections
from tapetum.identity import CameraLink, CameraTopology, IdentityConfig, IdentityService

__all__ = [
    "EMBED_EVERY",
    "FRAMES",
    "VIEWS",
    "LinkScores",
    "TrackKey",
    "TwoCameraRecording",
    "default_two_camera_topology",
    "link_scores",
    "record_two_camera_crops",
    "replay",
]

FRAMES: Final = 200
"""Frames recorded by default (8 s of the 25 fps crowd video)."""
VIEWS: Final[Mapping[str, tuple[int, int]]] = {"A": (0, 760), "B": (520, 1280)}
"""Each camera's horizontal slice ``[x0, x1)`` of the full frame."""
EMBED_EVERY: Final = 3
"""Every track is re-embedded on frames whose index is a multiple of this."""

_GAMMA_LUT = np.clip(255 * (np.arange(256) / 255) ** 0.7 * 0.9 + 10, 0, 255).astype(np.uint8)

TrackKey = tuple[str, int]
"""(camera id, local track id)."""


@dataclass
class TwoCameraRecording:
    """Both cameras' tracked detections over a clip, with pseudo ground truth.

    Attributes:
        timestamps_s: timestamp of each recorded frame.
        cameras: per camera, the tracked detections (with embeddings) of each frame.
        truth: local track → full-frame track id, for local tracks whose ground truth is
            unambiguous (see the module docstring).
        lengths: local track → number of frames it appears in.
    """

    timestamps_s: list[float] = field(default_factory=list)
    cameras: dict[str, list[Detections]] = field(default_factory=dict)
    truth: dict[TrackKey, int] = field(default_factory=dict)
    lengths: Counter[TrackKey] = field(default_factory=Counter)

    @property
    def num_tracks(self) -> int:
        """Local tracks over both cameras."""
        return len(self.lengths)


@dataclass(frozen=True)
class LinkScores:
    """Cross-camera link scores over all camera-A / camera-B pairs of local tracks that
    have ground truth.

    Attributes:
        precision: true links / links made (0 when none was made).
        recall: true links / links that should have been made (0 when none should).
        true_links: pairs of the same person that share a global id.
        false_links: pairs of different people that share a global id.
        missed_links: pairs of the same person with different global ids.
    """

    precision: float
    recall: float
    true_links: int
    false_links: int
    missed_links: int

    @property
    def links_in_truth(self) -> int:
        """Pairs that should be linked (``true_links + missed_links``)."""
        return self.true_links + self.missed_links


def _camera_view(image: npt.NDArray[np.uint8], camera: str) -> npt.NDArray[np.uint8]:
    import cv2

    x0, x1 = VIEWS[camera]
    view = image[:, x0:x1]
    if camera == "B":
        return cast("npt.NDArray[np.uint8]", cv2.GaussianBlur(cv2.LUT(view, _GAMMA_LUT), (3, 3), 0))
    return view


def _in_view(detections: Detections, camera: str) -> Detections:
    """Detections with at least half their box inside the camera's view, clipped to it and
    shifted into its coordinates."""
    x0, x1 = VIEWS[camera]
    xyxy = detections.xyxy.copy()
    xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], x0, x1)
    inside = Detections(xyxy, detections.confidence, detections.class_id).area
    keep = inside >= 0.5 * np.maximum(detections.area, 1e-6)
    shift = np.array([x0, 0, x0, 0], np.float32)
    return Detections(xyxy[keep] - shift, detections.confidence[keep], detections.class_id[keep])


def record_two_camera_crops(
    video_path: str | os.PathLike[str],
    detector_model_path: str | os.PathLike[str],
    reid_model_path: str | os.PathLike[str],
    frames: int = FRAMES,
    *,
    threads: int = 2,
) -> TwoCameraRecording:
    """Detect, track and embed the first ``frames`` frames of a 1280x720 video as two
    overlapping cameras (:data:`VIEWS`), with full-frame pseudo ground truth.

    Args:
        video_path: the video (the crowd clip the figures in the module docstring are for).
        detector_model_path: YOLOX ONNX model (people, class 0, confidence ≥ 0.1).
        reid_model_path: OSNet ONNX ReID model.
        frames: number of frames to record from the start.
        threads: intra-op threads of the detector and of the ReID model each.

    Returns:
        The recording, to :func:`replay` and score with :func:`link_scores`.

    Raises:
        ModelLoadError: a model can't be loaded.
        SourceError: the video can't be opened.
    """
    from tapetum.detect import DetectorConfig, RuntimeOptions, YoloxDetector
    from tapetum.sources import VideoSource
    from tapetum.track import make_tracker
    from tapetum.track.reid import ReidEmbedder

    detector = YoloxDetector(
        Path(detector_model_path),
        DetectorConfig(conf_threshold=0.1, class_ids=frozenset({0})),
        RuntimeOptions(intra_op_threads=threads, workers=1),
    )
    embedder = ReidEmbedder(Path(reid_model_path), threads=threads)
    full_tracker = make_tracker("bytetrack", 25)
    trackers = {c: make_tracker("bytetrack", 25) for c in VIEWS}
    known: dict[str, set[int]] = {c: set() for c in VIEWS}
    rec = TwoCameraRecording(cameras={c: [] for c in VIEWS})
    votes: dict[TrackKey, Counter[int]] = defaultdict(Counter)
    for frame in VideoSource(video_path).frames(threading.Event()):
        if frame.index >= frames:
            break
        detections = detector([frame.image])[0]
        truth = full_tracker.update(detections)
        rec.timestamps_s.append(frame.timestamp_s)
        for cam, (x0, x1) in VIEWS.items():
            tracked = trackers[cam].update(_in_view(detections, cam))
            ids = tracked.tracker_id
            due = ~np.isin(ids, list(known[cam])) | (frame.index % EMBED_EVERY == 0)
            embeddings = np.zeros((len(tracked), embedder.embedding_dim), np.float32)
            if due.any():
                embeddings[due] = embedder.embed(_camera_view(frame.image, cam), tracked.xyxy[due])
            tracked.embeddings = embeddings
            known[cam].update(ids.tolist())
            rec.cameras[cam].append(tracked)
            # ground truth votes: full-frame track boxes in this camera's coordinates
            gt = truth.xyxy.copy()
            gt[:, [0, 2]] = np.clip(gt[:, [0, 2]], x0, x1) - x0
            iou = box_iou(tracked.xyxy, gt) if len(gt) else np.zeros((len(tracked), 0))
            for i, local in enumerate(ids.tolist()):
                rec.lengths[(cam, local)] += 1
                if iou.shape[1] and iou[i].max() > 0.5:
                    votes[(cam, local)][int(truth.tracker_id[iou[i].argmax()])] += 1
    for key, n in rec.lengths.items():
        if votes[key]:
            gt_id, count = votes[key].most_common(1)[0]
            if count >= 0.5 * n:
                rec.truth[key] = gt_id
    return rec


def default_two_camera_topology(min_s: float = 0.0, max_s: float = 2.0) -> CameraTopology:
    """Cameras ``"A"`` and ``"B"`` linked both ways with a ``min_s``-``max_s`` transit
    window (default 0-2 s: overlapping views). A window far from 0 (say 5-10 s) says a
    person can't be on both at once, so overlapping-view tracks must not be linked."""
    return CameraTopology.build(
        ["A", "B"], [CameraLink("A", "B", min_s, max_s)], bidirectional=True
    )


def replay(
    recording: TwoCameraRecording,
    topology: CameraTopology | None = None,
    config: IdentityConfig | None = None,
) -> IdentityService:
    """Feed a recording, frame by frame and camera by camera, to a new identity service.

    Args:
        recording: from :func:`record_two_camera_crops`.
        topology: defaults to :func:`default_two_camera_topology`.
        config: defaults to ``IdentityConfig()``.

    Returns:
        The service after the last frame.

    Raises:
        RuntimeError: the service returned a non-positive global id for a tracked row
            (every row of a tracker's output is a track, so each must get a global id).
    """
    service = IdentityService(
        topology if topology is not None else default_two_camera_topology(),
        config if config is not None else IdentityConfig(),
    )
    for i, t in enumerate(recording.timestamps_s):
        for cam in VIEWS:
            gids = service.observe(cam, t, recording.cameras[cam][i])
            if not np.all(gids > 0):
                raise RuntimeError(f"camera {cam} frame {i}: a tracked row got no global id")
    return service


def link_scores(recording: TwoCameraRecording, service: IdentityService) -> LinkScores:
    """Score each local track's final global id against the ground truth over every
    camera-A / camera-B pair of local tracks with ground truth."""
    a = [k for k in recording.truth if k[0] == "A"]
    b = [k for k in recording.truth if k[0] == "B"]
    gid = {k: service.global_id_of(*k) for k in a + b}
    same = np.array([[recording.truth[x] == recording.truth[y] for y in b] for x in a], bool)
    linked = np.array([[gid[x] == gid[y] for y in b] for x in a], bool)
    tp = int(np.sum(same & linked))
    fp = int(np.sum(~same & linked))
    fn = int(np.sum(same & ~linked))
    return LinkScores(
        precision=tp / max(tp + fp, 1),
        recall=tp / max(tp + fn, 1),
        true_links=tp,
        false_links=fp,
        missed_links=fn,
    )
