"""BoT-SORT on hand-made scenes: identities a user would see, camera motion, cost gating."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError, ModelLoadError
from tapetum.track.base import Tracker
from tapetum.track.botsort import (
    BoTSortConfig,
    BoTSortTracker,
    embedding_distance,
    gated_fused_cost,
)
from tapetum.track.cmc import EccCMC, SparseFlowCMC, make_cmc, warp_states
from tapetum.track.kalman_xywh import KalmanFilterXYWH, xywh_to_xyxy, xyxy_to_xywh
from tapetum.track.reid import ReidEmbedder

W, H = 40.0, 80.0
NO_CMC = BoTSortConfig(cmc_method="none")


def _box(cx: float, cy: float, w: float = W, h: float = H) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _dets(
    boxes: Sequence[Sequence[float]],
    scores: Sequence[float] | None = None,
    embeddings: npt.ArrayLike | None = None,
) -> Detections:
    n = len(boxes)
    if n == 0:
        return Detections.empty()
    return Detections(
        xyxy=np.asarray(boxes, np.float32),
        confidence=np.asarray(scores if scores is not None else [0.9] * n, np.float32),
        class_id=np.zeros(n, np.int64),
        embeddings=None if embeddings is None else np.asarray(embeddings, np.float32),
    )


def _id_near(out: Detections, cx: float, cy: float) -> int:
    """tracker_id of the output box whose centre is at (cx, cy); fails if there is none."""
    dist = np.hypot(*(out.center - np.array([cx, cy])).T)
    assert dist.size and dist.min() < 1.0, f"no output box at ({cx}, {cy})"
    return int(out.tracker_id[np.argmin(dist)])


def _texture(h: int, w: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    """A BGR picture with structure at every scale (blurred noise at 2, 6 and 16 px), so
    corners and gradients exist at every pyramid level, as in a real scene."""
    rng = np.random.default_rng(seed)
    layers = [
        cv2.GaussianBlur(rng.uniform(0, 1, (h, w)).astype(np.float32), (0, 0), sigma)
        for sigma in (2.0, 6.0, 16.0)
    ]
    stretched = [(x - x.min()) / (x.max() - x.min()) for x in layers]
    grey = (sum(stretched) / len(stretched) * 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _frame(image: npt.NDArray[np.uint8], index: int) -> Frame:
    return Frame("test", index, image, timestamp_s=index / 25.0, arrival_s=0.0)


def test_implements_the_tracker_protocol() -> None:
    assert isinstance(BoTSortTracker(NO_CMC), Tracker)


def test_linear_motion_keeps_identities() -> None:
    tracker = BoTSortTracker(NO_CMC)
    for k in range(30):
        out = tracker.update(_dets([_box(100 + 4 * k, 200), _box(400, 100 + 3 * k)]))
        assert len(out) == 2
        assert _id_near(out, 100 + 4 * k, 200) == 1
        assert _id_near(out, 400, 100 + 3 * k) == 2


def test_occluded_object_gets_its_identity_back() -> None:
    tracker = BoTSortTracker(NO_CMC)
    for k in range(10):
        tracker.update(_dets([_box(100 + 5 * k, 200), _box(500, 300)]))
    for _ in range(10):  # the first object is hidden for 10 frames
        out = tracker.update(_dets([_box(500, 300)]))
        assert out.tracker_id.tolist() == [2]
    out = tracker.update(_dets([_box(100 + 5 * 20, 200), _box(500, 300)]))
    assert _id_near(out, 200, 200) == 1
    assert _id_near(out, 500, 300) == 2


def test_lost_track_is_dropped_after_the_buffer() -> None:
    tracker = BoTSortTracker(BoTSortConfig(cmc_method="none", track_buffer=5))
    for _ in range(3):
        tracker.update(_dets([_box(100, 200)]))
    for _ in range(7):
        tracker.update(Detections.empty())
    out = tracker.update(_dets([_box(100, 200)]))
    out = tracker.update(_dets([_box(100, 200)]))
    assert out.tracker_id.tolist() == [2]


def test_new_objects_need_new_track_thresh_and_two_frames() -> None:
    tracker = BoTSortTracker(NO_CMC)
    tracker.update(_dets([_box(100, 200)]))
    weak = tracker.update(_dets([_box(100, 200), _box(400, 200)], [0.9, 0.65]))
    assert weak.tracker_id.tolist() == [1]  # 0.65 < new_track_thresh: never starts
    assert tracker.update(_dets([_box(100, 200), _box(600, 200)])).tracker_id.tolist() == [1]
    seen_twice = tracker.update(_dets([_box(100, 200), _box(600, 200)]))
    assert seen_twice.tracker_id.tolist() == [1, 2]


def test_low_score_box_keeps_a_tracked_object() -> None:
    tracker = BoTSortTracker(NO_CMC)
    for k in range(5):
        tracker.update(_dets([_box(100 + 3 * k, 200)]))
    out = tracker.update(_dets([_box(115, 200)], [0.3]))  # partly occluded: low score
    assert out.tracker_id.tolist() == [1]


def test_ids_start_at_one_per_instance_and_after_reset() -> None:
    first, second = BoTSortTracker(NO_CMC), BoTSortTracker(NO_CMC)
    assert first.update(_dets([_box(100, 200)])).tracker_id.tolist() == [1]
    assert second.update(_dets([_box(300, 200)])).tracker_id.tolist() == [1]
    first.reset()
    assert first.frame_id == 0
    assert first.update(_dets([_box(500, 200)])).tracker_id.tolist() == [1]


def test_appearance_resolves_a_crossing_that_iou_gets_wrong() -> None:
    # A and B stand still, then both step 11 px towards each other: on IoU alone each
    # track prefers the other's box (IoU 0.63 vs 0.57); their embeddings say otherwise.
    emb_a, emb_b = np.eye(8, dtype=np.float32)[:2]
    before = [_box(100, 200), _box(120, 200)]
    after = [_box(111, 200), _box(109, 200)]  # A's box, then B's
    with_reid = BoTSortTracker(BoTSortConfig(cmc_method="none", with_reid=True))
    motion_only = BoTSortTracker(NO_CMC)
    for _ in range(5):
        with_reid.update(_dets(before, embeddings=[emb_a, emb_b]))
        motion_only.update(_dets(before))
    out = with_reid.update(_dets(after, embeddings=[emb_a, emb_b]))
    assert out.tracker_id.tolist() == [1, 2]
    assert out.embeddings is not None
    np.testing.assert_allclose(out.embeddings, [emb_a, emb_b])
    assert motion_only.update(_dets(after)).tracker_id.tolist() == [2, 1]


def test_reid_needs_embeddings_or_embedder_and_frame() -> None:
    tracker = BoTSortTracker(BoTSortConfig(cmc_method="none", with_reid=True))
    with pytest.raises(ValueError, match="embedder and the frame"):
        tracker.update(_dets([_box(100, 200)]))


def test_invalid_configs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="appearance_thresh"):
        BoTSortConfig(appearance_thresh=1.5)
    with pytest.raises(ConfigError, match="track_low_thresh"):
        BoTSortConfig(track_low_thresh=0.7, track_high_thresh=0.6)
    with pytest.raises(ConfigError, match="cmc_method"):
        BoTSortConfig(cmc_method="orb")  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match="not found"):
        ReidEmbedder(tmp_path / "missing.onnx")


def test_sparse_flow_recovers_a_global_translation() -> None:
    canvas = _texture(300, 400)
    dx, dy = 7, -5
    before = canvas[20:260, 20:340]
    after = canvas[20 - dy : 260 - dy, 20 - dx : 340 - dx]  # scene moves by (+dx, +dy)
    person = np.array([[100, 60, 140, 160]], np.float32)  # masked out: it may move freely
    cmc = SparseFlowCMC()
    np.testing.assert_array_equal(cmc.estimate(before, person), np.eye(2, 3))
    warp = cmc.estimate(after, person + np.array([dx, dy, dx, dy], np.float32))
    np.testing.assert_allclose(warp[:, 2], [dx, dy], atol=1.0)
    np.testing.assert_allclose(warp[:, :2], np.eye(2), atol=0.01)


def test_ecc_recovers_a_global_translation() -> None:
    canvas = _texture(300, 400, seed=1)
    before, after = canvas[20:260, 20:340], canvas[24:264, 14:334]  # scene moves (+6, -4)
    cmc = EccCMC(downscale=2)
    cmc.estimate(before)
    np.testing.assert_allclose(cmc.estimate(after)[:, 2], [6, -4], atol=1.0)


@pytest.mark.parametrize(("cmc_method", "keeps_id"), [("sparseOptFlow", True), ("none", False)])
def test_camera_pan_breaks_iou_only_without_cmc(cmc_method: str, keeps_id: bool) -> None:
    # The camera pans 60 px left in one frame: the still person jumps 60 px right in the
    # image, further than its 40 px width, so the predicted box no longer overlaps it.
    canvas = _texture(320, 480, seed=2)
    tracker = BoTSortTracker(BoTSortConfig(cmc_method=cmc_method))  # type: ignore[arg-type]
    for k in range(5):
        out = tracker.update(_dets([_box(150, 150)]), _frame(canvas[20:260, 100:420], k))
    assert out.tracker_id.tolist() == [1]
    panned = canvas[20:260, 40:360]
    out = tracker.update(_dets([_box(210, 150)]), _frame(panned, 5))
    if keeps_id:
        np.testing.assert_allclose(tracker.last_warp[:, 2], [60, 0], atol=1.0)
    out = tracker.update(_dets([_box(210, 150)]), _frame(panned, 6))
    assert (out.tracker_id.tolist() == [1]) is keeps_id


def test_make_cmc_by_name() -> None:
    assert isinstance(make_cmc("sparseOptFlow"), SparseFlowCMC)
    assert isinstance(make_cmc("ecc"), EccCMC)
    assert make_cmc("none") is None


def test_warp_states_matches_the_reference_per_track_formula() -> None:
    rng = np.random.default_rng(3)
    mean = rng.normal(size=(5, 8))
    a = rng.normal(size=(5, 8, 8))
    cov = a @ a.transpose(0, 2, 1)
    angle = 0.1
    warp = np.array([[np.cos(angle), -np.sin(angle), 4.0], [np.sin(angle), np.cos(angle), -2.0]])
    new_mean, new_cov = warp_states(mean, cov, warp)
    r8 = np.kron(np.eye(4), warp[:, :2])
    for i in range(5):  # BoT-SORT's STrack.multi_gmc, one track at a time
        expected = r8 @ mean[i]
        expected[:2] += warp[:, 2]
        np.testing.assert_allclose(new_mean[i], expected)
        np.testing.assert_allclose(new_cov[i], r8 @ cov[i] @ r8.T)


def test_kalman_xywh_predict_is_the_constant_velocity_model() -> None:
    kf = KalmanFilterXYWH()
    boxes = np.array([[10, 20, 50, 100], [200, 100, 260, 220]], np.float64)
    mean, cov = kf.initiate(xyxy_to_xywh(boxes))
    np.testing.assert_allclose(xywh_to_xyxy(mean[:, :4]), boxes)
    mean[:, 4:] = [[1, 2, 0.5, 0.25], [-3, 0, 0, 0]]
    new_mean, new_cov = kf.predict(mean, cov)
    f = np.eye(8)
    f[:4, 4:] = np.eye(4)
    wh = np.concatenate((mean[:, 2:4], mean[:, 2:4]), axis=1)
    q = np.concatenate((wh / 20, wh / 160), axis=1) ** 2
    for i in range(2):
        np.testing.assert_allclose(new_mean[i], f @ mean[i])
        np.testing.assert_allclose(new_cov[i], f @ cov[i] @ f.T + np.diag(q[i]))
    corrected, _ = kf.update(new_mean, new_cov, xyxy_to_xywh(boxes))
    assert np.all(
        np.abs(corrected[:, :4] - xyxy_to_xywh(boxes))
        < np.abs(new_mean[:, :4] - xyxy_to_xywh(boxes)) + 1e-9
    )


unit_matrix = hnp.arrays(
    np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.floats(0, 1)
)


@settings(max_examples=150, deadline=None)
@given(
    iou=unit_matrix,
    data=st.data(),
    proximity=st.floats(0, 1),
    appearance_thresh=st.floats(0, 1),
    fuse=st.booleans(),
)
def test_gated_cost_is_bounded_and_gates_appearance(
    iou: npt.NDArray[np.float64],
    data: st.DataObject,
    proximity: float,
    appearance_thresh: float,
    fuse: bool,
) -> None:
    shape = iou.shape
    appearance = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    scores = data.draw(hnp.arrays(np.float64, shape[1], elements=st.floats(0, 1))) if fuse else None
    cost = gated_fused_cost(iou, appearance, proximity, appearance_thresh, scores)
    assert cost.shape == shape
    assert np.all((cost >= 0) & (cost <= 1))
    motion = iou if scores is None else 1 - (1 - iou) * scores
    gated = (appearance > appearance_thresh) | (iou > proximity)
    # A gated pair's appearance cost is 1, so only motion can make it cheap.
    np.testing.assert_allclose(cost[gated], motion[gated])
    np.testing.assert_allclose(cost[~gated], np.minimum(motion, appearance)[~gated])


@settings(max_examples=100, deadline=None)
@given(
    a=hnp.arrays(np.float64, (3, 5), elements=st.floats(-1, 1)),
    b=hnp.arrays(np.float64, (4, 5), elements=st.floats(-1, 1)),
)
def test_embedding_distance_is_halved_cosine_distance(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> None:
    assume(np.linalg.norm(a, axis=1).min() > 1e-3 and np.linalg.norm(b, axis=1).min() > 1e-3)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    dist = embedding_distance(a, b)
    assert np.all((dist >= 0) & (dist <= 1))
    np.testing.assert_allclose(embedding_distance(a, a).diagonal(), 0, atol=1e-12)
    np.testing.assert_allclose(dist, (1 - a @ b.T) / 2, atol=1e-12)
