"""An INT8 copy of a crop classifier, calibrated on real crops, checked against FP32.

The machinery is the detector's (:func:`tapetum.detect.quantize.quantize_int8`: ORT's static
QDQ quantization, per-channel int8 weights, uint8 activations, the VNNI pairing on x86);
what differs is the calibration data: *crops* cut by the classifier's own contract (margin,
letterbox, input size) from the boxes of a labelled dataset (COCO/YOLO, MOT ground truth or
a folder per class, as :func:`~tapetum.classify.datasets.load_crop_set` reads them). The
crops are a seeded sample; those not used to calibrate check the result: the share of crops
whose top-1 class the INT8 model agrees on with the FP32 one.

Example:
    >>> q = quantize_classifier("effnet_lite0.onnx", "effnet_lite0_int8.onnx",
    ...                         "coco128", split="train2017")        # doctest: +SKIP
    >>> round(q.agreement_top1, 3), q.check_crops                      # doctest: +SKIP
    (0.97, 256)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tapetum._types import Float32Array, IntArray, UInt8Array
from tapetum.classify.crops import cut_crops, normalize_batch
from tapetum.classify.datasets import CropSet, load_crop_set, read_image
from tapetum.classify.spec import ClassifierSpec
from tapetum.detect.quantize import QuantizeReport
from tapetum.errors import ConfigError, DatasetError

__all__ = [
    "ClassifierQuantization",
    "crop_pixels",
    "quantize_classifier",
    "quantize_on_crops",
    "top1_agreement",
]

#: Kept in float by default, as for the detectors: the first 3 convolutions and the head's
#: last conv onwards. Measured on EfficientNet-Lite0 at 224 (841 coco128 val2017 box crops,
#: MinMax on 256 train2017 crops): top-1 agreement with FP32 0.78 with nothing kept float,
#: 0.85 with this, 0.89 with 8 stem convs float, at 2.1x, 2.0x and 1.7x FP32's speed on one
#: thread. Crops FP32 is sure of (p >= 0.5) agree in every setting; the disagreements are
#: near-ties among 1000 ImageNet classes on crops ImageNet has no class for.
DEFAULT_FLOAT_STEM = 3
DEFAULT_FLOAT_HEAD = "head"


@dataclass(frozen=True, slots=True)
class ClassifierQuantization:
    """An INT8 conversion and its check.

    Attributes:
        report: what the conversion did (file, settings, float nodes, seconds).
        calibration_crops: crops the activation ranges were taken from.
        check_crops: other crops of the same data, run through both models.
        agreement_top1: share of the check crops with the same top-1 class in both.
    """

    report: QuantizeReport
    calibration_crops: int
    check_crops: int
    agreement_top1: float


def crop_pixels(crops: CropSet, spec: ClassifierSpec) -> UInt8Array:
    """Every crop of ``crops`` cut and fitted as ``spec`` says: (N, H, W, 3) uint8 BGR in
    row order (NaN boxes: the whole image).

    Raises:
        DatasetError: an image cannot be read, or a box is outside its image.
    """
    out = np.empty((len(crops), *spec.input_hw, 3), np.uint8)
    for path, rows in crops.by_image():
        image = read_image(path)
        boxes = crops.xyxy[rows].copy()
        whole = np.isnan(boxes).any(axis=1)
        boxes[whole] = [0, 0, image.shape[1], image.shape[0]]
        cut = cut_crops(image, boxes, spec)
        if not cut.valid.all():
            bad = rows[~cut.valid].tolist()
            raise DatasetError(f"{path}: crop rows {bad} are outside the image or empty")
        out[rows] = cut.pixels
    return out


def top1_agreement(a: Float32Array, b: Float32Array) -> float:
    """Share of rows of two (N, K) score arrays whose arg-max is the same."""
    if a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(f"need two equal non-empty (N, K) arrays, got {a.shape} and {b.shape}")
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def quantize_classifier(
    src: str | Path,
    dst: str | Path,
    data: str | Path,
    *,
    split: str | None = None,
    calibration_crops: int = 256,
    check_crops: int = 256,
    seed: int = 0,
    method: str = "minmax",
    float_stem: int = DEFAULT_FLOAT_STEM,
    float_head: str = DEFAULT_FLOAT_HEAD,
) -> ClassifierQuantization:
    """Write an INT8 (QDQ) copy of the classifier ``src`` calibrated on crops of ``data``,
    and check it against ``src`` on held-out crops of the same data.

    Args:
        data: labelled boxes to crop (see :func:`~tapetum.classify.datasets.load_crop_set`).
        split: its split (e.g. ``train2017``).
        calibration_crops / check_crops: sizes of the two disjoint seeded samples (the check
            gets what is left when the data holds fewer crops).
        method, float_stem, float_head: as :func:`tapetum.detect.quantize.quantize_int8`.

    Raises:
        ConfigError: sample sizes under 1; DatasetError: no crops in ``data``;
        ModelLoadError, ClassifierError: ``src`` is not a classifier.
    """
    if calibration_crops < 1 or check_crops < 0:
        raise ConfigError(
            f"need ≥ 1 calibration crop and ≥ 0 check crops, got {calibration_crops}, {check_crops}"
        )
    crops = load_crop_set(data, split=split)
    calib_rows, check_rows = _sample(len(crops), calibration_crops, check_crops, seed)
    return quantize_on_crops(
        src,
        dst,
        crops.subset(calib_rows),
        crops.subset(check_rows) if check_rows.size else None,
        method=method,
        float_stem=float_stem,
        float_head=float_head,
    )


def quantize_on_crops(
    src: str | Path,
    dst: str | Path,
    calibration: CropSet,
    check: CropSet | None = None,
    *,
    method: str = "minmax",
    float_stem: int = DEFAULT_FLOAT_STEM,
    float_head: str = DEFAULT_FLOAT_HEAD,
) -> ClassifierQuantization:
    """Write an INT8 (QDQ) copy of ``src`` calibrated on every crop of ``calibration`` and,
    when ``check`` is given, measure its top-1 agreement with ``src`` on those crops
    (:func:`quantize_classifier` draws both from one dataset; ``tapetum train classify
    --int8`` calibrates on training crops and checks on the validation ones).

    Raises:
        ConfigError: ``calibration`` is empty; DatasetError: a crop cannot be cut.
    """
    from tapetum.classify.runtime import OnnxClassifier
    from tapetum.detect.quantize import quantize_int8
    from tapetum.detect.runtime import RuntimeOptions

    if len(calibration) == 0:
        raise ConfigError("INT8 calibration needs at least one crop, got none")
    runtime = RuntimeOptions(intra_op_threads=0, workers=1)
    fp32 = OnnxClassifier(src, runtime=runtime)
    spec = fp32.spec
    calib = crop_pixels(calibration, spec)
    report = quantize_int8(
        src,
        dst,
        iter(calib),
        lambda px: (normalize_batch(px[None], spec)[0], None),
        method=method,
        float_stem=float_stem,
        float_head=float_head,
    )
    agreement = float("nan")
    if check is not None and len(check):
        tensor = normalize_batch(crop_pixels(check, spec), spec)
        int8 = OnnxClassifier(dst, runtime=runtime)
        agreement = top1_agreement(fp32.predict(tensor), int8.predict(tensor))
    return ClassifierQuantization(
        report, len(calibration), len(check) if check is not None else 0, agreement
    )


def _sample(n: int, calib: int, check: int, seed: int) -> tuple[IntArray, IntArray]:
    """Two disjoint seeded samples of ``range(n)``: calibration first, the check gets the
    rest up to ``check``."""
    order = np.random.default_rng(seed).permutation(n)
    take = min(calib, n)
    return np.sort(order[:take]), np.sort(order[take : take + check])
