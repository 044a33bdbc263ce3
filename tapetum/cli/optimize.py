"""``tapetum optimize``: an FP16 or INT8 copy of a detector, with its size, speed and accuracy
next to the source's.

Registered by the CLI as ``app.command("optimize")(optimize_command)``. ONNX Runtime's
quantization tools and onnxconverter-common are imported only when the command runs.

    tapetum optimize yolox_nano.onnx --precision int8 \\
        --calib crowd.mp4 --calib coco128/images/train2017 \\
        --data coco128 --split val2017 -o yolox_nano_int8.onnx
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tapetum.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    from tapetum.detect.detector import OnnxDetector
    from tapetum.registry import ModelRef, ModelRegistry

PRECISIONS = ("fp16", "int8")


def optimize_command(  # noqa: PLR0917 - typer maps parameters to options
    model: Annotated[
        str,
        typer.Argument(
            help="The ONNX detector to convert: a file, or models:/NAME/VERSION or "
            "models:/NAME@ALIAS from the registry."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
    precision: Annotated[
        str, typer.Option(help="fp16 (GPUs; halves the file) or int8 (static, QDQ).")
    ],
    calib: Annotated[
        list[Path] | None,
        typer.Option(
            help="INT8 calibration data: video files, images or image folders (repeat the "
            "option for several). Use frames like those the model will see, never the "
            "images you measure accuracy on."
        ),
    ] = None,
    calib_frames: Annotated[
        int, typer.Option(help="Calibration images, spread evenly over --calib.")
    ] = 128,
    method: Annotated[
        str, typer.Option(help="INT8 activation ranges: minmax, entropy or percentile.")
    ] = "minmax",
    float_stem: Annotated[
        int, typer.Option(help="Leading convolutions kept in float (accuracy vs speed).")
    ] = 3,
    float_head: Annotated[
        str, typer.Option(help="Part of the output head kept in float: head, tail or none.")
    ] = "head",
    data: Annotated[
        Path | None,
        typer.Option(
            help="Labelled images to measure mAP on, before and after: a COCO json, a YOLO "
            "data.yaml or a dataset folder (with --split)."
        ),
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split of --data (e.g. val2017).")] = None,
    arch: Annotated[
        str | None, typer.Option(help="Model family when the file does not say (yolox...).")
    ] = None,
    threads: Annotated[
        int, typer.Option(help="ONNX Runtime threads for the speed runs (0: all cores).")
    ] = 0,
    runs: Annotated[int, typer.Option(help="Timed inference runs per model.")] = 100,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON here.")
    ] = None,
    register: Annotated[
        str | None,
        typer.Option(
            help="Register the result as a new version of this model; its parent is the "
            "source's registered version (the models:/ reference, or the version whose file "
            "has the same sha256), and the calibration data is recorded with its digest."
        ),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            envvar="TAPETUM_REGISTRY_URI",
            help="Registry of a models:/ MODEL and of --register "
            "(default: sqlite:///tapetum-registry.db).",
        ),
    ] = None,
) -> None:
    """Convert MODEL to FP16 or INT8, then compare size, speed (and mAP with --data)."""
    from tapetum.detect import DetectorConfig, RuntimeOptions, load_detector
    from tapetum.detect.quantize import (
        CALIBRATION_METHODS,
        FLOAT_HEAD_CHOICES,
        convert_fp16,
        load_calibration_images,
        plan_calibration,
        quantize_int8,
    )

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Check every argument before the slow work starts.
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown --precision {precision!r}; use fp16 or int8")
    reg, model_file, parent = _registry_source(model, register, registry)
    if not model_file.is_file():
        raise ModelLoadError(f"model file not found: {model_file}")
    if out.resolve() == model_file.resolve():
        raise ConfigError("--out must differ from the source model")
    if runs < 1 or calib_frames < 1:
        raise ConfigError("--runs and --calib-frames must be ≥ 1")
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"unknown --method {method!r}; use {', '.join(CALIBRATION_METHODS)}")
    if float_head not in FLOAT_HEAD_CHOICES:
        raise ConfigError(
            f"unknown --float-head {float_head!r}; use {', '.join(FLOAT_HEAD_CHOICES)}"
        )
    samples = None
    if precision == "int8":
        if not calib:
            raise ConfigError("--precision int8 needs --calib (a video, images or a folder)")
        samples = plan_calibration(calib, calib_frames)
    dataset = _load_dataset(data, split) if data is not None else None

    config = DetectorConfig(conf_threshold=0.001, nms_iou=0.65, max_detections=100)
    runtime = RuntimeOptions(intra_op_threads=threads, workers=1)
    source = load_detector(model_file, arch, config, runtime)
    out.parent.mkdir(parents=True, exist_ok=True)
    if samples is not None:
        report = quantize_int8(
            model_file,
            out,
            load_calibration_images(samples),
            source.preprocess,
            method=method,
            float_stem=float_stem,
            float_head=float_head,
        )
    else:
        report = convert_fp16(model_file, out)
    result = load_detector(out, arch, config, runtime)

    summary: dict[str, Any] = {
        "precision": precision,
        "conversion": {
            **report.settings,
            "float_nodes": len(report.float_nodes),
            "seconds": round(report.seconds, 2),
        },
        "threads": source.model.threads,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "source": _measure(source, model_file, runs),
        "result": _measure(result, out, runs),
    }
    if dataset is not None:
        summary["data"] = str(data) + (f" ({split})" if split else "")
        for key, det in (("source", source), ("result", result)):
            summary[key].update(_accuracy(det, dataset))
    summary["change"] = _change(summary["source"], summary["result"])
    _print(summary)
    if reg is not None and register:
        from tapetum.cli.models import find_parent, register_file
        from tapetum.registry import DatasetRecord

        params: dict[str, object] = {"source": model, "precision": precision, "arch": arch}
        if precision == "int8":
            params |= {"calib_frames": calib_frames, "method": method}
            params |= {"float_stem": float_stem, "float_head": float_head}
        datasets = [DatasetRecord.from_path(p, "calibration") for p in calib or ()]
        info = register_file(
            out,
            register,
            registry=reg,
            arch=arch,
            parent=parent or find_parent(reg, model_file, prefer=register),
            params=params,
            datasets=datasets if precision == "int8" else (),
        )
        summary["registered"] = f"models:/{info.short}"
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2) + "\n")


def _registry_source(
    model: str, register: str | None, registry: str | None
) -> tuple[ModelRegistry | None, Path, ModelRef | None]:
    """(registry or None, local file of ``model``, its registered version or None). The
    registry is opened only for a ``models:/`` source or ``register``, before the slow work."""
    from tapetum.registry.uri import check_model_name, is_model_uri

    if not is_model_uri(model) and not register:
        return None, Path(model), None
    from tapetum.registry import ModelRef, registry_for, resolve_model_uri

    if register:
        check_model_name(register)
    reg = registry_for(registry)
    if not is_model_uri(model):
        return reg, Path(model), None
    resolved = resolve_model_uri(model, registry=reg)
    return reg, resolved.path, ModelRef(resolved.name, version=resolved.version)


def _load_dataset(data: Path, split: str | None) -> Any:
    from tapetum.eval.datasets import load_dataset

    return load_dataset(data, split=split)


def _measure(detector: OnnxDetector, path: Path, runs: int) -> dict[str, Any]:
    import numpy as np

    from tapetum.detect.quantize import model_size_mb
    from tapetum.detect.speed import measure_speed

    h, w = detector.input_hw
    frame = np.full((h, w, 3), 114, np.uint8)
    batch = detector.preprocess(frame)[0][None]
    speed = measure_speed(detector.model.run, batch, runs=runs, warmup=min(10, runs))
    return {
        "path": str(path),
        "size_mb": round(model_size_mb(path), 3),
        "provider": detector.model.providers[0],
        "p50_ms": round(speed.p50_ms, 2),
        "p99_ms": round(speed.p99_ms, 2),
        "fps": round(speed.fps, 1),
    }


def _accuracy(detector: OnnxDetector, dataset: Any) -> dict[str, float]:
    from tapetum.eval.detect import evaluate_detector

    report = evaluate_detector(detector, dataset)
    return {"map_50_95": round(report.map_50_95, 4), "map_50": round(report.map_50, 4)}


def _change(source: dict[str, Any], result: dict[str, Any]) -> dict[str, float]:
    change = {
        "size_ratio": round(result["size_mb"] / source["size_mb"], 3),
        "speedup_fps": round(result["fps"] / source["fps"], 3),
        "p50_ms": round(result["p50_ms"] - source["p50_ms"], 2),
    }
    for key in ("map_50_95", "map_50"):
        if key in source:
            change[f"{key}_points"] = round(100 * (result[key] - source[key]), 2)
    return change


def _print(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    src, res, change = summary["source"], summary["result"], summary["change"]
    table = Table(
        title=f"tapetum optimize → {summary['precision']} ({src['provider']}, "
        f"{summary['threads']} thread{'s' if summary['threads'] != 1 else ''})",
        title_justify="left",
    )
    for col in ("", "source", summary["precision"], "change"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row("size (MB)", f"{src['size_mb']:.2f}", f"{res['size_mb']:.2f}",
                  f"×{change['size_ratio']:.2f}")  # fmt: skip
    table.add_row("p50 batch 1 (ms)", f"{src['p50_ms']:.2f}", f"{res['p50_ms']:.2f}",
                  f"{change['p50_ms']:+.2f}")  # fmt: skip
    table.add_row("p99 batch 1 (ms)", f"{src['p99_ms']:.2f}", f"{res['p99_ms']:.2f}", "")
    table.add_row("FPS batch 1", f"{src['fps']:.1f}", f"{res['fps']:.1f}",
                  f"×{change['speedup_fps']:.2f}")  # fmt: skip
    if "map_50_95" in src:
        for key, label in (("map_50_95", "mAP@[.5:.95]"), ("map_50", "mAP@.5")):
            table.add_row(
                label,
                f"{100 * src[key]:.1f}",
                f"{100 * res[key]:.1f}",
                f"{change[f'{key}_points']:+.2f} pts",
            )
    console = Console()
    console.print(table)
    console.print(f"wrote {res['path']}", highlight=False)
