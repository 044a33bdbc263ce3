"""The detector: letterbox → ONNX Runtime → decode → NMS, split into stages so a pipeline
can overlap them (preprocess in the reader thread, inference batched, decode after)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tapetum.core.detections import Detections
from tapetum.detect.classes import COCO80
from tapetum.detect.letterbox import LetterboxMeta, LetterboxTransform
from tapetum.detect.nms import nms
from tapetum.detect.runtime import OnnxModel, RuntimeOptions
from tapetum.detect.yolox import YoloxDecoder
from tapetum.errors import ConfigError, ModelLoadError


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds and filters applied after the model.

    Attributes:
        conf_threshold: minimum score (objectness × class score) to keep a box. In front of
            ByteTrack use 0.1 (as ``tapetum run`` does): its second association feeds on
            the low-score boxes, and tracks only start above ``track_thresh + 0.1``.
        nms_iou: IoU above which the lower-scoring box of the same class is suppressed.
        class_ids: keep only these classes (None = all).
        class_agnostic_nms: suppress across classes too.
        max_detections: cap per image after NMS.
    """

    conf_threshold: float = 0.3
    nms_iou: float = 0.45
    class_ids: frozenset[int] | None = None
    class_agnostic_nms: bool = False
    max_detections: int = 300

    def __post_init__(self) -> None:
        for name in ("conf_threshold", "nms_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.max_detections < 1:
            raise ConfigError(f"max_detections must be ≥ 1, got {self.max_detections}")


class YoloxDetector:
    """YOLOX (official ONNX export: BGR, 0-255, top-left letterbox, pad 114, raw head).

    Example:
        >>> det = YoloxDetector("yolox_nano.onnx")            # doctest: +SKIP
        >>> detections = det([cv2.imread("bus.jpg")])[0]       # doctest: +SKIP
    """

    def __init__(
        self,
        model_path: str | Path,
        config: DetectorConfig | None = None,
        runtime: RuntimeOptions | None = None,
        class_names: Sequence[str] = COCO80,
        input_hw: tuple[int, int] | None = None,
    ) -> None:
        self.config = config or DetectorConfig()
        self.model = OnnxModel(model_path, runtime)
        if input_hw is not None and tuple(input_hw) != self.model.input_hw:
            raise ConfigError(
                f"input size {input_hw[0]}x{input_hw[1]} does not match the model's fixed "
                f"input {self.model.input_hw[0]}x{self.model.input_hw[1]} ({model_path})"
            )
        self.input_hw = self.model.input_hw
        self.class_names = tuple(class_names)
        self.decoder = YoloxDecoder(self.input_hw)
        out = self.model.output_shape()
        expected_tail = [self.decoder.num_anchors, 5 + len(self.class_names)]
        if len(out) != 3 or out[1:] != expected_tail:
            raise ModelLoadError(
                f"{model_path}: output shape {out} is not a YOLOX raw head for input "
                f"{self.input_hw} and {len(self.class_names)} classes "
                f"(expected [B, {expected_tail[0]}, {expected_tail[1]}])"
            )
        self.letterbox = LetterboxTransform(self.input_hw, pad_value=114, centered=False)

    @property
    def max_batch(self) -> int:
        return self.model.max_batch

    @property
    def recommended_workers(self) -> int:
        """Concurrent inference calls the session was sized for (see ``RuntimeOptions``)."""
        return self.model.workers

    def preprocess(
        self, image: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.float32], LetterboxMeta]:
        """(H, W, 3) BGR uint8 → ((3, h, w) float32 input tensor, placement)."""
        return self.letterbox(image)

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(B, 3, h, w) → raw head (B, A, 5 + C)."""
        return self.model.run(batch)

    def postprocess(self, raw: npt.NDArray[np.float32], meta: LetterboxMeta) -> Detections:
        """One image's raw head → detections in source pixels (thresholds, filter, NMS)."""
        cfg = self.config
        xyxy, score, class_id = self.decoder.decode(raw, cfg.conf_threshold)
        if cfg.class_ids is not None:
            keep = np.isin(class_id, np.fromiter(cfg.class_ids, np.int64))
            xyxy, score, class_id = xyxy[keep], score[keep], class_id[keep]
        idx = nms(
            xyxy,
            score,
            None if cfg.class_agnostic_nms else class_id,
            cfg.nms_iou,
            cfg.max_detections,
        )
        return Detections(
            xyxy=LetterboxTransform.boxes_to_source(xyxy[idx], meta),
            confidence=score[idx],
            class_id=class_id[idx],
        )

    def __call__(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        """Detect objects in a list of BGR images (one batch, or several if over max_batch)."""
        if not images:
            return []
        prepared = [self.preprocess(img) for img in images]
        raw = self.infer(np.stack([t for t, _ in prepared]))
        return [self.postprocess(raw[i], meta) for i, (_, meta) in enumerate(prepared)]
