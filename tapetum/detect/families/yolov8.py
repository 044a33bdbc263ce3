"""Ultralytics detect layout (YOLOv5u, YOLOv8, YOLO11, ...): [B, 4 + C, N], rows ``cx, cy,
w, h`` in input pixels then C class scores (sigmoided), no objectness; NMS left to us."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from tapetum.detect.families.base import (
    YOLO_STRIDES,
    Candidates,
    Family,
    FloatArray,
    OutputInfo,
    as_float32,
    cxcywh_to_xyxy,
    describe,
    grid_points,
    single_rank3,
)
from tapetum.errors import ModelLoadError


class UltralyticsHead(Family):
    """Decoded, NMS-free output of an Ultralytics ``Detect`` head."""

    name: ClassVar[str] = "yolov8"
    needs_nms: ClassVar[bool] = True

    def __init__(
        self,
        outputs: Sequence[OutputInfo],
        input_hw: tuple[int, int],
        num_classes: int | None,
        options: Mapping[str, Any],
    ) -> None:
        out = single_rank3(outputs, "an Ultralytics detect output [B, 4 + classes, N]")
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
                f"output is --arch yolov5 or yolox"
            )
        self._num_classes = rows - 4 if rows is not None else num_classes

    @property
    def num_classes(self) -> int | None:
        return self._num_classes

    @staticmethod
    def looks_like(outputs: Sequence[OutputInfo], input_hw: tuple[int, int]) -> bool:
        if len(outputs) != 1 or outputs[0].rank != 3:
            return False
        rows, boxes = outputs[0].dim(1), outputs[0].dim(2)
        counts = {grid_points(input_hw), grid_points(input_hw, (*YOLO_STRIDES, 64))}
        return boxes in counts and rows is not None and rows >= 5

    def merge(self, outputs: Sequence[npt.NDArray[Any]]) -> FloatArray:
        return as_float32(outputs[0])

    def decode(self, raw: FloatArray, conf_threshold: float) -> Candidates:
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
