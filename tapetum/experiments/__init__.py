"""A/B experiments in production: shadow and canary traffic, offline comparison on
labelled data, bootstrap intervals over streams and time windows, a decision per variant
(``promote`` / ``hold`` / ``rollback``) applied through the model registry, and a report.

Names are imported lazily (numpy, pydantic, matplotlib and the registry load on first use).

Example:
    >>> from tapetum.experiments import experiment_from_dict
    >>> spec = experiment_from_dict({"name": "int8", "control": {"model": "fp32.onnx"},
    ...                               "variants": [{"name": "int8", "model": "int8.onnx"}]})
    >>> spec.mode.value, [a.name for a in spec.arms]
    ('shadow', ['control', 'int8'])
    >>> from tapetum.experiments import build_report, write_report  # doctest: +SKIP
    >>> report = build_report("runs/ab")                           # doctest: +SKIP
    >>> write_report(report, "runs/ab")   # ab_report.json, ab_report.html  # doctest: +SKIP

The command line: ``tapetum run SOURCES --experiment exp.yaml``, ``tapetum ab offline``,
``tapetum ab report RUN_DIR [--act]`` (see :mod:`tapetum.cli.ab`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "CONTROL": "tapetum.experiments.spec",
    "ArmSpec": "tapetum.experiments.spec",
    "CanaryShare": "tapetum.experiments.spec",
    "DecisionRule": "tapetum.experiments.spec",
    "ExperimentSpec": "tapetum.experiments.spec",
    "Guardrail": "tapetum.experiments.spec",
    "Mode": "tapetum.experiments.spec",
    "OfflineSpec": "tapetum.experiments.spec",
    "Requirement": "tapetum.experiments.spec",
    "SplitBy": "tapetum.experiments.spec",
    "experiment_from_dict": "tapetum.experiments.spec",
    "load_experiment": "tapetum.experiments.spec",
    "METRICS": "tapetum.experiments.metrics",
    "Goal": "tapetum.experiments.metrics",
    "MetricInfo": "tapetum.experiments.metrics",
    "Scope": "tapetum.experiments.metrics",
    "TrafficSplit": "tapetum.experiments.split",
    "LoadedArm": "tapetum.experiments.arms",
    "ModelSource": "tapetum.experiments.arms",
    "load_arms": "tapetum.experiments.arms",
    "LiveExperiment": "tapetum.experiments.live",
    "ShadowRunner": "tapetum.experiments.shadow",
    "ServerExperiment": "tapetum.experiments.serving",
    "ArmData": "tapetum.experiments.record",
    "ArmRecorder": "tapetum.experiments.record",
    "box_agreement": "tapetum.experiments.agreement",
    "Effect": "tapetum.experiments.stats",
    "Estimate": "tapetum.experiments.stats",
    "compare": "tapetum.experiments.stats",
    "Decision": "tapetum.experiments.decision",
    "Verdict": "tapetum.experiments.decision",
    "decide": "tapetum.experiments.decision",
    "ExperimentReport": "tapetum.experiments.report",
    "build_report": "tapetum.experiments.report",
    "write_report": "tapetum.experiments.report",
    "OfflineResult": "tapetum.experiments.offline",
    "evaluate_offline": "tapetum.experiments.offline",
    "Action": "tapetum.experiments.act",
    "apply_decisions": "tapetum.experiments.act",
}

__all__ = [
    "CONTROL",
    "METRICS",
    "Action",
    "ArmData",
    "ArmRecorder",
    "ArmSpec",
    "CanaryShare",
    "Decision",
    "DecisionRule",
    "Effect",
    "Estimate",
    "ExperimentReport",
    "ExperimentSpec",
    "Goal",
    "Guardrail",
    "LiveExperiment",
    "LoadedArm",
    "MetricInfo",
    "Mode",
    "ModelSource",
    "OfflineResult",
    "OfflineSpec",
    "Requirement",
    "Scope",
    "ServerExperiment",
    "ShadowRunner",
    "SplitBy",
    "TrafficSplit",
    "Verdict",
    "apply_decisions",
    "box_agreement",
    "build_report",
    "compare",
    "decide",
    "evaluate_offline",
    "experiment_from_dict",
    "load_arms",
    "load_experiment",
    "write_report",
]

if TYPE_CHECKING:
    from tapetum.experiments.act import Action, apply_decisions
    from tapetum.experiments.agreement import box_agreement
    from tapetum.experiments.arms import LoadedArm, ModelSource, load_arms
    from tapetum.experiments.decision import Decision, Verdict, decide
    from tapetum.experiments.live import LiveExperiment
    from tapetum.experiments.metrics import METRICS, Goal, MetricInfo, Scope
    from tapetum.experiments.offline import OfflineResult, evaluate_offline
    from tapetum.experiments.record import ArmData, ArmRecorder
    from tapetum.experiments.report import ExperimentReport, build_report, write_report
    from tapetum.experiments.serving import ServerExperiment
    from tapetum.experiments.shadow import ShadowRunner
    from tapetum.experiments.spec import (
        CONTROL,
        ArmSpec,
        CanaryShare,
        DecisionRule,
        ExperimentSpec,
        Guardrail,
        Mode,
        OfflineSpec,
        Requirement,
        SplitBy,
        experiment_from_dict,
        load_experiment,
    )
    from tapetum.experiments.split import TrafficSplit
    from tapetum.experiments.stats import Effect, Estimate, compare


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tapetum.experiments' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
