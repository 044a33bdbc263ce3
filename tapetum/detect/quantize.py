"""Lower-precision copies of a detector: FP16 conversion and INT8 static quantization.

INT8 uses ONNX Runtime's ``quantize_static`` in QDQ format with per-channel weights,
calibrated on real frames put through the *model's own* preprocessing (any callable
``preprocess(image) -> (CHW float32 tensor, meta)``, e.g. a detector's ``.preprocess``), so
the activation ranges are those the model sees in use.

Two ends of the network stay in float by default, chosen by measurement on YOLOX-nano
(coco128 val2017, MinMax, 128 calibration images; FP32 mAP@[.5:.95] 33.8):

* the stem, the first ``float_stem=3`` convolutions and their activations. Quantizing
  everything gives 15.5 (−18 points): BN folded into the early depthwise convolution leaves
  channels with ranges 100× apart in one tensor, one per-tensor INT8 scale flattens the
  small ones and the next pointwise conv (weights up to 11) amplifies the error through
  the network (16-bit activations recover 34.0, so it is activations, not weights). With
  the stem in float: 33.2 (−0.6), at the cost of the largest-resolution convs staying
  FP32.
* the head's tail: the last conv of each branch and what follows it (sigmoids, concats,
  reshapes). A YOLO head concatenates box offsets (grid units) with 0-1 scores into one
  tensor; one INT8 scale over both would round scores away. It is small and cheap.

Example:
    >>> from tapetum.detect import YoloxDetector                               # doctest: +SKIP
    >>> det = YoloxDetector("yolox_nano.onnx")                                 # doctest: +SKIP
    >>> samples = plan_calibration(["crowd.mp4", "coco128/train2017"], 128)    # doctest: +SKIP
    >>> quantize_int8("yolox_nano.onnx", "yolox_nano_int8.onnx",
    ...               load_calibration_images(samples), det.preprocess)         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from tapetum.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

#: ``preprocess(image) -> (tensor, meta)``: (H, W, 3) BGR uint8 → (3, h, w) float32.
Preprocess = Callable[[npt.NDArray[np.uint8]], tuple[npt.NDArray[np.float32], Any]]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".ts", ".webm", ".m4v", ".mpg"})
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: ``head`` (default): the head's last convs and what follows them stay float; ``tail``:
#: only the ops after those convs; ``none``: quantize everything ORT can.
FLOAT_HEAD_CHOICES = ("head", "tail", "none")

#: Per-channel (axis) QuantizeLinear/DequantizeLinear need opset 13.
MIN_QDQ_OPSET = 13

#: metadata key recording the precision a file was converted to.
PRECISION_KEY = "tapetum.precision"


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True, slots=True)
class CalibrationSample:
    """One calibration image: a still image file, or frame ``frame`` (0-based) of a video."""

    path: Path
    frame: int | None = None


def plan_calibration(
    paths: Sequence[str | Path], n: int = 128, seed: int = 0
) -> list[CalibrationSample]:
    """Choose ``n`` calibration images from video files, image files and image folders.

    The budget is split evenly over the given paths (videos and folders alike). Frames of
    a video are spaced evenly over its length (neighbouring frames are near duplicates);
    images of a folder (searched recursively) are a seeded random sample.

    Raises:
        ConfigError: a path is missing, is neither video nor image, or holds no images.
    """
    if n < 1:
        raise ConfigError(f"calibration needs at least 1 image, got {n}")
    if not paths:
        raise ConfigError("no calibration data given (a video, an image or an image folder)")
    rng = random.Random(seed)
    shares = [n // len(paths) + (1 if i < n % len(paths) else 0) for i in range(len(paths))]
    samples: list[CalibrationSample] = []
    for raw, share in zip(paths, shares, strict=True):
        path = Path(raw)
        if path.is_dir():
            images = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not images:
                raise ConfigError(f"calibration folder {path} holds no images")
            chosen = sorted(rng.sample(images, min(share, len(images))))
            samples += [CalibrationSample(p) for p in chosen]
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            samples.append(CalibrationSample(path))
        elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            count = _count_frames(path)
            if count == 0:
                raise ConfigError(f"calibration video {path} has no readable frames")
            take = min(share, count)
            frames = sorted({int(i * count / take) for i in range(take)})
            samples += [CalibrationSample(path, f) for f in frames]
        elif path.exists():
            raise ConfigError(
                f"calibration path {path} is not a video ({', '.join(sorted(VIDEO_SUFFIXES))}), "
                f"an image or an image folder"
            )
        else:
            raise ConfigError(f"calibration path not found: {path}")
    return samples


def _count_frames(path: Path) -> int:
    # Container headers can be wrong (the crowd AVI claims twice its frames): count them.
    cap = cv2.VideoCapture(str(path))
    try:
        count = 0
        while cap.grab():
            count += 1
        return count
    finally:
        cap.release()


def load_calibration_images(
    samples: Sequence[CalibrationSample],
) -> Iterator[npt.NDArray[np.uint8]]:
    """Read the planned images as (H, W, 3) BGR uint8, one at a time (videos read once,
    front to back). Unreadable files are skipped with a warning."""
    by_video: dict[Path, set[int]] = {}
    for s in samples:
        if s.frame is not None:
            by_video.setdefault(s.path, set()).add(s.frame)
    for s in samples:
        if s.frame is None:
            image = cv2.imread(str(s.path), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("skipping unreadable calibration image %s", s.path)
                continue
            yield np.asarray(image, np.uint8)
        elif s.path in by_video:
            yield from _read_frames(s.path, by_video.pop(s.path))


def _read_frames(path: Path, wanted: set[int]) -> Iterator[npt.NDArray[np.uint8]]:
    cap = cv2.VideoCapture(str(path))
    try:
        last = max(wanted)
        for index in range(last + 1):
            if not cap.grab():
                return
            if index in wanted:
                ok, image = cap.retrieve()
                if ok:
                    yield np.asarray(image, np.uint8)
    finally:
        cap.release()


class ImageCalibrationReader:
    """ORT ``CalibrationDataReader`` over real images put through a model's preprocessing.

    Preprocessed tensors are kept (n × one input tensor, ~2 MB each at 416²) so that ORT
    can walk them in chunks (``set_range``) and never holds every intermediate activation of
    every image at once.
    """

    def __init__(
        self, input_name: str, images: Iterable[npt.NDArray[np.uint8]], preprocess: Preprocess
    ) -> None:
        self.input_name = input_name
        self.tensors = [
            np.ascontiguousarray(preprocess(img)[0][None], np.float32) for img in images
        ]
        if not self.tensors:
            raise ConfigError("no calibration image could be read")
        self._start, self._end, self._next = 0, len(self.tensors), 0

    def __len__(self) -> int:
        return len(self.tensors)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end, self._next = start_index, end_index, start_index

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        if self._next >= min(self._end, len(self.tensors)):
            return None
        self._next += 1
        return {self.input_name: self.tensors[self._next - 1]}

    def rewind(self) -> None:
        self.set_range(0, len(self.tensors))


# ----------------------------------------------------------------------------- convert


@dataclass(frozen=True, slots=True)
class QuantizeReport:
    """What a conversion did: output file, settings, nodes kept in float, time taken."""

    output: Path
    precision: str
    settings: dict[str, Any] = field(default_factory=dict)
    float_nodes: tuple[str, ...] = ()
    seconds: float = 0.0


def convert_fp16(
    src: str | Path,
    dst: str | Path,
    *,
    keep_io_types: bool = True,
    op_block_list: Sequence[str] | None = None,
) -> QuantizeReport:
    """Write an FP16 copy of ``src`` (weights and activations), float32 inputs/outputs.

    On CPU, ORT has few FP16 kernels and inserts casts, so this is mainly for GPUs; it halves
    the file either way. ``op_block_list`` names op types to keep in float32 (default:
    onnxconverter-common's list of ops without FP16 kernels).
    """
    import onnx

    from tapetum._optional import import_optional

    float16 = import_optional("onnxconverter_common.float16", "optimize", "FP16 conversion")

    t0 = time.perf_counter()
    model = _load(src)
    kwargs: dict[str, Any] = {"keep_io_types": keep_io_types}
    if op_block_list is not None:
        kwargs["op_block_list"] = list(op_block_list)
    with warnings.catch_warnings():  # one warning per tiny weight truncated to ±1e-7
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(model, **kwargs)
    _set_metadata(converted, _metadata(model), "fp16")
    onnx.save(converted, str(dst))
    return QuantizeReport(
        Path(dst), "fp16", {"keep_io_types": keep_io_types}, seconds=time.perf_counter() - t0
    )


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    images: Iterable[npt.NDArray[np.uint8]],
    preprocess: Preprocess,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    float_head: str = "head",
    float_stem: int = 3,
    exclude_nodes: Sequence[str] = (),
    symmetric_activations: bool = False,
    percentile: float = 99.999,
) -> QuantizeReport:
    """Write an INT8 (QDQ) copy of ``src`` calibrated on ``images``.

    Steps: ORT's ``quant_pre_process`` (shape inference, constant folding, BN fusion), then
    ``quantize_static`` with uint8 activations and int8 (per-channel) weights — the
    recommended pairing on x86 with VNNI and on ARM; for TensorRT set
    ``symmetric_activations`` (it wants symmetric int8 both ways).

    Args:
        images: BGR uint8 calibration images (see :func:`plan_calibration`).
        preprocess: the model's own preprocessing, image → ((3, h, w) float32, meta).
        method: ``minmax``, ``entropy`` or ``percentile`` activation ranges.
        float_head: which part of the output head stays float (see :data:`FLOAT_HEAD_CHOICES`).
        float_stem: leading convolutions (with their activations) kept float.
        exclude_nodes: further node names (of the pre-processed graph) to keep float.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"unknown calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}"
        )
    if float_stem < 0:
        raise ConfigError(f"float_stem must be ≥ 0, got {float_stem}")
    if float_head not in FLOAT_HEAD_CHOICES:
        raise ConfigError(
            f"unknown float_head {float_head!r}; use one of {', '.join(FLOAT_HEAD_CHOICES)}"
        )
    t0 = time.perf_counter()
    source = _load(src)
    if len(source.graph.input) != 1:
        raise ModelLoadError(f"{src}: INT8 calibration expects one image input")
    reader = ImageCalibrationReader(source.graph.input[0].name, images, preprocess)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    with tempfile.TemporaryDirectory(prefix="tapetum-quant-") as tmp:
        upgraded = Path(tmp) / "opset.onnx"
        onnx.save(_with_opset(source, MIN_QDQ_OPSET), str(upgraded))
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
        prepared_model = onnx.load(str(prepared))
        float_nodes = list(
            dict.fromkeys(
                [
                    *stem_nodes(prepared_model, float_stem),
                    *head_nodes(prepared_model, float_head),
                    *exclude_nodes,
                ]
            )
        )
        del prepared_model
        extra: dict[str, Any] = {
            "ActivationSymmetric": symmetric_activations,
            "WeightSymmetric": True,
            # Calibrate in chunks: ORT otherwise keeps every activation of every image.
            "CalibStridedMinMax": _chunk(len(reader)),
        }
        if method == "percentile":
            extra["CalibPercentile"] = percentile
        quantize_static(
            str(prepared),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=float_nodes,
            calibrate_method=methods[method],
            extra_options=extra,
        )
    out = _load(dst)
    _set_metadata(out, _metadata(source), "int8")
    onnx.save(out, str(dst))
    settings = {
        "format": "QDQ",
        "method": method,
        "per_channel": per_channel,
        "float_head": float_head,
        "float_stem": float_stem,
        "activations": "int8" if symmetric_activations else "uint8",
        "weights": "int8",
        "calibration_images": len(reader),
    }
    return QuantizeReport(Path(dst), "int8", settings, tuple(float_nodes), time.perf_counter() - t0)


