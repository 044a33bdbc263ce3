"""Ultralytics detect layout (YOLOv5u, YOLOv8, YOLO11, ...): [B, 4 + C, N], rows ``cx, cy,
w, h`` in input pixels then C class scores (sigmoided), no objectness; NMS left to us."""

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


class UltralyticsHead(Family):
    """Decoded, NMS-free output of an Ultralytics ``Detect`` head."""

    name: ClassVar[str] = "yolov8"
    needs_nms: ClassVar[bool] = True

    def _read_layout(self, layout: OutputLayout) -> int | None:
        out = single_rank3(layout.outputs, "an Ultralytics detect output [B, 4 + classes, N]")
        num_classes = layout.num_classes
        rows, boxes = out.dim(1), out.dim(2)
        expected = f"4 + {num_classes} = {4 + num_classes}" if num_classes else "≥ 5"
        if rows is not None and (rows < 5 or (num_classes is not None and rows != 4 + num_classes)):
            raise ModelLoadError(
                f"output {describe([out])} is not an Ultralytics detect output: "
                f"[B, {expected}, boxes] expected"
            )
        if rows is not None and boxes is not None and rows >= boxes:
            raise ModelLoadError(
                f"output {describe([out])} is not an Ultralytics detect output "
                f"[B, 4 + classes, boxes] (fewer rows than boxes); a [B, boxes, 5 + classes] "
                f"output is arch yolov5 or yolox"
            )
        return rows - 4 if rows is not None else num_classes

    @staticmethod
    def looks_like(outputs: Sequence[OutputInfo], input_hw: tuple[int, int]) -> bool:
        dims = rank3_dims(outputs)
        if dims is None:
            return False
        rows, boxes = dims
        counts = {grid_points(input_hw), grid_points(input_hw, (*YOLO_STRIDES, 64))}
        return boxes in counts and rows is not None and rows >= 5

    def decode(self, raw: Float32Array, conf_threshold: float) -> Candidates:
        """One image's (4 + C, N) output → candidates above ``conf_threshold``."""
        cls_scores = raw[4:]
        best = cls_scores.max(axis=0)
        keep = np.flatnonzero(best >= conf_threshold)
        # the class only for the few boxes kept, not all N
        class_id = cls_scores[:, keep].argmax(axis=0)
        return (
            cxcywh_to_xyxy(raw[:4, keep].T),
            best[keep].astype(np.float32, copy=False),
            class_id.astype(np.int64, copy=False),
        )
