"""What every model family's adapter provides, and shape helpers they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from tapetum._types import Float32Array, IntArray
from tapetum.errors import ModelLoadError

#: ``(xyxy (K, 4) float32 input pixels, score (K,) float32, class_id (K,) int64)``
Candidates = tuple[Float32Array, Float32Array, IntArray]

#: Strides of the three detection levels (P3-P5) of YOLO-family heads.
YOLO_STRIDES = (8, 16, 32)


@dataclass(frozen=True, slots=True)
class OutputInfo:
    """One model output: its name and shape (declared, or observed on a probe run)."""

    name: str
    shape: tuple[int | str | None, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def dim(self, axis: int) -> int | None:
        """The size along ``axis`` when known, else None (a symbolic dimension)."""
        value = self.shape[axis]
        return value if isinstance(value, int) and value >= 0 else None


@dataclass(frozen=True, slots=True)
class OutputLayout:
    """What an adapter is given to read a model's output layout.

    Attributes:
        outputs: the model's outputs (declared, or observed on a probe run).
        input_hw: the model's input size (height, width) in pixels.
        num_classes: the class count the caller knows (metadata or class names), else None.
        options: the family's options from the file's metadata block.
    """

    outputs: Sequence[OutputInfo]
    input_hw: tuple[int, int]
    num_classes: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class Family(ABC):
    """An adapter reading one output layout.

    The constructor checks a model's outputs against the layout (``ModelLoadError`` when
    they do not fit) through :meth:`_read_layout`; ``merge`` turns the session's outputs for
    a batch into one float32 array whose first axis is the image (so ``raw[i]`` is image
    ``i``'s share, as the pipeline expects); ``decode`` reads one image's share into
    candidate boxes in input pixels.
    """

    name: ClassVar[str]
    #: whether the boxes still need NMS (False: the model or the head already did it)
    needs_nms: ClassVar[bool]

    def __init__(self, layout: OutputLayout) -> None:
        self._num_classes = self._read_layout(layout)

    @abstractmethod
    def _read_layout(self, layout: OutputLayout) -> int | None:
        """Check the outputs against the layout; the class count they imply (None: unknown)."""

    @property
    def num_classes(self) -> int | None:
        """Classes the output layout implies (None where the layout does not say)."""
        return self._num_classes

    @staticmethod
    @abstractmethod
    def looks_like(outputs: Sequence[OutputInfo], input_hw: tuple[int, int]) -> bool:
        """Whether these concrete output shapes fit the layout (for models without metadata)."""

    def merge(self, outputs: Sequence[npt.NDArray[Any]]) -> Float32Array:
        """The batch's outputs as one float32 array (single-output layouts: that output)."""
        return as_float32(outputs[0])

    @abstractmethod
    def decode(self, raw: Float32Array, conf_threshold: float) -> Candidates:
        """One image's share of :meth:`merge`'s array → candidates above the threshold."""


def grid_points(input_hw: tuple[int, int], strides: Sequence[int] = YOLO_STRIDES) -> int:
    """Anchor points of an anchor-free head over ``strides`` (8400 for 640x640)."""
    return sum((input_hw[0] // s) * (input_hw[1] // s) for s in strides)


def shape_text(shape: Sequence[int | str | None]) -> str:
    """``[batch, 84, 8400]`` (symbolic dimensions by name, unquoted)."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def describe(outputs: Sequence[OutputInfo]) -> str:
    """``output0 [1, 84, 8400]`` for error messages."""
    return ", ".join(f"{o.name} {shape_text(o.shape)}" for o in outputs)


def single_rank3(outputs: Sequence[OutputInfo], what: str) -> OutputInfo:
    """The one rank-3 output, or a ``ModelLoadError`` saying the layout is not ``what``."""
    if len(outputs) != 1 or outputs[0].rank != 3:
        raise ModelLoadError(f"outputs {describe(outputs)} are not {what}")
    return outputs[0]


def cxcywh_to_xyxy(cxcywh: npt.NDArray[Any]) -> Float32Array:
    """(N, 4) centre/size boxes → (N, 4) corner boxes, float32."""
    half = cxcywh[:, 2:4] * 0.5
    return np.concatenate((cxcywh[:, :2] - half, cxcywh[:, :2] + half), axis=1).astype(
        np.float32, copy=False
    )


def empty_candidates() -> Candidates:
    return np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int64)


def as_float32(array: npt.NDArray[Any]) -> Float32Array:
    return np.asarray(array, dtype=np.float32)


def grid_sizes(input_hw: tuple[int, int]) -> set[int]:
    """Row counts of YOLO-style grid heads for this input (1 or 3 anchors per cell, P3-P5
    or P3-P6): a layout with one of these many rows is a dense head, not a query/NMS one."""
    return {n * grid_points(input_hw, s) for n in (1, 3) for s in (YOLO_STRIDES, (8, 16, 32, 64))}


def rank3_dims(outputs: Sequence[OutputInfo]) -> tuple[int | None, int | None] | None:
    """Dimensions 1 and 2 of the one rank-3 output, or None when the outputs are not that."""
    if len(outputs) != 1 or outputs[0].rank != 3:
        return None
    return outputs[0].dim(1), outputs[0].dim(2)
