"""``tapetum models``: the model registry (MLflow) from the command line.

Registered by the CLI as ``app.add_typer(models_app, name="models")``. MLflow and the
registry are imported only when a command runs; ``--registry`` (or
``$TAPETUM_REGISTRY_URI``) picks the store, by default ``sqlite:///tapetum-registry.db``
and ``./tapetum-artifacts`` in the working directory.

    tapetum models register yolox_nano.onnx --name yolox_nano
    tapetum optimize models:/yolox_nano/1 --precision int8 --calib crowd.mp4 \\
        -o yolox_nano_int8.onnx --register yolox_nano
    tapetum models eval yolox_nano/2 --data coco128 --split val2017
    tapetum models promote yolox_nano 2 --reason "INT8: 1.9x faster, -0.6 mAP"
    tapetum models lineage yolox_nano/2
    tapetum models rollback yolox_nano --reason "misses small people"
    tapetum models card yolox_nano/2 -o MODEL_CARD.md
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tapetum.errors import ConfigError
from tapetum.registry.settings import ENV_REGISTRY_URI

if TYPE_CHECKING:
    from tapetum.eval.datasets import DetectionDataset
    from tapetum.eval.detect import DetectionReport
    from tapetum.registry import (
        DatasetRecord,
        ModelRef,
        ModelRegistry,
        VersionInfo,
    )

models_app = typer.Typer(
    name="models",
    help="Model registry (MLflow): register, list, show, lineage, promote, roll back, "
    "evaluate, model cards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RegistryOption = Annotated[
    str | None,
    typer.Option(
        "--registry",
        envvar=ENV_REGISTRY_URI,
        help="Registry store: sqlite:///FILE.db (default: sqlite:///tapetum-registry.db, "
        "artifacts in ./tapetum-artifacts), postgresql://… or an MLflow server "
        "http(s)://HOST:PORT.",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]

#: Metrics an evaluation logs on a version (fractions, except FPS and milliseconds).
EVAL_METRICS = (
    "map_50_95",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "ar_100",
    "recall_50",
    "recall_75",
    "images_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
)


def _open(registry: str | None) -> ModelRegistry:
    from tapetum.registry import registry_for

    return registry_for(registry)


def _out(text: str) -> None:
    from rich.console import Console

    Console(soft_wrap=True).print(text, highlight=False, markup=False)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M") if ms else "-"


def _version_ref(text: str) -> ModelRef:
    """``NAME/VERSION``, ``NAME@ALIAS`` or a ``models:/`` URI, naming one version."""
    from tapetum.registry import parse_model_ref

    ref = parse_model_ref(text)
    if ref.version is None and ref.alias is None and "/" not in text:
        raise ConfigError(f"{text!r}: name a version, NAME/VERSION or NAME@ALIAS")
    return ref


# ---------------------------------------------------------------------- registering


def register_file(
    path: Path,
    name: str,
    *,
    registry: ModelRegistry,
    arch: str | None = None,
    parent: ModelRef | None = None,
    params: Mapping[str, Any] | None = None,
    datasets: Sequence[DatasetRecord] = (),
    description: str = "",
) -> VersionInfo:
    """Register ``path`` with the running command as its lineage and print one line; the
    shared step of ``models register``, ``export --register`` and ``optimize --register``."""
    from tapetum.registry.metadata import command_line

    info = registry.register(
        path,
        name,
        arch=arch,
        parent=parent,
        command=command_line(),
        params=params,
        datasets=datasets,
        description=description,
    )
    made_from = f"; parent {info.parent.short}" if info.parent else ""
    data = f"; {len(datasets)} dataset(s) recorded" if datasets else ""
    _out(
        f"registered {info.short}: {info.family} {info.precision} {info.input_size}, "
        f"{info.num_classes} classes, sha256 {info.sha256[:16]}{made_from}{data} "
        f"({registry.shown_uri})"
    )
    return info


def find_parent(registry: ModelRegistry, file: Path, prefer: str | None = None) -> ModelRef | None:
    """The registered version whose file is ``file`` (same sha256), preferring one of the
    model ``prefer``; None when the file was never registered."""
    from tapetum.registry import sha256_file

    matches = registry.find_by_sha256(sha256_file(file))
    if not matches:
        return None
    same = [m for m in matches if m.name == prefer]
    return (same or matches)[0].ref


@models_app.command("register")
def register(  # noqa: PLR0917 - typer maps parameters to options
    file: Annotated[Path, typer.Argument(help="The ONNX detector to register.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Registered model name.")],
    arch: Annotated[
        str | None, typer.Option(help="Model family when the file does not say (yolox...).")
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option(help="The version this file was made from: NAME/VERSION or NAME@ALIAS."),
    ] = None,
    calib: Annotated[
        list[Path] | None,
        typer.Option(help="Calibration data it was made with (recorded with a digest)."),
    ] = None,
    train: Annotated[
        list[Path] | None,
        typer.Option(help="Training data it was made with (recorded with a digest)."),
    ] = None,
    description: Annotated[
        str, typer.Option(help="Free text: intended use, notes (shown on the card).")
    ] = "",
    registry: RegistryOption = None,
) -> None:
    """Register FILE as a new version of NAME: artifact + sha256, metadata as tags, lineage."""
    from tapetum.registry import DatasetRecord

    if not file.is_file():
        raise ConfigError(f"model file not found: {file}")
    datasets = [DatasetRecord.from_path(p, "calibration") for p in calib or ()]
    datasets += [DatasetRecord.from_path(p, "training") for p in train or ()]
    reg = _open(registry)
    register_file(
        file,
        name,
        registry=reg,
        arch=arch,
        parent=_version_ref(parent) if parent else None,
        params={"file": str(file), "arch": arch},
        datasets=datasets,
        description=description,
    )


# ---------------------------------------------------------------------- reading


@models_app.command("list")
def list_models(registry: RegistryOption = None, json_out: JsonFlag = False) -> None:
    """Every registered model: versions, latest, aliases."""
    from rich.console import Console
    from rich.table import Table

    models = _open(registry).list_models()
    if json_out:
        rows = [
            {
                "name": m.name,
                "versions": m.versions,
                "latest_version": m.latest_version,
                "aliases": dict(m.aliases),
                "updated": _when(m.updated_ms),
            }
            for m in models
        ]
        _out(json.dumps(rows, indent=2))
        return
    table = Table(title="registered models", title_justify="left")
    for col in ("name", "versions", "latest", "aliases", "updated (UTC)"):
        table.add_column(col, justify="right" if col in ("versions", "latest") else "left")
    for m in models:
        aliases = " ".join(f"@{a}→{v}" for a, v in sorted(m.aliases.items()))
        table.add_row(
            m.name, str(m.versions), str(m.latest_version or "-"), aliases, _when(m.updated_ms)
        )
    Console().print(table)
    if not models:
        Console().print("no models yet: tapetum models register FILE --name NAME")


def _version_dict(reg: ModelRegistry, info: VersionInfo) -> dict[str, Any]:
    run = reg.run(info.run_id) if info.run_id else None
    return {
        "name": info.name,
        "version": info.version,
        "uri": f"models:/{info.short}",
        "aliases": list(info.aliases),
        "sha256": info.sha256,
        "family": info.family,
        "precision": info.precision,
        "input": info.input_size,
        "classes": info.num_classes,
        "parent": info.parent.short if info.parent else None,
        "command": info.command,
        "code_version": info.code_version,
        "created": _when(info.created_ms),
        "description": info.description,
        "run_id": info.run_id,
        "params": dict(run.params) if run else {},
        "datasets": [
            {"context": d.context, "name": d.name, "source": d.source, "sha256": d.digest}
            for d in (run.datasets if run else ())
        ],
        "evaluations": [
            {
                "dataset": e.dataset.name if e.dataset else None,
                "dataset_sha256": e.dataset.digest if e.dataset else None,
                "run_id": e.run_id,
                "metrics": dict(e.metrics),
            }
            for e in reg.evaluations(info)
        ],
    }


@models_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME/VERSION or NAME@ALIAS.")],
    registry: RegistryOption = None,
    json_out: JsonFlag = False,
) -> None:
    """One model (its versions, aliases and alias history) or one version (tags, lineage,
    data, evaluations)."""
    from tapetum.registry import parse_model_ref

    reg = _open(registry)
    parsed = parse_model_ref(ref)
    if parsed.version is None and parsed.alias is None and "/" not in ref:
        _show_model(reg, parsed.name, json_out)
    else:
        _show_version(reg, reg.get_version(parsed), json_out)


def _show_model(reg: ModelRegistry, name: str, json_out: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from tapetum.registry.aliases import alias_events

    model = reg.get_model(name)
    versions = reg.versions(name)
    history = {
        alias: [e.model_dump() for _, e in alias_events(model.tags, alias)]
        for alias in sorted({k.split(".")[2] for k in model.tags if k.startswith("tapetum.alias.")})
    }
    if json_out:
        out = {
            "name": name,
            "aliases": dict(model.aliases),
            "alias_history": history,
            "versions": [
                {
                    "version": v.version,
                    "precision": v.precision,
                    "family": v.family,
                    "input": v.input_size,
                    "sha256": v.sha256,
                    "parent": v.parent.short if v.parent else None,
                    "aliases": list(v.aliases),
                    "created": _when(v.created_ms),
                }
                for v in versions
            ],
        }
        _out(json.dumps(out, indent=2))
        return
    console = Console()
    count = f"{len(versions)} version{'s' if len(versions) != 1 else ''}"
    table = Table(title=f"{name}: {count}", title_justify="left")
    for col in (
        "version",
        "precision",
        "family",
        "input",
        "sha256",
        "parent",
        "aliases",
        "created (UTC)",
    ):
        table.add_column(col, justify="right" if col == "version" else "left")
    for v in versions:
        table.add_row(
            str(v.version),
            v.precision,
            v.family,
            v.input_size,
            v.sha256[:12],
            v.parent.short if v.parent else "",
            " ".join(f"@{a}" for a in v.aliases),
            _when(v.created_ms),
        )
    console.print(table)
    for alias, events in history.items():
        console.print(f"@{alias} history (oldest first):", highlight=False)
        for e in events:
            why = f" — {e['reason']}" if e["reason"] else ""
            was = f" (was {e['previous']})" if e["previous"] is not None else ""
            console.print(
                f"  {e['at'][:19]}  {e['action']:<8} → {e['version']}{was} by {e['by']}{why}",
                highlight=False,
                markup=False,
            )


def _show_version(reg: ModelRegistry, info: VersionInfo, json_out: bool) -> None:
    data = _version_dict(reg, info)
    if json_out:
        _out(json.dumps(data, indent=2))
        return
    lines = [
        f"{info.short}  (models:/{info.short})",
        f"  aliases      {' '.join('@' + a for a in info.aliases) or '-'}",
        f"  file         {info.file_name}, sha256 {info.sha256}",
        f"  model        {info.family} {info.precision}, input {info.input_size}, "
        f"{info.num_classes} classes",
        f"  parent       {data['parent'] or '-'}",
        f"  registered   {data['created']} UTC; code {info.code_version or '-'}",
    ]
    if info.command:
        lines.append(f"  command      {info.command}")
    if info.description:
        lines.append(f"  description  {info.description}")
    for d in data["datasets"]:
        lines.append(f"  {d['context']:<12} {d['name']} (sha256 {d['sha256'][:16]})")
    for e in data["evaluations"]:
        m = e["metrics"]
        lines.append(
            f"  evaluated    {e['dataset']}: mAP {_pct(m.get('map_50_95'))}, "
            f"mAP50 {_pct(m.get('map_50'))}, recall@.5 {_pct(m.get('recall_50'))}, "
            f"{_fmt(m.get('fps'), 1)} FPS"
        )
    _out("\n".join(lines))


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


@models_app.command("lineage")
def lineage(
    ref: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@ALIAS.")],
    registry: RegistryOption = None,
) -> None:
    """The version's ancestry back to the root, and what was made from it, as a tree."""
    from tapetum.registry import RunRecord, build_lineage, render_tree

    reg = _open(registry)
    chain = reg.lineage(_version_ref(ref))
    children: dict[str, list[VersionInfo]] = {}
    todo, seen = [chain[-1]], {chain[-1].short}
    while todo:  # descendants of the asked-for version, breadth first
        node = todo.pop(0)
        kids = [c for c in reg.children(node) if c.short not in seen]
        children[node.short] = kids
        seen.update(c.short for c in kids)
        todo.extend(kids)
    runs: dict[str, RunRecord] = {}
    for info in [*chain, *(c for kids in children.values() for c in kids)]:
        if info.run_id and info.run_id not in runs:
            runs[info.run_id] = reg.run(info.run_id)
    _out(render_tree(build_lineage(chain, children, runs)))


