"""What a detection model expects and what it is.

:class:`PreprocessSpec` is the input contract (size, resize mode, channel order, pixel
scaling); :class:`ModelMeta` adds the family, class names and provenance. ``tapetum
export`` writes a ``ModelMeta`` into the ONNX file's ``metadata_props`` as JSON under
:data:`METADATA_KEY`; loaders read it back, and also understand the metadata Ultralytics
writes (``names``, ``imgsz``, ``task``, ``head``, ``end2end``, ...), so an Ultralytics
export loads with no ``--arch``.

Example:
    >>> spec = PreprocessSpec((640, 640), ResizeMode.LETTERBOX_CENTER, channels=ChannelOrder.RGB,
    ...                       scale=1 / 255)
    >>> meta = ModelMeta("yolov8", spec, ("person", "bus"))
    >>> ModelMeta.from_json(meta.to_json()) == meta
    True
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from tapetum.errors import ConfigError, ModelLoadError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "METADATA_KEY",
    "ChannelOrder",
    "ModelMeta",
    "PreprocessSpec",
    "ResizeMode",
    "input_size",
    "read_onnx_metadata",
    "ultralytics_meta",
    "write_model_meta",
]

#: The ``metadata_props`` key holding Tapetum's JSON block.
METADATA_KEY = "tapetum"
#: Version of that JSON layout; a newer one is refused with a clear message.
METADATA_SCHEMA = 1

#: ImageNet statistics of pixel values scaled to 0-1, RGB order.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResizeMode(StrEnum):
    """How a frame is fitted into the model input."""

    #: keep the aspect ratio, image at the top-left, pad right and bottom (YOLOX, EfficientDet)
    LETTERBOX = "letterbox"
    #: keep the aspect ratio, pad both sides equally (Ultralytics, YOLOv5)
    LETTERBOX_CENTER = "letterbox_center"
    #: resize to the input size, aspect ratio not kept (Ultralytics RT-DETR)
    STRETCH = "stretch"


class ChannelOrder(StrEnum):
    """Channel order the model reads (frames arrive BGR, as OpenCV decodes them)."""

    BGR = "bgr"
    RGB = "rgb"


Triple = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    """The input contract of a detection model.

    The tensor a model reads is ``(pixel * scale - mean) / std`` per channel, laid out CHW,
    after resizing the frame by ``resize`` into ``input_hw``.

    Attributes:
        input_hw: (height, width) of the model input in pixels.
        resize: letterbox (top-left or centred) or stretch.
        pad_value: grey level of the letterbox padding (0-255), or one level per channel in
            the model's channel order (EfficientDet pads with the ImageNet mean colour).
        channels: channel order the model reads.
        scale: factor applied to 0-255 pixel values (1/255 for most PyTorch models).
        mean: per-channel value subtracted after scaling (model channel order), or None.
        std: per-channel divisor applied after subtracting the mean, or None.
    """

    input_hw: tuple[int, int]
    resize: ResizeMode = ResizeMode.LETTERBOX
    pad_value: int | tuple[int, int, int] = 114
    channels: ChannelOrder = ChannelOrder.BGR
    scale: float = 1.0
    mean: Triple | None = None
    std: Triple | None = None

    def __post_init__(self) -> None:
        if len(self.input_hw) != 2 or min(self.input_hw) <= 0:
            raise ModelLoadError(f"input size must be two positive sizes, got {self.input_hw}")
        pads = self.pad_value if isinstance(self.pad_value, tuple) else (self.pad_value,)
        if len(pads) not in (1, 3) or not all(0 <= int(p) <= 255 for p in pads):
            raise ModelLoadError(f"pad value must be 0-255 (one or three), got {self.pad_value}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ModelLoadError(f"pixel scale must be a positive number, got {self.scale}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and (len(value) != 3 or not all(math.isfinite(v) for v in value)):
                raise ModelLoadError(f"{name} must be three numbers, got {value}")
        if self.std is not None and any(v == 0 for v in self.std):
            raise ModelLoadError(f"std must not contain 0, got {self.std}")

    def with_input_hw(self, input_hw: tuple[int, int]) -> PreprocessSpec:
        return replace(self, input_hw=(int(input_hw[0]), int(input_hw[1])))

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_hw": list(self.input_hw),
            "resize": self.resize.value,
            "pad_value": list(self.pad_value)
            if isinstance(self.pad_value, tuple)
            else self.pad_value,
            "channels": self.channels.value,
            "scale": self.scale,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        """Inverse of :meth:`to_dict`; a malformed block is a ``ModelLoadError``."""
        try:
            pad = data.get("pad_value", 114)
            mean, std = data.get("mean"), data.get("std")
            hw = data["input_hw"]
            return cls(
                input_hw=(int(hw[0]), int(hw[1])),
                resize=ResizeMode(data.get("resize", ResizeMode.LETTERBOX.value)),
                pad_value=(int(pad[0]), int(pad[1]), int(pad[2]))
                if isinstance(pad, list | tuple)
                else int(pad),
                channels=ChannelOrder(data.get("channels", ChannelOrder.BGR.value)),
                scale=float(data.get("scale", 1.0)),
                mean=_triple(mean) if mean is not None else None,
                std=_triple(std) if std is not None else None,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelLoadError(f"malformed preprocessing block {dict(data)}: {exc}") from exc


def _triple(values: Sequence[Any]) -> Triple:
    if len(values) != 3:
        raise ValueError(f"expected three values, got {list(values)}")
    return (float(values[0]), float(values[1]), float(values[2]))


@dataclass(frozen=True, slots=True)
class ModelMeta:
    """What a detection model file is.

    Attributes:
        family: output layout, the decoder that reads it: ``yolox``, ``yolox-decoded``,
            ``yolov5``, ``yolov8`` (YOLOv5u/v8/11), ``rtdetr``, ``effdet``.
        preprocess: input contract, including the input size.
        class_names: name of each class id the decoder reports.
        arch: the model as its maker named it (``yolo11n``, ``tf_efficientdet_d0``); free text.
        source: what the file was exported from (checkpoint path, yaml, library model name).
        version: who exported it (``tapetum 0.1.0; ultralytics 8.4.190``).
        options: decoder options of the family (e.g. ``class_offset`` for EfficientDet).
    """

    family: str
    preprocess: PreprocessSpec
    class_names: tuple[str, ...]
    arch: str = ""
    source: str = ""
    version: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.preprocess.input_hw

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": METADATA_SCHEMA,
                "family": self.family,
                "arch": self.arch,
                "input_hw": list(self.input_hw),
                "class_names": list(self.class_names),
                "preprocess": self.preprocess.to_dict(),
                "source": self.source,
                "version": self.version,
                "options": dict(self.options),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        """Parse the block :meth:`to_json` wrote; anything malformed is a ``ModelLoadError``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"the {METADATA_KEY!r} metadata is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelLoadError(f"the {METADATA_KEY!r} metadata is not a JSON object")
        schema = data.get("schema", METADATA_SCHEMA)
        if not isinstance(schema, int) or schema > METADATA_SCHEMA:
            raise ModelLoadError(
                f"the {METADATA_KEY!r} metadata has schema {schema}; this Tapetum reads up to "
                f"{METADATA_SCHEMA}: upgrade tapetum"
            )
        try:
            pre = dict(data.get("preprocess") or {})
            pre.setdefault("input_hw", data["input_hw"])
            names = data.get("class_names") or []
            options = data.get("options") or {}
            if not isinstance(names, list) or not isinstance(options, dict):
                raise TypeError("class_names must be a list and options an object")
            return cls(
                family=str(data["family"]),
                preprocess=PreprocessSpec.from_dict(pre),
                class_names=tuple(str(n) for n in names),
                arch=str(data.get("arch") or ""),
                source=str(data.get("source") or ""),
                version=str(data.get("version") or ""),
                options=options,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"malformed {METADATA_KEY!r} metadata: {exc}") from exc


