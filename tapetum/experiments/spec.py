"""The experiment file: a control, its variants, a mode, guardrails and decision rules.

A YAML or JSON file, validated by pydantic at this boundary (an error names the file and
the field, ``variants.0.conf``); inside, the experiment is a frozen dataclass. Relative
paths in the file (model files, labelled data) are relative to the file's folder.

.. code-block:: yaml

    name: int8-rollout
    control: {model: "models:/yolox_nano@champion", conf: 0.1}
    variants:
      - {name: int8, model: "models:/yolox_nano/2", conf: 0.1, tracker: bytetrack}
    mode: shadow                  # or canary
    canary: {by: stream, shares: {int8: 0.25}}       # canary only; by: stream | frame |
                                                     # key | header (the last two: server)
    guardrails:
      - {metric: latency_p99_ms, max: 250}           # absolute SLO
      - {metric: latency_p99_ms, max_ratio: 1.5}     # at most 1.5 x the control's
      - {metric: error_rate, max: 0.01}
    decision:
      window_s: 1.0               # bootstrap units: (stream, window) pairs
      confidence: 0.95
      rules:
        - {metric: agreement_f1, require: not_worse, min_effect: 0.10}
        - {metric: map_50_95, require: not_worse, min_effect: 0.01}
    offline: {data: coco128, split: val2017, mot: MOT17/train}
    act: {alias: champion}

Only what can be checked without I/O is checked here (names, shares, metric names,
bounds); models and their classes are checked by :func:`tapetum.experiments.arms.load_arms`
before any frame is read.

Example:
    >>> spec = experiment_from_dict({
    ...     "name": "demo",
    ...     "control": {"model": "a.onnx"},
    ...     "variants": [{"name": "b", "model": "b.onnx", "conf": 0.2}],
    ...     "mode": "canary",
    ...     "canary": {"by": "frame", "shares": {"b": 0.1}},
    ... })
    >>> [a.name for a in spec.arms], spec.shares[0].high
    (['control', 'b'], 0.1)
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from tapetum._optional import import_optional
from tapetum.errors import ExperimentSpecError
from tapetum.experiments.metrics import METRICS, Goal, metric_names

__all__ = [
    "CONTROL",
    "ArmSpec",
    "CanaryShare",
    "DecisionRule",
    "ExperimentSpec",
    "Guardrail",
    "Mode",
    "OfflineSpec",
    "Requirement",
    "SplitBy",
    "experiment_from_dict",
    "load_experiment",
    "spec_from_plain",
]

#: The control arm's name (reserved: a variant may not take it).
CONTROL = "control"

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Mode(StrEnum):
    """How variants meet traffic."""

    #: every variant sees every frame; only the control's results are emitted.
    SHADOW = "shadow"
    #: a share of the traffic is answered by a variant, whose results are emitted.
    CANARY = "canary"


class SplitBy(StrEnum):
    """What a canary share is a share of (sticky: the same key always lands in one arm)."""

    STREAM = "stream"  # pipeline: by source id
    FRAME = "frame"  # pipeline: by (source id, frame index)
    KEY = "key"  # server: by API key (or token subject)
    HEADER = "header"  # server: by the value of a request header


class Requirement(StrEnum):
    """What a decision rule asks of a variant."""

    #: improvement ≥ ``min_effect`` with the interval's confidence.
    BETTER = "better"
    #: no worse than ``min_effect`` (a non-inferiority margin) with that confidence.
    NOT_WORSE = "not_worse"


@dataclass(frozen=True, slots=True)
class ArmSpec:
    """One model under test with its own detector and tracker settings.

    Attributes:
        name: ``control`` or the variant's name (letters, digits, ``_ . -``).
        model: an ONNX file (absolute, or resolved against the experiment file's folder) or
            a registry reference ``models:/NAME/VERSION`` / ``models:/NAME@ALIAS``.
        conf: detection confidence threshold.
        nms_iou: NMS IoU threshold.
        classes: class names or ids to keep (None: all).
        tracker: tracker name (``bytetrack``, ``ocsort``, ``botsort``).
        arch: model family when the file does not say.
        imgsz: model input size for a dynamic-size model.
        threads: ONNX Runtime threads (0: the run's setting for the control, 1 for a
            shadow variant so that it takes one core).
    """

    name: str
    model: str
    conf: float = 0.1
    nms_iou: float = 0.45
    classes: tuple[str, ...] | None = None
    tracker: str = "bytetrack"
    arch: str | None = None
    imgsz: int | None = None
    threads: int = 0

    @property
    def is_registered(self) -> bool:
        """True for a ``models:/`` reference."""
        from tapetum.registry.uri import is_model_uri

        return is_model_uri(self.model)


@dataclass(frozen=True, slots=True)
class CanaryShare:
    """A variant's bucket ``[low, high)`` of the unit interval: a key whose hash falls in
    it is served by the variant (the control takes what no variant covers)."""

    arm: str
    low: float
    high: float

    @property
    def share(self) -> float:
        return self.high - self.low


@dataclass(frozen=True, slots=True)
class Guardrail:
    """An SLO a variant must keep: its metric within an absolute bound (``max``/``min``)
    or within a ratio of the control's (``max_ratio``/``min_ratio``)."""

    metric: str
    max: float | None = None
    min: float | None = None
    max_ratio: float | None = None
    min_ratio: float | None = None

    def describe(self) -> str:
        """``latency_p99_ms ≤ 250``, ``latency_p99_ms ≤ 1.5 × control``."""
        parts = []
        if self.max is not None:
            parts.append(f"{self.metric} ≤ {self.max:g}")
        if self.min is not None:
            parts.append(f"{self.metric} ≥ {self.min:g}")
        if self.max_ratio is not None:
            parts.append(f"{self.metric} ≤ {self.max_ratio:g} × control")
        if self.min_ratio is not None:
            parts.append(f"{self.metric} ≥ {self.min_ratio:g} × control")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class DecisionRule:
    """A comparison of a variant with the control on one metric.

    Attributes:
        metric: a name of :data:`~tapetum.experiments.metrics.METRICS`.
        goal: the better direction (default: the metric's).
        require: ``better`` (improve by at least ``min_effect``) or ``not_worse`` (lose at
            most ``min_effect``).
        min_effect: the smallest change that matters, in the metric's unit (a fraction of
            the control's value with ``relative``).
        relative: ``min_effect`` and the effect are relative to the control's value.
    """

    metric: str
    goal: Goal
    require: Requirement = Requirement.NOT_WORSE
    min_effect: float = 0.0
    relative: bool = False

    def describe(self) -> str:
        unit = METRICS[self.metric].unit
        unit = "%" if self.relative else (f" {unit}" if unit in ("ms", "fps") else "")
        size = 100 * self.min_effect if self.relative else self.min_effect
        verb = "improves by ≥" if self.require is Requirement.BETTER else "loses at most"
        return f"{self.metric} {verb} {size:g}{unit}"


@dataclass(frozen=True, slots=True)
class OfflineSpec:
    """The labelled data to compare the arms on.

    Attributes:
        data: labelled images (COCO json, YOLO data.yaml or a dataset folder), or None.
        split: split of a dataset folder (``val2017``).
        images: image folder of a COCO json.
        mot: a MOTChallenge split or sequence folder with ``img1`` frames and ``gt``:
            HOTA/IDF1 of each arm's detector and tracker; None: no tracking evaluation.
        protocol: ``deployed`` scores each arm at its own thresholds (what it would emit);
            ``coco`` at confidence 0.001 and 100 boxes per image (the models alone).
        resamples: bootstrap resamples of the images for the mAP intervals.
        max_images: evaluate only the first N images (None: all).
    """

    data: Path | None = None
    split: str | None = None
    images: Path | None = None
    mot: Path | None = None
    protocol: str = "deployed"
    resamples: int = 1000
    max_images: int | None = None


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """A validated experiment (see the module docstring for the file layout).

    Attributes:
        name: the experiment's name (also the hash salt of canary splits).
        control: the arm in production.
        variants: the arms under test (at least one).
        mode: shadow or canary.
        split_by: what canary shares divide.
        shares: the variants' buckets (canary only).
        header: the request header a ``header`` split reads.
        guardrails: SLOs every variant must keep.
        rules: comparisons a variant must pass to be promoted.
        window_s: length of the time windows that, per stream, are the bootstrap units.
        confidence: two-sided confidence of the intervals.
        resamples: bootstrap resamples of the online metrics.
        seed: bootstrap seed (reports are reproducible).
        offline: labelled data, or None.
        alias: the registry alias a promotion moves (``--act``).
        path: the file it was read from, if any.
    """

    name: str
    control: ArmSpec
    variants: tuple[ArmSpec, ...]
    mode: Mode = Mode.SHADOW
    split_by: SplitBy = SplitBy.STREAM
    shares: tuple[CanaryShare, ...] = ()
    header: str = "x-tapetum-split"
    guardrails: tuple[Guardrail, ...] = ()
    rules: tuple[DecisionRule, ...] = ()
    window_s: float = 1.0
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0
    offline: OfflineSpec | None = None
    alias: str = "champion"
    path: Path | None = field(default=None, compare=False)

    @property
    def arms(self) -> tuple[ArmSpec, ...]:
        """Control first, then the variants in file order."""
        return (self.control, *self.variants)

    def arm(self, name: str) -> ArmSpec:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise ExperimentSpecError(
            f"experiment {self.name!r} has no arm {name!r}; arms: "
            f"{', '.join(a.name for a in self.arms)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (enums as values, paths as strings)."""
        plain: dict[str, Any] = _plain(asdict(self))
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def spec_from_plain(data: Mapping[str, Any]) -> ExperimentSpec:
    """Inverse of :meth:`ExperimentSpec.to_dict` (a run folder's record of its spec).

    Raises:
        ExperimentError: the record is not an experiment of this version.
    """
    from tapetum.errors import ExperimentError

    def arm(d: Mapping[str, Any]) -> ArmSpec:
        classes = d.get("classes")
        return ArmSpec(**{**d, "classes": tuple(classes) if classes is not None else None})

    try:
        offline = data.get("offline")
        return ExperimentSpec(
            name=data["name"],
            control=arm(data["control"]),
            variants=tuple(arm(v) for v in data["variants"]),
            mode=Mode(data["mode"]),
            split_by=SplitBy(data["split_by"]),
            shares=tuple(CanaryShare(**s) for s in data["shares"]),
            header=data["header"],
            guardrails=tuple(Guardrail(**g) for g in data["guardrails"]),
            rules=tuple(
                DecisionRule(
                    r["metric"],
                    Goal(r["goal"]),
                    Requirement(r["require"]),
                    r["min_effect"],
                    r["relative"],
                )
                for r in data["rules"]
            ),
            window_s=data["window_s"],
            confidence=data["confidence"],
            resamples=data["resamples"],
            seed=data["seed"],
            offline=OfflineSpec(
                **{
                    **offline,
                    **{
                        k: Path(offline[k]) if offline[k] else None
                        for k in ("data", "images", "mot")
                    },
                }
            )
            if offline
            else None,
            alias=data["alias"],
            path=Path(data["path"]) if data.get("path") else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ExperimentError(f"not an experiment record of this version: {exc!r}") from None


# ------------------------------------------------------------------------ the file


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment file (``.yaml``/``.yml`` or ``.json``).

    Raises:
        ExperimentSpecError: the file is missing or unparseable, or does not validate (the
            message names the file and each failing field).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExperimentSpecError(
            f"cannot read experiment file {file}: {exc.strerror or exc}"
        ) from None
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            yaml = import_optional("yaml", "experiments", "reading a YAML experiment")
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExperimentSpecError(f"cannot parse experiment file {file}: {first}") from None
    if not isinstance(data, Mapping):
        raise ExperimentSpecError(
            f"experiment file {file} must be a mapping with control, variants and mode"
        )
    return experiment_from_dict(data, base=file.parent, path=file)


def experiment_from_dict(
    data: Mapping[str, Any], *, base: Path | None = None, path: Path | None = None
) -> ExperimentSpec:
    """Validate an experiment given as a dict (a parsed file, an API payload).

    Args:
        data: the experiment (see the module docstring).
        base: folder that relative paths are resolved against (None: left as given).
        path: the file it came from, for messages.

    Raises:
        ExperimentSpecError: a field does not validate, names clash, canary shares overlap,
            or a rule or guardrail names an unknown metric.
    """
    from tapetum.experiments._schema import ExperimentModel, validation_message

    where = str(path) if path is not None else "experiment"
    try:
        model = ExperimentModel.model_validate(dict(data))
    except Exception as exc:  # pydantic.ValidationError, imported lazily with the schema
        raise ExperimentSpecError(f"{where}: {validation_message(exc)}") from None
    control = _arm(CONTROL, model.control, base)
    variants = tuple(
        _arm(v.name or f"variant{i + 1}", v, base) for i, v in enumerate(model.variants)
    )
    _check_names(where, [control, *variants])
    mode = Mode(model.mode)
    split_by, header = SplitBy.STREAM, "x-tapetum-split"
    shares: tuple[CanaryShare, ...] = ()
    if model.canary is not None:
        if mode is not Mode.CANARY:
            raise ExperimentSpecError(f"{where}: canary: shares are for mode canary, not {mode}")
        split_by, header = SplitBy(model.canary.by), model.canary.header.lower()
        shares = _shares(where, model.canary.shares, [v.name for v in variants])
    elif mode is Mode.CANARY:
        raise ExperimentSpecError(
            f"{where}: mode canary needs a canary section with the variants' shares"
        )
    decision = model.decision
    return ExperimentSpec(
        name=model.name,
        control=control,
        variants=variants,
        mode=mode,
        split_by=split_by,
        shares=shares,
        header=header,
        guardrails=tuple(_guardrail(where, i, g) for i, g in enumerate(model.guardrails)),
        rules=tuple(_rule(where, i, r) for i, r in enumerate(decision.rules)),
        window_s=decision.window_s,
        confidence=decision.confidence,
        resamples=decision.resamples,
        seed=decision.seed,
        offline=_offline(model.offline, base) if model.offline is not None else None,
        alias=model.act.alias,
        path=path,
    )


def _resolve(text: str | None, base: Path | None) -> Path | None:
    if text is None:
        return None
    p = Path(text).expanduser()
    return p if p.is_absolute() or base is None else base / p


def _arm(name: str, arm: Any, base: Path | None) -> ArmSpec:
    from tapetum.registry.uri import is_model_uri

    model = arm.model if is_model_uri(arm.model) else str(_resolve(arm.model, base))
    return ArmSpec(
        name=name,
        model=model,
        conf=arm.conf,
        nms_iou=arm.nms,
        classes=tuple(arm.classes) if arm.classes is not None else None,
        tracker=arm.tracker,
        arch=arm.arch,
        imgsz=arm.imgsz,
        threads=arm.threads,
    )


def _check_names(where: str, arms: Sequence[ArmSpec]) -> None:
    seen: set[str] = set()
    for i, arm in enumerate(arms):
        field_name = "control" if i == 0 else f"variants.{i - 1}.name"
        if i and arm.name == CONTROL:
            raise ExperimentSpecError(f"{where}: {field_name}: {CONTROL!r} names the control")
        if not _ARM_NAME.match(arm.name):
            raise ExperimentSpecError(
                f"{where}: {field_name}: {arm.name!r} is not a usable name (letters, digits, "
                "_ . -, up to 64)"
            )
        if arm.name in seen:
            raise ExperimentSpecError(f"{where}: {field_name}: two arms are named {arm.name!r}")
        seen.add(arm.name)


def _shares(
    where: str, given: Mapping[str, float | Sequence[float]], variants: Sequence[str]
) -> tuple[CanaryShare, ...]:
    """Buckets of the unit interval: a float is a share laid after the previous bucket, a
    pair an explicit ``[low, high)``; buckets may not overlap, and at least one variant
    needs a share."""
    unknown = sorted(set(given) - set(variants))
    if unknown:
        raise ExperimentSpecError(
            f"{where}: canary.shares: no variant named {', '.join(map(repr, unknown))}; "
            f"variants: {', '.join(variants)}"
        )
    buckets: list[CanaryShare] = []
    cursor = 0.0
    for name in variants:
        if name not in given:
            continue
        value = given[name]
        if isinstance(value, int | float):
            low, high = cursor, cursor + float(value)
        else:
            low, high = float(value[0]), float(value[1])
        if not (0.0 <= low < high <= 1.0 + 1e-9) or not math.isfinite(high):
            raise ExperimentSpecError(
                f"{where}: canary.shares.{name}: [{low:g}, {high:g}) is not a share of [0, 1) "
                "(shares add up to more than 1, or a range is empty or outside [0, 1))"
            )
        buckets.append(CanaryShare(name, low, min(high, 1.0)))
        cursor = high
    ordered = sorted(buckets, key=lambda b: b.low)
    for a, b in itertools.pairwise(ordered):
        if b.low < a.high - 1e-12:
            raise ExperimentSpecError(
                f"{where}: canary.shares of {a.arm!r} [{a.low:g}, {a.high:g}) and {b.arm!r} "
                f"[{b.low:g}, {b.high:g}) overlap: a stream would belong to both"
            )
    if not buckets:
        raise ExperimentSpecError(f"{where}: canary.shares: give at least one variant a share")
    return tuple(buckets)


def _known_metric(where: str, field_name: str, metric: str) -> None:
    if metric not in METRICS:
        raise ExperimentSpecError(
            f"{where}: {field_name}: unknown metric {metric!r}; known: {', '.join(metric_names())}"
        )


def _guardrail(where: str, i: int, g: Any) -> Guardrail:
    _known_metric(where, f"guardrails.{i}.metric", g.metric)
    bounds = (g.max, g.min, g.max_ratio, g.min_ratio)
    if all(b is None for b in bounds):
        raise ExperimentSpecError(
            f"{where}: guardrails.{i}: give a bound: max, min, max_ratio or min_ratio"
        )
    return Guardrail(g.metric, g.max, g.min, g.max_ratio, g.min_ratio)


def _rule(where: str, i: int, r: Any) -> DecisionRule:
    _known_metric(where, f"decision.rules.{i}.metric", r.metric)
    goal = Goal(r.goal) if r.goal is not None else METRICS[r.metric].goal
    return DecisionRule(r.metric, goal, Requirement(r.require), r.min_effect, r.relative)


def _offline(o: Any, base: Path | None) -> OfflineSpec:
    return OfflineSpec(
        data=_resolve(o.data, base),
        split=o.split,
        images=_resolve(o.images, base),
        mot=_resolve(o.mot, base),
        protocol=o.protocol,
        resamples=o.resamples,
        max_images=o.max_images,
    )
