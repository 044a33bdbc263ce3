"""The compiled tracker cores against their numpy and library references.

* assignment: ``lap`` (thresholded, the trackers' semantics) and ``scipy`` (dense);
* the scalar Kalman filters: the batched numpy filters (prediction bit for bit);
* the BoT-SORT cost: :func:`tapetum.track.botsort.gated_fused_cost`;
* the state store: growing past its capacity keeps every track.
"""

from __future__ import annotations

import lap
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from tapetum.core.detections import Detections
from tapetum.track.botsort import embedding_distance, gated_fused_cost
from tapetum.track.bytetrack import ByteTrackConfig, ByteTracker
from tapetum.track.cmc import warp_states
from tapetum.track.kalman import KalmanFilter, xyah_to_xyxy, xyxy_to_xyah
from tapetum.track.kalman_xywh import KalmanFilterXYWH, xywh_to_xyxy, xyxy_to_xywh
from tapetum.track.kernels import byte_step, kalman8
from tapetum.track.kernels.lsa import min_cost_matching, thresholded_matching

F64 = npt.NDArray[np.float64]


def _matched_cost(cost: F64, row_to_col: npt.NDArray[np.int64], limit: float) -> float:
    """lap's objective: matched costs plus ``limit`` per unmatched row/column pair."""
    rows = np.flatnonzero(row_to_col >= 0)
    return float(cost[rows, row_to_col[rows]].sum() - limit * rows.size)


def _consistent(row_to_col: npt.NDArray[np.int64], col_to_row: npt.NDArray[np.int64]) -> None:
    rows = np.flatnonzero(row_to_col >= 0)
    assert np.array_equal(col_to_row[row_to_col[rows]], rows)
    assert (col_to_row >= 0).sum() == rows.size


@given(
    n=st.integers(0, 9),
    m=st.integers(0, 9),
    limit=st.floats(0.05, 1.0),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=300, deadline=None)
