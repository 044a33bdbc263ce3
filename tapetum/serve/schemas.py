"""Pydantic models at the REST boundary, and the one conversion from ``Detections`` to them.

Inside the server detections stay array-backed (:class:`tapetum.core.detections.Detections`);
:func:`detections_to_response` turns them into JSON-ready models once, at the edge.

Example:
    >>> import numpy as np
    >>> from tapetum.core.detections import Detections
    >>> det = Detections(np.array([[1, 2, 30, 40]]), np.array([0.9]), np.array([5]))
    >>> out = detections_to_out(det, ("person", "bicycle", "car", "motorcycle", "airplane", "bus"))
    >>> out[0].class_name, out[0].box.x2, out[0].track_id
    ('bus', 30.0, None)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from tapetum.core.detections import NO_TRACK, Detections

__all__ = [
    "BatchDetectResponse",
    "BatchItem",
    "Box",
    "DetectResponse",
    "DetectionOut",
    "ErrorResponse",
    "Health",
    "ImageSize",
    "ModelInfo",
    "ModelList",
    "ModelReload",
    "detections_to_out",
    "detections_to_response",
]


class Box(BaseModel):
    """Box corners in pixels of the uploaded image (origin top-left)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={"examples": [{"x1": 17.2, "y1": 231.0, "x2": 802.5, "y2": 768.1}]},
    )

    x1: float
    y1: float
    x2: float
    y2: float


class DetectionOut(BaseModel):
    """One detected object."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "box": {"x1": 17.2, "y1": 231.0, "x2": 802.5, "y2": 768.1},
                    "confidence": 0.91,
                    "class_id": 5,
                    "class_name": "bus",
                    "track_id": None,
                }
            ]
        },
    )

    box: Box
    confidence: float = Field(ge=0.0, le=1.0, description="Objectness × class score.")
    class_id: int = Field(ge=0, description="Index into the model's class names.")
    class_name: str
    track_id: int | None = Field(
        default=None,
        description="Track identity within the request's session_id; null without a "
        "session or while the object's track is not confirmed.",
    )
    label: str | None = Field(
        default=None,
        description="The track's label from the server's classifier (tapetum serve "
        "--classify): the running mean of its classifications over the session; null "
        "without a session or classifier, or before the track is first classified.",
    )
    label_confidence: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Mean probability of the label."
    )
    label_votes: int | None = Field(
        default=None, ge=1, description="Classifications the label rests on."
    )


_DETECTIONS_ADAPTER: TypeAdapter[list[DetectionOut]] = TypeAdapter(list[DetectionOut])


class ImageSize(BaseModel):
    """Pixel size of the decoded upload."""

    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"width": 810, "height": 1080}]}
    )

    width: int = Field(gt=0)
    height: int = Field(gt=0)


_DETECT_EXAMPLE: dict[str, Any] = {
    "model": "yolox_nano",
    "image": {"width": 810, "height": 1080},
    "detections": [
        {
            "box": {"x1": 17.2, "y1": 231.0, "x2": 802.5, "y2": 768.1},
            "confidence": 0.91,
            "class_id": 5,
            "class_name": "bus",
            "track_id": None,
        }
    ],
    "session_id": None,
    "timings_ms": {"decode": 6.1, "inference": 31.4, "total": 38.2},
}


class DetectResponse(BaseModel):
    """Detections in one image."""

    model_config = ConfigDict(json_schema_extra={"examples": [_DETECT_EXAMPLE]})

    model: str = Field(description="Name of the model that ran.")
    image: ImageSize
    detections: list[DetectionOut]
    session_id: str | None = Field(default=None, description="Echo of the tracking session.")
    timings_ms: dict[str, float] = Field(
        description="Server-side stage times in milliseconds: decode, inference (model "
        "and post-processing, waiting for a free inference slot included), total."
    )


class BatchItem(BaseModel):
    """One image's result inside a batch."""

    image: ImageSize
    detections: list[DetectionOut]


class BatchDetectResponse(BaseModel):
    """Detections for each uploaded image, in upload order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "yolox_nano",
                    "results": [{k: v for k, v in _DETECT_EXAMPLE.items() if k != "model"}],
                    "timings_ms": {"decode": 12.0, "inference": 55.3, "total": 68.9},
                }
            ]
        }
    )

    model: str
    results: list[BatchItem]
    timings_ms: dict[str, float]


class ModelInfo(BaseModel):
    """A loaded model."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "yolox_nano",
                    "family": "yolox",
                    "path": "/models/yolox_nano.onnx",
                    "input_width": 416,
                    "input_height": 416,
                    "num_classes": 80,
                    "providers": ["CPUExecutionProvider"],
                }
            ]
        },
    )

    name: str
    family: Literal["yolox"] = "yolox"
    path: str = Field(
        description="The model file: its full path for admin keys, its file name for others."
    )
    input_width: int = Field(gt=0, description="Model input width in pixels.")
    input_height: int = Field(gt=0, description="Model input height in pixels.")
    num_classes: int = Field(gt=0)
    providers: list[str] = Field(description="ONNX Runtime execution providers, preferred first.")


