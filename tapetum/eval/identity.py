"""Cross-camera identity on real footage, two ways.

**Real cameras, no ground truth** (:func:`record_cameras`, :func:`replay_cameras`): each
camera's video is detected, tracked (BoT-SORT with ReID, as ``tapetum run``) and its
usable crops described once; the recording is then replayed through any topology and
:class:`IdentityConfig`, frames interleaved in time as a pipeline's streams arrive, and
measured with :mod:`tapetum.eval.identity_measures` (used by ``bench/identity.py`` and the
campus4 integration test).

**Crops of one video, pseudo ground truth** (the rest of this module): two overlapping
crops of the crowd video act as two cameras, each with its own tracker and ReID
embeddings; ground truth comes from the same detector + tracker on the full frames.

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
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt

from tapetum.core.boxes import box_iou
from tapetum.core.detections import Detections
from tapetum.identity import CameraLink, CameraTopology, IdentityConfig, IdentityService

__all__ = [
    "EMBED_EVERY",
    "FRAMES",
    "VIEWS",
    "CameraRecording",
    "LinkScores",
    "TrackKey",
    "TwoCameraRecording",
    "default_two_camera_topology",
    "link_scores",
    "record_cameras",
    "record_two_camera_crops",
    "replay",
    "replay_cameras",
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
        RuntimeError: a tracked row got no global id in the service (every row of a
            tracker's output is a track, so each must hold one, shown or not yet).
    """
    service = IdentityService(
        topology if topology is not None else default_two_camera_topology(),
        config if config is not None else IdentityConfig(),
    )
    for i, t in enumerate(recording.timestamps_s):
        for cam in VIEWS:
            tracked = recording.cameras[cam][i]
            service.observe(cam, t, tracked)
            held = [service.global_id_of(cam, int(k)) for k in tracked.tracker_id]
            if not all(g is not None and g > 0 for g in held):
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


# --- real multi-camera footage: record once, replay through any identity settings ---------