def head_nodes(model: Any, which: str = "head") -> list[str]:
    """Names of the nodes of the output head's tail.

    Walks back from every graph output through non-Conv nodes (sigmoid, concat, reshape,
    transpose...), collecting them; with ``which="head"`` the Conv that ends each branch is
    collected too, and the walk stops at convs either way. ``which="none"`` → [].
    """
    if which == "none":
        return []
    producer = {out: node for node in model.graph.node for out in node.output}
    seen: dict[str, None] = {}
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        if node.op_type == "Conv":
            if which == "head":
                seen[node.name] = None
            continue
        seen[node.name] = None
        stack.extend(node.input)
    return list(seen)


def stem_nodes(model: Any, convs: int) -> list[str]:
    """Names of the nodes before the ``convs + 1``-th Conv in graph (topological) order:
    the first ``convs`` convolutions and the ops between them (input transforms,
    activations). ``convs=0`` → []."""
    if convs <= 0:
        return []
    names: list[str] = []
    seen = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            seen += 1
            if seen > convs:
                break
        names.append(node.name)
    return names


def model_size_mb(path: str | Path) -> float:
    """File size in MB (10⁶ bytes)."""
    return Path(path).stat().st_size / 1e6


def _chunk(n: int, most: int = 16) -> int:
    """The largest divisor of ``n`` not above ``most`` (ORT's chunking wants a divisor)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def _load(path: str | Path) -> Any:
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path} as an ONNX model: {exc}") from exc


def _with_opset(model: Any, opset: int) -> Any:
    """``model`` converted to at least ``opset`` of the default ONNX domain."""
    from onnx import version_converter

    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= opset:
        return model
    try:
        return version_converter.convert_version(model, opset)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot upgrade the model from opset {current} to {opset} for INT8: {exc}"
        ) from exc


def _metadata(model: Any) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _set_metadata(model: Any, metadata: dict[str, str], precision: str) -> None:
    """Carry the source's metadata over (converters drop it) and record the precision."""
    merged = {**_metadata(model), **metadata, PRECISION_KEY: precision}
    del model.metadata_props[:]
    for key, value in merged.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


__all__ = [
    "CALIBRATION_METHODS",
    "FLOAT_HEAD_CHOICES",
    "CalibrationSample",
    "ImageCalibrationReader",
    "QuantizeReport",
    "convert_fp16",
    "head_nodes",
    "load_calibration_images",
    "model_size_mb",
    "plan_calibration",
    "quantize_int8",
    "stem_nodes",
]
