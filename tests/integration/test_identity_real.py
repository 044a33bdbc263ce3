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
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from tapetum.core.boxes import box_iou
from tapetum.core.detections import Detections
from tapetum.detect import DetectorConfig, RuntimeOptions, YoloxDetector
from tapetum.identity import CameraLink, CameraTopology, IdentityConfig, IdentityService
from tapetum.sources import VideoSource
from tapetum.track import make_tracker
from tapetum.track.reid import ReidEmbedder

pytestmark = pytest.mark.integration

FRAMES = 200
VIEWS = {"A": (0, 760), "B": (520, 1280)}
EMBED_EVERY = 3
_GAMMA_LUT = np.clip(255 * (np.arange(256) / 255) ** 0.7 * 0.9 + 10, 0, 255).astype(np.uint8)

TrackKey = tuple[str, int]


@dataclass
class Recording:
    timestamps_s: list[float]
    cameras: dict[str, list[Detections]]  # tracked, with embeddings, per frame
    truth: dict[TrackKey, int]  # local track → full-frame track id
    lengths: Counter[TrackKey]


def _camera_view(image: np.ndarray, camera: str) -> np.ndarray:
    x0, x1 = VIEWS[camera]
    view = image[:, x0:x1]
    if camera == "B":
        view = cv2.GaussianBlur(cv2.LUT(view, _GAMMA_LUT), (3, 3), 0)
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


@pytest.fixture(scope="module")
def recording(assets: Path, crowd_video: Path, yolox_path: Path) -> Recording:
    detector = YoloxDetector(
        yolox_path,
        DetectorConfig(conf_threshold=0.1, class_ids=frozenset({0})),
        RuntimeOptions(intra_op_threads=2, workers=1),
    )
    embedder = ReidEmbedder(assets / "models" / "osnet_x0_25_msmt17.onnx", threads=2)
    full_tracker = make_tracker("bytetrack", 25)
    trackers = {c: make_tracker("bytetrack", 25) for c in VIEWS}
    known: dict[str, set[int]] = {c: set() for c in VIEWS}
    rec = Recording([], {c: [] for c in VIEWS}, {}, Counter())
    votes: dict[TrackKey, Counter[int]] = defaultdict(Counter)
    for frame in VideoSource(crowd_video).frames(threading.Event()):
        if frame.index >= FRAMES:
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


def _run(rec: Recording, topology: CameraTopology, config: IdentityConfig) -> IdentityService:
    service = IdentityService(topology, config)
    for i, t in enumerate(rec.timestamps_s):
        for cam in VIEWS:
            gids = service.observe(cam, t, rec.cameras[cam][i])
            assert np.all(gids > 0)  # every row of a tracker's output is a track
    return service


def _link_scores(rec: Recording, service: IdentityService) -> tuple[int, int, int]:
    """(true positive, false positive, false negative) cross-camera track pairs."""
    a = [k for k in rec.truth if k[0] == "A"]
    b = [k for k in rec.truth if k[0] == "B"]
    gid = {k: service.global_id_of(*k) for k in a + b}
    same = np.array([[rec.truth[x] == rec.truth[y] for y in b] for x in a])
    linked = np.array([[gid[x] == gid[y] for y in b] for x in a])
    return (
        int(np.sum(same & linked)),
        int(np.sum(~same & linked)),
        int(np.sum(same & ~linked)),
    )


OVERLAPPING = CameraTopology.build(["A", "B"], [CameraLink("A", "B", 0.0, 2.0)], bidirectional=True)


def test_ground_truth_covers_the_tracks(recording: Recording) -> None:
    assert len(recording.lengths) >= 30
    assert len(recording.truth) >= 0.9 * len(recording.lengths)


def test_cross_camera_links_precision_and_recall(recording: Recording) -> None:
    service = _run(recording, OVERLAPPING, IdentityConfig(match_threshold=0.92))
    tp, fp, fn = _link_scores(recording, service)
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    print(f"cross-camera links: tp={tp} fp={fp} fn={fn} P={precision:.2f} R={recall:.2f}")
    assert tp + fn >= 8, "too few people cross the overlap for the scores to mean anything"
    assert precision >= 0.85
    assert recall >= 0.7
    # people who cross the overlap share an id, so there are fewer ids than local tracks
    assert service.num_identities <= len(recording.lengths) - tp


def test_topology_gate_blocks_links_on_real_footage(recording: Recording) -> None:
    """Same appearance, but a topology that says B is 5-10 s walk from A: a person can't
    be on both at once, so no pair of overlapping-view tracks may be linked."""
    far = CameraTopology.build(["A", "B"], [CameraLink("A", "B", 5.0, 10.0)], bidirectional=True)
    service = _run(recording, far, IdentityConfig(match_threshold=0.92))
    tp, fp, _ = _link_scores(recording, service)
    assert tp + fp == 0
