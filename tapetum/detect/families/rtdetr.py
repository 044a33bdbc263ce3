"""DETR-style query outputs (RT-DETR): one box per query, no NMS.

Three layouts, all with ``cx, cy, w, h`` normalised to the input size:

- ``topk``: [B, Q, 6] ``box, score, class`` (Ultralytics ≥ 8.4 exports; the head has
  already kept the top queries);
- ``scores``: [B, Q, 4 + C] box then per-class sigmoid scores (older Ultralytics);
  each query keeps its best class, as Ultralytics' predictor does;
- ``logits``: two outputs, boxes [B, Q, 4] and class logits [B, Q, C] (DETR / RT-DETR
  reference exports): sigmoid, then the top ``top_k`` (query, class) pairs.
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
    cxcywh_to_xyxy,
    describe,
    grid_sizes,
    rank3_dims,
)
from tapetum.errors import ModelLoadError

#: More classes than this in a ``scores`` row means the layout is not a DETR one.
MAX_CLASSES = 2000
#: More queries than this is not a DETR decoder.
MAX_QUERIES = 5000
LAYOUTS = ("topk", "scores", "logits")


def _box_and_logits(outputs: Sequence[OutputInfo]) -> tuple[int, int] | None:
    """Indices of the (boxes, logits) pair among two rank-3 outputs, or None."""
    if len(outputs) != 2 or any(o.rank != 3 for o in outputs):
        return None
    names = [o.name.lower() for o in outputs]
    for i in (0, 1):
        if "box" in names[i] and "logit" in names[1 - i]:
            return i, 1 - i
    widths = [o.dim(2) for o in outputs]
    if widths[0] == 4 and widths[1] != 4:
        return 0, 1
    if widths[1] == 4 and widths[0] != 4:
        return 1, 0
    return None


class DetrQueries(Family):
    """Query-based detector output (RT-DETR and DETR-style exports)."""

    name: ClassVar[str] = "rtdetr"
    needs_nms: ClassVar[bool] = False

    def _read_layout(self, layout: OutputLayout) -> int | None:
        outputs, num_classes = layout.outputs, layout.num_classes
        h, w = layout.input_hw
        self._size = np.array([w, h, w, h], np.float32)
        self.top_k = int(layout.options.get("top_k", 300))
        pair = _box_and_logits(outputs)
        if pair is not None:
            self.layout = "logits"
            self._pair = pair
            width = outputs[pair[1]].dim(2)
            if num_classes is not None and width is not None and width != num_classes:
                raise ModelLoadError(
                    f"logits {describe([outputs[pair[1]]])} do not have {num_classes} classes"
                )
            return width if width is not None else num_classes
        if rank3_dims(outputs) is None:
            raise ModelLoadError(
                f"outputs {describe(outputs)} are not a DETR-style output ([B, queries, 6], "
                f"[B, queries, 4 + classes], or boxes [B, queries, 4] + logits [B, queries, C])"
            )
        out = outputs[0]
        queries, width = out.dim(1), out.dim(2)
        name = str(layout.options.get("layout", ""))
        if name not in ("", *LAYOUTS[:2]):
            raise ModelLoadError(f"unknown RT-DETR layout {name!r}; known: topk, scores")
        if not name:
            name = "topk" if width == 6 and num_classes != 2 else "scores"
        self.layout = name
        if queries is not None and queries > MAX_QUERIES:
            raise ModelLoadError(
                f"output {describe([out])} has {queries} rows: too many for DETR queries"
            )
        if name == "topk":
            if width not in (None, 6):
                raise ModelLoadError(f"output {describe([out])}: topk layout needs 6 columns")
            return num_classes
        if width is not None and (
            width < 5
            or width - 4 > MAX_CLASSES
            or (num_classes is not None and width != 4 + num_classes)
        ):
            expected = f"4 + {num_classes}" if num_classes else "4 + classes"
            raise ModelLoadError(
                f"output {describe([out])} is not a DETR-style output [B, queries, {expected}]"
            )
        return width - 4 if width is not None else num_classes

    @staticmethod
    def looks_like(outputs: Sequence[OutputInfo], input_hw: tuple[int, int]) -> bool:
        if _box_and_logits(outputs) is not None:
            return True
        dims = rank3_dims(outputs)
        if dims is None:
            return False
        queries, width = dims
        if queries is None or width is None or queries > MAX_QUERIES:
            return False
        dense_head = queries in grid_sizes(input_hw)
        return not dense_head and 6 <= width <= 4 + MAX_CLASSES and width < queries

    def merge(self, outputs: Sequence[npt.NDArray[Any]]) -> Float32Array:
        if self.layout != "logits":
            return as_float32(outputs[0])
        boxes, logits = outputs[self._pair[0]], outputs[self._pair[1]]
        probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float32)))
        return np.concatenate((as_float32(boxes), probs), axis=-1)

    def decode(self, raw: Float32Array, conf_threshold: float) -> Candidates:
        """One image's (Q, 6) or (Q, 4 + C) rows → boxes in input pixels, best first."""
        if self.layout == "logits":
            probs = raw[:, 4:]
            flat = probs.ravel()
            k = min(self.top_k, flat.size)
            top = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
            top = top[flat[top] >= conf_threshold]
            query, class_id = np.divmod(top, probs.shape[1])
            score = flat[top]
        else:
            if self.layout == "topk":
                best = raw[:, 4]
                best_class = np.rint(raw[:, 5])
            else:
                best_class = raw[:, 4:].argmax(axis=1)
                best = raw[np.arange(raw.shape[0]), 4 + best_class]
            query = np.flatnonzero(best >= conf_threshold)
            score, class_id = best[query], best_class[query]
        order = np.argsort(-score, kind="stable")
        query = query[order]
        return (
            cxcywh_to_xyxy(raw[query, :4]) * self._size,
            score[order].astype(np.float32, copy=False),
            class_id[order].astype(np.int64),
        )
