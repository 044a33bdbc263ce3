"""YOLOX outputs: the raw head ([B, A, 5 + C], offsets in grid cells, decoded here) and the
export with decoding in the graph ([B, A, 5 + C], ``cx, cy, w, h`` in input pixels).

Both have one row per anchor point of strides 8/16/32, so their shapes are the same;
:func:`head_is_decoded` tells them apart on one probe output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from tapetum.detect.families.base import (
    Candidates,
    Family,
    FloatArray,
    OutputInfo,
    as_float32,
    grid_points,
    shape_text,
    single_rank3,
)
from tapetum.detect.families.yolov5 import check_objectness_layout, decode_objectness_head
from tapetum.detect.yolox import YOLOX_STRIDES, YoloxDecoder
from tapetum.errors import ModelLoadError


def _strides(options: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(s) for s in options.get("strides", YOLOX_STRIDES))


class YoloxRawHead(Family):
    """The official YOLOX ONNX export: decoding not in the graph."""

    name: ClassVar[str] = "yolox"
    needs_nms: ClassVar[bool] = True

    def __init__(
        self,
        outputs: Sequence[OutputInfo],
        input_hw: tuple[int, int],
        num_classes: int | None,
        options: Mapping[str, Any],
    ) -> None:
        self.decoder = YoloxDecoder(input_hw, _strides(options))
        anchors = self.decoder.num_anchors
        columns = f"{5 + num_classes}" if num_classes else "5 + classes"
        expected = f"expected [B, {anchors}, {columns}]"
        what = (
            f"a YOLOX raw head for input {input_hw} and {num_classes} classes"
            if num_classes
            else f"a YOLOX raw head for input {input_hw}"
        )
        if len(outputs) != 1 or outputs[0].rank != 3:
            shapes = ", ".join(shape_text(o.shape) for o in outputs)
            raise ModelLoadError(f"output shape {shapes} is not {what} ({expected})")
        out = outputs[0]
        width = out.dim(2)
        bad_width = width is not None and (width != 5 + num_classes if num_classes else width < 6)
        if out.dim(1) not in (None, anchors) or bad_width:
            raise ModelLoadError(f"output shape {shape_text(out.shape)} is not {what} ({expected})")
        self._num_classes = width - 5 if width is not None else num_classes

    @property
    def num_classes(self) -> int | None:
        return self._num_classes

    @staticmethod
    def looks_like(outputs: Sequence[OutputInfo], input_hw: tuple[int, int]) -> bool:
        if len(outputs) != 1 or outputs[0].rank != 3:
            return False
        width = outputs[0].dim(2)
        return outputs[0].dim(1) == grid_points(input_hw) and width is not None and width >= 6

    def merge(self, outputs: Sequence[npt.NDArray[Any]]) -> FloatArray:
        return as_float32(outputs[0])

    def decode(self, raw: FloatArray, conf_threshold: float) -> Candidates:
        return self.decoder.decode(raw, conf_threshold)


class YoloxDecodedHead(Family):
    """A YOLOX export with ``decode_in_inference``: boxes already in input pixels."""

    name: ClassVar[str] = "yolox-decoded"
    needs_nms: ClassVar[bool] = True

    def __init__(
        self,
        outputs: Sequence[OutputInfo],
        input_hw: tuple[int, int],
        num_classes: int | None,
        options: Mapping[str, Any],
    ) -> None:
        out = single_rank3(outputs, "a decoded YOLOX head [B, A, 5 + classes]")
        anchors = grid_points(input_hw, _strides(options))
        if out.dim(1) not in (None, anchors):
            raise ModelLoadError(
                f"output {shape_text(out.shape)} is not a decoded YOLOX head for input {input_hw} "
                f"(expected {anchors} anchor points)"
            )
        self._num_classes = check_objectness_layout(out, num_classes, "a decoded YOLOX head")

    @property
    def num_classes(self) -> int | None:
        return self._num_classes

    @staticmethod
    def looks_like(outputs: Sequence[OutputInfo], input_hw: tuple[int, int]) -> bool:
        return YoloxRawHead.looks_like(outputs, input_hw)

    def merge(self, outputs: Sequence[npt.NDArray[Any]]) -> FloatArray:
        return as_float32(outputs[0])

    def decode(self, raw: FloatArray, conf_threshold: float) -> Candidates:
        return decode_objectness_head(raw, conf_threshold)


def head_is_decoded(raw: FloatArray, input_hw: tuple[int, int]) -> bool:
    """Whether one image's YOLOX output (A, 5 + C) holds decoded boxes.

    A raw head's ``x`` is an offset of a few grid cells (about -2…4); a decoded one is a
    pixel position close to its anchor point's centre. Whichever reading puts ``x`` closer
    to the anchor centres wins (robust to untrained weights: offsets stay small).
    """
    decoder = YoloxDecoder(input_hw)
    centre_x = (decoder.grid[:, 0] + 0.5) * decoder.stride[:, 0]
    x = raw[:, 0].astype(np.float64)
    as_pixels = float(np.median(np.abs(x - centre_x)))
    as_offsets = float(
        np.median(np.abs((x + decoder.grid[:, 0]) * decoder.stride[:, 0] - centre_x))
    )
    return as_pixels < as_offsets
