"""``tapetum eval``: score trackers on MOTChallenge data and detectors on labelled images.

Heavy modules (TrackEval, scipy, the trackers, faster-coco-eval, matplotlib) are imported
inside the commands so that ``tapetum --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tapetum.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from tapetum.detect.detector import DetectorConfig
    from tapetum.eval import TrackerRun, TrackingReport, TrackingScores
    from tapetum.eval.datasets import DetectionDataset
    from tapetum.eval.detect import BatchDetector, DetectionReport
    from tapetum.eval.forecast import ForecasterFactory, ForecastEvalConfig
    from tapetum.eval.mot import MotSequence
    from tapetum.track.forecast_model import ForecastCounts

eval_app = typer.Typer(
    name="eval",
    help="Evaluate trackers and detectors on benchmark data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_DETECTION_SOURCES = ("public", "gt-noise")


@eval_app.command("track")
def track(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="A MOTChallenge split folder (e.g. MOT15/train) or one sequence folder.",
        ),
    ],
    tracker: Annotated[str, typer.Option(help="Tracker name (see tapetum.track).")] = "bytetrack",
    detections: Annotated[
        str,
        typer.Option(
            help="public: the sequence's det/det.txt; gt-noise: detections simulated from "
            "the ground truth (tapetum.eval.noise, default parameters)."
        ),
    ] = "public",
    seed: Annotated[int, typer.Option(help="Seed of the gt-noise detections.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the results as JSON here.")
    ] = None,
) -> None:
    """Run TRACKER over every sequence in DATA and print HOTA, MOTA, IDF1 and tracker time."""
    from functools import partial

    from tapetum.eval import (
        evaluate_runs,
        find_sequences,
        load_sequence,
        run_tracker,
        simulate_detections,
    )
    from tapetum.track import make_tracker

    if detections not in _DETECTION_SOURCES:
        raise ConfigError(
            f"unknown --detections {detections!r}; use one of {', '.join(_DETECTION_SOURCES)}"
        )
    make_tracker(tracker, 30.0)  # unknown names fail before any file is read
    factory = partial(make_tracker, tracker)
    sequences = [load_sequence(p) for p in find_sequences(data)]
    without_gt = [s.name for s in sequences if s.gt is None]
    if without_gt:
        raise ConfigError(f"no gt/gt.txt (ground truth) in: {', '.join(without_gt)}")
    without_det = [s.name for s in sequences if s.detections is None]
    if detections == "public" and without_det:
        raise ConfigError(
            f"no det/det.txt (public detections) in: {', '.join(without_det)}; "
            "use --detections gt-noise"
        )
    runs: list[TrackerRun] = []
    for seq in sequences:
        frames = (
            simulate_detections(seq, seed=seed).per_frame() if detections == "gt-noise" else None
        )
        runs.append(run_tracker(factory, seq, frames))
    report = evaluate_runs([(s, r.tracks) for s, r in zip(sequences, runs, strict=True)])
    result = _as_json(report, runs, tracker=tracker, detections=detections, seed=seed, data=data)
    _print_table(report, runs, title=f"{tracker} on {data} ({detections} detections)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")


def _latency(runs: list[TrackerRun]) -> dict[str, tuple[float, float]]:
    """``{sequence or "combined": (p50_ms, p99_ms)}`` of the per-frame tracker time."""
    import numpy as np

    from tapetum.eval import TrackerRun

    everything = TrackerRun("combined", [], np.concatenate([r.frame_times_ms for r in runs]))
    return {r.sequence: (r.latency_ms(50), r.latency_ms(99)) for r in [*runs, everything]}


def _as_json(
    report: TrackingReport,
    runs: list[TrackerRun],
    *,
    tracker: str,
    detections: str,
    seed: int,
    data: Path,
) -> dict[str, Any]:
    latency = _latency(runs)
    frames = {r.sequence: len(r.tracks) for r in runs}
    frames["combined"] = sum(frames.values())

    def row(name: str, scores: TrackingScores) -> dict[str, Any]:
        p50, p99 = latency[name]
        return {
            **scores.as_dict(),
            "frames": frames[name],
            "tracker_ms_p50": p50,
            "tracker_ms_p99": p99,
        }

    return {
        "tracker": tracker,
        "detections": detections,
        "seed": seed if detections == "gt-noise" else None,
        "data": str(data),
        "evaluator": "trackeval",
        "sequences": {name: row(name, s) for name, s in report.sequences.items()},
        "combined": row("combined", report.combined),
    }


def _print_table(report: TrackingReport, runs: list[TrackerRun], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    latency = _latency(runs)
    table = Table(title=title, title_justify="left")
    table.add_column("sequence", no_wrap=True)
    for col in ("HOTA", "DetA", "AssA", "MOTA", "IDF1", "IDSW", "ms/frame p50", "p99"):
        table.add_column(col, justify="right")
    rows = [*report.sequences.items(), ("combined", report.combined)]
    for i, (name, s) in enumerate(rows):
        p50, p99 = latency[name]
        table.add_row(
            name,
            *(f"{100 * v:.1f}" for v in (s.hota, s.deta, s.assa, s.mota, s.idf1)),
            str(s.id_switches),
            f"{p50:.2f}",
            f"{p99:.2f}",
            end_section=i == len(rows) - 2,
        )
    Console().print(table)
    Console().print("HOTA … IDF1 in percent (TrackEval); ms: tracker update time per frame.")


@eval_app.command("detect")
def detect(  # noqa: PLR0917 - typer maps parameters to options
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Detector ONNX model file, or models:/NAME/VERSION or models:/NAME@ALIAS.",
        ),
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Labelled images: a COCO instances_*.json, a YOLO data.yaml, or a dataset "
            "folder (with --split: images/<split> + labels/<split>, or "
            "annotations/instances_<split>.json).",
        ),
    ],
    split: Annotated[
        str | None,
        typer.Option(help="Split of a dataset folder or data.yaml (e.g. val2017; yaml: val)."),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(help="Image folder of a COCO json (default: found next to the json)."),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(help="Model family (yolox, yolov8, …); default: detected from the model."),
    ] = None,
    conf: Annotated[
        float,
        typer.Option(
            help="Confidence threshold. mAP needs the whole precision/recall curve: keep the "
            "COCO protocol's 0.001 unless you measure a deployment setting."
        ),
    ] = 0.001,
    nms_iou: Annotated[
        float, typer.Option("--nms", help="NMS IoU threshold (YOLOX's COCO evaluation: 0.65).")
    ] = 0.65,
    max_det: Annotated[
        int, typer.Option("--max-det", help="Detections kept per image (COCO: 100).")
    ] = 100,
    batch: Annotated[int, typer.Option(help="Images per detector call.")] = 1,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write precision/recall curves and best/worst classes to this PNG."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON here.")
    ] = None,
    per_class: Annotated[
        bool, typer.Option("--per-class", help="Also print the AP of every class.")
    ] = False,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            envvar="TAPETUM_REGISTRY_URI",
            help="Registry of a models:/ --model (default: sqlite:///tapetum-registry.db).",
        ),
    ] = None,
) -> None:
    """Run MODEL over the labelled images in DATA and print COCO mAP, recall and speed."""
    from rich.console import Console

    from tapetum.detect.detector import DetectorConfig
    from tapetum.eval.datasets import load_dataset
    from tapetum.registry.resolve import local_model_path

    config = DetectorConfig(conf_threshold=conf, nms_iou=nms_iou, max_detections=max_det)
    if batch < 1:
        raise ConfigError(f"--batch must be ≥ 1, got {batch}")
    model_file, resolved = local_model_path(model, registry=registry)
    shown = resolved.describe() if resolved else model_file.name
    detector = _load_detector(model_file, arch, config)
    dataset = load_dataset(data, images=images, split=split)
    report = _evaluate_with_progress(detector, dataset, batch)
    if report.images_skipped:
        Console(stderr=True).print(
            f"[yellow]warning:[/] {report.images_skipped} unreadable images were skipped",
            highlight=False,
        )
    _print_detection_table(report, title=f"{shown} on {dataset.name}")
    if per_class:
        _print_per_class(report)
    if json_out is not None:
        result = {
            "model": model,
            "model_sha256": resolved.sha256 if resolved else None,
            "arch": arch,
            "data": str(data),
            "dataset": dataset.name,
            "settings": {
                "conf_threshold": conf,
                "nms_iou": nms_iou,
                "max_detections": max_det,
                "batch_size": batch,
            },
            **report.to_dict(),
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    if plot is not None:
        from tapetum.eval.plots import plot_pr_curves

        plot_pr_curves(report, plot)


def _load_detector(model: Path, arch: str | None, config: DetectorConfig) -> BatchDetector:
    """Any supported model family (``--arch`` or detected from the file)."""
    from tapetum.detect.detector import load_detector
    from tapetum.detect.runtime import RuntimeOptions

    # One run at a time over all cores: the evaluator calls the detector sequentially.
    return load_detector(model, arch=arch, config=config, runtime=RuntimeOptions(workers=1))


def _evaluate_with_progress(
    detector: BatchDetector, dataset: DetectionDataset, batch: int
) -> DetectionReport:
    """``evaluate_detector`` with a progress bar on stderr (gone when done)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from tapetum.eval.detect import evaluate_detector

    columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress("detecting", *columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("detecting", total=len(dataset))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return evaluate_detector(detector, dataset, batch_size=batch, progress=progress)


def _print_detection_table(report: DetectionReport, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("what", style="dim")
    rows = [
        ("mAP", _percent(report.map_50_95), "AP@[.5:.95], COCO's headline number"),
        ("mAP50", _percent(report.map_50), "AP at IoU 0.5"),
        ("mAP75", _percent(report.map_75), "AP at IoU 0.75"),
        ("AP small", _percent(report.map_small), "objects < 32² px"),
        ("AP medium", _percent(report.map_medium), "objects 32²-96² px"),
        ("AP large", _percent(report.map_large), "objects > 96² px"),
        ("recall@.5", _percent(report.recall_50), "found at IoU ≥ 0.5 (≤100 dets/image/class)"),
        ("recall@.75", _percent(report.recall_75), "found at IoU ≥ 0.75"),
        ("images", str(report.images), f"{report.ground_truth_objects} objects"),
        ("images/s", _number(report.images_per_s, 1), "whole evaluation"),
        ("latency p50", _number(report.latency_p50_ms, 1), "ms per image, detector call"),
        ("latency p99", _number(report.latency_p99_ms, 1), "ms per image"),
    ]
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i in {2, 5, 7})
    Console().print(table)
    Console().print(f"metrics in percent ({report.evaluator})", highlight=False)


def _print_per_class(report: DetectionReport) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="AP per class (best first)", title_justify="left")
    table.add_column("class", no_wrap=True)
    table.add_column("AP", justify="right")
    table.add_column("AP50", justify="right")
    for name, ap in sorted(report.per_class_ap.items(), key=lambda kv: -kv[1]):
        table.add_row(name, _percent(ap), _percent(report.per_class_ap_50[name]))
    Console().print(table)


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@eval_app.command("forecast")
def forecast(  # noqa: PLR0917 - typer maps parameters to options
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="MOTChallenge split or sequence folders with gt/gt.txt to score (repeat).",
        ),
    ],
    loso: Annotated[
        bool,
        typer.Option(
            "--loso",
            help="Also score a learned forecaster leave-one-sequence-out: one model per "
            "sequence, trained on all the others (cached in --cache).",
        ),
    ] = False,
    forecaster: Annotated[
        Path | None,
        typer.Option(help="Also score this forecaster file (tapetum train forecast)."),
    ] = None,
    train_only: Annotated[
        list[Path] | None,
        typer.Option(
            "--train-only", help="With --loso: sequences that train every fold, never scored."
        ),
    ] = None,
    cache: Annotated[Path, typer.Option(help="With --loso: folder of the fold models.")] = Path(
        "tmp/cache/forecast"
    ),
    epochs: Annotated[int, typer.Option(help="With --loso: training epochs per fold.")] = 20,
    adapt: Annotated[
        bool,
        typer.Option(
            "--adapt/--no-adapt",
            help="Learned forecasts blend with constant velocity and recalibrate per sequence "
            "from forecasts whose horizon has passed (as tapetum run does); off: as the file "
            "says.",
        ),
    ] = True,
    horizons: Annotated[str, typer.Option(help="Horizons scored, seconds, e.g. 1,2.")] = "1,2",
    min_history: Annotated[
        float, typer.Option(help="Score a track once it has been observed this long, s.")
    ] = 0.5,
    miss_threshold: Annotated[
        float, typer.Option(help="A final error above this many box heights is a miss.")
    ] = 0.5,
    track_stride: Annotated[
        int, typer.Option(help="Score every N-th ground-truth track (1: all).")
    ] = 1,
    noise: Annotated[
        float, typer.Option(help="Observation noise added to the centres, box heights.")
    ] = 0.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON here.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Draw a few forecasts with their ellipses over the last img1 frame of the "
            "sequence with the longest run of them, to this PNG."
        ),
    ] = None,
) -> None:
    """Score trajectory forecasters (ADE/FDE, miss rate, ellipse coverage, NLL) on DATA."""
    from rich.console import Console

    from tapetum.eval.forecast import ForecastEvalConfig, default_forecasters, evaluate_forecasts
    from tapetum.eval.mot import find_sequences, load_sequence
    from tapetum.track.forecast_blend import OnlineBlendConfig
    from tapetum.track.forecast_model import ForecastCounts

    config = ForecastEvalConfig(
        horizons_s=_parse_seconds(horizons),
        min_history_s=min_history,
        track_stride=track_stride,
        observation_noise_std_per_height=noise,
        miss_threshold_norm=miss_threshold,
    )
    sequences = [load_sequence(p) for folder in data for p in find_sequences(folder)]
    extra = [load_sequence(p) for folder in train_only or () for p in find_sequences(folder)]
    if train_only and not loso:
        raise ConfigError("--train-only only applies to --loso")
    err = Console(stderr=True)
    factories = default_forecasters()
    counts: dict[str, dict[str, ForecastCounts]] = {}
    result: dict[str, Any] = {"data": [str(d) for d in data], "config": dataclasses.asdict(config)}
    if forecaster is not None:
        factories["file"], counts["file"] = _file_forecaster(
            forecaster, sequences, config, err, adapt
        )
        result["forecaster"] = str(forecaster)
    report = evaluate_forecasts(sequences, factories, config)
    folds: dict[str, Path] = {}
    if loso:
        from tapetum.learn.forecast import ForecastTrainConfig, evaluate_held_out

        held = evaluate_held_out(
            sequences,
            cache,
            train_config=ForecastTrainConfig(epochs=epochs),
            eval_config=config,
            train_only=extra,
            baselines={},
            adapt=OnlineBlendConfig() if adapt else None,
            log=lambda line: err.print(line, highlight=False),
        )
        report = dataclasses.replace(report, scores=report.scores + held.report.scores)
        folds, counts["learned"] = held.folds, held.counts
        result["folds"] = {name: str(path) for name, path in folds.items()}
    Console().print(report.format_table(), highlight=False, soft_wrap=True)
    for name, per_seq in counts.items():
        total = ForecastCounts()
        for c in per_seq.values():
            total.add(c)
        Console().print(
            f"{name}: {total.model} forecasts by the model ({total.leaning_cv} of them blended "
            f"mostly with constant velocity), {total.fallback_short_history} by constant "
            "velocity (track observed < the model's min history)",
            highlight=False,
        )
    if json_out is not None:
        result["scores"] = report.as_dict()
        result["counts"] = {
            name: {seq: c.as_dict() for seq, c in per_seq.items()}
            for name, per_seq in counts.items()
        }
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    if plot is not None:
        _plot_forecasts(sequences, folds, forecaster, config.horizons_s, plot)
        err.print(f"plot: {plot}", highlight=False)


