"""Letterbox resizing into a model's input tensor and mapping boxes back."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from tapetum.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LetterboxMeta:
    """How one image was placed into the model input.

    Attributes:
        scale: input pixels per source pixel (same on both axes).
        pad_x_px: left padding in input pixels.
        pad_y_px: top padding in input pixels.
        source_hw: (height, width) of the source image in pixels.
    """

    scale: float
    pad_x_px: float
    pad_y_px: float
    source_hw: tuple[int, int]


@dataclass(frozen=True, slots=True)
class LetterboxTransform:
    """Resize keeping aspect ratio, pad to the model input, emit a CHW float32 tensor.

    Attributes:
        input_hw: (height, width) of the model input in pixels.
        pad_value: grey level of the padding (YOLO family: 114).
        centered: pad on both sides (Ultralytics) instead of right/bottom only (YOLOX).
        rgb: swap the decoded BGR image to RGB.
        scale_to_unit: divide pixel values by 255.
    """

    input_hw: tuple[int, int]
    pad_value: int = 114
    centered: bool = False
    rgb: bool = False
    scale_to_unit: bool = False

    def __post_init__(self) -> None:
        if min(self.input_hw) <= 0:
            raise ConfigError(f"letterbox input size must be positive, got {self.input_hw}")

    def meta_for(self, source_hw: tuple[int, int]) -> LetterboxMeta:
        """Placement of an image of ``source_hw`` (height, width) in the input."""
        in_h, in_w = self.input_hw
        src_h, src_w = source_hw
        scale = min(in_h / src_h, in_w / src_w)
        new_w, new_h = round(src_w * scale), round(src_h * scale)
        pad_x = (in_w - new_w) / 2 if self.centered else 0.0
        pad_y = (in_h - new_h) / 2 if self.centered else 0.0
        return LetterboxMeta(scale, float(int(pad_x)), float(int(pad_y)), (src_h, src_w))

    def __call__(
        self, image: npt.NDArray[np.uint8], out: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32], LetterboxMeta]:
        """Letterbox one BGR image.

        Args:
            image: (H, W, 3) uint8 BGR.
            out: optional preallocated (3, in_h, in_w) float32 buffer to write into.

        Returns:
            ``(tensor, meta)``: tensor is (3, in_h, in_w) float32 (values 0-255, or 0-1 with
            ``scale_to_unit``), meta maps boxes back with :meth:`boxes_to_source`.
        """
        if image.ndim != 3 or image.shape[2] != 3:
            raise ConfigError(f"expected an (H, W, 3) image, got shape {image.shape}")
        meta = self.meta_for((image.shape[0], image.shape[1]))
        in_h, in_w = self.input_hw
        canvas = np.full((in_h, in_w, 3), self.pad_value, np.uint8)
        new_h = round(image.shape[0] * meta.scale)
        new_w = round(image.shape[1] * meta.scale)
        x0, y0 = int(meta.pad_x_px), int(meta.pad_y_px)
        canvas[y0 : y0 + new_h, x0 : x0 + new_w] = cv2.resize(
            image, (new_w, new_h), interpolation=cv2.INTER_LINEAR
        )
        if self.rgb:
            canvas = canvas[..., ::-1]
        tensor = out if out is not None else np.empty((3, in_h, in_w), np.float32)
        # One pass: HWC uint8 -> CHW float32 without an intermediate copy.
        np.copyto(tensor, canvas.transpose(2, 0, 1), casting="unsafe")
        if self.scale_to_unit:
            tensor *= np.float32(1.0 / 255.0)
        return tensor, meta

    @staticmethod
    def boxes_to_source(
        xyxy: npt.NDArray[np.float32], meta: LetterboxMeta
    ) -> npt.NDArray[np.float32]:
        """Map (N, 4) boxes from input pixels back to source pixels, clipped to the image."""
        out = np.empty_like(xyxy, dtype=np.float32)
        out[:, 0::2] = (xyxy[:, 0::2] - meta.pad_x_px) / meta.scale
        out[:, 1::2] = (xyxy[:, 1::2] - meta.pad_y_px) / meta.scale
        h, w = meta.source_hw
        np.clip(out[:, 0::2], 0.0, w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, h, out=out[:, 1::2])
        return out

    @staticmethod
    def boxes_to_input(
        xyxy: npt.NDArray[np.float32], meta: LetterboxMeta
    ) -> npt.NDArray[np.float32]:
        """Map (N, 4) boxes from source pixels into input pixels (inverse of the above)."""
        out = np.empty_like(xyxy, dtype=np.float32)
        out[:, 0::2] = xyxy[:, 0::2] * meta.scale + meta.pad_x_px
        out[:, 1::2] = xyxy[:, 1::2] * meta.scale + meta.pad_y_px
        return out
