"""Boxes of one frame → one classifier input tensor.

The geometry (margin, centre crop, clipping to the frame, which boxes are usable) is array
work over all boxes at once; each usable crop is then one ``cv2.resize`` from a view of the
frame (only the crop's pixels are read) into a preallocated uint8 batch
(:func:`cut_crops`), and the pixel arithmetic (channel order, scale, mean/std, HWC → CHW)
is one vectorised pass over the whole batch (:func:`normalize_batch`), optionally into a
preallocated float32 buffer. The two halves are separate so that the asynchronous stage can
cut on the stream's thread (small uint8 crops; the frame is not kept) and normalise the
crops of many frames at once on the classifier's thread.

A box that is not finite, lies outside the frame, or is under one pixel wide or high once
clipped is not cropped: it is reported in the ``valid`` mask, and the caller counts it.

Example:
    >>> import numpy as np
    >>> spec = ClassifierSpec.imagenet(32)
    >>> image = np.zeros((100, 200, 3), np.uint8)
    >>> boxes = np.array([[10, 10, 60, 90], [250, 10, 300, 50], [5, 5, 5, 40]], np.float32)
    >>> batch = crop_batch(image, boxes, spec)
    >>> batch.tensor.shape, batch.valid.tolist()
    ((1, 3, 32, 32), [True, False, False])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray, UInt8Array
from tapetum.classify.spec import ClassifierSpec, CropFit
from tapetum.detect.spec import ChannelOrder

__all__ = ["CropBatch", "CropPixels", "crop_batch", "crop_rects", "cut_crops", "normalize_batch"]

#: Smallest crop side (pixels, after clipping) worth classifying.
MIN_CROP_PX = 1


@dataclass(frozen=True, slots=True)
class CropBatch:
    """Model input for the usable boxes of one frame.

    Attributes:
        tensor: (M, 3, H, W) float32, one row per True in ``valid``, in box order.
        valid: (N,) bool over the boxes given: True where a crop was cut.
    """

    tensor: Float32Array
    valid: BoolArray

    @property
    def skipped(self) -> int:
        """Boxes that could not be cropped (outside the frame, zero size, not finite)."""
        return int(self.valid.size - np.count_nonzero(self.valid))


@dataclass(frozen=True, slots=True)
class CropPixels:
    """The usable boxes of one frame, cut and fitted but not yet normalised.

    Attributes:
        pixels: (M, H, W, 3) uint8 BGR at the model's input size, one per True in ``valid``.
        valid: (N,) bool over the boxes given: True where a crop was cut.
    """

    pixels: UInt8Array
    valid: BoolArray

    @property
    def skipped(self) -> int:
        """Boxes that could not be cropped (outside the frame, zero size, not finite)."""
        return int(self.valid.size - np.count_nonzero(self.valid))


def crop_rects(
    xyxy: Float32Array | Float64Array, frame_hw: tuple[int, int], spec: ClassifierSpec
) -> tuple[IntArray, BoolArray]:
    """Integer source rectangles of each box's crop, clipped to the frame.

    Args:
        xyxy: (N, 4) box corners in frame pixels.
        frame_hw: (height, width) of the frame.
        spec: margin, fit and crop fraction.

    Returns:
        ``rects``: (N, 4) int64 ``x1, y1, x2, y2`` (end-exclusive), and ``valid``: (N,) bool,
        False for boxes that are not finite or leave under ``MIN_CROP_PX`` once clipped.
    """
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    finite = np.asarray(np.isfinite(boxes).all(axis=1), np.bool_)
    boxes = np.where(finite[:, None], boxes, 0.0)
    x1, y1, x2, y2 = boxes.T
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if spec.margin:
        w, h = w * (1 + 2 * spec.margin), h * (1 + 2 * spec.margin)
    if spec.fit is CropFit.CENTER_CROP:
        in_h, in_w = spec.input_hw
        aspect = in_w / in_h
        # the largest input-shaped region inside the box, shrunk to crop_pct
        cw = np.minimum(w, h * aspect) * spec.crop_pct
        w, h = cw, cw / aspect
    fh, fw = frame_hw
    rects = np.stack(
        (
            np.floor(cx - w / 2),
            np.floor(cy - h / 2),
            np.ceil(cx + w / 2),
            np.ceil(cy + h / 2),
        ),
        axis=1,
    )
    rects = np.clip(rects, 0, [fw, fh, fw, fh]).astype(np.int64)
    sides = rects[:, 2:] - rects[:, :2]
    valid = finite & (w > 0) & (h > 0) & (sides >= MIN_CROP_PX).all(axis=1)
    return rects, valid


def crop_batch(image: UInt8Array, xyxy: Float32Array, spec: ClassifierSpec) -> CropBatch:
    """Cut, fit and normalise the crops of ``xyxy`` from ``image`` (BGR, (H, W, 3) uint8)."""
    cut = cut_crops(image, xyxy, spec)
    return CropBatch(normalize_batch(cut.pixels, spec), cut.valid)


def cut_crops(image: UInt8Array, xyxy: Float32Array, spec: ClassifierSpec) -> CropPixels:
    """Cut and fit (stretch, centre crop or letterbox) the crops of ``xyxy`` from ``image``
    (BGR, (H, W, 3) uint8): one ``cv2.resize`` per crop, reading only the crop's pixels."""
    import cv2

    rects, valid = crop_rects(xyxy, (int(image.shape[0]), int(image.shape[1])), spec)
    in_h, in_w = spec.input_hw
    rows = np.flatnonzero(valid)
    pixels = np.empty((rows.size, in_h, in_w, 3), np.uint8)
    letterbox = spec.fit is CropFit.LETTERBOX
    if letterbox:
        pixels[:] = _pad_bgr(spec)
    for k, (x1, y1, x2, y2) in enumerate(rects[rows].tolist()):
        crop = image[y1:y2, x1:x2]
        if not letterbox:
            cv2.resize(crop, (in_w, in_h), dst=pixels[k], interpolation=cv2.INTER_LINEAR)
            continue
        scale = min(in_w / (x2 - x1), in_h / (y2 - y1))
        nw = max(1, min(in_w, round((x2 - x1) * scale)))
        nh = max(1, min(in_h, round((y2 - y1) * scale)))
        top, left = (in_h - nh) // 2, (in_w - nw) // 2
        # a strided view is no cv2 ``dst``: resize, then copy into the padded slot
        pixels[k, top : top + nh, left : left + nw] = cv2.resize(
            crop, (nw, nh), interpolation=cv2.INTER_LINEAR
        )
    return CropPixels(pixels, valid)


