"""Classic YOLOv5 layout: [B, N, 5 + C] rows of ``cx, cy, w, h`` (input pixels), objectness
and class scores (both already sigmoided); decoded in the graph, NMS left to us.

The YOLOX export with decoding in the graph has the same layout (see ``yolox.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from tapetum._types import Float32Array
from tapetum.detect.families.base import (
    YOLO_STRIDES,
    Candidates,
    Family,
    OutputInfo,
    OutputLayout,
    cxcywh_to_xyxy,
    describe,
    grid_points,
    rank3_dims,
    single_rank3,
)
from tapetum.errors import ModelLoadError


def decode_objectness_head(raw: Float32Array, conf_threshold: float) -> Candidates:
    """One image's (N, 5 + C) rows → boxes whose ``objectness × best class score`` passes.

    Class scores are probabilities (≤ 1), so rows whose objectness alone is under the
    threshold are dropped before the per-class work.
    """
    rows = raw[raw[:, 4] >= conf_threshold]
    cls_scores = rows[:, 5:]
    class_id = cls_scores.argmax(axis=1)
    score = rows[:, 4] * cls_scores[np.arange(rows.shape[0]), class_id]
    keep = score >= conf_threshold
    return (
        cxcywh_to_xyxy(rows[keep, :4]),
        score[keep].astype(np.float32, copy=False),
        class_id[keep].astype(np.int64, copy=False),
    )


def check_objectness_layout(out: OutputInfo, num_classes: int | None, what: str) -> int | None:
    """Check ``[B, N, 5 + C]`` (rows outnumber columns); returns C when known."""
    anchors, width = out.dim(1), out.dim(2)
    if width is not None and (width < 6 or (num_classes is not None and width != 5 + num_classes)):
        expected = f"5 + {num_classes} = {5 + num_classes}" if num_classes else "≥ 6"
        raise ModelLoadError(
            f"output {describe([out])} is not {what}: rows of {expected} values expected"
        )
    if anchors is not None and width is not None and anchors <= width:
        raise ModelLoadError(
            f"output {describe([out])} is not {what} ([B, boxes, 5 + classes], with more "
            f"boxes than columns); an Ultralytics [B, 4 + classes, boxes] output is arch yolov8"
        )
    return width - 5 if width is not None else num_classes


class Yolov5Head(Family):
    """YOLOv5 (anchor-based, ``ultralytics/yolov5`` export) output."""

    name: ClassVar[str] = "yolov5"
    needs_nms: ClassVar[bool] = True

    def _read_layout(self, layout: OutputLayout) -> int | None:
        out = single_rank3(layout.outputs, "a YOLOv5 output [B, N, 5 + classes]")
        return check_objectness_layout(out, layout.num_classes, "a YOLOv5 output")

    @staticmethod
    def looks_like(outputs: Sequence[OutputInfo], input_hw: tuple[int, int]) -> bool:
        dims = rank3_dims(outputs)
        if dims is None:
            return False
        anchors, width = dims
        # three anchors per cell on P3-P5 (or P3-P6 for the *6 models)
        counts = {3 * grid_points(input_hw), 3 * grid_points(input_hw, (*YOLO_STRIDES, 64))}
        return anchors in counts and width is not None and width >= 6

    def decode(self, raw: Float32Array, conf_threshold: float) -> Candidates:
        return decode_objectness_head(raw, conf_threshold)
