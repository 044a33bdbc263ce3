"""Track-to-detection assignment: cost matrices and a thresholded optimal matching.

Follows ByteTrack's ``yolox/tracker/matching.py``: costs are ``1 - IoU`` (optionally
fused with the detection score) and the matching is the Jonker-Volgenant solver from
``lap`` with a cost limit, so a pair costlier than the threshold is never matched.
"""

from __future__ import annotations

import lap
import numpy as np
import numpy.typing as npt

from tapetum._types import Float64Array, IntArray
from tapetum.core.boxes import box_iou


def linear_assignment(cost: npt.ArrayLike, threshold: float) -> tuple[IntArray, IntArray, IntArray]:
    """Minimum-total-cost matching of rows to columns, ignoring pairs above ``threshold``.

    Args:
        cost: (N, M) cost of assigning row i (a track) to column j (a detection).
        threshold: largest cost a matched pair may have.

    Returns:
        ``matches`` (K, 2) int64 ``[row, col]`` pairs in increasing row order,
        ``unmatched_rows`` (N - K,) int64 and ``unmatched_cols`` (M - K,) int64, sorted.
    """
    matrix = np.asarray(cost, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, got shape {matrix.shape}")
    n_rows, n_cols = matrix.shape
    if matrix.size == 0:
        return (
            np.empty((0, 2), np.int64),
            np.arange(n_rows, dtype=np.int64),
            np.arange(n_cols, dtype=np.int64),
        )
    # extend_cost pads a rectangular matrix; cost_limit adds dummy rows/columns at
    # threshold / 2, so leaving a row and a column unmatched beats any pair above it.
    _, row_to_col, col_to_row = lap.lapjv(matrix, extend_cost=True, cost_limit=threshold)
    # Called three times per frame by the trackers: 1-D ``nonzero`` and one (K, 2) fill
    # instead of ``flatnonzero`` / ``stack`` keep the per-call overhead low.
    matched = row_to_col >= 0
    rows = matched.nonzero()[0]
    matches = np.empty((rows.shape[0], 2), np.int64)
    matches[:, 0] = rows
    matches[:, 1] = row_to_col[matched]
    unmatched_rows: IntArray = (~matched).nonzero()[0].astype(np.int64, copy=False)
    unmatched_cols: IntArray = (col_to_row < 0).nonzero()[0].astype(np.int64, copy=False)
    return matches, unmatched_rows, unmatched_cols


def iou_distance(boxes_a: npt.ArrayLike, boxes_b: npt.ArrayLike) -> Float64Array:
    """``1 - IoU`` between two sets of boxes.

    Args:
        boxes_a: (N, 4) ``x1, y1, x2, y2`` (tracks' predicted boxes).
        boxes_b: (M, 4) ``x1, y1, x2, y2`` (detections).

    Returns:
        (N, M) float64 in [0, 1]; 1 where the boxes do not overlap.
    """
    return 1.0 - box_iou(boxes_a, boxes_b).astype(np.float64)


def fuse_score(cost: npt.ArrayLike, scores: npt.ArrayLike) -> Float64Array:
    """Fold detection confidence into an IoU cost: ``1 - IoU * score``.

    ByteTrack's trick for the high-score association: among equally overlapping
    detections the more confident one is cheaper, and a weak detection needs more
    overlap to pass the threshold.

    Args:
        cost: (N, M) ``1 - IoU`` from ``iou_distance``.
        scores: (M,) detection confidences in [0, 1].

    Returns:
        (N, M) float64 fused cost.
    """
    matrix = np.asarray(cost, dtype=np.float64)
    det_scores = np.asarray(scores, dtype=np.float64).reshape(1, -1)
    return 1.0 - (1.0 - matrix) * det_scores