def test_thresholded_matching_equals_lap(
    n: int, m: int, limit: float, density: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # Tracking-like: most pairs do not overlap (cost 1), some do.
    cost = np.where(rng.random((n, m)) < density, rng.uniform(0, 1, (n, m)), 1.0)
    row_to_col, col_to_row = thresholded_matching(cost, limit)
    _consistent(row_to_col, col_to_row)
    rows = np.flatnonzero(row_to_col >= 0)
    assert (cost[rows, row_to_col[rows]] < limit).all()
    if n and m:
        _, ref, _ = lap.lapjv(cost, extend_cost=True, cost_limit=limit)
        ref = np.asarray(ref, np.int64)
    else:
        ref = np.full(n, -1, np.int64)
    assert _matched_cost(cost, row_to_col, limit) == pytest.approx(
        _matched_cost(cost, ref, limit), abs=1e-9
    )


def test_thresholded_matching_finds_global_optimum_where_greedy_fails() -> None:
    cost = np.array([[0.1, 0.2, 0.9], [0.2, 0.9, 0.9], [0.9, 0.9, 0.3]])
    row_to_col, _ = thresholded_matching(cost, 1.0)
    assert row_to_col.tolist() == [1, 0, 2]


@given(n=st.integers(1, 12), m=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_min_cost_matching_equals_scipy(n: int, m: int, seed: int) -> None:
    cost = np.random.default_rng(seed).normal(size=(n, m))
    row_to_col, col_to_row = min_cost_matching(cost)
    _consistent(row_to_col, col_to_row)
    rows = np.flatnonzero(row_to_col >= 0)
    assert rows.size == min(n, m)
    ref_rows, ref_cols = linear_sum_assignment(cost)
    assert cost[rows, row_to_col[rows]].sum() == pytest.approx(cost[ref_rows, ref_cols].sum())


def _random_states(rng: np.random.Generator, n: int, motion: int) -> tuple[F64, F64]:
    boxes = rng.uniform(0, 400, (n, 2))
    boxes = np.concatenate((boxes, boxes + rng.uniform(10, 200, (n, 2))), axis=1)
    z = xyxy_to_xyah(boxes) if motion == kalman8.MOTION_XYAH else xyxy_to_xywh(boxes)
    kf = KalmanFilter() if motion == kalman8.MOTION_XYAH else KalmanFilterXYWH()
    mean, cov = kf.initiate(z)
    mean[:, 4:] = rng.normal(0, 2, (n, 4))
    for _ in range(3):  # correlated covariances
        mean, cov = kf.predict(mean, cov)
    return mean, cov


@pytest.mark.parametrize("motion", [kalman8.MOTION_XYAH, kalman8.MOTION_XYWH])
def test_scalar_kalman_matches_batched_numpy(motion: int) -> None:
    rng = np.random.default_rng(3)
    kf = KalmanFilter() if motion == kalman8.MOTION_XYAH else KalmanFilterXYWH()
    pos, vel = kf.std_weight_position, kf.std_weight_velocity
    mean, cov = _random_states(rng, 20, motion)

    want_mean, want_cov = kf.predict(mean, cov)
    got_mean, got_cov = mean.copy(), cov.copy()
    for i in range(20):
        kalman8.predict(got_mean[i], got_cov[i], motion, pos, vel)
    np.testing.assert_array_equal(got_mean, want_mean)  # same sums, same order
    np.testing.assert_array_equal(got_cov, want_cov)

    z = want_mean[:, :4] + rng.normal(0, 3, (20, 4))
    want_mean, want_cov = kf.update(want_mean, want_cov, z)
    for i in range(20):
        kalman8.update(got_mean[i], got_cov[i], z[i], motion, pos)
    np.testing.assert_allclose(got_mean, want_mean, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got_cov, want_cov, rtol=1e-10, atol=1e-9)

    init_mean, init_cov = kf.initiate(z)
    one_mean, one_cov = np.empty(8), np.empty((8, 8))
    kalman8.initiate(z[0], motion, pos, vel, one_mean, one_cov)
    np.testing.assert_array_equal(one_mean, init_mean[0])
    np.testing.assert_array_equal(one_cov, init_cov[0])


@pytest.mark.parametrize("motion", [kalman8.MOTION_XYAH, kalman8.MOTION_XYWH])
def test_box_conversions_match_numpy(motion: int) -> None:
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 500, (10, 2))
    boxes = np.concatenate((xy, xy + rng.uniform(1, 100, (10, 2))), axis=1)
    to_z, to_box = (
        (xyxy_to_xyah, xyah_to_xyxy)
        if motion == kalman8.MOTION_XYAH
        else (xyxy_to_xywh, xywh_to_xyxy)
    )
    z, back = np.empty(4), np.empty(4)
    for i in range(10):
        kalman8.to_measurement(boxes[i], motion, z)
        np.testing.assert_array_equal(z, to_z(boxes[i : i + 1])[0])
        kalman8.to_corners(np.r_[z, np.zeros(4)], motion, back)
        np.testing.assert_array_equal(back, to_box(z[None])[0])


def test_scalar_warp_matches_warp_states() -> None:
    rng = np.random.default_rng(5)
    mean, cov = _random_states(rng, 6, kalman8.MOTION_XYWH)
    angle = 0.05
    affine = np.array([[np.cos(angle), -np.sin(angle), 12.0], [np.sin(angle), np.cos(angle), -7.0]])
    want_mean, want_cov = warp_states(mean, cov, affine)
    for i in range(6):
        kalman8.warp(mean[i], cov[i], affine)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(cov, want_cov, rtol=1e-12, atol=1e-9)


def test_compiled_botsort_cost_equals_gated_fused_cost() -> None:
    rng = np.random.default_rng(6)
    n, m = 7, 9
    dist = np.where(rng.random((n, m)) < 0.5, rng.uniform(0, 1, (n, m)), 1.0)
    tracks = rng.normal(size=(n, 16))
    dets = rng.normal(size=(m, 16))
    tracks /= np.linalg.norm(tracks, axis=1, keepdims=True)
    dets /= np.linalg.norm(dets, axis=1, keepdims=True)
    dets[:3] = tracks[:3] + 0.05 * rng.normal(size=(3, 16))  # some look alike
    dets[:3] /= np.linalg.norm(dets[:3], axis=1, keepdims=True)
    appearance = embedding_distance(tracks, dets)
    scores = rng.uniform(0.1, 1, m).astype(np.float32)
    params = byte_step.make_params(
        track_thresh=0.6,
        low_thresh=0.1,
        new_track_thresh=0.7,
        match_thresh=0.8,
        low_match_thresh=0.5,
        unconfirmed_match_thresh=0.7,
        duplicate_iou=0.85,
        std_weight_position=0.05,
        std_weight_velocity=1 / 160,
        proximity_thresh=0.5,
        appearance_thresh=0.25,
    )
    rows, cols = np.arange(n), np.arange(m)
    for fuse in (False, True):
        flags = byte_step.make_flags(motion=1, max_frames_lost=30, fuse_score=fuse, appearance=True)
        got = byte_step._high_cost(dist, appearance, scores, params, flags, rows, cols)
        want = gated_fused_cost(
            dist, appearance, 0.5, 0.25, scores.astype(np.float64) if fuse else None
        )
        np.testing.assert_array_equal(got, want)


def test_tracks_survive_growing_past_the_initial_capacity() -> None:
    tracker = ByteTracker(ByteTrackConfig())
    n = 3 * byte_step.ByteState.empty().capacity  # more objects than the first allocation
    x = np.arange(n, dtype=np.float32)[:, None] * 30.0
    boxes = np.concatenate((x, x * 0 + 10, x + 20, x * 0 + 60), axis=1)
    dets = Detections(boxes, np.full(n, 0.9, np.float32), np.zeros(n, np.int64))
    first = tracker.update(dets)
    assert first.tracker_id.tolist() == list(range(1, n + 1))
    for _ in range(3):
        dets.xyxy[:, [0, 2]] += 1.0
        out = tracker.update(dets)
        assert out.tracker_id.tolist() == list(range(1, n + 1))


def test_state_store_reserve_keeps_live_rows() -> None:
    state = byte_step.ByteState.empty(capacity=4, feature_dim=3)
    state.track_id[:3] = [7, 8, 9]
    state.features[:3] = 1.0
    state.n = 3
    state.reserve(10)
    assert state.capacity >= 10
    assert state.track_id[:3].tolist() == [7, 8, 9]
    assert state.features.shape[1] == 3 and (state.features[:3] == 1.0).all()
    with pytest.raises(ValueError, match="alive"):
        state.set_feature_dim(5)


@pytest.mark.parametrize("name", ["bytetrack", "botsort", "ocsort"])
def test_degenerate_boxes_do_not_raise(name: str) -> None:
    from tapetum.track import make_tracker

    tracker = make_tracker(name, 30.0)
    boxes = np.array([[10, 10, 50, 10], [60, 10, 60, 90], [100, 10, 140, 90]], np.float32)
    dets = Detections(boxes, np.full(3, 0.9, np.float32), np.zeros(3, np.int64))
    for _ in range(3):
        out = tracker.update(dets)
    # The well-formed box keeps being tracked; the degenerate ones neither raise nor
    # disturb it.
    assert any(np.array_equal(box, boxes[2]) for box in out.xyxy)
