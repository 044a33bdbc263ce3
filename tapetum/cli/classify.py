"""``tapetum train classify``: fine-tune the crop classifier, score it, export it.

Registered on the ``train`` sub-app (``tapetum/cli/train.py``). The work is in
:func:`tapetum.classify.train.train_classifier`; torch and timm (the ``export`` extra) are
imported only when the command runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tapetum.errors import ConfigError, TapetumError


def train_classify_command(  # noqa: PLR0917 - typer maps parameters to options
    data: Annotated[
        Path,
        typer.Argument(
            help="Labelled crops: a folder per class, a COCO/YOLO detection dataset (crops "
            "cut by its boxes), or MOTChallenge sequences."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (classifier.onnx, report).")
    ],
    classes: Annotated[
        str | None,
        typer.Option(help="Classes to learn, comma-separated (default: every class found)."),
    ] = None,
    split: Annotated[str | None, typer.Option(help="Training split of DATA (train2017).")] = None,
    val_split: Annotated[
        str | None, typer.Option(help="Validation split of DATA (val2017).")
    ] = None,
    val: Annotated[
        Path | None, typer.Option(help="Validation data, when not a split of DATA.")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="finetune (linear probe, then the last stages) or probe.")
    ] = "finetune",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 8,
    probe_epochs: Annotated[int, typer.Option(help="Linear-probe epochs.")] = 100,
    unfreeze: Annotated[int, typer.Option(help="Block stages fine-tuned (1-7).")] = 2,
    max_per_class: Annotated[
        int, typer.Option(help="Training crops kept per class (0: all).")
    ] = 200,
    imgsz: Annotated[
        str,
        typer.Option(
            help="Input size: N (square) or HxW, multiples of 32; e.g. 128x64, a tall input "
            "for person crops."
        ),
    ] = "224",
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also write OUT/classifier_int8.onnx: calibrated on training crops, scored "
            "and checked against FP32 on the validation crops.",
        ),
    ] = False,
    detector: Annotated[
        Path | None,
        typer.Option(
            help="Also score this ONNX detector's own class on the validation crops "
            "(its best detection at IoU ≥ 0.5 in the crop's image)."
        ),
    ] = None,
    register: Annotated[
        str | None,
        typer.Option(help="Register the exported classifier under this name (registry)."),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            envvar="TAPETUM_REGISTRY_URI",
            help="Registry for --register (default: sqlite:///tapetum-registry.db).",
        ),
    ] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
    seed: Annotated[int, typer.Option(help="Sampling, initialisation and shuffling.")] = 0,
) -> None:
    """Fine-tune EfficientNet-Lite0 on crops of DATA; write OUT/classifier.onnx, the scores
    (OUT/report.json) and confusion matrices (PNG)."""
    from rich.console import Console
    from rich.table import Table

    from tapetum.classify.datasets import load_crop_set
    from tapetum.classify.spec import input_size
    from tapetum.classify.train import (
        ClassifyTrainConfig,
        detector_baseline,
        evaluate_classifier,
        plot_confusion,
        train_classifier,
    )

    console = Console()
    if mode not in ("finetune", "probe"):
        raise ConfigError(f"mode must be finetune or probe, got {mode!r}")
    config = ClassifyTrainConfig(
        mode="probe" if mode == "probe" else "finetune",
        imgsz=input_size(imgsz),
        unfreeze_stages=unfreeze,
        probe_epochs=probe_epochs,
        finetune_epochs=epochs,
        max_per_class=max_per_class or None,
        threads=threads,
        seed=seed,
    )
    wanted = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    train_set = load_crop_set(data, split=split, classes=wanted)
    if val is not None or val_split is not None:
        val_set = load_crop_set(
            val or data, split=val_split, classes=wanted or list(train_set.class_names)
        )
    else:
        train_set, val_set = _hold_out(train_set, seed)
    result = train_classifier(
        train_set,
        val_set,
        out / "classifier.onnx",
        config,
        progress=lambda text: console.print(f"· {text}", highlight=False),
    )
    scores: dict[str, Any] = {"linear_probe": result.linear_probe}
    if result.finetuned is not None:
        scores["finetuned"] = result.finetuned
    quantized: dict[str, Any] | None = None
    if int8:
        quantized = _quantize(
            result.model_path, out / "classifier_int8.onnx", train_set, val_set, seed
        )
        console.print(
            f"· INT8: top-1 agreement with FP32 {quantized['top1_agreement_with_fp32']:.3f} "
            f"on {quantized['check_crops']} validation crops",
            highlight=False,
        )
        scores["int8"] = evaluate_classifier(out / "classifier_int8.onnx", val_set)
    if detector is not None:
        from tapetum.detect import DetectorConfig, load_detector

        det = load_detector(detector, config=DetectorConfig(conf_threshold=0.25))
        scores["detector"] = detector_baseline(det, tuple(det.class_names), val_set)
    for name, evaluation in scores.items():
        plot_confusion(
            evaluation,
            out / f"confusion_{name}.png",
            title=f"{name}: top-1 {evaluation.top1:.3f} on {evaluation.n} crops",
        )
    report = {
        "command": " ".join(["tapetum", *sys.argv[1:]]) if sys.argv else "",
        "model": str(result.model_path),
        "exported": result.exported,
        "train": {"data": str(data), "split": split, "counts": result.train_counts},
        "val": {"data": str(val or data), "split": val_split, "counts": result.val_counts},
        "config": {k: getattr(config, k) for k in config.__slots__},
        "seconds": round(result.seconds, 1),
        "scores": {k: v.as_dict() for k, v in scores.items()},
    }
    if quantized is not None:
        report["int8"] = quantized
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if register:  # after the report: a failed registration keeps every output
        report["registered"] = _register(result.model_path, register, registry, data, report)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")

    table = Table(title=f"validation: {val_set.name}, {len(val_set)} crops", title_justify="left")
    table.add_column("model")
    table.add_column("top-1", justify="right")
    table.add_column("mean recall", justify="right")
    for name in val_set.class_names:
        table.add_column(name, justify="right")
    for name, evaluation in scores.items():
        table.add_row(
            name,
            f"{evaluation.top1:.3f}",
            f"{evaluation.mean_recall:.3f}",
            *(f"{evaluation.per_class_recall[c]:.2f}" for c in val_set.class_names),
        )
    console.print(table)
    console.print(
        f"wrote {result.model_path} ({result.exported}) in {result.seconds:.0f} s; "
        f"report and confusion matrices in {out}",
        highlight=False,
    )


#: Training crops the INT8 copy is calibrated on (a seeded sample).
INT8_CALIBRATION_CROPS = 256


def _quantize(model: Path, dst: Path, train_set: Any, val_set: Any, seed: int) -> dict[str, Any]:
    """The INT8 copy of ``model``: activation ranges from a seeded sample of the training
    crops, agreement with FP32 on every validation crop (none of which it calibrated on)."""
    import numpy as np

    from tapetum.classify.quantize import quantize_on_crops

    rows = np.random.default_rng(seed).permutation(len(train_set))[:INT8_CALIBRATION_CROPS]
    q = quantize_on_crops(model, dst, train_set.subset(np.sort(rows)), val_set)
    return {
        "model": str(dst),
        **q.report.settings,
        "calibration_crops": q.calibration_crops,
        "check_crops": q.check_crops,
        "top1_agreement_with_fp32": round(q.agreement_top1, 4),
    }


def _hold_out(crops: Any, seed: int) -> tuple[Any, Any]:
    """Split by image: a seeded fifth of the images (and all their crops) for validation."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = np.unique(crops.image_index)
    held = rng.permutation(images)[: max(1, images.size // 5)]
    mask = np.isin(crops.image_index, held)
    return crops.subset(~mask), crops.subset(mask)


def _register(
    path: Path, name: str, registry: str | None, data: Path, report: dict[str, Any]
) -> dict[str, Any]:
    """Register the classifier when the registry is installed; say why not otherwise."""
    try:
        from tapetum.registry import DatasetRecord, ModelRegistry
    except ImportError as exc:
        raise ConfigError(
            f"register needs the model registry, which is not available: {exc}"
        ) from exc
    try:
        info = ModelRegistry(registry).register(
            path,
            name,
            command=report["command"],
            params={k: str(v) for k, v in report["config"].items()},
            datasets=[DatasetRecord.from_path(data, "training")],
            description="crop classifier (tapetum train classify)",
        )
    except TapetumError as exc:
        raise TapetumError(
            f"the classifier was written to {path}, but registering it failed: {exc}"
        ) from exc
    return {"name": info.name, "version": info.version}
