"""Outputs already through NMS (EfficientDet ``DetBenchPredict``, Ultralytics end2end heads
such as YOLOv10/YOLO26, TF object-detection exports): boxes, scores and classes.

Layouts: one [B, N, 6] tensor ``x1, y1, x2, y2, score, class`` ([B, N, 7] with a leading
image-id column), or separate outputs boxes [B, N, 4], scores [B, N], classes [B, N] and
optionally a detection count [B] / [B, 1]. Options (``ModelMeta.options``):

- ``box_order``: ``xyxy`` (default) or ``yxyx`` (TensorFlow);
- ``boxes_normalized``: coordinates are fractions of the input size (default False);
- ``class_offset``: subtracted from the class column (default 1: EfficientDet numbers
  classes from 1, 0 being background; Ultralytics end2end files use 0).

Rows with a class below 0 after the offset are padding and are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from tapetum._types import Float32Array
from tapetum.detect.families.base import (
    Candidates,
    Family,
    OutputInfo,
    OutputLayout,
    as_float32,
    describe,
    grid_sizes,
    rank3_dims,
)
from tapetum.errors import ModelLoadError

_ROLES = ("box", "score", "class", "num")


def _split_outputs(outputs: Sequence[OutputInfo]) -> dict[str, int] | None:
    """Which output is boxes / scores / classes / count, by name, else by rank and order."""
    if len(outputs) not in (3, 4):
        return None
    by_name: dict[str, int] = {}
    for i, out in enumerate(outputs):
        name = out.name.lower()
        for role in _ROLES:
            if role in name and role not in by_name:
                by_name[role] = i
                break
    if all(r in by_name for r in _ROLES[: len(outputs)]) and len(by_name) == len(outputs):
        roles = by_name
    else:
        roles = dict(zip(_ROLES, range(len(outputs)), strict=False))
    boxes, scores, classes = (outputs[roles[r]] for r in _ROLES[:3])
    if boxes.rank != 3 or boxes.dim(2) not in (None, 4) or scores.rank != 2 or classes.rank != 2:
        return None
    if "num" in roles and outputs[roles["num"]].rank not in (1, 2):
        return None
    return roles


class PostNmsDetections(Family):
    """Detections that need only thresholding (the model ran NMS itself)."""

    name: ClassVar[str] = "effdet"
    needs_nms: ClassVar[bool] = False

    def _read_layout(self, layout: OutputLayout) -> int | None:
        options, outputs = layout.options, layout.outputs
        order = str(options.get("box_order", "xyxy"))
        if order not in ("xyxy", "yxyx"):
            raise ModelLoadError(f"box_order must be xyxy or yxyx, got {order!r}")
        self._yxyx = order == "yxyx"
        h, w = layout.input_hw
        self._size = np.array([w, h, w, h], np.float32)
        self._normalized = bool(options.get("boxes_normalized", False))
        self._class_offset = int(options.get("class_offset", 1))
        self._roles = _split_outputs(outputs)
        if self._roles is None:
            dims = rank3_dims(outputs)
            if dims is None or dims[1] not in (None, 6, 7):
                raise ModelLoadError(
                    f"outputs {describe(outputs)} are not post-NMS detections ([B, N, 6] "
                    f"x1, y1, x2, y2, score, class; [B, N, 7]; or boxes, scores, classes)"
                )
            self._skip = 1 if dims[1] == 7 else 0
        return layout.num_classes

    @staticmethod
    def looks_like(outputs: Sequence[OutputInfo], input_hw: tuple[int, int]) -> bool:
        if _split_outputs(outputs) is not None:
            return True
        dims = rank3_dims(outputs)
        if dims is None:
            return False
        rows, width = dims
        return width in (6, 7) and rows is not None and rows not in grid_sizes(input_hw)

    def merge(self, outputs: Sequence[npt.NDArray[Any]]) -> Float32Array:
        if self._roles is None:
            return as_float32(outputs[0][..., self._skip :] if self._skip else outputs[0])
        roles = self._roles
        boxes = as_float32(outputs[roles["box"]])
        scores = as_float32(outputs[roles["score"]])
        classes = as_float32(outputs[roles["class"]])
        merged = np.concatenate((boxes, scores[..., None], classes[..., None]), axis=-1)
        if "num" in roles:
            count = np.asarray(outputs[roles["num"]]).reshape(-1, 1)
            merged[..., 4][np.arange(merged.shape[1])[None, :] >= count] = 0.0
        return merged

    def decode(self, raw: Float32Array, conf_threshold: float) -> Candidates:
        """One image's (N, 6) rows → boxes in input pixels, best first."""
        class_id = np.rint(raw[:, 5]).astype(np.int64) - self._class_offset
        keep = np.flatnonzero((raw[:, 4] >= conf_threshold) & (class_id >= 0))
        xyxy = raw[keep, :4].astype(np.float32)
        if self._yxyx:
            xyxy = xyxy[:, [1, 0, 3, 2]]
        if self._normalized:
            xyxy *= self._size
        score = raw[keep, 4].astype(np.float32)
        order = np.argsort(-score, kind="stable")
        return xyxy[order], score[order], class_id[keep][order]
