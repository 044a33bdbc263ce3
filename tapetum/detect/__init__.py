"""Detection: model adapters, pre/post-processing and ONNX Runtime sessions."""

from tapetum.detect.classes import COCO80
from tapetum.detect.detector import DetectorConfig, OnnxDetector, YoloxDetector, load_detector
from tapetum.detect.letterbox import LetterboxMeta, LetterboxTransform
from tapetum.detect.nms import nms
from tapetum.detect.runtime import OnnxModel, RuntimeOptions
from tapetum.detect.spec import ChannelOrder, ModelMeta, PreprocessSpec, ResizeMode

__all__ = [
    "COCO80",
    "ChannelOrder",
    "DetectorConfig",
    "LetterboxMeta",
    "LetterboxTransform",
    "ModelMeta",
    "OnnxDetector",
    "OnnxModel",
    "PreprocessSpec",
    "ResizeMode",
    "RuntimeOptions",
    "YoloxDetector",
    "load_detector",
    "nms",
]
