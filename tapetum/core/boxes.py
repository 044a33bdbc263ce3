"""Vectorised box geometry shared by detection and tracking."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tapetum._types import Float32Array


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> Float32Array:
    """Pairwise IoU.

    Args:
        a: (N, 4) boxes ``x1, y1, x2, y2``.
        b: (M, 4) boxes ``x1, y1, x2, y2``.

    Returns:
        (N, M) float32 IoU in [0, 1]; 0 where the union is empty.
    """
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    # Per-coordinate (N, 1) vs (M,) broadcasts: no (N, M, 2) temporaries. Called several
    # times per frame by the trackers, so the constant cost matters as much as the size.
    iw = np.minimum(a[:, 2:3], b[:, 2]) - np.maximum(a[:, 0:1], b[:, 0])
    ih = np.minimum(a[:, 3:4], b[:, 3]) - np.maximum(a[:, 1:2], b[:, 1])
    np.maximum(iw, 0.0, out=iw)
    np.maximum(ih, 0.0, out=ih)
    inter = iw * ih
    area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area_a[:, None] + area_b - inter
    # An empty union has an empty intersection too: 0 / tiny = 0.
    iou: Float32Array = inter / np.maximum(union, np.float32(1e-12))
    return iou
