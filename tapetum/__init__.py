"""Tapetum: real-time video analytics — decode, detect, track, measure.

The public API is re-exported here but imported lazily, so ``import tapetum`` stays fast
(no onnxruntime, PyAV or OpenCV until first use).

Example:
    >>> import tapetum
    >>> pipe = tapetum.Pipeline(
    ...     [tapetum.open_source("crowd.mp4")],
    ...     tapetum.YoloxDetector("yolox_nano.onnx"),
    ...     sinks=[tapetum.JsonlSink("tracks.jsonl")],
    ... )  # doctest: +SKIP
    >>> stats = pipe.run()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Detections": "tapetum.core",
    "Frame": "tapetum.core",
    "FrameResult": "tapetum.core",
    "NO_TRACK": "tapetum.core",
    "DetectorConfig": "tapetum.detect",
    "YoloxDetector": "tapetum.detect",
    "OnnxDetector": "tapetum.detect",
    "load_detector": "tapetum.detect",
    "RuntimeOptions": "tapetum.detect",
    "LetterboxTransform": "tapetum.detect",
    "open_source": "tapetum.sources",
    "VideoSource": "tapetum.sources",
    "ImageFolderSource": "tapetum.sources",
    "ByteTracker": "tapetum.track",
    "ByteTrackConfig": "tapetum.track",
    "make_tracker": "tapetum.track",
    "Pipeline": "tapetum.pipeline",
    "PipelineConfig": "tapetum.pipeline",
    "DropPolicy": "tapetum.pipeline",
    "SchedulerConfig": "tapetum.pipeline",
    "JsonlSink": "tapetum.sinks",
    "AnnotatedVideoSink": "tapetum.sinks",
    "CallbackSink": "tapetum.sinks",
    "OnnxClassifier": "tapetum.classify",
    "ClassifierService": "tapetum.classify",
    "ClassificationEnricher": "tapetum.classify",
    "ClassifyConfig": "tapetum.classify",
}

__all__ = [
    "NO_TRACK",
    "AnnotatedVideoSink",
    "ByteTrackConfig",
    "ByteTracker",
    "CallbackSink",
    "ClassificationEnricher",
    "ClassifierService",
    "ClassifyConfig",
    "Detections",
    "DetectorConfig",
    "DropPolicy",
    "Frame",
    "FrameResult",
    "ImageFolderSource",
    "JsonlSink",
    "LetterboxTransform",
    "OnnxClassifier",
    "OnnxDetector",
    "Pipeline",
    "PipelineConfig",
    "RuntimeOptions",
    "SchedulerConfig",
    "VideoSource",
    "YoloxDetector",
    "__version__",
    "load_detector",
    "make_tracker",
    "open_source",
]

if TYPE_CHECKING:
    from tapetum.classify import (
        ClassificationEnricher,
        ClassifierService,
        ClassifyConfig,
        OnnxClassifier,
    )
    from tapetum.core import NO_TRACK, Detections, Frame, FrameResult
    from tapetum.detect import (
        DetectorConfig,
        LetterboxTransform,
        OnnxDetector,
        RuntimeOptions,
        YoloxDetector,
        load_detector,
    )
    from tapetum.pipeline import DropPolicy, Pipeline, PipelineConfig, SchedulerConfig
    from tapetum.sinks import AnnotatedVideoSink, CallbackSink, JsonlSink
    from tapetum.sources import ImageFolderSource, VideoSource, open_source
    from tapetum.track import ByteTrackConfig, ByteTracker, make_tracker


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tapetum' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
