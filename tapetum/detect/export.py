"""PyTorch detectors → ONNX for Tapetum (``tapetum export``).

- Ultralytics checkpoints or model yamls (YOLOv5u, YOLOv8, YOLO11, RT-DETR, ...) go
  through Ultralytics' own exporter (``dynamic=True``, onnxslim).
- EfficientDet models of the ``effdet`` library (a model name such as
  ``tf_efficientdet_d0``, random weights or a local checkpoint) go through
  ``torch.onnx``, with effdet's post-processing rewritten batch-wise so the graph keeps a
  dynamic batch axis, then onnxslim.

Every file gets a dynamic batch axis and Tapetum's metadata block (family, input size,
class names, preprocessing, provenance), checked by loading it back. Nothing is
downloaded: a checkpoint must be a local file (a ``.yaml`` starts from random weights).

Example:
    >>> result = export_model("yolo11n.yaml", "yolo11n.onnx")   # doctest: +SKIP
    >>> result.meta.family, result.meta.input_hw                # doctest: +SKIP
    ('yolov8', (640, 640))
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tapetum._optional import import_optional
from tapetum.detect.classes import COCO80, COCO90
from tapetum.detect.families import default_preprocess, normalize_arch
from tapetum.detect.spec import ModelMeta, input_size, ultralytics_meta, write_model_meta
from tapetum.errors import ConfigError, ModelLoadError

__all__ = ["EXPORT_EXTRA", "ExportResult", "export_model"]

#: The extra that installs what exporting needs (torch, ultralytics, effdet, onnxslim).
EXPORT_EXTRA = "export"
_PURPOSE = "tapetum export"
ULTRALYTICS_SUFFIXES = (".pt", ".yaml", ".yml")
DEFAULT_OPSET = 17


@dataclass(frozen=True, slots=True)
class ExportResult:
    """An exported model: where it is, what it is, how long the export took."""

    path: Path
    meta: ModelMeta
    seconds: float


def export_model(
    source: str | Path,
    out: str | Path,
    *,
    arch: str | None = None,
    imgsz: int | tuple[int, int] | None = None,
    weights: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    opset: int | None = None,
    simplify: bool = True,
) -> ExportResult:
    """Export a PyTorch detector to ONNX with a dynamic batch axis and Tapetum's metadata.

    Args:
        source: an Ultralytics ``.pt`` checkpoint or model ``.yaml`` (a packaged name like
            ``yolo11n.yaml`` works), or an effdet model name (``tf_efficientdet_d0``).
        out: the ONNX file to write.
        arch: the family expected (checked against what the model turns out to be).
        imgsz: input size, one side or (height, width) (default: the model's own).
        weights: an effdet checkpoint to load (local file; default random weights).
        class_names: names to store instead of the model's own.
        opset: ONNX opset (default: the exporter's choice).
        simplify: run onnxslim on the graph.

    Raises:
        MissingDependencyError: torch, ultralytics/effdet or onnxslim is not installed
            (``pip install 'tapetum[export]'``).
        ModelLoadError: the source is missing, not a detector, or the export failed.
        ConfigError: bad size, names, or an ``arch`` the model does not match.
    """
    started = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"the output file must end in .onnx, got {out}")
    hw = None if imgsz is None else input_size(imgsz)
    wanted = normalize_arch(arch) if arch else None
    names = tuple(class_names) if class_names is not None else None
    if names is not None and not names:
        raise ConfigError("class_names is empty")
    text = str(source)
    ultralytics_source = text.lower().endswith(ULTRALYTICS_SUFFIXES)
    if ultralytics_source and text.lower().endswith(".pt") and not Path(text).is_file():
        raise ModelLoadError(
            f"checkpoint not found: {text}. tapetum export does not download weights: pass "
            f"the path of a local .pt file (or a model .yaml such as yolo11n.yaml for random "
            f"weights)"
        )
    if not ultralytics_source and "efficientdet" not in text.lower():
        raise ModelLoadError(
            f"cannot export {text!r}: give an Ultralytics .pt checkpoint or model .yaml, "
            f"or an effdet model name such as tf_efficientdet_d0"
        )
    if weights is not None and not Path(weights).is_file():
        raise ModelLoadError(f"checkpoint not found: {weights}")
    import_optional("torch", EXPORT_EXTRA, _PURPOSE)
    if simplify:
        import_optional("onnxslim", EXPORT_EXTRA, f"{_PURPOSE} (graph simplification)")
    import onnx

    with tempfile.TemporaryDirectory(prefix="tapetum-export-") as tmp:
        if ultralytics_source:
            model_proto, meta = _export_ultralytics(
                text, Path(tmp), hw=hw, opset=opset, simplify=simplify
            )
        else:
            _check_effdet_name(text)
            model_proto, meta = _export_effdet(
                text, Path(tmp), hw=hw, weights=weights, opset=opset, simplify=simplify
            )
    if wanted is not None and wanted != meta.family:
        raise ConfigError(f"arch {arch!r} does not match the model: {text} is a {meta.family}")
    if names is not None:
        meta = replace(meta, class_names=names)
    if arch:
        meta = replace(meta, arch=arch)
    write_model_meta(model_proto, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_proto, str(out))
    _check_export(out, meta)
    return ExportResult(out, meta, time.perf_counter() - started)


def _versions(*dists: str) -> str:
    """``tapetum 0.1.0; ultralytics 8.4.190; torch 2.14.1`` (who made the file)."""
    from importlib.metadata import PackageNotFoundError, version

    from tapetum import __version__

    parts = [f"tapetum {__version__}"]
    for dist in dists:
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} ?")
    return "; ".join(parts)


def _check_export(path: Path, meta: ModelMeta) -> None:
    """Load the file as Tapetum will and run a batch of two: family, size and batch axis."""
    from tapetum.detect.detector import OnnxDetector
    from tapetum.detect.runtime import RuntimeOptions

    det = OnnxDetector(path, runtime=RuntimeOptions(intra_op_threads=1, workers=1))
    if det.meta.family != meta.family or det.input_hw != meta.input_hw:
        raise ModelLoadError(
            f"{path}: exported file reads back as {det.meta.family} {det.input_hw}, "
            f"expected {meta.family} {meta.input_hw}"
        )
    raw = det.infer(np.zeros((2, 3, *det.input_hw), np.float32))
    if raw.shape[0] != 2 or det.max_batch < 2:
        raise ModelLoadError(f"{path}: the exported graph has no working dynamic batch axis")


# ---------------------------------------------------------------------------- Ultralytics


def _ultralytics() -> ModuleType:
    # Ultralytics probes the network when imported and may pip-install or fetch assets
    # later; an export must not. The user can still override both in the environment.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    with _pillow_open_kept():
        return import_optional("ultralytics", EXPORT_EXTRA, _PURPOSE)


@contextlib.contextmanager
def _pillow_open_kept() -> Iterator[None]:
    """Undo Ultralytics' import-time replacement of ``PIL.Image.open``.

    Its replacement retries unidentified files through ``pi_heif`` and raises
    ``ModuleNotFoundError`` when that is not installed, which would turn every corrupt
    upload decoded later in this process into an unexpected error.
    """
    try:
        from PIL import Image
    except ImportError:  # no Pillow: nothing to keep (and Ultralytics is not installed)
        yield
        return
    original = Image.open
    try:
        yield
    finally:
        Image.open = original


def _export_ultralytics(
    source: str, tmp: Path, *, hw: tuple[int, int] | None, opset: int | None, simplify: bool
) -> tuple[Any, ModelMeta]:
    import onnx

    path = Path(source)
    ultralytics = _ultralytics()

    wrapper = ultralytics.RTDETR if "rtdetr" in path.name.lower() else ultralytics.YOLO
    try:
        model = wrapper(str(path) if path.is_file() else source)
    except Exception as exc:
        raise ModelLoadError(f"Ultralytics cannot load {source}: {_first_line(exc)}") from exc
    if model.task != "detect":
        raise ModelLoadError(f"{source} is an Ultralytics {model.task!r} model; export detect")
    # The exporter writes next to the checkpoint (or into the working directory for a
    # yaml): point it at the scratch folder instead.
    model.model.pt_path = str(tmp / "model.pt")
    args: dict[str, Any] = {
        "format": "onnx",
        "dynamic": True,
        "simplify": simplify,
        "nms": False,
        "device": "cpu",
        "batch": 1,
    }
    if hw is not None:
        args["imgsz"] = list(hw)
    if opset is not None:
        args["opset"] = opset
    try:
        written = Path(model.export(**args))
    except Exception as exc:
        raise ModelLoadError(f"Ultralytics export of {source} failed: {_first_line(exc)}") from exc
    if written.parent != tmp:  # an exporter that ignored pt_path: move its file out
        moved = tmp / "model.onnx"
        shutil.move(written, moved)
        written = moved
    proto = onnx.load(str(written))
    props = {p.key: p.value for p in proto.metadata_props}
    meta = ultralytics_meta(props)
    if meta is None or not meta.family:
        raise ModelLoadError(f"the export of {source} carries no Ultralytics detect metadata")
    arch = meta.arch or path.stem
    return proto, replace(
        meta,
        arch=arch,
        source=source,
        version=_versions("ultralytics", "torch"),
    )


# ------------------------------------------------------------------------------- effdet


def _check_effdet_name(name: str) -> None:
    import_optional("effdet", EXPORT_EXTRA, _PURPOSE)
    from effdet.config.model_config import efficientdet_model_param_dict

    if name not in efficientdet_model_param_dict:
        known = ", ".join(sorted(k for k in efficientdet_model_param_dict if "_d" in k)[:12])
        raise ModelLoadError(f"unknown effdet model {name!r}; for example: {known}, ...")


def _export_effdet(
    name: str,
    tmp: Path,
    *,
    hw: tuple[int, int] | None,
    weights: str | Path | None,
    opset: int | None,
    simplify: bool,
) -> tuple[Any, ModelMeta]:
    import onnx

    torch = import_optional("torch", EXPORT_EXTRA, _PURPOSE)
    effdet = import_optional("effdet", EXPORT_EXTRA, _PURPOSE)
    import_optional("torchvision", EXPORT_EXTRA, _PURPOSE)
    kwargs: dict[str, Any] = {
        "bench_task": "predict",
        "pretrained": False,
        "pretrained_backbone": False,  # effdet would download ImageNet backbone weights
        "checkpoint_path": str(weights) if weights else "",
    }
    if hw is not None:
        kwargs["image_size"] = hw
    try:
        bench = effdet.create_model(name, **kwargs).eval()
    except Exception as exc:
        raise ModelLoadError(f"effdet cannot build {name}: {_first_line(exc)}") from exc
    module = effdet_onnx_module(bench).eval()
    h, w = (int(s) for s in bench.config.image_size)
    file = tmp / "model.onnx"
    try:
        with torch.no_grad():
            torch.onnx.export(
                module,
                (torch.zeros(1, 3, h, w),),
                str(file),
                input_names=["images"],
                output_names=["detections"],
                dynamic_axes={"images": {0: "batch"}, "detections": {0: "batch"}},
                opset_version=opset or DEFAULT_OPSET,
                dynamo=False,  # the TorchScript exporter handles the data-dependent NMS
            )
    except Exception as exc:
        raise ModelLoadError(f"ONNX export of {name} failed: {_first_line(exc)}") from exc
    proto = onnx.load(str(file))
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    num_classes = int(bench.num_classes)
    names = (
        COCO90
        if num_classes == len(COCO90)
        else COCO80
        if num_classes == len(COCO80)
        else tuple(f"class{i}" for i in range(num_classes))
    )
    meta = ModelMeta(
        family="effdet",
        preprocess=default_preprocess("effdet", (h, w)),
        class_names=names,
        arch=name,
        source=f"effdet:{name}" + (f" ({weights})" if weights else " (random weights)"),
        version=_versions("effdet", "torch"),
        options={"class_offset": 1, "box_order": "xyxy"},
    )
    return proto, meta


def effdet_onnx_module(bench: Any) -> Any:
    """An ``nn.Module`` computing ``DetBenchPredict``'s output for a whole batch at once.

    effdet's predict bench loops over the images of a batch in Python, which an ONNX trace
    freezes to the traced batch size. Here the same steps run batch-wise: top
    ``max_detection_points`` (anchor, class) pairs per image, box decoding against the
    anchors, NMS (IoU 0.5) per image and class in one call (each pair gets a group id),
    then the best ``max_det_per_image``. Output: [B, max_det, 6] ``x1, y1, x2, y2, score,
    class`` in input pixels, classes numbered from 1, unused rows all zero (as effdet's).
    """
    import torch
    import torchvision
    from effdet.anchors import decode_box_outputs

    class EffdetBatchPredict(torch.nn.Module):
        anchor_boxes: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = bench.model
            self.num_classes = int(bench.num_classes)
            self.num_levels = int(bench.num_levels)
            self.max_points = int(bench.max_detection_points)
            self.max_det = int(bench.max_det_per_image)
            self.register_buffer("anchor_boxes", bench.anchors.boxes.clone(), persistent=False)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            cls_levels, box_levels = self.model(images)
            batch = images.shape[0]
            cls_all = torch.cat(
                [c.permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes) for c in cls_levels],
                1,
            )
            box_all = torch.cat(
                [b.permute(0, 2, 3, 1).reshape(batch, -1, 4) for b in box_levels], 1
            )
            logits, flat_idx = cls_all.reshape(batch, -1).topk(self.max_points, dim=1)
            anchor_idx = torch.div(flat_idx, self.num_classes, rounding_mode="floor")
            classes = flat_idx - anchor_idx * self.num_classes
            codes = box_all.gather(1, anchor_idx.unsqueeze(2).expand(-1, -1, 4))
            anchors = self.anchor_boxes[anchor_idx]
            boxes = decode_box_outputs(
                codes.reshape(-1, 4).float(), anchors.reshape(-1, 4), output_xyxy=True
            ).reshape(batch, -1, 4)
            scores = logits.sigmoid().float()
            group = torch.arange(batch, device=images.device).unsqueeze(1) * self.num_classes
            keep = torchvision.ops.batched_nms(
                boxes.reshape(-1, 4), scores.reshape(-1), (group + classes).reshape(-1), 0.5
            )
            flat_scores = scores.reshape(-1)
            kept = torch.zeros_like(flat_scores).scatter(0, keep, flat_scores[keep])
            top_scores, top = kept.reshape(batch, -1).topk(self.max_det, dim=1)
            top_boxes = boxes.gather(1, top.unsqueeze(2).expand(-1, -1, 4))
            top_classes = (classes.gather(1, top) + 1).float()
            used = (top_scores > 0).float()
            return torch.cat(
                [
                    top_boxes * used.unsqueeze(2),
                    top_scores.unsqueeze(2),
                    (top_classes * used).unsqueeze(2),
                ],
                dim=2,
            )

    return EffdetBatchPredict()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
