"""Thresholded linear assignment and the ByteTrack cost matrices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from tapetum.track.assignment import fuse_score, iou_distance, linear_assignment


def test_finds_global_optimum_where_greedy_fails() -> None:
    # Greedy would take (0, 0) at 0.1 and then pay 0.9 + 0.9; the optimum pays 0.2 + 0.2 + 0.3.
    cost = np.array(
        [
            [0.1, 0.2, 0.9],
            [0.2, 0.9, 0.9],
            [0.9, 0.9, 0.3],
        ]
    )
    matches, rows, cols = linear_assignment(cost, threshold=1.0)
    assert matches.tolist() == [[0, 1], [1, 0], [2, 2]]
    assert rows.size == 0 and cols.size == 0


def test_pairs_above_threshold_stay_unmatched() -> None:
    cost = np.array(
        [
            [0.1, 0.95],
            [0.95, 0.85],
            [0.99, 0.99],
        ]
    )
    matches, rows, cols = linear_assignment(cost, threshold=0.8)
    assert matches.tolist() == [[0, 0]]
    assert rows.tolist() == [1, 2]
    assert cols.tolist() == [1]


def test_rectangular_matrix_matches_scipy_optimum() -> None:
    rng = np.random.default_rng(1)
    for shape in [(5, 8), (8, 5), (7, 7)]:
        cost = rng.uniform(0, 1, shape)
        matches, rows, cols = linear_assignment(cost, threshold=10.0)
        ref_rows, ref_cols = linear_sum_assignment(cost)
        assert cost[matches[:, 0], matches[:, 1]].sum() == pytest.approx(
            cost[ref_rows, ref_cols].sum()
        )
        assert len(matches) == min(shape)
        assert len(rows) == shape[0] - len(matches) and len(cols) == shape[1] - len(matches)


@pytest.mark.parametrize("shape", [(0, 0), (0, 3), (4, 0)])
def test_empty_cost_matrix_leaves_everything_unmatched(shape: tuple[int, int]) -> None:
    matches, rows, cols = linear_assignment(np.empty(shape), threshold=0.8)
    assert matches.shape == (0, 2)
    assert rows.tolist() == list(range(shape[0]))
    assert cols.tolist() == list(range(shape[1]))


def test_iou_distance_and_fuse_score() -> None:
    tracks = np.array([[0, 0, 10, 10], [100, 100, 110, 110]])
    dets = np.array([[0, 0, 10, 10], [5, 0, 15, 10]])
    dist = iou_distance(tracks, dets)
    np.testing.assert_allclose(dist, [[0.0, 1 - 50 / 150], [1.0, 1.0]], atol=1e-6)
    fused = fuse_score(dist, np.array([0.5, 0.9]))
    np.testing.assert_allclose(fused, [[0.5, 1 - (50 / 150) * 0.9], [1.0, 1.0]], atol=1e-6)
    assert iou_distance(np.empty((0, 4)), dets).shape == (0, 2)
