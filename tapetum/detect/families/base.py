"""What every model family's adapter provides, and shape helpers they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from tapetum.errors import ModelLoadError

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
#: ``(xyxy (K, 4) float32 input pixels, score (K,) float32, class_id (K,) int64)``
Candidates = tuple[FloatArray, FloatArray, IntArray]

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


class Family(ABC):
    """An adapter reading one output layout.

    The constructor checks a model's outputs against the layout (``ModelLoadError`` when
    they do not fit); ``merge`` turns the session's outputs for a batch into one float32
    array whose first axis is the image (so ``raw[i]`` is image ``i``'s share, as the
    pipeline expects); ``decode`` reads one image's share into candidate boxes in input
    pixels.
    """

    name: ClassVar[str]
    #: whether the boxes still need NMS (False: the model or the head already did it)
    needs_nms: ClassVar[bool]

    @abstractmethod
    def __init__(
        self,
        outputs: Sequence[OutputInfo],
        input_hw: tuple[int, int],
        num_classes: int | None,
        options: Mapping[str, Any],
    ) -> None: ...

    @property
    @abstractmethod
    def num_classes(self) -> int | None:
        """Classes the output layout implies (None where the layout does not say)."""

    @staticmethod
    @abstractmethod
    def looks_like(outputs: Sequence[OutputInfo], input_hw: tuple[int, int]) -> bool:
        """Whether these concrete output shapes fit the layout (for models without metadata)."""

    @abstractmethod
    def merge(self, outputs: Sequence[npt.NDArray[Any]]) -> FloatArray: ...

    @abstractmethod
    def decode(self, raw: FloatArray, conf_threshold: float) -> Candidates:
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


def cxcywh_to_xyxy(cxcywh: npt.NDArray[Any]) -> FloatArray:
    """(N, 4) centre/size boxes → (N, 4) corner boxes, float32."""
    half = cxcywh[:, 2:4] * 0.5
    return np.concatenate((cxcywh[:, :2] - half, cxcywh[:, :2] + half), axis=1).astype(
        np.float32, copy=False
    )


def empty_candidates() -> Candidates:
    return np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int64)


def as_float32(array: npt.NDArray[Any]) -> FloatArray:
    return np.asarray(array, dtype=np.float32)
