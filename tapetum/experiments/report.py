"""The analysis of a run folder: every arm's metrics with intervals, every variant's effects
against the control, the decisions, and the report files (JSON and a self-contained HTML
page, :mod:`tapetum.experiments.html`).

Online evidence comes from ``experiment/arms/*.npz`` (a live run), offline evidence from
``experiment/offline.{json,npz}`` (``tapetum ab offline`` or the run's offline step);
either may be missing, and a rule on a metric without data holds the decision.

Example:
    >>> from tapetum.experiments import build_report, write_report
    >>> report = build_report("runs/ab")                 # doctest: +SKIP
    >>> report.decisions["int8"].verdict.value           # doctest: +SKIP
    'promote'
    >>> write_report(report, "runs/ab")                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tapetum._types import Float64Array
from tapetum.errors import ExperimentError
from tapetum.experiments.decision import Decision, decide
from tapetum.experiments.live import EXPERIMENT_DIR
from tapetum.experiments.metrics import METRICS
from tapetum.experiments.online import UnitIndex, online_estimates, unit_index, unit_table
from tapetum.experiments.record import DATA_FORMAT, ArmData
from tapetum.experiments.spec import CONTROL, ExperimentSpec, Mode, SplitBy, spec_from_plain
from tapetum.experiments.stats import Effect, Estimate, compare, resample_weights

__all__ = ["ExperimentReport", "build_report", "write_report"]

#: Bins of the confidence histograms (0 to 1).
CONFIDENCE_BINS = 20
#: Points kept of each latency CDF in the report.
CDF_POINTS = 400


@dataclass(slots=True)
class ExperimentReport:
    """Everything a run folder says about the experiment.

    Attributes:
        spec: the experiment.
        info: the run's record (``experiment.json``), or a stub without a live run.
        arms: the arms' online records (empty without a live run).
        online: arm → metric → estimate.
        offline: arm → metric → estimate.
        offline_info: ``offline.json`` (per-class AP, tracking tables), or None.
        effects: variant → metric → effect against the control.
        decisions: variant → decision.
        class_agreement: variant → class → {precision, recall, f1: (value, lo, hi)}.
        units: the online units.
        seconds: time the analysis took.
    """

    spec: ExperimentSpec
    info: dict[str, Any]
    arms: dict[str, ArmData]
    online: dict[str, dict[str, Estimate]]
    offline: dict[str, dict[str, Estimate]]
    offline_info: dict[str, Any] | None
    effects: dict[str, dict[str, Effect]]
    decisions: dict[str, Decision]
    class_agreement: dict[str, dict[str, dict[str, tuple[float, float, float]]]]
    units: UnitIndex | None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def paired(self) -> bool:
        return not (self.spec.mode is Mode.CANARY and self.spec.split_by is SplitBy.STREAM)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        conf = self.spec.confidence
        arms: dict[str, Any] = {}
        for arm in self.spec.arms:
            data = self.arms.get(arm.name)
            arms[arm.name] = {
                "model": self.info.get("arms", {}).get(arm.name, {}).get("model"),
                "settings": self.info.get("arms", {}).get(arm.name, {}).get("settings"),
                "frames": data.frames if data is not None else 0,
                "online": _estimates(self.online.get(arm.name, {}), conf),
                "offline": _estimates(self.offline.get(arm.name, {}), conf),
                "classes": _class_summary(data) if data is not None else {},
            }
        variants = {
            v.name: {
                "effects": {m: e.as_dict() for m, e in self.effects.get(v.name, {}).items()},
                "agreement_per_class": {
                    cls: {k: [_num(x) for x in vals] for k, vals in per.items()}
                    for cls, per in self.class_agreement.get(v.name, {}).items()
                },
                "decision": self.decisions[v.name].as_dict(),
            }
            for v in self.spec.variants
        }
        return {
            "format": DATA_FORMAT,
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "experiment": self.spec.to_dict(),
            "run": {
                k: self.info.get(k)
                for k in ("live", "started", "finished", "shadow", "machine", "tapetum")
            }
            | {"pipeline": _pipeline_summary(self.info.get("pipeline"))},
            "units": self.units.describe() if self.units is not None else None,
            "bootstrap": {
                "confidence": conf,
                "resamples_online": self.spec.resamples,
                "paired": self.paired,
                "seed": self.spec.seed,
                "units_online": "(stream, window) pairs",
                "units_offline": "images",
            },
            "offline": self.offline_info,
            "arms": arms,
            "variants": variants,
            "decisions": {name: d.verdict.value for name, d in self.decisions.items()},
            "analysis_s": round(self.seconds, 3),
        }


def _num(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def _estimates(values: dict[str, Estimate], confidence: float) -> dict[str, Any]:
    return {
        m: {"value": _num(e.value), "ci": [_num(v) for v in e.interval(confidence)]}
        for m, e in values.items()
    }


def _pipeline_summary(stats: Any) -> dict[str, Any] | None:
    if not isinstance(stats, dict):
        return None
    keys = (
        "frames_read",
        "frames_processed",
        "frames_dropped",
        "frames_failed",
        "elapsed_s",
        "fps",
    )
    return {k: stats.get(k) for k in keys}


def _class_summary(arm: ArmData) -> dict[str, Any]:
    """Per class: boxes, mean confidence and the confidence histogram (vectorised)."""
    c_count = len(arm.class_names)
    counts = np.bincount(arm.box_class, minlength=c_count)
    sums = np.bincount(arm.box_class, weights=arm.box_confidence, minlength=c_count)
    bins = np.clip((arm.box_confidence * CONFIDENCE_BINS).astype(np.int64), 0, CONFIDENCE_BINS - 1)
    hist = np.bincount(
        arm.box_class * CONFIDENCE_BINS + bins, minlength=c_count * CONFIDENCE_BINS
    ).reshape(c_count, CONFIDENCE_BINS)
    return {
        arm.class_names[c]: {
            "boxes": int(counts[c]),
            "mean_confidence": round(float(sums[c] / counts[c]), 4),
            "histogram": hist[c].tolist(),
        }
        for c in np.flatnonzero(counts)
    }


# ----------------------------------------------------------------------------- loading


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"cannot read {path.name}: {exc}") from None
    if not isinstance(data, dict):
        raise ExperimentError(f"{path.name} is not an experiment record")
    return data


def _experiment_folder(run_dir: Path) -> Path:
    folder = run_dir / EXPERIMENT_DIR
    if not folder.is_dir():
        raise ExperimentError(
            f"{run_dir} holds no experiment data (no {EXPERIMENT_DIR}/ folder): run "
            "tapetum run … --experiment FILE -o RUN_DIR, or tapetum ab offline FILE RUN_DIR"
        )
    return folder


def build_report(run_dir: str | Path) -> ExperimentReport:
    """Analyse a run folder (online and offline evidence, decisions).

    Raises:
        ExperimentError: no experiment data, or data of another format version.
    """
    started = time.perf_counter()
    folder = _experiment_folder(Path(run_dir))
    info_path = folder / "experiment.json"
    offline_path = folder / "offline.json"
    if not info_path.is_file() and not offline_path.is_file():
        raise ExperimentError(f"{folder} has neither experiment.json nor offline.json")
    info = _read_json(info_path) if info_path.is_file() else _read_json(folder / "spec.json")
    if info.get("format") != DATA_FORMAT:
        raise ExperimentError(
            f"{folder}: experiment data format {info.get('format')!r}, this Tapetum reads "
            f"{DATA_FORMAT}"
        )
    spec = spec_from_plain(info["spec"])
    arms = {
        a.name: ArmData.load(folder / "arms" / f"{a.name}.npz")
        for a in spec.arms
        if (folder / "arms" / f"{a.name}.npz").is_file()
    }
    report = ExperimentReport(spec, info, arms, {}, {}, None, {}, {}, {}, None)
    if arms:
        _online(report)
    if offline_path.is_file():
        _offline(report, folder)
    _compare(report)
    report.seconds = time.perf_counter() - started
    return report


def _online(report: ExperimentReport) -> None:
    spec = report.spec
    ordered = [report.arms[a.name] for a in spec.arms if a.name in report.arms]
    index = unit_index(ordered, spec.window_s)
    report.units = index
    rng = np.random.default_rng(spec.seed)
    shared = resample_weights(index.units, spec.resamples, rng)
    shadow = spec.mode is Mode.SHADOW
    for data in ordered:
        table = unit_table(data, index)
        weights = shared if report.paired else _own_units(index, table.attempted, spec, rng)
        is_control = data.name == CONTROL
        report.online[data.name] = online_estimates(
            data, table, weights, self_agreement=shadow and is_control
        )
        if shadow and not is_control and data.has_agreement:
            report.class_agreement[data.name] = _class_agreement(data, table, weights, spec)


def _own_units(
    index: UnitIndex, attempted: Float64Array, spec: ExperimentSpec, rng: np.random.Generator
) -> Float64Array:
    """Weights that resample only the units an arm ran on (independent arms)."""
    mine = np.flatnonzero(attempted > 0)
    weights = np.zeros((spec.resamples, index.units))
    weights[:, mine] = resample_weights(mine.shape[0], spec.resamples, rng)
    return weights


def _class_agreement(
    data: ArmData, table: Any, weights: Float64Array, spec: ExperimentSpec
) -> dict[str, dict[str, tuple[float, float, float]]]:
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    tp, nv, nc = table.class_tp, table.class_n_variant, table.class_n_control
    present = np.flatnonzero((nv + nc).sum(axis=0) > 0)
    from tapetum.experiments.stats import ratio_estimate

    for c in present:
        per: dict[str, tuple[float, float, float]] = {}
        for name, (num, den) in {
            "precision": (tp[:, c], nv[:, c]),
            "recall": (tp[:, c], nc[:, c]),
            "f1": (2 * tp[:, c], nv[:, c] + nc[:, c]),
        }.items():
            est = ratio_estimate(num, den, weights)
            per[name] = (est.value, *est.interval(spec.confidence))
        per["boxes_control"] = (float(nc[:, c].sum()), math.nan, math.nan)
        out[data.class_names[c]] = per
    return out


def _offline(report: ExperimentReport, folder: Path) -> None:
    info = _read_json(folder / "offline.json")
    report.offline_info = info
    samples: dict[str, Float64Array] = {}
    npz_path = folder / "offline.npz"
    if npz_path.is_file():
        with np.load(npz_path, allow_pickle=False) as npz:
            samples = {k: npz[k] for k in npz.files}
    for name, arm in info.get("arms", {}).items():
        report.offline[name] = {
            m: Estimate(
                v["value"] if v["value"] is not None else math.nan, samples.get(f"{name}/{m}")
            )
            for m, v in arm.get("metrics", {}).items()
        }


def _compare(report: ExperimentReport) -> None:
    spec = report.spec
    for variant in spec.variants:
        effects: dict[str, Effect] = {}
        for source in (report.online, report.offline):
            control, mine = source.get(CONTROL, {}), source.get(variant.name, {})
            for metric in METRICS:
                if metric in control and metric in mine:
                    effects[metric] = compare(control[metric], mine[metric], spec.confidence)
        report.effects[variant.name] = effects
        report.decisions[variant.name] = decide(variant.name, effects, spec.rules, spec.guardrails)


def write_report(report: ExperimentReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``ab_report.json`` and ``ab_report.html`` into ``out_dir``; returns both."""
    from tapetum.experiments.html import render_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    json_path, html_path = out / "ab_report.json", out / "ab_report.html"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    html_path.write_text(render_html(report, data), encoding="utf-8")
    return json_path, html_path