def _parse_seconds(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"horizons are seconds like 1,2; got {text!r}") from None
    if not values:
        raise ConfigError(f"horizons are seconds like 1,2; got {text!r}")
    return values


def _file_forecaster(
    path: Path,
    sequences: list[MotSequence],
    config: ForecastEvalConfig,
    err: Console,
    adapt: bool = True,
) -> tuple[ForecasterFactory, dict[str, ForecastCounts]]:
    """A factory of the file's forecaster (checked against every sequence) and its counts."""
    from tapetum.track.forecast_blend import OnlineBlendConfig
    from tapetum.track.forecast_model import ForecastCounts, LearnedForecaster, load_forecast_model

    model = load_forecast_model(path)
    model.spec.check_horizons(config.horizons_s, f"forecaster {path.name}")
    for seq in sequences:
        model.spec.check_frame_rate(seq.info.frame_rate_fps, seq.name)
    seen = set(model.spec.info.get("trained_on", ())) & {s.name for s in sequences}
    if seen:
        err.print(
            f"[yellow]warning:[/] {path.name} was trained on {', '.join(sorted(seen))}: "
            "its scores there are not held-out (use --loso)",
            highlight=False,
        )
    counts: dict[str, ForecastCounts] = {}
    total = ForecastCounts()
    counts["all"] = total

    blend = OnlineBlendConfig() if adapt else None

    def make() -> LearnedForecaster:
        forecaster = LearnedForecaster(model, adapt=blend)  # one stream per sequence
        forecaster.counts = total  # one tally over every sequence
        return forecaster

    return make, counts


def _plot_forecasts(
    sequences: list[MotSequence],
    folds: dict[str, Path],
    forecaster: Path | None,
    horizons_s: tuple[float, ...],
    out: Path,
) -> None:
    """The forecast picture on the first sequence with frame images."""
    from tapetum.eval.forecast_plot import frames_with_images, plot_forecasts
    from tapetum.track.forecast import ConstantVelocityForecaster
    from tapetum.track.forecast_model import LearnedForecaster, load_forecast_model

    drawable = [s for s in sequences if frames_with_images(s)]
    if not drawable:
        raise ConfigError("--plot needs a sequence with img1 frames among --data")
    # the most frames: the forecasts drawn start from the longest history
    seq = max(drawable, key=lambda s: max(frames_with_images(s)) / s.info.frame_rate_fps)
    factories: dict[str, ForecasterFactory] = {"cv": ConstantVelocityForecaster}
    model_path = folds.get(seq.name) or forecaster
    if model_path is not None:
        model = load_forecast_model(model_path)
        label = "learned (held out)" if seq.name in folds else "learned"
        factories[label] = lambda: LearnedForecaster(model)
    plot_forecasts(seq, factories, out, horizons_s=horizons_s)
