"""What an image classifier expects: the crop contract and where it is written down.

A classifier reads crops of tracked objects, not whole frames, so its contract adds two
things to the detector's :class:`~tapetum.detect.spec.PreprocessSpec` (input size, channel
order, pixel scale, mean/std): how a box is fitted into the input (:class:`CropFit`) and how
much context around the box is kept (``margin``).

``tapetum export`` writes it as the detector does: a :class:`~tapetum.detect.spec.ModelMeta`
with ``family="classifier"`` in the ONNX file's ``tapetum`` metadata block, the fit, crop
fraction, margin and output kind under ``options``. Ultralytics ``-cls`` exports are read
from their own metadata (``task: classify``, ``names``, ``imgsz``; resize the shorter side,
centre crop, RGB ÷255).

Example:
    >>> spec = ClassifierSpec.imagenet(224)
    >>> spec.fit.value, spec.preprocess.channels.value, spec.preprocess.mean
    ('stretch', 'rgb', (0.485, 0.456, 0.406))
    >>> ClassifierSpec.from_meta(spec.to_meta(("cat", "dog"))) == spec
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# The Ultralytics metadata parsers (``_parse_names``, ``_parse_imgsz``) are the detector
# reader's own: one reading of ``names``/``imgsz`` for both tasks; ``input_size`` (a size
# given by a user) is re-exported here for the classifier commands.
from tapetum.detect.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    METADATA_KEY,
    ChannelOrder,
    ModelMeta,
    PreprocessSpec,
    ResizeMode,
    _parse_imgsz,
    _parse_names,
    input_size,
)
from tapetum.errors import ClassifierError

log = logging.getLogger(__name__)

__all__ = [
    "CLASSIFIER_FAMILY",
    "ClassifierSpec",
    "CropFit",
    "OutputKind",
    "classifier_meta",
    "input_size",
]

#: ``ModelMeta.family`` of a classifier exported by Tapetum.
CLASSIFIER_FAMILY = "classifier"
#: Letterbox padding of ImageNet models: the mean colour (RGB 0-255), zero once normalised.
IMAGENET_PAD = (124, 116, 104)


class CropFit(StrEnum):
    """How a box is fitted into the classifier's input."""

    #: the whole box, resized to the input (aspect ratio not kept): nothing is cut off
    STRETCH = "stretch"
    #: the whole box, aspect ratio kept, centred and padded
    LETTERBOX = "letterbox"
    #: the box's centre at the input's aspect ratio, ``crop_pct`` of its shorter side
    #: (ImageNet evaluation: resize the shorter side, then cut the centre)
    CENTER_CROP = "center_crop"


class OutputKind(StrEnum):
    """What the model's output vector holds."""

    LOGITS = "logits"
    PROBABILITIES = "probabilities"