# ---------------------------------------------------------------------- aliases


@models_app.command("promote")
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Version to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to point at it.")] = "champion",
    reason: Annotated[str, typer.Option(help="Why (kept in the alias history).")] = "",
    registry: RegistryOption = None,
) -> None:
    """Point ALIAS (champion) at VERSION; who, when and why go into the alias history."""
    change = _open(registry).promote(name, version, alias, reason=reason)
    was = f" (was {change.previous})" if change.previous is not None else " (new alias)"
    _out(f"{name}@{alias} → {change.version}{was}")


@models_app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "champion",
    reason: Annotated[str, typer.Option(help="Why (kept in the alias history).")] = "",
    registry: RegistryOption = None,
) -> None:
    """Move ALIAS back to the version that held it before the current one."""
    change = _open(registry).rollback(name, alias, reason=reason)
    _out(f"{name}@{alias} → {change.version} (rolled back from {change.previous})")


# ---------------------------------------------------------------------- evaluation


def dataset_record(dataset: DetectionDataset, source: Path) -> DatasetRecord:
    """The evaluation set as MLflow records it: digest over the ground truth and every
    image evaluated (sha256 of each file, in image-id order)."""
    import hashlib

    from tapetum.registry import DatasetRecord, sha256_file

    digest = hashlib.sha256(
        json.dumps(dataset.ground_truth, sort_keys=True, separators=(",", ":")).encode()
    )
    for image_id in dataset.image_ids:
        path = dataset.image_paths[image_id]
        digest.update(f"{image_id}:{path.name}:{sha256_file(path)}\n".encode())
    return DatasetRecord(
        dataset.name, str(source.resolve()), digest.hexdigest(), len(dataset), "evaluation"
    )


