"""The detector: fit the frame → ONNX Runtime → the family's decoder → NMS where needed,
split into stages so a pipeline can overlap them (preprocess in the reader thread,
inference batched, decode after).

:class:`OnnxDetector` runs any supported family (see :mod:`tapetum.detect.families`),
chosen by ``arch``, else by the file's metadata (Tapetum's own block or Ultralytics'),
else by the output shapes. :class:`YoloxDetector` is the YOLOX raw-head special case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tapetum.core.detections import Detections
from tapetum.detect.classes import COCO80
from tapetum.detect.families import (
    FAMILIES,
    Family,
    OutputInfo,
    build_family,
    default_class_names,
    default_preprocess,
    head_is_decoded,
    infer_families,
    normalize_arch,
)
from tapetum.detect.families.base import describe
from tapetum.detect.letterbox import LetterboxMeta, LetterboxTransform
from tapetum.detect.nms import nms
from tapetum.detect.providers import GPU_PROVIDERS
from tapetum.detect.runtime import OnnxModel, RuntimeOptions
from tapetum.detect.spec import (
    METADATA_KEY,
    ModelMeta,
    read_onnx_metadata,
    ultralytics_meta,
)
from tapetum.errors import ConfigError, ModelLoadError

__all__ = ["DetectorConfig", "OnnxDetector", "YoloxDetector", "load_detector", "model_meta_from"]


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


class OnnxDetector:
    """A detector for any supported ONNX model family.

    The family comes from ``arch`` when given, else from the file's metadata (the
    ``tapetum`` block ``tapetum export`` writes, or Ultralytics' ``names``/``imgsz``/
    ``head``), else from the output shapes; a shape that fits no family, or several, is a
    ``ModelLoadError`` asking for ``arch``. Preprocessing follows the metadata, else the
    family's usual contract (:func:`~tapetum.detect.families.default_preprocess`).

    Args:
        model_path: the ONNX file.
        config: thresholds and filters.
        runtime: ONNX Runtime options.
        arch: family or model name (``yolox``, ``yolov8``, ``yolo11n``, ``rtdetr``...).
        class_names: override the names (their count must match the model's classes).
        input_hw: input size: must match a fixed-size model; required for a model with a
            dynamic size and no metadata.

    Example:
        >>> det = OnnxDetector("yolov8n.onnx")                 # doctest: +SKIP
        >>> det.meta.family, det.input_hw                      # doctest: +SKIP
        ('yolov8', (640, 640))
        >>> detections = det([cv2.imread("bus.jpg")])[0]       # doctest: +SKIP
    """

    def __init__(
        self,
        model_path: str | Path,
        config: DetectorConfig | None = None,
        runtime: RuntimeOptions | None = None,
        *,
        arch: str | None = None,
        class_names: Sequence[str] | None = None,
        input_hw: tuple[int, int] | None = None,
    ) -> None:
        self.config = config or DetectorConfig()
        family_name = normalize_arch(arch) if arch else None  # a bad name fails first
        path = Path(model_path)
        props = read_onnx_metadata(path) if path.is_file() else {}
        file_meta = _file_meta(path, props)
        hint = (
            (int(input_hw[0]), int(input_hw[1]))
            if input_hw
            else (file_meta.input_hw if file_meta else None)
        )
        self.model = OnnxModel(path, runtime, input_hw=hint)
        declared = self.model.session.get_inputs()[0].shape[2:]
        if (
            input_hw is not None
            and all(isinstance(d, int) for d in declared)
            and tuple(input_hw) != self.model.input_hw
        ):
            raise ConfigError(
                f"input size {input_hw[0]}x{input_hw[1]} does not match the model's fixed "
                f"input {self.model.input_hw[0]}x{self.model.input_hw[1]} ({model_path})"
            )
        self.input_hw: tuple[int, int] = self.model.input_hw
        self._probe: list[npt.NDArray[Any]] | None = None
        outputs = self._outputs()
        if family_name is None:
            family_name = (
                file_meta.family if file_meta and file_meta.family else self._infer(outputs)
            )
        if family_name not in FAMILIES:
            raise ModelLoadError(
                f"{path}: the metadata names an unknown family {family_name!r}; "
                f"set arch to one of {', '.join(FAMILIES)}"
            )
        names = tuple(class_names) if class_names is not None else None
        if names is None and file_meta is not None and file_meta.class_names:
            names = file_meta.class_names
        options: Mapping[str, Any] = file_meta.options if file_meta else {}
        try:
            self.family: Family = build_family(
                family_name, outputs, self.input_hw, len(names) if names else None, options
            )
        except ModelLoadError as exc:
            said = (
                f"; its metadata says {file_meta.family!r}"
                if file_meta and file_meta.family and file_meta.family != family_name
                else ""
            )
            raise ModelLoadError(f"{path}: {exc}{said}") from None
        self.class_names: tuple[str, ...] = names or default_class_names(
            family_name, self.family.num_classes
        )
        preprocess = (
            file_meta.preprocess.with_input_hw(self.input_hw)
            if file_meta
            else default_preprocess(family_name, self.input_hw)
        )
        #: what this model is: family, class names, preprocessing, provenance.
        self.meta = ModelMeta(
            family=family_name,
            preprocess=preprocess,
            class_names=self.class_names,
            arch=file_meta.arch if file_meta else (arch or ""),
            source=file_meta.source if file_meta else str(path),
            version=file_meta.version if file_meta else "",
            options=options,
        )
        self.letterbox = LetterboxTransform.from_spec(preprocess)

    def _probe_outputs(self) -> list[npt.NDArray[Any]]:
        """The outputs of one grey frame (batch 1), run once and kept."""
        if self._probe is None:
            grey = np.full((1, 3, *self.input_hw), 114.0, np.float32)
            try:
                self._probe = self.model.run_all(grey)
            except Exception as exc:
                raise ModelLoadError(
                    f"{self.model.path}: a test run on a {self.input_hw} input failed: "
                    f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
                ) from exc
        return self._probe

    def _outputs(self) -> list[OutputInfo]:
        """Output names and shapes; dynamic dimensions are observed on a probe run."""
        names, shapes = self.model.output_names, self.model.output_shapes()
        if all(isinstance(d, int) for shape in shapes for d in shape[1:]):
            return [OutputInfo(n, tuple(s)) for n, s in zip(names, shapes, strict=True)]
        probe = self._probe_outputs()
        return [
            OutputInfo(n, (s[0], *p.shape[1:]))
            for n, s, p in zip(names, shapes, probe, strict=True)
        ]

    def _infer(self, outputs: list[OutputInfo]) -> str:
        """The family these outputs fit (no arch, no metadata)."""
        candidates = infer_families(outputs, self.input_hw)
        if "yolox" in candidates and "yolox-decoded" in candidates:
            raw = np.asarray(self._probe_outputs()[0][0], np.float32)
            drop = "yolox" if head_is_decoded(raw, self.input_hw) else "yolox-decoded"
            candidates.remove(drop)
        if len(candidates) == 1:
            return candidates[0]
        seen = f"outputs {describe(outputs)} for input {self.input_hw[0]}x{self.input_hw[1]}"
        if not candidates:
            raise ModelLoadError(
                f"{self.model.path}: cannot tell the model family: {seen} fit none of the "
                f"known layouts and the file has no {METADATA_KEY!r} or Ultralytics metadata; "
                f"set arch to one of {', '.join(FAMILIES)}"
            )
        raise ModelLoadError(
            f"{self.model.path}: {seen} fit several families ({', '.join(candidates)}); "
            f"set arch to choose one"
        )

    @property
    def max_batch(self) -> int:
        return self.model.max_batch

    @property
    def batches_help(self) -> bool:
        """Whether batching frames buys throughput: on a GPU provider it does; on a CPU,
        where each worker runs one thread, a batch of n costs n frames' time and only
        adds the wait for the slowest (measured: 2 frames 33.5 ms against 16.9 ms for
        one), so pipelines default to batches of one there."""
        return any(p in GPU_PROVIDERS for p in self.model.providers)

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
        """(B, 3, h, w) → the family's output for the batch, image first: ``raw[i]`` is
        image ``i``'s (several outputs are merged into one array by the family)."""
        return self.family.merge(self.model.run_all(batch))

    def postprocess(self, raw: npt.NDArray[np.float32], meta: LetterboxMeta) -> Detections:
        """One image's output → detections in source pixels (thresholds, filter, NMS)."""
        cfg = self.config
        xyxy, score, class_id = self.family.decode(raw, cfg.conf_threshold)
        keep = class_id < len(self.class_names)
        if cfg.class_ids is not None:
            keep &= np.isin(class_id, np.fromiter(cfg.class_ids, np.int64))
        if not keep.all():
            xyxy, score, class_id = xyxy[keep], score[keep], class_id[keep]
        if self.family.needs_nms:
            idx = nms(
                xyxy,
                score,
                None if cfg.class_agnostic_nms else class_id,
                cfg.nms_iou,
                cfg.max_detections,
            )
        else:  # already one box per object, best first
            idx = np.arange(min(score.shape[0], cfg.max_detections))
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


class YoloxDetector(OnnxDetector):
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
        super().__init__(
            model_path, config, runtime, arch="yolox", class_names=class_names, input_hw=input_hw
        )


def load_detector(
    path: str | Path,
    arch: str | None = None,
    config: DetectorConfig | None = None,
    runtime: RuntimeOptions | None = None,
    *,
    class_names: Sequence[str] | None = None,
    input_hw: tuple[int, int] | None = None,
) -> OnnxDetector:
    """Load an ONNX detector of any supported family (see :class:`OnnxDetector`).

    Example:
        >>> det = load_detector("rtdetr-l.onnx")               # doctest: +SKIP
        >>> det = load_detector("model.onnx", arch="yolox")    # doctest: +SKIP
    """
    return OnnxDetector(
        path, config, runtime, arch=arch, class_names=class_names, input_hw=input_hw
    )


def model_meta_from(props: Mapping[str, str], path: str | Path = "model") -> ModelMeta | None:
    """The :class:`ModelMeta` a file's ``metadata_props`` describe (Tapetum's block first,
    then Ultralytics'), or None when they describe nothing."""
    return _file_meta(Path(path), props)


def _file_meta(path: Path, props: Mapping[str, str]) -> ModelMeta | None:
    try:
        if METADATA_KEY in props:
            return ModelMeta.from_json(props[METADATA_KEY])
        return ultralytics_meta(props)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None
