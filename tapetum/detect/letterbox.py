"""Fitting frames into a model's input tensor (letterbox or stretch) and mapping boxes back."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from tapetum.detect.spec import ChannelOrder, PreprocessSpec, ResizeMode
from tapetum.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LetterboxMeta:
    """How one image was placed into the model input.

    Attributes:
        scale: input pixels per source pixel along x (and along y unless ``scale_y`` is
            set): the size the image was resized to over its source size.
        pad_x_px: left padding in input pixels.
        pad_y_px: top padding in input pixels.
        source_hw: (height, width) of the source image in pixels.
        scale_y: input pixels per source pixel along y, where it differs from ``scale``
            (stretch resizing; letterboxing rounds each side to whole pixels).
    """

    scale: float
    pad_x_px: float
    pad_y_px: float
    source_hw: tuple[int, int]
    scale_y: float | None = None

    @property
    def scale_xy(self) -> tuple[float, float]:
        """(x, y) input pixels per source pixel."""
        return self.scale, self.scale if self.scale_y is None else self.scale_y


@dataclass(frozen=True, slots=True)
class LetterboxTransform:
    """Fit a BGR frame into the model input and emit a CHW float32 tensor.

    By default: resize keeping the aspect ratio, place top-left, pad with grey (YOLOX).
    The fields cover the other families' contracts (see :class:`PreprocessSpec` and
    :meth:`from_spec`): centred padding, stretch resizing, RGB, pixel scale, mean/std.

    Attributes:
        input_hw: (height, width) of the model input in pixels.
        pad_value: grey level of the padding (YOLO family: 114), or one level per channel
            in the model's channel order (RGB when ``rgb``).
        centered: pad on both sides (Ultralytics) instead of right/bottom only (YOLOX).
        rgb: swap the decoded BGR image to RGB.
        scale_to_unit: divide pixel values by 255 (ignored when ``pixel_scale`` is set).
        stretch: resize to ``input_hw`` without keeping the aspect ratio (no padding).
        pixel_scale: factor applied to 0-255 values (None: 1/255 with ``scale_to_unit``,
            else 1).
        mean: per-channel value subtracted after scaling (model channel order).
        std: per-channel divisor applied after the mean.
    """

    input_hw: tuple[int, int]
    pad_value: int | tuple[int, int, int] = 114
    centered: bool = False
    rgb: bool = False
    scale_to_unit: bool = False
    stretch: bool = False
    pixel_scale: float | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if min(self.input_hw) <= 0:
            raise ConfigError(f"letterbox input size must be positive, got {self.input_hw}")

    @classmethod
    def from_spec(cls, spec: PreprocessSpec) -> LetterboxTransform:
        """The transform implementing a model's :class:`PreprocessSpec`."""
        return cls(
            input_hw=spec.input_hw,
            pad_value=spec.pad_value,
            centered=spec.resize is ResizeMode.LETTERBOX_CENTER,
            rgb=spec.channels is ChannelOrder.RGB,
            stretch=spec.resize is ResizeMode.STRETCH,
            pixel_scale=spec.scale,
            mean=spec.mean,
            std=spec.std,
        )

    def meta_for(self, source_hw: tuple[int, int]) -> LetterboxMeta:
        """Placement of an image of ``source_hw`` (height, width) in the input."""
        in_h, in_w = self.input_hw
        src_h, src_w = source_hw
        if self.stretch:
            return LetterboxMeta(in_w / src_w, 0.0, 0.0, (src_h, src_w), in_h / src_h)
        ratio = min(in_h / src_h, in_w / src_w)
        new_w, new_h = max(round(src_w * ratio), 1), max(round(src_h * ratio), 1)
        # Half the padding on each side, the odd pixel right/bottom (as Ultralytics does).
        pad_x = (in_w - new_w) // 2 if self.centered else 0
        pad_y = (in_h - new_h) // 2 if self.centered else 0
        scale_x, scale_y = new_w / src_w, new_h / src_h
        return LetterboxMeta(
            scale_x,
            float(pad_x),
            float(pad_y),
            (src_h, src_w),
            None if scale_y == scale_x else scale_y,
        )

    def __call__(
        self, image: npt.NDArray[np.uint8], out: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32], LetterboxMeta]:
        """Fit one BGR image into the input.

        Args:
            image: (H, W, 3) uint8 BGR.
            out: optional preallocated (3, in_h, in_w) float32 buffer to write into.

        Returns:
            ``(tensor, meta)``: tensor is (3, in_h, in_w) float32 in the model's channel
            order, ``(pixel * scale - mean) / std``; meta maps boxes back with
            :meth:`boxes_to_source`.
        """
        if image.ndim != 3 or image.shape[2] != 3:
            raise ConfigError(f"expected an (H, W, 3) image, got shape {image.shape}")
        meta = self.meta_for((image.shape[0], image.shape[1]))
        in_h, in_w = self.input_hw
        if self.stretch:
            canvas = cv2.resize(image, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
        else:
            pad = self.pad_value
            if isinstance(pad, tuple) and self.rgb:
                pad = (pad[2], pad[1], pad[0])  # the canvas is still BGR
            canvas = np.empty((in_h, in_w, 3), np.uint8)
            canvas[...] = pad
            scale_x, scale_y = meta.scale_xy
            new_w = round(image.shape[1] * scale_x)
            new_h = round(image.shape[0] * scale_y)
            x0, y0 = int(meta.pad_x_px), int(meta.pad_y_px)
            canvas[y0 : y0 + new_h, x0 : x0 + new_w] = cv2.resize(
                image, (new_w, new_h), interpolation=cv2.INTER_LINEAR
            )
        chw = canvas.transpose(2, 0, 1)
        if self.rgb:
            chw = chw[::-1]
        tensor = out if out is not None else np.empty((3, in_h, in_w), np.float32)
        # One pass: HWC uint8 -> CHW float32 without an intermediate copy.
        np.copyto(tensor, chw, casting="unsafe")
        self._normalise(tensor)
        return tensor, meta

    def _normalise(self, tensor: npt.NDArray[np.float32]) -> None:
        """In place: ``(x * scale - mean) / std`` as one multiply-add per channel."""
        scale = self.pixel_scale
        if scale is None:
            scale = 1.0 / 255.0 if self.scale_to_unit else 1.0
        if self.mean is None and self.std is None:
            if scale != 1.0:
                tensor *= np.float32(scale)
            return
        mean = np.asarray(self.mean if self.mean is not None else (0.0, 0.0, 0.0), np.float64)
        std = np.asarray(self.std if self.std is not None else (1.0, 1.0, 1.0), np.float64)
        gain = (scale / std).astype(np.float32)[:, None, None]
        offset = (-mean / std).astype(np.float32)[:, None, None]
        tensor *= gain
        tensor += offset

    @staticmethod
    def boxes_to_source(
        xyxy: npt.NDArray[np.float32], meta: LetterboxMeta
    ) -> npt.NDArray[np.float32]:
        """Map (N, 4) boxes from input pixels back to source pixels, clipped to the image."""
        scale_x, scale_y = meta.scale_xy
        out = np.empty_like(xyxy, dtype=np.float32)
        out[:, 0::2] = (xyxy[:, 0::2] - meta.pad_x_px) / scale_x
        out[:, 1::2] = (xyxy[:, 1::2] - meta.pad_y_px) / scale_y
        h, w = meta.source_hw
        np.clip(out[:, 0::2], 0.0, w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, h, out=out[:, 1::2])
        return out

    @staticmethod
    def boxes_to_input(
        xyxy: npt.NDArray[np.float32], meta: LetterboxMeta
    ) -> npt.NDArray[np.float32]:
        """Map (N, 4) boxes from source pixels into input pixels (inverse of the above)."""
        scale_x, scale_y = meta.scale_xy
        out = np.empty_like(xyxy, dtype=np.float32)
        out[:, 0::2] = xyxy[:, 0::2] * scale_x + meta.pad_x_px
        out[:, 1::2] = xyxy[:, 1::2] * scale_y + meta.pad_y_px
        return out
