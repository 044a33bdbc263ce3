"""YOLOX outputs: the raw head ([B, A, 5 + C], offsets in grid cells, decoded here) and the
export with decoding in the graph ([B, A, 5 + C], ``cx, cy, w, h`` in input pixels).

Both have one row per anchor point of strides 8/16/32, so their shapes are the same;
:func:`head_is_decoded` tells them apart on one probe output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from tapetum._types import Float32Array
from tapetum.detect.families.base import (
    Candidates,
    Family,
    OutputInfo,
    OutputLayout,
    grid_points,
    rank3_dims,
    shape_text,
    single_rank3,
)
from tapetum.detect.families.yolov5 import check_objectness_layout, decode_objectness_head
from tapetum.detect.yolox import YOLOX_STRIDES, YoloxDecoder
from tapetum.errors import ModelLoadError


def _strides(options: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(s) for s in options.get("strides", YOLOX_STRIDES))


def _looks_like_yolox(outputs: Sequence[OutputInfo], input_hw: tuple[int, int]) -> bool:
    dims = rank3_dims(outputs)
    return dims is not None and dims[0] == grid_points(input_hw) and (dims[1] or 0) >= 6


class YoloxRawHead(Family):
    """The official YOLOX ONNX export: decoding not in the graph."""

    name: ClassVar[str] = "yolox"
    needs_nms: ClassVar[bool] = True
    looks_like = staticmethod(_looks_like_yolox)

    def _read_layout(self, layout: OutputLayout) -> int | None:
        input_hw, num_classes = layout.input_hw, layout.num_classes
        self.decoder = YoloxDecoder(input_hw, _strides(layout.options))
        anchors = self.decoder.num_anchors
        columns = f"{5 + num_classes}" if num_classes else "5 + classes"
        expected = f"expected [B, {anchors}, {columns}]"
        what = f"a YOLOX raw head for input {input_hw}" + (
            f" and {num_classes} classes" if num_classes else ""
        )
        if rank3_dims(layout.outputs) is None:
            shapes = ", ".join(shape_text(o.shape) for o in layout.outputs)
            raise ModelLoadError(f"output shape {shapes} is not {what} ({expected})")
        out = layout.outputs[0]
        width = out.dim(2)
        bad_width = width is not None and (width != 5 + num_classes if num_classes else width < 6)
        if out.dim(1) not in (None, anchors) or bad_width:
            raise ModelLoadError(f"output shape {shape_text(out.shape)} is not {what} ({expected})")
        return width - 5 if width is not None else num_classes

    def decode(self, raw: Float32Array, conf_threshold: float) -> Candidates:
        return self.decoder.decode(raw, conf_threshold)


class YoloxDecodedHead(Family):
    """A YOLOX export with ``decode_in_inference``: boxes already in input pixels."""

    name: ClassVar[str] = "yolox-decoded"
    needs_nms: ClassVar[bool] = True
    looks_like = staticmethod(_looks_like_yolox)

    def _read_layout(self, layout: OutputLayout) -> int | None:
        out = single_rank3(layout.outputs, "a decoded YOLOX head [B, A, 5 + classes]")
        anchors = grid_points(layout.input_hw, _strides(layout.options))
        if out.dim(1) not in (None, anchors):
            raise ModelLoadError(
                f"output {shape_text(out.shape)} is not a decoded YOLOX head for input "
                f"{layout.input_hw} (expected {anchors} anchor points)"
            )
        return check_objectness_layout(out, layout.num_classes, "a decoded YOLOX head")

    def decode(self, raw: Float32Array, conf_threshold: float) -> Candidates:
        return decode_objectness_head(raw, conf_threshold)


def head_is_decoded(raw: Float32Array, input_hw: tuple[int, int]) -> bool:
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