@dataclass(frozen=True, slots=True)
class ClassifierSpec:
    """The input contract of a crop classifier.

    The tensor for one box is: the box enlarged by ``margin`` of its size on each side,
    clipped to the frame, fitted into ``preprocess.input_hw`` by ``fit``, then
    ``(pixel * scale - mean) / std`` per channel in ``preprocess.channels`` order, CHW.

    Attributes:
        preprocess: input size, channel order, scale, mean/std (``resize`` and
            ``pad_value`` are read only for ``fit=LETTERBOX``: the padding grey level).
        fit: how the box is fitted into the input.
        crop_pct: fraction of the box's shorter side kept by ``CENTER_CROP`` (0.875 is
            ImageNet's 224/256); ignored by the other fits.
        margin: context added around the box, as a fraction of its width/height per side
            (0.1: a 100 px box becomes 120 px). Detector boxes are tight; ImageNet photos
            are not.
        output: what the output holds; None = decided from the output on load (rows that
            are non-negative and sum to 1 are probabilities).
    """

    preprocess: PreprocessSpec
    fit: CropFit = CropFit.STRETCH
    crop_pct: float = 1.0
    margin: float = 0.0
    output: OutputKind | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.crop_pct) and 0 < self.crop_pct <= 1):
            raise ClassifierError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if not (math.isfinite(self.margin) and 0 <= self.margin <= 1):
            raise ClassifierError(f"margin must be in [0, 1], got {self.margin}")

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.preprocess.input_hw

    @classmethod
    def imagenet(
        cls,
        size: int | tuple[int, int] = 224,
        *,
        fit: CropFit = CropFit.STRETCH,
        crop_pct: float = 1.0,
        margin: float = 0.0,
        output: OutputKind | None = OutputKind.LOGITS,
    ) -> ClassifierSpec:
        """torchvision/timm ImageNet preprocessing: RGB, ÷255, ImageNet mean/std (letterbox
        padding in the mean colour)."""
        hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return cls(
            PreprocessSpec(
                hw,
                ResizeMode.LETTERBOX_CENTER if fit is CropFit.LETTERBOX else ResizeMode.STRETCH,
                IMAGENET_PAD,
                ChannelOrder.RGB,
                1 / 255,
                IMAGENET_MEAN,
                IMAGENET_STD,
            ),
            fit,
            crop_pct,
            margin,
            output,
        )

    def with_input_hw(self, input_hw: tuple[int, int]) -> ClassifierSpec:
        return ClassifierSpec(
            self.preprocess.with_input_hw(input_hw),
            self.fit,
            self.crop_pct,
            self.margin,
            self.output,
        )

    def options(self) -> dict[str, Any]:
        """The ``ModelMeta.options`` entries that carry this spec's classifier fields."""
        out: dict[str, Any] = {
            "task": "classify",
            "fit": self.fit.value,
            "crop_pct": self.crop_pct,
            "margin": self.margin,
        }
        if self.output is not None:
            out["output"] = self.output.value
        return out

    def to_meta(
        self, class_names: tuple[str, ...], *, arch: str = "", source: str = "", version: str = ""
    ) -> ModelMeta:
        """The metadata block ``tapetum export`` writes for a classifier."""
        return ModelMeta(
            CLASSIFIER_FAMILY,
            self.preprocess,
            class_names,
            arch=arch,
            source=source,
            version=version,
            options=self.options(),
        )

    @classmethod
    def from_meta(cls, meta: ModelMeta) -> ClassifierSpec:
        """Inverse of :meth:`to_meta`; malformed options are a ``ClassifierError``."""
        opts = dict(meta.options)
        default_fit = (
            CropFit.LETTERBOX
            if meta.preprocess.resize is not ResizeMode.STRETCH
            else CropFit.STRETCH
        )
        try:
            output = opts.get("output")
            return cls(
                meta.preprocess,
                CropFit(opts.get("fit", default_fit.value)),
                float(opts.get("crop_pct", 1.0)),
                float(opts.get("margin", 0.0)),
                OutputKind(output) if output is not None else None,
            )
        except (TypeError, ValueError) as exc:
            raise ClassifierError(f"malformed classifier options {opts}: {exc}") from exc


def classifier_meta(props: Mapping[str, str]) -> tuple[ClassifierSpec, tuple[str, ...]] | None:
    """The spec and class names an ONNX file's ``metadata_props`` declare, or None.

    Reads Tapetum's block (``family="classifier"``) or Ultralytics' (``task: classify``).

    Raises:
        ClassifierError: the file declares another task (a detector's metadata block, an
            Ultralytics detect/segment/pose model).
    """
    if METADATA_KEY in props:
        meta = ModelMeta.from_json(props[METADATA_KEY])
        if meta.family != CLASSIFIER_FAMILY:
            raise ClassifierError(
                f"this is a {meta.family!r} detector ({meta.arch or 'no arch'}), not a "
                f"classifier: export one with `tapetum export efficientnet_lite0`"
            )
        return ClassifierSpec.from_meta(meta), meta.class_names
    if "names" in props and "task" in props:
        task = props["task"]
        if task != "classify":
            raise ClassifierError(f"this is an Ultralytics {task!r} model, not a 'classify' one")
        hw = _parse_imgsz(props.get("imgsz", "")) or (224, 224)
        # Ultralytics' classify_transforms: resize the shorter side, centre crop, RGB ÷255,
        # mean 0 / std 1; the exported head ends in a softmax.
        spec = ClassifierSpec(
            PreprocessSpec(hw, ResizeMode.STRETCH, 0, ChannelOrder.RGB, 1 / 255),
            CropFit.CENTER_CROP,
            1.0,
            0.0,
            OutputKind.PROBABILITIES,
        )
        return spec, _parse_names(props["names"])
    return None
