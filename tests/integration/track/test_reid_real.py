"""Re-identification and BoT-SORT on the real crowd video with the real OSNet and YOLOX."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest

from tapetum.core.boxes import box_iou
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.detect import YoloxDetector
from tapetum.detect.detector import DetectorConfig
from tapetum.sources import VideoSource
from tapetum.track.botsort import BoTSortConfig, BoTSortTracker
from tapetum.track.reid import ReidEmbedder

pytestmark = pytest.mark.integration

N_FRAMES = 60
PERSON = 0


@pytest.fixture(scope="module")
def embedder(assets: Path) -> ReidEmbedder:
    return ReidEmbedder(assets / "models" / "osnet_x0_25_msmt17.onnx", threads=2)


@pytest.fixture(scope="module")
def crowd(assets: Path) -> tuple[list[Frame], list[Detections]]:
    """The first ``N_FRAMES`` frames and their person detections (score >= 0.1)."""
    detector = YoloxDetector(
        assets / "models" / "yolox_nano.onnx",
        DetectorConfig(conf_threshold=0.1, class_ids=frozenset({PERSON})),
    )
    source = VideoSource(assets / "video" / "crowd_720p.avi")
    frames: list[Frame] = []
    try:
        for frame in source.frames(threading.Event()):
            frames.append(frame)
            if len(frames) == N_FRAMES:
                break
    finally:
        source.close()
    detections = [detector([f.image])[0] for f in frames]
    return frames, detections


def test_embedder_loads_with_a_dynamic_batch(embedder: ReidEmbedder) -> None:
    assert embedder.model.max_batch > 1
    assert embedder.embedding_dim == 512
    assert embedder.input_hw == (256, 128)


def test_same_person_is_more_similar_than_different_people(
    embedder: ReidEmbedder, crowd: tuple[list[Frame], list[Detections]]
) -> None:
    frames, detections = crowd
    same, different = [], []
    for k in (0, 20, 40):
        a = detections[k][detections[k].confidence > 0.5]
        b = detections[k + 1][detections[k + 1].confidence > 0.5]
        sim = (
            embedder.embed(frames[k].image, a.xyxy) @ embedder.embed(frames[k + 1].image, b.xyxy).T
        )
        iou = box_iou(a.xyxy, b.xyxy)
        # The same person: mutual best overlap above 0.7 between consecutive frames.
        best = iou.argmax(axis=1)
        mutual = (iou.argmax(axis=0)[best] == np.arange(len(a))) & (iou.max(axis=1) > 0.7)
        same.append(sim[np.flatnonzero(mutual), best[mutual]])
        different.append(sim[iou < 0.05])
    same_sim, diff_sim = np.concatenate(same), np.concatenate(different)
    assert same_sim.size >= 20 and diff_sim.size >= 100
    # Measured: ~0.95 for the same person, ~0.77 for different ones.
    assert same_sim.mean() > diff_sim.mean() + 0.1
    assert np.median(same_sim) > np.quantile(diff_sim, 0.95)


def test_batch_equals_one_by_one(
    embedder: ReidEmbedder, crowd: tuple[list[Frame], list[Detections]]
) -> None:
    frames, detections = crowd
    boxes = detections[10].xyxy[:12]
    batched = embedder.embed(frames[10].image, boxes)
    single = np.concatenate([embedder.embed(frames[10].image, boxes[i : i + 1]) for i in range(12)])
    assert batched.shape == (12, 512) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, single, atol=1e-4)
    out = embedder(detections[10][:12], frames[10].image)
    assert out.embeddings is not None
    np.testing.assert_allclose(out.embeddings, batched, atol=1e-6)


def test_botsort_with_reid_keeps_identities_on_real_video(
    embedder: ReidEmbedder, crowd: tuple[list[Frame], list[Detections]]
) -> None:
    frames, detections = crowd
    tracker = BoTSortTracker(BoTSortConfig(frame_rate=25, with_reid=True), embedder)
    ids_per_frame = []
    for frame, dets in zip(frames, detections, strict=True):
        out = tracker.update(dets, frame)
        assert out.embeddings is not None and out.embeddings.shape == (len(out), 512)
        assert len(np.unique(out.tracker_id)) == len(out)
        ids_per_frame.append(set(out.tracker_id.tolist()))
    per_frame = np.array([len(ids) for ids in ids_per_frame])
    assert per_frame[N_FRAMES // 2 :].min() >= 8  # people are tracked throughout
    # Identities persist: most of a frame's ids are there again on the next frame, and
    # over the clip there are few more ids than people in view at once.
    kept = [len(a & b) / max(len(a), 1) for a, b in itertools.pairwise(ids_per_frame)]
    assert np.mean(kept) > 0.9
    all_ids = set().union(*ids_per_frame)
    assert len(all_ids) <= 1.6 * per_frame.max()
    frames_seen = np.array([sum(i in ids for ids in ids_per_frame) for i in all_ids])
    assert (frames_seen >= 0.8 * N_FRAMES).sum() >= 8