# ----------------------------------------------------------------------- ONNX metadata


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict ({} when the file cannot be parsed:
    the runtime that opens it next reports why)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return {}
    return {p.key: p.value for p in model.metadata_props}


def write_model_meta(model: Any, meta: ModelMeta) -> None:
    """Put ``meta`` into an ``onnx.ModelProto``'s ``metadata_props`` (replacing ours)."""
    props = model.metadata_props
    for i in reversed(range(len(props))):
        if props[i].key == METADATA_KEY:
            del props[i]
    entry = props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()


# ---------------------------------------------------------------- Ultralytics metadata

#: Keys whose presence marks metadata written by an Ultralytics (or YOLOv5) exporter.
_ULTRALYTICS_KEYS = ("names", "stride")


def ultralytics_meta(props: Mapping[str, str]) -> ModelMeta | None:
    """A :class:`ModelMeta` from the metadata Ultralytics' exporter writes, or None.

    Family: ``rtdetr`` for an ``RTDETRDecoder`` head, ``effdet`` (boxes already through
    NMS) for ``end2end`` heads (YOLOv10, YOLO26), else ``yolov8``. Files from the classic
    YOLOv5 exporter carry only ``names`` and ``stride``: the family is left empty for the
    output shapes to decide. Preprocessing is Ultralytics': RGB, /255, centred letterbox
    with pad 114 (stretch for RT-DETR).

    Raises:
        ModelLoadError: an Ultralytics model of another task (segment, pose, classify...).
    """
    if not all(k in props for k in _ULTRALYTICS_KEYS):
        return None
    task = props.get("task", "detect")
    if task != "detect":
        raise ModelLoadError(
            f"this is an Ultralytics {task!r} model; only 'detect' models are supported"
        )
    names = _parse_names(props["names"])
    head = props.get("head", "")
    end2end = props.get("end2end", "False").strip().lower() == "true"
    family, options = "", dict[str, Any]()
    if head == "RTDETRDecoder":
        family = "rtdetr"
    elif end2end:
        family, options = "effdet", {"class_offset": 0, "box_order": "xyxy"}
    elif "task" in props:  # any Ultralytics (not classic YOLOv5) detect head
        family = "yolov8"
    hw = _parse_imgsz(props.get("imgsz", ""))
    resize = ResizeMode.STRETCH if family == "rtdetr" else ResizeMode.LETTERBOX_CENTER
    description = props.get("description", "")
    arch = description.split()[1] if description.startswith("Ultralytics ") else ""
    version = props.get("version", "")
    return ModelMeta(
        family=family,
        preprocess=PreprocessSpec(
            hw or (640, 640), resize, 114, ChannelOrder.RGB, scale=1.0 / 255.0
        ),
        class_names=names,
        arch=arch,
        source=description,
        version=f"ultralytics {version}" if version else "",
        options=options,
    )


