"""What a model file is, as registry tags, and what produced it (code version, command line).

:func:`describe_model` opens the file the way the runtime will (so a file that would not
load is refused before it is registered) and reads Tapetum's metadata block through the
detector: family, input size, classes, preprocessing, plus the precision a ``tapetum
optimize`` conversion recorded (or that the graph shows). :meth:`ModelDescription.tags`
turns that into the version's tags, all under the ``tapetum.`` prefix.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tapetum.errors import ModelLoadError

__all__ = [
    "ModelDescription",
    "code_version",
    "command_line",
    "describe_model",
    "graph_precision",
]

#: Tag keys of a registered version (the ``tapetum.`` namespace).
TAG_SHA256 = "tapetum.sha256"
TAG_SIZE = "tapetum.size_bytes"
TAG_ARTIFACT = "tapetum.artifact"
TAG_FAMILY = "tapetum.family"
TAG_ARCH = "tapetum.arch"
TAG_INPUT = "tapetum.input_hw"
TAG_NUM_CLASSES = "tapetum.num_classes"
TAG_CLASSES = "tapetum.classes"
TAG_PRECISION = "tapetum.precision"
TAG_PREPROCESS = "tapetum.preprocess"
TAG_EXPORTED_FROM = "tapetum.exported_from"
TAG_PARENT = "tapetum.parent"
TAG_COMMAND = "tapetum.command"
TAG_CODE_VERSION = "tapetum.code_version"
TAG_READY = "tapetum.ready"

#: MLflow caps a tag value at 5000 characters (model version tags).
MAX_TAG_CHARS = 5000
_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"})


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """A model file as the registry records it.

    Attributes:
        sha256: hex digest of the file's bytes.
        size_bytes: file size.
        file_name: the file's name (kept as the artifact's name).
        family: output layout the detector decodes (``yolox``, ``yolov8``...).
        arch: the model's own name when known (``yolo11n``), else "".
        input_hw: (height, width) of the model input, pixels.
        class_names: name of each class id.
        precision: ``fp32``, ``fp16`` or ``int8``.
        preprocess: the input contract, as ``PreprocessSpec.to_dict()``.
        exported_from: what the file was exported from (checkpoint, library model), or "".
    """

    sha256: str
    size_bytes: int
    file_name: str
    family: str
    arch: str
    input_hw: tuple[int, int]
    class_names: tuple[str, ...]
    precision: str
    preprocess: dict[str, Any]
    exported_from: str = ""

    def tags(self) -> dict[str, str]:
        """The version tags describing the file (values capped at MLflow's tag length)."""
        tags = {
            TAG_SHA256: self.sha256,
            TAG_SIZE: str(self.size_bytes),
            TAG_ARTIFACT: self.file_name,
            TAG_FAMILY: self.family,
            TAG_ARCH: self.arch,
            TAG_INPUT: f"{self.input_hw[0]}x{self.input_hw[1]}",
            TAG_NUM_CLASSES: str(len(self.class_names)),
            TAG_CLASSES: ",".join(self.class_names),
            TAG_PRECISION: self.precision,
            TAG_PREPROCESS: json.dumps(self.preprocess, separators=(",", ":")),
            TAG_EXPORTED_FROM: self.exported_from,
        }
        return {k: _cap(v) for k, v in tags.items() if v}


def _cap(value: str) -> str:
    return value if len(value) <= MAX_TAG_CHARS else value[: MAX_TAG_CHARS - 1] + "…"


def describe_model(path: str | Path, arch: str | None = None) -> ModelDescription:
    """Hash ``path`` and read what it is by loading it as the runtime would.

    Raises:
        ModelLoadError: the file is missing or not a detector Tapetum can run (pass ``arch``
            when its family cannot be told from the file).
    """
    from tapetum.detect import RuntimeOptions, load_detector
    from tapetum.detect.quantize import PRECISION_KEY
    from tapetum.detect.spec import read_onnx_metadata
    from tapetum.registry.cache import sha256_file

    file = Path(path)
    if not file.is_file():
        raise ModelLoadError(f"model file not found: {file}")
    props = read_onnx_metadata(file)
    if _declares_classifier(props):
        return _describe_classifier(file, props)
    detector = load_detector(file, arch, runtime=RuntimeOptions(intra_op_threads=1, workers=1))
    meta = detector.meta
    return ModelDescription(
        sha256=sha256_file(file),
        size_bytes=file.stat().st_size,
        file_name=file.name,
        family=meta.family,
        arch=meta.arch,
        input_hw=detector.input_hw,
        class_names=tuple(detector.class_names),
        precision=props.get(PRECISION_KEY) or graph_precision(file),
        preprocess=meta.preprocess.to_dict(),
        exported_from=meta.source if meta.source != str(file) else "",
    )


def _declares_classifier(props: Mapping[str, str]) -> bool:
    """Whether the file's metadata says it is an image classifier (Tapetum's block with
    ``family="classifier"`` or an Ultralytics ``task: classify`` export)."""
    from tapetum.classify.spec import CLASSIFIER_FAMILY
    from tapetum.detect.spec import METADATA_KEY

    if METADATA_KEY in props:
        return bool(_metadata_block(props).get("family") == CLASSIFIER_FAMILY)
    return props.get("task") == "classify"


def _metadata_block(props: Mapping[str, str]) -> dict[str, Any]:
    """Tapetum's metadata block as a dict ({} when absent or not a JSON object)."""
    from tapetum.detect.spec import METADATA_KEY

    try:
        block = json.loads(props.get(METADATA_KEY, "{}"))
    except json.JSONDecodeError:
        return {}
    return block if isinstance(block, dict) else {}


def _describe_classifier(file: Path, props: Mapping[str, str]) -> ModelDescription:
    """A classifier's description, read by loading it as ``tapetum run --classify`` would."""
    from tapetum.classify import OnnxClassifier
    from tapetum.classify.spec import CLASSIFIER_FAMILY
    from tapetum.detect import RuntimeOptions
    from tapetum.detect.quantize import PRECISION_KEY
    from tapetum.registry.cache import sha256_file

    classifier = OnnxClassifier(file, runtime=RuntimeOptions(intra_op_threads=1, workers=1))
    block = _metadata_block(props)
    return ModelDescription(
        sha256=sha256_file(file),
        size_bytes=file.stat().st_size,
        file_name=file.name,
        family=CLASSIFIER_FAMILY,
        arch=str(block.get("arch", "")),
        input_hw=classifier.input_hw,
        class_names=classifier.class_names,
        precision=props.get(PRECISION_KEY) or graph_precision(file),
        preprocess=classifier.spec.preprocess.to_dict(),
        exported_from=str(block.get("source", "")),
    )


def graph_precision(path: str | Path) -> str:
    """``int8`` when the graph holds quantize/dequantize operators, ``fp16`` when its
    weights are half floats, else ``fp32``."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable ONNX file ({exc})") from exc
    if any(node.op_type in _QUANT_OPS for node in model.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def code_version() -> str:
    """``tapetum 0.1.0`` plus the git commit of the checkout it runs from, when there is one
    (``tapetum 0.1.0 (git 215d3a2…, modified)``)."""
    from tapetum import __version__

    here = Path(__file__).resolve().parents[1]  # the tapetum package folder
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            check=False,
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if sha.returncode != 0:
            return f"tapetum {__version__}"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            check=False,
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return f"tapetum {__version__}"
    modified = ", modified" if dirty.stdout.strip() else ""
    return f"tapetum {__version__} (git {sha.stdout.strip()}{modified})"


def git_commit(version: str) -> str | None:
    """The commit inside a :func:`code_version` string, or None."""
    if "(git " not in version:
        return None
    return version.split("(git ", 1)[1].split(",", maxsplit=1)[0].rstrip(")").strip()


def command_line(argv: list[str] | None = None) -> str:
    """The command that is running, as a user would type it (``tapetum optimize …``)."""
    args = list(sys.argv if argv is None else argv)
    entry = Path(args[0]).parts[-2:] if args else ()
    if entry[-1:] == ("tapetum",) or entry == ("tapetum", "__main__.py"):
        args[0] = "tapetum"  # the console script, or python -m tapetum
    return _cap(" ".join(shlex.quote(a) for a in args))
