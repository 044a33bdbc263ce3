"""YOLOX raw-head decoding (the official ONNX export, decoding not baked in)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

YOLOX_STRIDES = (8, 16, 32)


class YoloxDecoder:
    """Decode YOLOX raw head outputs to boxes in input pixels.

    The head emits, per anchor point of strides 8/16/32, ``x, y`` offsets in grid cells,
    ``log w, log h``, objectness and per-class scores (both already sigmoided).
    Decoding: ``xy = (xy + grid) * stride``, ``wh = exp(wh) * stride``,
    ``score = objectness * class_score``.
    """

    def __init__(self, input_hw: tuple[int, int], strides: tuple[int, ...] = YOLOX_STRIDES) -> None:
        grids, stride_col = [], []
        for s in strides:
            gh, gw = input_hw[0] // s, input_hw[1] // s
            yv, xv = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
            grids.append(np.stack((xv, yv), axis=-1).reshape(-1, 2))
            stride_col.append(np.full((gh * gw, 1), s))
        self.grid = np.concatenate(grids).astype(np.float32)  # (A, 2)
        self.stride = np.concatenate(stride_col).astype(np.float32)  # (A, 1)
        self.num_anchors = int(self.grid.shape[0])

    def decode(
        self, raw: npt.NDArray[np.float32], conf_threshold: float
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Decode one image's head output.

        Args:
            raw: (A, 5 + C) float32 for one image.
            conf_threshold: minimum ``objectness * best class score`` to keep.

        Returns:
            ``(xyxy (K, 4) input pixels, score (K,), class_id (K,))`` for candidates above the
            threshold, before NMS.
        """
        cls_scores = raw[:, 5:]
        class_id = cls_scores.argmax(axis=1)
        score = raw[:, 4] * cls_scores[np.arange(raw.shape[0]), class_id]
        keep = score >= conf_threshold
        sel = raw[keep]
        stride = self.stride[keep]
        xy = (sel[:, :2] + self.grid[keep]) * stride
        half_wh = np.exp(sel[:, 2:4]) * stride * 0.5
        xyxy = np.concatenate((xy - half_wh, xy + half_wh), axis=1).astype(np.float32)
        return xyxy, score[keep].astype(np.float32), class_id[keep].astype(np.int64)