def eval_metrics(report: DetectionReport) -> dict[str, float | None]:
    """The metrics logged on a version: COCO mAPs, recall at IoU .5/.75, speed."""
    values = report.to_dict(curves=False)
    metrics: dict[str, float | None] = {k: values.get(k) for k in EVAL_METRICS}
    p50 = report.latency_p50_ms
    metrics["fps"] = 1000.0 / p50 if p50 else None
    metrics["images"] = float(report.images)
    return {k: v for k, v in metrics.items() if v is None or not math.isnan(v)}


@models_app.command("eval")
def evaluate(  # noqa: PLR0917 - typer maps parameters to options
    ref: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@ALIAS.")],
    data: Annotated[
        Path,
        typer.Option(help="Labelled images: COCO json, YOLO data.yaml or a dataset folder."),
    ],
    split: Annotated[str | None, typer.Option(help="Split of a dataset folder.")] = None,
    images: Annotated[Path | None, typer.Option(help="Image folder of a COCO json.")] = None,
    conf: Annotated[float, typer.Option(help="Confidence threshold (COCO: 0.001).")] = 0.001,
    nms_iou: Annotated[float, typer.Option("--nms", help="NMS IoU threshold.")] = 0.65,
    max_det: Annotated[int, typer.Option("--max-det", help="Detections per image.")] = 100,
    batch: Annotated[int, typer.Option(help="Images per detector call.")] = 1,
    registry: RegistryOption = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
) -> None:
    """Run ``tapetum eval detect`` on a registered version and log mAP, recall@IoU and FPS
    as metrics of a run linked to the version."""
    from tapetum.cli.eval import _evaluate_with_progress, _load_detector, _print_detection_table
    from tapetum.detect.detector import DetectorConfig
    from tapetum.eval.datasets import load_dataset
    from tapetum.registry import ArtifactCache, model_cache_dir

    if batch < 1:
        raise ConfigError(f"--batch must be ≥ 1, got {batch}")
    config = DetectorConfig(conf_threshold=conf, nms_iou=nms_iou, max_detections=max_det)
    reg = _open(registry)
    info = reg.get_version(_version_ref(ref))
    path = reg.fetch(info, ArtifactCache(model_cache_dir()))
    dataset = load_dataset(data, images=images, split=split)
    detector = _load_detector(path, None, config)
    report = _evaluate_with_progress(detector, dataset, batch)
    _print_detection_table(report, title=f"{info.short} on {dataset.name}")
    metrics = eval_metrics(report)
    record = dataset_record(dataset, data)
    settings = {
        "conf_threshold": conf,
        "nms_iou": nms_iou,
        "max_detections": max_det,
        "batch_size": batch,
        "split": split,
        "evaluator": report.evaluator,
    }
    run_id = reg.log_evaluation(info, metrics, record, settings)
    _out(f"logged on {info.short}: run {run_id} ({dataset.name}, sha256 {record.digest[:16]})")
    if json_out is not None:
        result = {"model": f"models:/{info.short}", "run_id": run_id, "dataset": dataset.name}
        result |= {"dataset_sha256": record.digest, **report.to_dict(curves=False)}
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")


# ---------------------------------------------------------------------- card


@models_app.command("card")
def card(
    ref: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@ALIAS.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the Markdown here (default: print).")
    ] = None,
    registry: RegistryOption = None,
) -> None:
    """A model card in Markdown: intended use, model, input, classes, data, metrics with the
    evaluation set, lineage, limitations."""
    from tapetum.errors import ModelNotFoundError
    from tapetum.registry import CardInputs, render_model_card

    reg = _open(registry)
    chain = reg.lineage(_version_ref(ref))
    info = chain[-1]
    parent_evals = []
    if info.parent is not None:
        try:
            parent_evals = reg.evaluations(reg.get_version(info.parent))
        except ModelNotFoundError:
            parent_evals = []
    text = render_model_card(
        CardInputs(
            version=info,
            registry_uri=reg.shown_uri,
            lineage=chain,
            registration=reg.run(info.run_id) if info.run_id else None,
            evaluations=reg.evaluations(info),
            parent_evaluations=parent_evals,
            model_aliases=reg.get_model(info.name).aliases,
        )
    )
    if out is None:
        _out(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    _out(f"wrote {out}")
