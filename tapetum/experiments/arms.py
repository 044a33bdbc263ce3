"""An experiment's arms made real: models resolved (registry or file), detectors loaded
with each arm's settings, and the checks that refuse an experiment before any frame is
read (unknown model, a model that does not load, classes that differ from the control's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapetum.errors import ConfigError, ExperimentSpecError, ModelLoadError, ModelNotFoundError
from tapetum.experiments.spec import CONTROL, ArmSpec, ExperimentSpec

if TYPE_CHECKING:
    from tapetum.detect import OnnxDetector, RuntimeOptions
    from tapetum.registry import ModelRegistry, ResolvedModel
    from tapetum.track import Tracker

__all__ = ["LoadedArm", "ModelSource", "check_classes", "load_arms", "resolve_arm_model"]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where an arm's model file came from.

    Attributes:
        path: the local file (the hash-checked cache for a registered version).
        uri: the reference as written (``models:/…``), None for a file.
        name, version, alias: the registered version (None for a file).
        sha256: the file's sha256.
    """

    path: Path
    uri: str | None = None
    name: str | None = None
    version: int | None = None
    alias: str | None = None
    sha256: str = ""

    @property
    def registered(self) -> bool:
        return self.name is not None and self.version is not None

    def describe(self) -> str:
        """``yolox_nano/2 (@challenger)`` or the file name."""
        if self.registered:
            via = f" (@{self.alias})" if self.alias else ""
            return f"{self.name}/{self.version}{via}"
        return self.path.name

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; a file is named, not located (reports travel)."""
        return {
            "file": self.path.name,
            "uri": self.uri,
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "sha256": self.sha256,
        }

    @classmethod
    def from_resolved(cls, uri: str, resolved: ResolvedModel) -> ModelSource:
        return cls(
            resolved.path, uri, resolved.name, resolved.version, resolved.alias, resolved.sha256
        )


@dataclass(slots=True)
class LoadedArm:
    """An arm ready to run: its settings, its detector and where the model came from."""

    spec: ArmSpec
    detector: OnnxDetector
    source: ModelSource

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_control(self) -> bool:
        return self.spec.name == CONTROL

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.detector.class_names)

    def make_tracker(self, frame_rate: float) -> Tracker:
        """A fresh tracker of this arm's kind for one stream."""
        from tapetum.track import make_tracker

        return make_tracker(self.spec.tracker, frame_rate=frame_rate or 30.0)

    def shares_input_with(self, other: LoadedArm) -> bool:
        """True when both models read the same tensor from a frame (same input size and
        preprocessing), so one letterboxed frame can feed both."""
        return self.detector.letterbox == other.detector.letterbox

    def as_dict(self) -> dict[str, Any]:
        spec = dataclasses.asdict(self.spec)
        spec["model"] = self.source.uri or self.source.path.name
        return {
            "name": self.name,
            "settings": spec,
            "model": self.source.as_dict(),
            "family": self.detector.meta.family,
            "input_hw": list(self.detector.input_hw),
            "classes": len(self.class_names),
        }


def resolve_arm_model(
    arm: ArmSpec, *, registry: str | ModelRegistry | None = None, where: str = "experiment"
) -> ModelSource:
    """The arm's model as a local file.

    Raises:
        ExperimentSpecError: an unknown registered model, version or alias, or a missing
            file (the message names the arm).
    """
    from tapetum.registry.cache import sha256_file

    if not arm.is_registered:
        path = Path(arm.model)
        if not path.is_file():
            raise ExperimentSpecError(f"{where}: arm {arm.name!r}: model file not found: {path}")
        return ModelSource(path, sha256=sha256_file(path))
    from tapetum.registry import resolve_model_uri

    try:
        resolved = resolve_model_uri(arm.model, registry=registry)
    except (ModelNotFoundError, ConfigError) as exc:
        raise ExperimentSpecError(f"{where}: arm {arm.name!r}: {exc}") from None
    return ModelSource.from_resolved(arm.model, resolved)


def load_arms(
    spec: ExperimentSpec,
    *,
    registry: str | ModelRegistry | None = None,
    runtime_for: Callable[[ArmSpec], RuntimeOptions] | None = None,
) -> list[LoadedArm]:
    """Resolve and load every arm (control first), then check the classes.

    Args:
        spec: the experiment.
        registry: the store of ``models:/`` arms (default: ``$TAPETUM_REGISTRY_URI``).
        runtime_for: ONNX Runtime options per arm (default: one thread per variant, the
            automatic plan for the control).

    Raises:
        ExperimentSpecError: an unknown model, a model that does not load with the arm's
            settings, an unknown tracker, or classes that differ from the control's.
    """
    where = str(spec.path) if spec.path is not None else f"experiment {spec.name!r}"
    sources = [resolve_arm_model(a, registry=registry, where=where) for a in spec.arms]
    loaded = [
        LoadedArm(a, _load_detector(a, s.path, where, runtime_for), s)
        for a, s in zip(spec.arms, sources, strict=True)
    ]
    check_classes(loaded, where)
    return loaded


def _default_runtime(arm: ArmSpec) -> RuntimeOptions:
    from tapetum.detect import RuntimeOptions

    if arm.name == CONTROL:
        return RuntimeOptions(intra_op_threads=arm.threads)
    return RuntimeOptions(intra_op_threads=arm.threads or 1, workers=1)


def _load_detector(
    arm: ArmSpec,
    path: Path,
    where: str,
    runtime_for: Callable[[ArmSpec], RuntimeOptions] | None,
) -> OnnxDetector:
    from tapetum.detect import DetectorConfig, load_detector
    from tapetum.detect.classes import resolve_class_filter
    from tapetum.track import make_tracker

    try:
        make_tracker(arm.tracker, 30.0)  # an unknown name fails before any model loads
        config = DetectorConfig(conf_threshold=arm.conf, nms_iou=arm.nms_iou)
        runtime = (runtime_for or _default_runtime)(arm)
        detector = load_detector(
            path,
            arm.arch,
            config,
            runtime,
            input_hw=(arm.imgsz, arm.imgsz) if arm.imgsz else None,
        )
        keep = resolve_class_filter(detector.class_names, list(arm.classes or ()) or None)
    except (ModelLoadError, ConfigError) as exc:
        raise ExperimentSpecError(f"{where}: arm {arm.name!r}: {exc}") from None
    detector.config = dataclasses.replace(config, class_ids=keep)
    return detector


def check_classes(arms: Sequence[LoadedArm], where: str = "experiment") -> None:
    """Every variant must detect the control's classes, in the same order (class ids are
    compared box by box).

    Raises:
        ExperimentSpecError: naming the variant and the classes only one side has.
    """
    control = arms[0].class_names
    for arm in arms[1:]:
        theirs = arm.class_names
        if theirs == control:
            continue
        only_control = [c for c in control if c not in theirs]
        only_variant = [c for c in theirs if c not in control]
        if not only_control and not only_variant:
            detail = "the same classes in another order (class ids would not compare)"
        else:
            detail = (
                f"only the control has {_few(only_control)}; "
                f"only the variant has {_few(only_variant)}"
            )
        raise ExperimentSpecError(
            f"{where}: variant {arm.name!r} ({arm.source.describe()}) detects other classes "
            f"than the control ({len(theirs)} vs {len(control)}): {detail}"
        )


def _few(names: Sequence[str], most: int = 6) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