@dataclass
class CameraRecording:
    """Several cameras' tracked people over a clip, with everything the identity service
    needs (no ground truth).

    Attributes:
        frame_hw: per camera, frame height and width.
        frames: per camera, per frame: ``(timestamp_s, tracked)`` where ``tracked`` holds
            the tracker's boxes and ids and, as ``embeddings``, the ReID embedding of each
            usable crop (zero rows elsewhere); the colour signatures are in
            ``data["colour"]``.
    """

    frame_hw: dict[str, tuple[int, int]] = field(default_factory=dict)
    frames: dict[str, list[tuple[float, Detections]]] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the recording as one ``.npz``."""
        arrays: dict[str, np.ndarray] = {}
        for cam, frames in self.frames.items():
            dets = [d for _, d in frames]
            arrays[f"{cam}/t"] = np.array([t for t, _ in frames], np.float64)
            arrays[f"{cam}/counts"] = np.array([len(d) for d in dets], np.int64)
            arrays[f"{cam}/hw"] = np.array(self.frame_hw[cam], np.int64)
            for name in ("xyxy", "confidence", "tracker_id"):
                empty = getattr(Detections.empty(), name)
                arrays[f"{cam}/{name}"] = np.concatenate([empty] + [getattr(d, name) for d in dets])
            dims = [d.embeddings.shape[1] for _, d in frames if d.embeddings is not None]
            dim = dims[0] if dims else 0
            arrays[f"{cam}/embeddings"] = np.concatenate(
                [np.zeros((0, dim))]
                + [
                    d.embeddings if d.embeddings is not None else np.zeros((len(d), dim))
                    for _, d in frames
                ]
            ).astype(np.float16)
            colours = [d.data["colour"] for _, d in frames if "colour" in d.data]
            cdim = colours[0].shape[1] if colours else 0
            arrays[f"{cam}/colour"] = np.concatenate(
                [np.zeros((0, cdim))]
                + [d.data.get("colour", np.zeros((len(d), cdim))) for _, d in frames]
            ).astype(np.float16)
        np.savez_compressed(Path(path), **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CameraRecording:
        """Read a recording written by :meth:`save`."""
        data = np.load(Path(path))
        rec = cls()
        cams = sorted({k.split("/")[0] for k in data.files})
        for cam in cams:
            counts = data[f"{cam}/counts"]
            offsets = np.concatenate([[0], np.cumsum(counts)])
            emb = data[f"{cam}/embeddings"].astype(np.float32)
            colour = data[f"{cam}/colour"].astype(np.float32)
            rec.frame_hw[cam] = cast("tuple[int, int]", tuple(int(v) for v in data[f"{cam}/hw"]))
            frames = []
            for i, t in enumerate(data[f"{cam}/t"].tolist()):
                a, b = int(offsets[i]), int(offsets[i + 1])
                d = Detections(
                    data[f"{cam}/xyxy"][a:b],
                    data[f"{cam}/confidence"][a:b],
                    np.zeros(b - a, np.int64),
                    data[f"{cam}/tracker_id"][a:b],
                    emb[a:b] if b > a else None,
                    {"colour": colour[a:b]} if colour.shape[0] else {},
                )
                frames.append((float(t), d))
            rec.frames[cam] = frames
        return rec


def record_cameras(
    videos: list[str | os.PathLike[str]],
    detector_model_path: str | os.PathLike[str],
    reid_model_path: str | os.PathLike[str],
    *,
    frames: int | None = None,
    masks: Mapping[str, Any] | None = None,
    threads: int = 1,
) -> CameraRecording:
    """Detect (YOLOX, persons, confidence ≥ 0.1), track (BoT-SORT with ReID, as
    ``tapetum run --tracker botsort --reid``) and describe every camera's people.

    Args:
        videos: one video per camera; the camera id is the file stem (as in ``tapetum
            run``).
        detector_model_path: YOLOX ONNX model.
        reid_model_path: OSNet ONNX ReID model.
        frames: frames per camera from the start (None: all).
        masks: per camera id, its :class:`~tapetum.track.crops.StaticMask`: crops under it
            get no appearance.
        threads: intra-op threads of the detector and the ReID model.
    """
    from tapetum.detect import DetectorConfig, RuntimeOptions, load_detector
    from tapetum.identity.appearance import colour_signatures
    from tapetum.sources import VideoSource
    from tapetum.track.botsort import BoTSortConfig, BoTSortTracker
    from tapetum.track.crops import usable_crops
    from tapetum.track.reid import ReidEmbedder

    detector = load_detector(
        Path(detector_model_path),
        None,
        DetectorConfig(conf_threshold=0.1, nms_iou=0.45, class_ids=frozenset({0})),
        RuntimeOptions(intra_op_threads=threads, workers=1),
    )
    embedder = ReidEmbedder(Path(reid_model_path), threads=threads)
    rec = CameraRecording()
    for video in videos:
        source = VideoSource(video)
        cam = source.source_id
        tracker = BoTSortTracker(
            BoTSortConfig(frame_rate=source.fps or 25.0, with_reid=True), embedder
        )
        mask = (masks or {}).get(cam)
        out: list[tuple[float, Detections]] = []
        for frame in source.frames(threading.Event()):
            if frames is not None and frame.index >= frames:
                break
            tracked = tracker.update(detector([frame.image])[0], frame)
            hw = (int(frame.image.shape[0]), int(frame.image.shape[1]))
            rec.frame_hw[cam] = hw
            ok = usable_crops(tracked.xyxy, hw, None, mask)
            if tracked.embeddings is not None:
                tracked.embeddings[~ok] = 0.0
            colour = np.zeros((len(tracked), 256), np.float32)
            if np.any(ok):
                colour[ok] = colour_signatures(frame.image, tracked.xyxy[ok])
            tracked.data = {"colour": colour}
            out.append((frame.timestamp_s, tracked))
        rec.frames[cam] = out
    return rec


def replay_cameras(
    recording: CameraRecording,
    topology: CameraTopology,
    config: IdentityConfig | None = None,
    appearance: Any = None,
) -> tuple[IdentityService, list[dict[str, Any]], np.ndarray]:
    """Feed a recording to a new identity service, frames interleaved across cameras in
    time order (as the pipeline's streams arrive).

    Args:
        recording: from :func:`record_cameras`.
        topology: cameras (ids are the recording's), links and masks.
        config: identity settings (default ``IdentityConfig()``).
        appearance: an :class:`~tapetum.identity.AppearanceConfig` (default: the
            service's default, ReID joined with colour).

    Returns:
        The service after the last frame, the JSONL-like records (``source_id``,
        ``timestamp_s``, ``tracks`` with ``track_id``, ``global_id``, ``xyxy``) with the
        ids as they were given out frame by frame, and (F,) the milliseconds each
        :meth:`~IdentityService.observe` call took.
    """
    import time

    from tapetum.identity import AppearanceConfig
    from tapetum.identity.appearance import join_appearance

    look = appearance if appearance is not None else AppearanceConfig()
    first = next(
        d for frames in recording.frames.values() for _, d in frames if d.embeddings is not None
    )
    assert first.embeddings is not None
    service = IdentityService(
        topology, config, embedding_dim=look.dim(int(first.embeddings.shape[1]))
    )
    order = sorted(
        (t, k, cam, i)
        for k, (cam, frames) in enumerate(recording.frames.items())
        for i, (t, _) in enumerate(frames)
    )
    records: list[dict[str, Any]] = []
    costs = np.empty(len(order))
    for n, (t, _, cam, i) in enumerate(order):
        d = recording.frames[cam][i][1]
        emb = None
        if len(d) and d.embeddings is not None:
            emb = join_appearance(d.embeddings, d.data.get("colour"), look)
        seen = Detections(d.xyxy, d.confidence, d.class_id, d.tracker_id, emb)
        start = time.perf_counter()
        gids = service.observe(cam, t, seen, recording.frame_hw[cam])
        costs[n] = (time.perf_counter() - start) * 1e3
        records.append(
            {
                "source_id": cam,
                "timestamp_s": t,
                "tracks": [
                    {"track_id": int(a), "global_id": int(b), "xyxy": x.tolist()}
                    for a, b, x in zip(d.tracker_id, gids, d.xyxy, strict=True)
                ],
            }
        )
    return service, records, costs