def normalize_batch(
    pixels: UInt8Array, spec: ClassifierSpec, out: Float32Array | None = None
) -> Float32Array:
    """(M, H, W, 3) uint8 BGR → (M, 3, H, W) float32 in the model's channel order, scaled
    and standardised (one fused multiply-add per pixel).

    Args:
        out: a preallocated (M, 3, H, W) float32 buffer to write into (e.g. a view of a
            reused batch buffer); None allocates one.
    """
    pre = spec.preprocess
    if pre.channels is ChannelOrder.RGB:
        pixels = pixels[..., ::-1]
    mean = np.asarray(pre.mean if pre.mean is not None else (0.0, 0.0, 0.0), np.float32)
    std = np.asarray(pre.std if pre.std is not None else (1.0, 1.0, 1.0), np.float32)
    # (p * scale - mean) / std  ==  p * (scale / std) - mean / std
    gain, offset = np.float32(pre.scale) / std, mean / std
    shape = (pixels.shape[0], 3, *pixels.shape[1:3])
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"normalize_batch: out is {out.dtype}{out.shape}, want float32{shape}")
    np.multiply(pixels.transpose(0, 3, 1, 2), gain[None, :, None, None], out=out)
    out -= offset[None, :, None, None]
    return out


def _pad_bgr(spec: ClassifierSpec) -> UInt8Array:
    """The letterbox padding colour as BGR pixels (the spec's pad is in model order)."""
    pad = spec.preprocess.pad_value
    levels = np.asarray(pad if isinstance(pad, tuple) else (pad, pad, pad), np.uint8)
    return levels[::-1] if spec.preprocess.channels is ChannelOrder.RGB else levels
