"""What the registry hands back: plain frozen records converted once from MLflow's entities,
so callers (CLI, model card, serving) never touch MLflow types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapetum.registry.metadata import (
    TAG_ARTIFACT,
    TAG_CLASSES,
    TAG_CODE_VERSION,
    TAG_COMMAND,
    TAG_FAMILY,
    TAG_INPUT,
    TAG_NUM_CLASSES,
    TAG_PARENT,
    TAG_PRECISION,
    TAG_READY,
    TAG_SHA256,
)
from tapetum.registry.uri import ModelRef, parse_model_ref

__all__ = [
    "AliasChange",
    "DatasetRecord",
    "EvaluationRecord",
    "RegisteredModelInfo",
    "ResolvedModel",
    "RunRecord",
    "VersionInfo",
]

#: Version tag key prefix naming the run of an evaluation: ``tapetum.eval.<dataset>``.
EVAL_TAG_PREFIX = "tapetum.eval."
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/ ]")


def eval_tag(dataset_name: str) -> str:
    """The version tag key that points at the latest evaluation run on ``dataset_name``."""
    return EVAL_TAG_PREFIX + _TAG_UNSAFE.sub("_", dataset_name)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One registered model version.

    Attributes:
        name: registered model name.
        version: version number.
        tags: the version's tags (Tapetum's are under ``tapetum.``).
        aliases: aliases pointing at this version.
        run_id: the MLflow run that stored the artifact and lineage.
        source: the artifact location MLflow recorded.
        created_ms: registration time, Unix milliseconds.
        description: free text given at registration.
        status: MLflow's status (``READY`` once created).
    """

    name: str
    version: int
    tags: Mapping[str, str]
    aliases: tuple[str, ...] = ()
    run_id: str | None = None
    source: str = ""
    created_ms: int = 0
    description: str = ""
    status: str = "READY"

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, version=self.version)

    @property
    def short(self) -> str:
        """``NAME/VERSION``."""
        return f"{self.name}/{self.version}"

    @property
    def ready(self) -> bool:
        """True once registration completed: the artifact is stored and hashed. Versions
        made by other MLflow tools (no ``tapetum.sha256``) are not Tapetum models."""
        return (
            self.status == "READY"
            and self.tags.get(TAG_READY) == "true"
            and len(self.tags.get(TAG_SHA256, "")) == 64
        )

    @property
    def sha256(self) -> str:
        return self.tags.get(TAG_SHA256, "")

    @property
    def file_name(self) -> str:
        return self.tags.get(TAG_ARTIFACT, "model.onnx")

    @property
    def family(self) -> str:
        return self.tags.get(TAG_FAMILY, "")

    @property
    def precision(self) -> str:
        return self.tags.get(TAG_PRECISION, "")

    @property
    def input_size(self) -> str:
        """``HxW`` as registered ("" when unknown)."""
        return self.tags.get(TAG_INPUT, "")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names as registered; a long list (ImageNet's 1000) is cut to MLflow's
        tag size, so count with :attr:`num_classes`."""
        text = self.tags.get(TAG_CLASSES, "")
        return tuple(text.split(",")) if text else ()

    @property
    def num_classes(self) -> int:
        """How many classes the model has (the registered count, not the cut list's)."""
        count = self.tags.get(TAG_NUM_CLASSES, "")
        return int(count) if count.isdigit() else len(self.class_names)

    @property
    def parent(self) -> ModelRef | None:
        text = self.tags.get(TAG_PARENT)
        return parse_model_ref(text) if text else None

    @property
    def command(self) -> str:
        return self.tags.get(TAG_COMMAND, "")

    @property
    def code_version(self) -> str:
        return self.tags.get(TAG_CODE_VERSION, "")

    @property
    def evaluation_runs(self) -> dict[str, str]:
        """Dataset tag suffix → run id of the latest evaluation on it."""
        return {
            k[len(EVAL_TAG_PREFIX) :]: v
            for k, v in self.tags.items()
            if k.startswith(EVAL_TAG_PREFIX)
        }


@dataclass(frozen=True, slots=True)
class RegisteredModelInfo:
    """A registered model: its versions' count, newest version and aliases.

    Attributes:
        name: registered model name.
        aliases: alias → version.
        latest_version: highest version number (None: no versions yet).
        versions: how many versions exist.
        description: free text.
        updated_ms: last change, Unix milliseconds.
        tags: the model's tags (alias history lives here, see ``aliases.py``).
    """

    name: str
    aliases: Mapping[str, int]
    latest_version: int | None
    versions: int
    description: str = ""
    updated_ms: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A registry reference turned into a local, hash-checked model file.

    Attributes:
        path: the file in the local cache (verified against ``sha256`` when resolved).
        name: registered model name.
        version: the version the reference resolved to.
        sha256: the file's registered (and checked) sha256.
        alias: the alias that was followed, if any.
        registry_uri: the store it came from (password redacted).
    """

    path: Path
    name: str
    version: int
    sha256: str
    alias: str | None = None
    registry_uri: str = ""

    @property
    def uri(self) -> str:
        """``models:/NAME/VERSION`` of exactly this version."""
        return str(ModelRef(self.name, version=self.version))

    def describe(self) -> str:
        """``yolox_nano/3 (@champion, sha256 1a2b3c4d5e6f)`` for logs."""
        via = f"@{self.alias}, " if self.alias else ""
        return f"{self.name}/{self.version} ({via}sha256 {self.sha256[:12]})"


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    """Data a model was calibrated, trained or evaluated on, with a content digest.

    Attributes:
        name: what to call it (``coco128/val2017``, ``crowd_720p.avi``).
        source: where it is (a path or URI).
        digest: hex sha256 over its content (see ``cache.content_digest``).
        files: files the digest covers.
        context: ``calibration``, ``training`` or ``evaluation`` (MLflow's input context).
    """

    name: str
    source: str
    digest: str
    files: int
    context: str

    @classmethod
    def from_path(cls, path: str | Path, context: str, name: str | None = None) -> DatasetRecord:
        """Digest the file or folder at ``path``."""
        from tapetum.registry.cache import content_digest

        p = Path(path)
        digest, files = content_digest([p])
        shown = name or _short_name(p)
        return cls(shown, str(p.resolve()), digest, files, context)

    def profile(self) -> str:
        """MLflow's free-form dataset profile: the full digest and the file count."""
        return json.dumps({"sha256": self.digest, "files": self.files})


def _short_name(path: Path) -> str:
    """``coco128/images/train2017`` for a folder (its last three parts), the file name for a
    file."""
    if not path.is_dir():
        return path.name
    return "/".join(path.resolve().parts[-3:])


@dataclass(frozen=True, slots=True)
class RunRecord:
    """An MLflow run as the lineage and the card show it.

    Attributes:
        run_id: MLflow run id.
        name: run name.
        params: parameters logged (command options).
        metrics: latest value of each metric.
        tags: run tags.
        datasets: inputs logged with their digests.
        start_ms: start time, Unix milliseconds.
    """

    run_id: str
    name: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    datasets: Sequence[DatasetRecord]
    start_ms: int = 0


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    """One evaluation of a version, as logged by ``tapetum models eval``.

    Attributes:
        dataset: what it was evaluated on (with its digest).
        metrics: ``map_50_95``, ``map_50``, ``recall_50``, ``fps``, … (fractions, FPS).
        settings: evaluation settings (thresholds, batch size).
        run_id: the MLflow run holding the metrics.
        at_ms: when, Unix milliseconds.
    """

    dataset: DatasetRecord | None
    metrics: Mapping[str, float]
    settings: Mapping[str, str]
    run_id: str
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class AliasChange:
    """What a promotion or rollback did.

    Attributes:
        name: registered model.
        alias: the alias moved.
        version: the version it now points at.
        previous: the version it pointed at before (None: the alias is new).
        action: ``promote`` or ``rollback``.
    """

    name: str
    alias: str
    version: int
    previous: int | None
    action: str

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias,
            "version": self.version,
            "previous": self.previous,
            "action": self.action,
        }