def _parse_names(text: str) -> tuple[str, ...]:
    """``"{0: 'person', 1: 'bicycle'}"`` (a Python literal, as Ultralytics writes it)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ModelLoadError(f"cannot read class names from the model metadata: {exc}") from exc
    if isinstance(value, dict):
        try:
            ids = sorted(int(k) for k in value)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(
                f"class ids in the model metadata are not integers: {exc}"
            ) from exc
        if ids != list(range(len(ids))):
            raise ModelLoadError("class ids in the model metadata are not 0..N-1")
        return tuple(str(value[k] if k in value else value[str(k)]) for k in ids)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    raise ModelLoadError(f"class names in the model metadata are not a dict or list: {text[:80]}")


def input_size(value: int | tuple[int, int] | str) -> tuple[int, int]:
    """A model input size as ``(height, width)``: ``224`` or ``"224"`` is square,
    ``"128x64"`` (or ``(128, 64)``) is height × width, e.g. a tall input for person crops
    (a 1:2 person box letterboxed into a square input is half padding). Each side a
    multiple of 32.

    Raises:
        ConfigError: not a size, or a side that is not a multiple of 32 (≥ 32).
    """
    if isinstance(value, str):
        parts = value.lower().replace("×", "x").split("x")
        try:
            sides = [int(p) for p in parts]
        except ValueError:
            sides = []
        if len(sides) not in (1, 2):
            raise ConfigError(f"input size must be N or HxW (e.g. 224 or 128x64), got {value!r}")
        hw = (sides[0], sides[-1])
    elif isinstance(value, int):
        hw = (value, value)
    else:
        hw = (int(value[0]), int(value[1]))
    if min(hw) < 32 or hw[0] % 32 or hw[1] % 32:
        raise ConfigError(
            f"input size must be N or HxW, each a multiple of 32 (≥ 32), got {hw[0]}x{hw[1]}"
        )
    return hw


def _parse_imgsz(text: str) -> tuple[int, int] | None:
    try:
        value = ast.literal_eval(text) if text else None
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, int) and value > 0:
        return (value, value)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    return None