class ModelList(BaseModel):
    """Every model this server has loaded."""

    model_config = ConfigDict(frozen=True)

    models: list[ModelInfo]


class ModelReload(BaseModel):
    """The answer of ``POST /v1/models/{name}/reload``: the registry version serving now."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "yolox_nano",
                    "changed": True,
                    "version": 3,
                    "previous_version": 2,
                    "alias": "champion",
                    "sha256": "9f2c41d07a5e" + "0" * 52,
                    "swap_seconds": 0.41,
                }
            ]
        },
    )

    name: str = Field(description="The model's name in requests.")
    changed: bool = Field(
        description="True when the alias pointed elsewhere and that version now serves."
    )
    version: int = Field(description="The registry version serving now.")
    previous_version: int | None = Field(
        None, description="The version that served before this call (when changed)."
    )
    alias: str = Field(description="The registry alias the model follows.")
    sha256: str = Field(description="sha256 of the model file serving now.")
    swap_seconds: float | None = Field(
        None, description="Load, warm-up and swap time of the new version, seconds."
    )


class ErrorResponse(BaseModel):
    """Every error the API returns has this body."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "detail": "image is 100000x100000 pixels; the limit is 8192x8192 and 40 MP",
                    "code": "image_too_large",
                }
            ]
        },
    )

    detail: str = Field(description="What went wrong, for a person.")
    code: str = Field(description="Stable machine-readable error code (snake_case).")


class Health(BaseModel):
    """Liveness / readiness."""

    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"status": "ok", "model_loaded": True}]}
    )

    status: Literal["ok", "loading", "failed"]
    model_loaded: bool
    detail: str | None = None


def _detection_dicts(detections: Detections, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """The detections as plain dicts of Python scalars (each array converted once)."""
    xyxy = detections.xyxy.astype(float).tolist()
    conf = detections.confidence.astype(float).tolist()
    cls = detections.class_id.tolist()
    tid = detections.tracker_id.tolist() if len(detections.tracker_id) else [NO_TRACK] * len(cls)
    n_names = len(class_names)
    out = [
        {
            "box": {"x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]},
            "confidence": min(max(c, 0.0), 1.0),
            "class_id": k,
            "class_name": class_names[k] if 0 <= k < n_names else str(k),
            "track_id": None if t == NO_TRACK else t,
        }
        for b, c, k, t in zip(xyxy, conf, cls, tid, strict=True)
    ]
    labels = detections.data.get("label")
    if labels is not None:  # the classification stage's columns (tapetum.classify)
        confidence = detections.data["label_confidence"].astype(float).tolist()
        votes = detections.data["label_votes"].tolist()
        for item, label, p, v in zip(out, labels.tolist(), confidence, votes, strict=True):
            if label is not None:
                item.update(label=label, label_confidence=min(max(p, 0.0), 1.0), label_votes=v)
    return out


def detections_to_out(detections: Detections, class_names: Sequence[str]) -> list[DetectionOut]:
    """Array-backed detections → response items (the only place the arrays become objects).

    ``tracker_id`` of ``NO_TRACK`` becomes ``track_id = None``. Plain dicts are built
    first and validated in one pydantic-core call (faster than constructing each model in
    Python, ``model_construct`` included, and the field constraints still hold).
    """
    return _DETECTIONS_ADAPTER.validate_python(_detection_dicts(detections, class_names))


def detections_to_response(
    detections: Detections,
    *,
    class_names: Sequence[str],
    model: str,
    image_hw: tuple[int, int],
    timings_ms: Mapping[str, float],
    session_id: str | None = None,
) -> DetectResponse:
    """Build the ``/v1/detect`` body from one image's detections.

    Args:
        image_hw: (height, width) of the decoded image in pixels.
        timings_ms: stage name → milliseconds (rounded to 0.01 ms here).
    """
    return DetectResponse.model_validate(
        {
            "model": model,
            "image": {"width": image_hw[1], "height": image_hw[0]},
            "detections": _detection_dicts(detections, class_names),
            "session_id": session_id,
            "timings_ms": {k: round(float(v), 2) for k, v in timings_ms.items()},
        }
    )
