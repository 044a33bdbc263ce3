"""Detection: model adapters, pre/post-processing and ONNX Runtime sessions."""

from tapetum.detect.classes import COCO80
from tapetum.detect.detector import DetectorConfig, YoloxDetector
from tapetum.detect.letterbox import LetterboxMeta, LetterboxTransform
from tapetum.detect.nms import nms
from tapetum.detect.runtime import OnnxModel, RuntimeOptions

__all__ = [
    "COCO80",
    "DetectorConfig",
    "LetterboxMeta",
    "LetterboxTransform",
    "OnnxModel",
    "RuntimeOptions",
    "YoloxDetector",
    "nms",
]
