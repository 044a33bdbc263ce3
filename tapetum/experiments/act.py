"""Apply decisions through the model registry (``--act``): the evidence is recorded on
each variant's version, and the alias moves.

* Every decided variant gets an evaluation run on its version (``tapetum models show``
  lists it) named ``ab/<experiment>``: the effects and intervals as metrics, the verdict
  and its reasons as parameters, and the JSON report as the dataset, with its sha256.
* **promote**: the experiment's alias (``act.alias``, default ``champion``) is pointed at
  the variant's version (one variant at most: the first promoted in file order).
* **rollback**: the alias that brought the variant in is moved back to its previous
  holder: the alias the experiment named it by (``models:/NAME@challenger``), else the
  experiment's alias if the variant holds it now (a canary after a promotion). A variant
  no alias points at has nothing to roll back: its evidence is recorded all the same.
* **hold**: evidence only.

Every alias change goes through :meth:`ModelRegistry.promote`/``rollback``, so the alias
history records who, when and why (the reason names the evidence run).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapetum.errors import ExperimentError, RegistryError
from tapetum.experiments.decision import Verdict

if TYPE_CHECKING:
    from tapetum.experiments.report import ExperimentReport
    from tapetum.registry import ModelRegistry

__all__ = ["Action", "apply_decisions"]

_MAX_PARAM = 480


@dataclass(frozen=True, slots=True)
class Action:
    """What ``--act`` did for one variant.

    Attributes:
        variant: the arm.
        version: ``NAME/VERSION`` of its model.
        verdict: the decision.
        done: what happened, in words.
        evidence_run: the registry run holding the evidence.
        alias: the alias moved, if any, and ``alias_version`` where it points now.
    """

    variant: str
    version: str
    verdict: Verdict
    done: str
    evidence_run: str
    alias: str | None = None
    alias_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "version": self.version,
            "verdict": self.verdict.value,
            "done": self.done,
            "evidence_run": self.evidence_run,
            "alias": self.alias,
            "alias_version": self.alias_version,
        }


def _registered(report: ExperimentReport, arm: str) -> tuple[str, int, str | None]:
    model = (report.info.get("arms", {}).get(arm) or {}).get("model") or {}
    if not model.get("name") or model.get("version") is None:
        raise ExperimentError(
            f"arm {arm!r} is the file {model.get('file')!r}, not a registered version: "
            "acting on a decision needs models:/NAME/VERSION or models:/NAME@ALIAS arms"
        )
    return str(model["name"]), int(model["version"]), model.get("alias")


def apply_decisions(
    report: ExperimentReport,
    report_json: Path,
    registry: str | ModelRegistry | None = None,
) -> list[Action]:
    """Record the evidence on every variant's version and move the aliases (see the
    module docstring); returns what was done, in variant order.

    Raises:
        ExperimentError: a variant (or the control) is a file, not a registered version
            (checked before anything is written).
    """
    from tapetum.registry import ModelRegistry, registry_for

    targets = {v.name: _registered(report, v.name) for v in report.spec.variants}
    _registered(report, "control")
    reg = registry if isinstance(registry, ModelRegistry) else registry_for(registry)
    digest = hashlib.sha256(report_json.read_bytes()).hexdigest()
    actions: list[Action] = []
    promoted = False
    for variant in report.spec.variants:
        name, version, alias = targets[variant.name]
        decision = report.decisions[variant.name]
        run_id = _record_evidence(
            reg,
            report,
            variant.name,
            target=(name, version),
            report_json=report_json,
            digest=digest,
        )
        reason = (
            f"A/B {report.spec.name}: {decision.verdict.value} — {decision.summary}"[:_MAX_PARAM]
            + f" (evidence run {run_id})"
        )
        action = Action(
            variant.name, f"{name}/{version}", decision.verdict, "evidence recorded", run_id
        )
        if decision.verdict is Verdict.PROMOTE and not promoted:
            change = reg.promote(name, version, report.spec.alias, reason=reason)
            was = f" (was {change.previous})" if change.previous is not None else ""
            action = _moved(
                action, f"promoted to @{change.alias}{was}", change.alias, change.version
            )
            promoted = True
        elif decision.verdict is Verdict.PROMOTE:
            action = _moved(action, "not promoted: another variant of this run was", None, None)
        elif decision.verdict is Verdict.ROLLBACK:
            action = _rollback(
                reg,
                action,
                name=name,
                version=version,
                via_alias=alias,
                target_alias=report.spec.alias,
                reason=reason,
            )
        actions.append(action)
    return actions


def _moved(action: Action, done: str, alias: str | None, version: int | None) -> Action:
    return Action(
        action.variant, action.version, action.verdict, done, action.evidence_run, alias, version
    )


def _rollback(
    reg: ModelRegistry,
    action: Action,
    *,
    name: str,
    version: int,
    via_alias: str | None,
    target_alias: str,
    reason: str,
) -> Action:
    from tapetum.registry import ModelRef

    held = set(reg.get_version(ModelRef(name, version=version)).aliases)
    alias = via_alias if via_alias in held else (target_alias if target_alias in held else None)
    if alias is None:
        return _moved(action, "nothing to roll back: no alias points at this version", None, None)
    try:
        change = reg.rollback(name, alias, reason=reason)
    except RegistryError as exc:
        return _moved(action, f"not rolled back: {exc}", alias, None)
    return _moved(
        action,
        f"rolled back @{alias} to version {change.version} (from {version})",
        alias,
        change.version,
    )


def _record_evidence(
    reg: ModelRegistry,
    report: ExperimentReport,
    variant: str,
    *,
    target: tuple[str, int],
    report_json: Path,
    digest: str,
) -> str:
    from tapetum.registry import DatasetRecord, ModelRef

    info = reg.get_version(ModelRef(target[0], version=target[1]))
    decision = report.decisions[variant]
    metrics: dict[str, float | None] = {}
    for metric, effect in report.effects.get(variant, {}).items():
        for key, value in (
            ("variant", effect.variant),
            ("control", effect.control),
            ("diff", effect.diff),
            ("diff_lo", effect.diff_ci[0]),
            ("diff_hi", effect.diff_ci[1]),
        ):
            metrics[f"ab.{metric}.{key}"] = value if math.isfinite(value) else None
    control = _registered(report, "control")
    settings = {
        "experiment": report.spec.name,
        "verdict": decision.verdict.value,
        "reasons": decision.summary[:_MAX_PARAM],
        "control": f"{control[0]}/{control[1]}",
        "mode": report.spec.mode.value,
        "report": report_json.name,
        "report_sha256": digest,
        "checks": json.dumps(
            [[c.metric, c.outcome.value] for c in decision.checks], separators=(",", ":")
        )[:_MAX_PARAM],
    }
    dataset = DatasetRecord(
        name=f"ab/{report.spec.name}",
        source=str(report_json.resolve()),
        digest=digest,
        files=1,
        context="evaluation",
    )
    return reg.log_evaluation(info, metrics, dataset, settings)
