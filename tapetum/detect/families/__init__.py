"""Model families: one adapter per output layout, chosen by name.

=================  ==========================================================  =====
family             output                                                      NMS
=================  ==========================================================  =====
``yolox``          YOLOX raw head [B, A, 5 + C], grid offsets                  yes
``yolox-decoded``  YOLOX with decoding in the graph [B, A, 5 + C], pixels      yes
``yolov5``         classic YOLOv5 [B, N, 5 + C], pixels, objectness            yes
``yolov8``         Ultralytics [B, 4 + C, N] (YOLOv5u, YOLOv8, YOLO11)         yes
``rtdetr``         DETR-style queries (RT-DETR), normalised boxes              no
``effdet``         already through NMS (EfficientDet, Ultralytics end2end)     no
=================  ==========================================================  =====

Example:
    >>> normalize_arch("yolo11n")
    'yolov8'
    >>> default_preprocess("yolov8", (640, 640)).channels
    <ChannelOrder.RGB: 'rgb'>
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from tapetum.detect.classes import COCO80, COCO90
from tapetum.detect.families.base import Family, OutputInfo, OutputLayout
from tapetum.detect.families.effdet import PostNmsDetections
from tapetum.detect.families.rtdetr import DetrQueries
from tapetum.detect.families.yolov5 import Yolov5Head
from tapetum.detect.families.yolov8 import UltralyticsHead
from tapetum.detect.families.yolox import YoloxDecodedHead, YoloxRawHead, head_is_decoded
from tapetum.detect.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ChannelOrder,
    PreprocessSpec,
    ResizeMode,
)
from tapetum.errors import ConfigError

__all__ = [
    "ARCH_ALIASES",
    "FAMILIES",
    "DetrQueries",
    "Family",
    "OutputInfo",
    "OutputLayout",
    "PostNmsDetections",
    "UltralyticsHead",
    "Yolov5Head",
    "YoloxDecodedHead",
    "YoloxRawHead",
    "build_family",
    "default_class_names",
    "default_preprocess",
    "head_is_decoded",
    "infer_families",
    "normalize_arch",
]

FAMILIES: dict[str, type[Family]] = {
    f.name: f
    for f in (
        YoloxRawHead,
        YoloxDecodedHead,
        Yolov5Head,
        UltralyticsHead,
        DetrQueries,
        PostNmsDetections,
    )
}

#: Other names users give these families (model names, sizes stripped by normalize_arch).
ARCH_ALIASES = {
    "yolox-raw": "yolox",
    "yolov5u": "yolov8",
    "yolo11": "yolov8",
    "yolo12": "yolov8",
    "yolov9": "yolov8",
    "ultralytics": "yolov8",
    "rt-detr": "rtdetr",
    "detr": "rtdetr",
    "efficientdet": "effdet",
    "tf_efficientdet": "effdet",
    "yolov10": "effdet",
    "yolo26": "effdet",
    "end2end": "effdet",
}

# yolov8n / yolo11s / yolov5nu / yolox_nano / rtdetr-l / tf_efficientdet_d0 → base name
_SIZE_SUFFIX = re.compile(
    r"^(?P<base>yolov5|yolov8|yolov9|yolov10|yolo11|yolo12|yolo26)(?P<size>[nsmlxtc]?)(?P<u>u?)"
    r"(?:[-_.].*)?$"
)
_PREFIXES = (("yolox", "yolox"), ("rtdetr", "rtdetr"), ("rt-detr", "rtdetr"))


def normalize_arch(arch: str) -> str:
    """The family for a user's ``--arch`` (a family, an alias or a model name like yolo11n).

    Raises:
        ConfigError: unknown name; the message lists the families.
    """
    key = arch.strip().lower().replace(" ", "")
    if key in FAMILIES:
        return key
    if key in ARCH_ALIASES:
        return ARCH_ALIASES[key]
    match = _SIZE_SUFFIX.match(key)
    if match:
        base = match["base"]
        if base == "yolov5":
            return "yolov8" if match["u"] else "yolov5"
        return ARCH_ALIASES.get(base, "yolov8")
    if "efficientdet" in key:
        return "effdet"
    for prefix, family in _PREFIXES:
        if key.startswith(prefix):
            return family
    known = ", ".join(FAMILIES)
    raise ConfigError(
        f"unknown arch {arch!r}; known families: {known} "
        f"(model names like yolo11n, yolov5nu, rtdetr-l, tf_efficientdet_d0 work too)"
    )


def default_preprocess(family: str, input_hw: tuple[int, int]) -> PreprocessSpec:
    """The input contract of a family's usual exports (used when the file says nothing)."""
    if family in ("yolox", "yolox-decoded"):  # official YOLOX: BGR 0-255, top-left
        return PreprocessSpec(input_hw, ResizeMode.LETTERBOX, 114, ChannelOrder.BGR, 1.0)
    if family == "rtdetr":  # Ultralytics' RT-DETR predictor stretches
        return PreprocessSpec(input_hw, ResizeMode.STRETCH, 114, ChannelOrder.RGB, 1 / 255)
    if family == "effdet":  # effdet: RGB, ImageNet mean/std, top-left, padded with the mean
        pad = tuple(round(m * 255) for m in IMAGENET_MEAN)
        return PreprocessSpec(
            input_hw,
            ResizeMode.LETTERBOX,
            (pad[0], pad[1], pad[2]),
            ChannelOrder.RGB,
            1 / 255,
            IMAGENET_MEAN,
            IMAGENET_STD,
        )
    return PreprocessSpec(input_hw, ResizeMode.LETTERBOX_CENTER, 114, ChannelOrder.RGB, 1 / 255)


def default_class_names(family: str, num_classes: int | None) -> tuple[str, ...]:
    """COCO names when the class count says COCO, else ``class0``, ``class1``, ..."""
    if num_classes == len(COCO80):
        return COCO80
    if num_classes is None:
        # post-NMS outputs do not say how many classes: EfficientDet's COCO numbering
        return COCO90 if family == "effdet" else COCO80
    if num_classes == len(COCO90):
        return COCO90
    return tuple(f"class{i}" for i in range(num_classes))


def build_family(
    family: str,
    outputs: Sequence[OutputInfo],
    input_hw: tuple[int, int],
    num_classes: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Family:
    """The adapter of ``family`` for these outputs.

    Raises:
        ConfigError: unknown family.
        ModelLoadError: the outputs are not of this family's layout.
    """
    factory = FAMILIES.get(family)
    if factory is None:
        raise ConfigError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return factory(OutputLayout(outputs, input_hw, num_classes, options or {}))


def infer_families(outputs: Sequence[OutputInfo], input_hw: tuple[int, int]) -> list[str]:
    """Families whose layout these (concrete) output shapes fit."""
    return [name for name, f in FAMILIES.items() if f.looks_like(outputs, input_hw)]
