"""The ``tapetum`` command line (typer + rich)."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from tapetum.cli.ab import ExperimentPlan, ab_app, plain_model
from tapetum.cli.drift import drift_app
from tapetum.cli.eval import eval_app
from tapetum.cli.eval_identity import identity_command
from tapetum.cli.export import export_command
from tapetum.cli.interval import (
    check_interval_options,
    parse_interval_options,
    print_interval_summary,
)
from tapetum.cli.keys import keys_app
from tapetum.cli.models import models_app
from tapetum.cli.optimize import optimize_command
from tapetum.cli.serve import serve_command
from tapetum.cli.train import train_app
from tapetum.errors import ConfigError, TapetumError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from tapetum.detect import OnnxDetector
    from tapetum.experiments import LiveExperiment
    from tapetum.monitor.monitoring import RunMonitoring
    from tapetum.pipeline import EnricherFactory, Pipeline, PipelineStats
    from tapetum.registry import AliasWatcher, ResolvedModel
    from tapetum.sinks.base import Sink as SinkT
    from tapetum.sources.base import Source as SourceT

app = typer.Typer(
    name="tapetum",
    help="Real-time video analytics: decode, detect, track, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
app.add_typer(drift_app, name="drift")
app.add_typer(ab_app, name="ab")
app.add_typer(eval_app, name="eval")
eval_app.command("identity")(identity_command)
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(train_app, name="train")
app.command("serve")(serve_command)
app.command("export")(export_command)
app.command("optimize")(optimize_command)


@app.callback()
def _root() -> None:
    """Tapetum command line."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    # Escaped: a path like "videos/[cam1]/a.mp4" is not markup; show it as typed.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def run(  # noqa: PLR0917 - typer maps parameters to options
    sources: Annotated[
        list[str], typer.Argument(help="Video files, stream URLs or image folders.")
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="ONNX detector (YOLOX, YOLOv5, Ultralytics YOLOv5u/v8/11, RT-DETR, "
            "EfficientDet), or a registered one: models:/NAME/VERSION or models:/NAME@ALIAS. "
            "Not with --experiment, whose file names the models.",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default runs/<time>).")
    ] = None,
    conf: Annotated[
        float,
        typer.Option(
            help="Detection confidence threshold. ByteTrack uses boxes down to 0.1 to keep "
            "occluded tracks alive; tracks only start from boxes above 0.6."
        ),
    ] = 0.1,
    nms_iou: Annotated[float, typer.Option("--nms", help="NMS IoU threshold.")] = 0.45,
    classes: Annotated[
        str | None, typer.Option(help="Comma-separated class names or ids to keep.")
    ] = None,
    tracker: Annotated[
        str, typer.Option(help="Tracker: bytetrack, ocsort, botsort.")
    ] = "bytetrack",
    reid: Annotated[
        Path | None,
        typer.Option(help="OSNet re-identification ONNX model (BoT-SORT appearance, --topology)."),
    ] = None,
    topology: Annotated[
        Path | None,
        typer.Option(
            help="Camera topology (YAML/JSON; source ids are camera ids): global ids across "
            "cameras, written as global_id per track (and identities.json). Needs --reid."
        ),
    ] = None,
    relink: Annotated[
        bool | None,
        typer.Option(
            "--relink/--no-relink",
            help="Re-link a camera's dropped tracks to the new tracks that continue them "
            "(default: on with --topology, as a stage of the identity service; off "
            "otherwise, where --relink re-links the tracker's own ids).",
        ),
    ] = None,
    imgsz: Annotated[
        int | None, typer.Option(help="Model input size (must match a fixed-size model).")
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help="Model family when the file does not say (yolox, yolox-decoded, yolov5, "
            "yolov8, rtdetr, effdet; or a model name such as yolo11n)."
        ),
    ] = None,
    realtime: Annotated[
        bool, typer.Option("--realtime", help="Pace files at their native frame rate.")
    ] = False,
    loop: Annotated[
        bool,
        typer.Option(
            "--loop",
            help="Replay files and image folders from the start when they end, until "
            "Ctrl-C (frame indexes and timestamps keep counting up). Live streams reconnect "
            "instead.",
        ),
    ] = False,
    reconnect_attempts: Annotated[
        int,
        typer.Option(
            "--reconnect-attempts",
            min=0,
            help="Live streams: failed reconnect attempts in a row (backing off to 10 s "
            "apart) after which a stream is given up, ending the run with exit code 1 "
            "once the other streams end; 0 keeps trying for as long as the run lasts.",
        ),
    ] = 10,
    video: Annotated[
        bool, typer.Option("--video/--no-video", help="Write annotated video.")
    ] = True,
    trail: Annotated[int, typer.Option(help="Trail length in frames (0: none).")] = 30,
    forecast: Annotated[
        str | None,
        typer.Option(
            help="Forecast each track this many seconds ahead, comma-separated (e.g. 1,2): "
            "written to the JSONL and drawn with 2-sigma ellipses."
        ),
    ] = None,
    forecaster: Annotated[
        Path | None,
        typer.Option(
            help="With --forecast: a learned forecaster (tapetum train forecast) instead of "
            "constant velocity, which stays for tracks seen less than the model's history."
        ),
    ] = None,
    classify: Annotated[
        str | None,
        typer.Option(
            help="Classify tracks with a second ONNX model: "
            "MODEL[:classes=car,truck,bus][:every=N][:min_box=PX][:grow=X][:labels=MAP]"
            "[:mode=async|sync][:settle=M] (first sighting, then every N frames (10) or when "
            "the box area grows X× (1.5); boxes under PX (16) wait; MAP: a YAML/JSON label "
            "map or 'vehicles'; async (default): tracking never waits for the classifier, "
            "labels attach when ready; settle: a track whose vote is decisive is "
            "re-checked every M frames). Writes label, label_confidence, label_votes per track."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Concurrent inference workers (0: auto, 2 on a multi-core CPU).")
    ] = 0,
    threads: Annotated[
        int, typer.Option(help="ONNX Runtime threads per worker (0: cores / workers).")
    ] = 0,
    provider: Annotated[
        str | None,
        typer.Option(
            help="Execution providers to try, comma-separated: tensorrt, cuda, openvino, cpu "
            "(default: the best installed; CPU is always the last resort)."
        ),
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(
            help="Frames per inference (default: 1 on a CPU, where batches buy no speed; on a "
            "GPU the streams shared out over the inference workers)."
        ),
    ] = None,
    max_wait_ms: Annotated[float, typer.Option(help="Max wait of a frame for a batch.")] = 5.0,
    drop_policy: Annotated[
        str | None,
        typer.Option(help="block | drop_oldest | drop_newest (default: by source kind)."),
    ] = None,
    detect_every: Annotated[
        str,
        typer.Option(
            help="Run the detector on every K-th frame of each stream and let the tracker "
            "predict the frames between (marked predicted in the JSONL); 'auto': a scheduler "
            "sets K per stream to keep --latency-budget-ms."
        ),
    ] = "1",
    latency_budget_ms: Annotated[
        float,
        typer.Option(help="With --detect-every auto: end-to-end latency to stay under (ms)."),
    ] = 100.0,
    max_interval: Annotated[
        int, typer.Option(help="With --detect-every auto: the largest K it may choose.")
    ] = 4,
    priority: Annotated[
        list[str] | None,
        typer.Option(
            help="With --detect-every auto: STREAM=low|normal|high, repeated; low-priority "
            "streams give up detector frames first, high-priority ones last."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            envvar="TAPETUM_REGISTRY_URI",
            help="Model registry of a models:/ --model (default: sqlite:///tapetum-registry.db).",
        ),
    ] = None,
    model_poll: Annotated[
        float,
        typer.Option(
            help="With --model models:/NAME@ALIAS on live streams or --realtime: seconds "
            "between alias checks; a new version is loaded, warmed and swapped in (SIGHUP "
            "checks at once). 0: keep the version resolved at start."
        ),
    ] = 10.0,
    experiment: Annotated[
        Path | None,
        typer.Option(
            help="Run an A/B experiment (YAML/JSON: control and variants, shadow or canary, "
            "guardrails, decision rules; see tapetum ab): every arm is recorded under "
            "OUT/experiment, and the report and decisions are written at the end."
        ),
    ] = None,
    act: Annotated[
        bool,
        typer.Option(
            "--act",
            help="With --experiment: apply the decisions through the registry (promote or "
            "roll back the alias; the evidence is recorded on each variant's version).",
        ),
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus /metrics and the live /dashboard on this port (0: any "
            "free port) while running."
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address of the metrics server (loopback by default).")
    ] = "127.0.0.1",
    drift_ref: Annotated[
        list[str] | None,
        typer.Option(
            help="Watch drift against a reference profile (tapetum drift profile): PATH for "
            "every stream, or SOURCE_ID=PATH, repeated. Scores go to /metrics and the log."
        ),
    ] = None,
    drift_events: Annotated[
        Path | None, typer.Option(help="Append drift events to this JSONL file.")
    ] = None,
) -> None:
    """Detect and track objects in SOURCES; write tracks (JSONL), annotated video and a summary."""
    from tapetum.core.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts (tapetum.core.memory)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if model_poll < 0:
        raise _fail(f"--model-poll must be ≥ 0 seconds, got {model_poll}")
    plan: ExperimentPlan | None = None
    try:
        if experiment is None:
            model_path, resolved = _resolve_model(plain_model(model, act), registry)
        else:
            plan = ExperimentPlan.prepare(
                experiment,
                model,
                act=act,
                registry=registry,
                threads=threads,
                workers=workers,
                provider=provider,
            )
            model_path, resolved = plan.control_path, None
            out = out or Path("runs") / time.strftime("ab-%Y%m%d-%H%M%S")
    except TapetumError as exc:
        raise _fail(str(exc)) from None
    options = RunOptions(
        sources=sources,
        model=model_path,
        out=out,
        conf=conf,
        nms_iou=nms_iou,
        classes=classes,
        tracker=tracker,
        reid=reid,
        topology=topology,
        relink=relink,
        imgsz=imgsz,
        arch=arch,
        realtime=realtime,
        loop=loop,
        reconnect_attempts=reconnect_attempts,
        video=video,
        trail=trail,
        forecast=forecast,
        forecaster=forecaster,
        classify=classify,
        workers=workers,
        threads=threads,
        provider=provider,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        drop_policy=drop_policy,
        detect_every=detect_every,
        latency_budget_ms=latency_budget_ms,
        max_interval=max_interval,
        priorities=tuple(priority or ()),
    )
    extras: dict[str, Callable[[], dict[str, int]]] = {}
    try:
        monitoring = _monitoring(
            model_path=model_path,
            resolved=resolved,
            port=metrics_port,
            host=metrics_host,
            drift_refs=drift_ref,
            drift_events=drift_events,
        )
        url = monitoring.listen() if monitoring is not None else None  # a taken port fails first
        live_exp = plan.live(out, live=_is_live(options)) if plan is not None and out else None
        pipeline, out_dir = _build(
            options,
            extras,
            monitoring.sinks if monitoring is not None else None,
            experiment=live_exp,
        )
        if live_exp is not None:
            live_exp.start(pipeline)
        if monitoring is not None:
            monitoring.attach(pipeline)
        if url is not None:
            console.print(f"metrics: {url}/metrics  dashboard: {url}/dashboard", markup=False)
    except TapetumError as exc:
        raise _fail(str(exc)) from None
    watcher = None
    if resolved is not None and resolved.alias and model_poll > 0 and _is_live(options):
        watcher = _follow_alias(pipeline, options, resolved, model_poll, registry)
    from tapetum.core.memory import MemoryTrimmer

    trimmer = MemoryTrimmer().start()  # freed frames back to the OS (tapetum.core.memory)
    # Ctrl-C and SIGTERM stay counted until the command ends: a second SIGTERM that lands
    # after the drain ended must not kill the run before its summary is written.
    with _StopSignals(follow_hup=watcher is not None) as signals:
        try:
            stats = _run_with_progress(pipeline, quiet, signals, watcher)
        finally:
            trimmer.stop()
            if watcher is not None:
                watcher.stop()
            if monitoring is not None:
                monitoring.stop()
        summary = stats.as_dict()
        if resolved is not None:
            summary["model"] = _model_summary(model or str(model_path), resolved, watcher)
        summary.update({name: read() for name, read in extras.items()})
        if plan is not None and live_exp is not None:
            try:
                summary["experiment"] = plan.finish(live_exp, stats, out_dir, quiet=quiet)
            except TapetumError as exc:
                raise _fail(str(exc)) from None
        summary_error = _write_summary(out_dir / "summary.json", summary)
        _print_summary(stats, out_dir)
        if "classification" in summary:
            c = summary["classification"]
            Console().print(
                f"classification: {c['crops_classified']} crops in {c['calls']} model calls, "
                f"{c['crops_skipped']} skipped (outside the frame or empty), "
                f"{c['crops_dropped']} dropped (queue full), {c['failed_crops']} failed"
            )
        if "forecast" in summary:
            f = summary["forecast"]
            Console().print(
                f"forecasts: {f['model']} by the model, {f['fallback_short_history']} by constant "
                f"velocity (tracks seen too briefly), {f['beyond_horizon']} past its horizon"
            )
        failed = [s for s in stats.streams if s.error and s.frames_processed == 0]
        if len(failed) == len(stats.streams):
            raise _fail("; ".join(s.error or "" for s in failed))
        _check_outputs(stats, summary, summary_error)
        ended = [f"{s.source_id}: {s.error}" for s in stats.streams if s.error]
        if ended:  # e.g. a camera given up after its reconnect attempts: a supervisor must know
            raise _fail("stream ended early: " + "; ".join(ended), code=1)


def _write_summary(path: Path, summary: dict[str, object]) -> str | None:
    """Write ``summary.json`` whole or not at all (a temporary file renamed over it); the
    reason it could not be written (a full disk), else None."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(json.dumps(summary, indent=2) + "\n")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        return f"cannot write {path}: {exc.strerror or exc}"
    return None


def _check_outputs(
    stats: PipelineStats, summary: dict[str, object], summary_error: str | None
) -> None:
    """Exit 1 with one ``error:`` line when an output is incomplete: a sink's writes failed
    (a full disk: counted per sink in the summary) or the summary could not be written (it
    is printed on stdout instead, as the last line)."""
    problems = [
        f"{name}: {stats.sink_errors.get(name, 0)} results not written ({reason})"
        for name, reason in stats.sink_failures.items()
    ]
    if summary_error is not None:
        sys.stdout.write(json.dumps(summary) + "\n")  # the fallback: the last line on stdout
        sys.stdout.flush()
        problems.append(f"{summary_error} (printed on stdout instead)")
    if problems:
        raise _fail("outputs incomplete: " + "; ".join(problems), code=1)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Everything ``tapetum run`` was asked for (see the command's help for each field)."""

    sources: list[str]
    model: Path
    out: Path | None
    conf: float
    nms_iou: float
    classes: str | None
    tracker: str
    reid: Path | None
    topology: Path | None
    imgsz: int | None
    realtime: bool
    video: bool
    trail: int
    forecast: str | None
    workers: int
    threads: int
    max_batch: int | None
    max_wait_ms: float
    drop_policy: str | None
    arch: str | None = None
    provider: str | None = None
    classify: str | None = None
    forecaster: Path | None = None
    detect_every: str = "1"
    latency_budget_ms: float = 100.0
    max_interval: int = 4
    priorities: tuple[str, ...] = ()
    relink: bool | None = None
    loop: bool = False
    reconnect_attempts: int = 10


def _monitoring(
    *,
    model_path: Path,
    resolved: ResolvedModel | None,
    port: int | None,
    host: str,
    drift_refs: list[str] | None,
    drift_events: Path | None,
) -> RunMonitoring | None:
    """Metrics and drift for ``run`` (None when neither is asked for)."""
    if port is None and not drift_refs:
        if drift_events is not None:
            raise ConfigError("--drift-events needs --drift-ref")
        return None
    from tapetum.monitor.monitoring import RunMonitoring, file_model_info, parse_drift_refs

    if resolved is not None:
        info = {"model": resolved.name, "version": str(resolved.version)}
    else:
        info = file_model_info(model_path) if model_path.is_file() else {"model": model_path.stem}
    return RunMonitoring(
        port=port,
        host=host,
        drift=parse_drift_refs(drift_refs) if drift_refs else None,
        drift_events=drift_events,
        model_info=info,
    )


def _resolve_model(model: str, registry: str | None) -> tuple[Path, ResolvedModel | None]:
    """A file path as given; a ``models:/`` reference resolved to a hash-checked file in
    the local model cache (the registry is imported only then)."""
    from tapetum.registry.uri import is_model_uri

    if not is_model_uri(model):
        return Path(model), None
    from tapetum.registry import resolve_model_uri

    resolved = resolve_model_uri(model, registry=registry)
    console.print(f"model {model} → {resolved.describe()}", highlight=False, markup=False)
    return resolved.path, resolved


def _is_live(opts: RunOptions) -> bool:
    """Sources that run until stopped, or files paced like cameras: worth following."""
    from tapetum.sources.video import is_live_url

    return opts.realtime or opts.loop or any(is_live_url(s) for s in opts.sources)


def _follow_alias(
    pipeline: Pipeline,
    opts: RunOptions,
    resolved: ResolvedModel,
    poll_s: float,
    registry: str | None,
) -> AliasWatcher:
    """Watch the alias; each new version is loaded like the first, warmed and swapped into
    the running pipeline (frames in flight finish on the old model, trackers keep ids)."""
    from tapetum.registry import AliasWatcher

    def swap(new: ResolvedModel) -> None:
        old = watcher.current
        detector = _make_detector(opts, new.path)
        warm_s = pipeline.swap_detector(detector)
        console.print(
            f"model swap: {old.describe() if old else '-'} → {new.describe()} "
            f"(warm-up {warm_s * 1e3:.0f} ms)",
            highlight=False,
            markup=False,
        )

    watcher = AliasWatcher(
        f"{resolved.name}@{resolved.alias}",
        swap,
        poll_s=poll_s,
        registry=registry,
        current=resolved,
    )
    return watcher.start()


def _model_summary(
    uri: str, resolved: ResolvedModel, watcher: AliasWatcher | None
) -> dict[str, object]:
    current = watcher.current if watcher is not None and watcher.current else resolved
    return {
        "uri": uri,
        "resolved": resolved.uri,
        "sha256": resolved.sha256,
        "final": current.uri,
        "swaps": [s.as_dict() for s in watcher.swaps] if watcher is not None else [],
        "alias_check_errors": watcher.errors if watcher is not None else 0,
    }


def _make_detector(opts: RunOptions, path: Path) -> OnnxDetector:
    """The run's detector from ``path``: thresholds, runtime and class filter of ``opts``."""
    from tapetum.detect import DetectorConfig, RuntimeOptions, load_detector
    from tapetum.detect.classes import resolve_class_filter
    from tapetum.detect.providers import parse_provider_list

    config = DetectorConfig(conf_threshold=opts.conf, nms_iou=opts.nms_iou)
    detector = load_detector(
        path,
        opts.arch,
        config,
        RuntimeOptions(
            intra_op_threads=opts.threads,
            workers=opts.workers,
            providers=parse_provider_list(opts.provider),
        ),
        input_hw=(opts.imgsz, opts.imgsz) if opts.imgsz else None,
    )
    # class names come from the model (its metadata, or COCO for COCO-sized heads)
    class_ids = resolve_class_filter(
        detector.class_names, opts.classes.split(",") if opts.classes else None
    )
    detector.config = dataclasses.replace(config, class_ids=class_ids)
    return detector


def _build(
    opts: RunOptions,
    extras: dict[str, Callable[[], dict[str, int]]] | None = None,
    extra_sinks: Callable[[list[SourceT]], list[SinkT]] | None = None,
    *,
    experiment: LiveExperiment | None = None,
) -> tuple[Pipeline, Path]:
    """Open sources, model, tracker factory and sinks; every user error is a TapetumError.

    ``extras`` receives readers of stage counters for the summary (``classification``);
    ``extra_sinks`` builds more sinks from the opened sources (monitoring); an
    ``experiment`` brings the detector, trackers, a recorder sink and its hooks."""
    from tapetum._optional import import_optional
    from tapetum.pipeline import DropPolicy, Enricher, Pipeline, PipelineConfig
    from tapetum.sinks import AnnotatedVideoSink, JsonlSink, Sink
    from tapetum.sources import Source, open_source
    from tapetum.sources.video import LIVE_SCHEMES, url_scheme
    from tapetum.track import Tracker, make_tracker
    from tapetum.track.forecast import DETECTOR_CV_CONFIG, ForecastEnricher
    from tapetum.track.forecast_model import StreamForecasters
    from tapetum.track.reid import CrossStreamEmbedder, Embedder, ReidEmbedder

    if opts.topology and not opts.reid:
        raise ConfigError("--topology needs --reid: global identities match appearance")
    embedder: Embedder | None = ReidEmbedder(opts.reid, threads=1) if opts.reid else None
    if isinstance(embedder, ReidEmbedder) and len(opts.sources) > 1:
        # one model call for the crops of every stream's frame at the same moment
        embedder = CrossStreamEmbedder(embedder, streams=len(opts.sources))
    # BoT-SORT is the tracker that uses appearance; with another tracker the embedder only
    # serves the identity service.
    tracker_reid = embedder if opts.tracker.strip().lower() == "botsort" else None
    if embedder is not None and tracker_reid is None and not opts.topology:
        raise ConfigError("--reid is used by --tracker botsort or by --topology")
    make_tracker(opts.tracker, 30.0, tracker_reid)  # a bad name fails before anything opens
    every, scheduler = parse_interval_options(
        opts.detect_every, opts.latency_budget_ms, opts.max_interval, opts.priorities
    )
    policy = DropPolicy.parse(opts.drop_policy) if opts.drop_policy else None
    opened: list[Source] = []
    seen: dict[str, int] = {}
    for uri in opts.sources:
        live: dict[str, Any] = (
            {"reconnect_max_attempts": opts.reconnect_attempts or None}
            if url_scheme(uri) in LIVE_SCHEMES
            else {}
        )
        src = open_source(uri, realtime=opts.realtime, loop=opts.loop, **live)
        n = seen.get(src.source_id, 0)
        seen[src.source_id] = n + 1
        if n:  # two sources with one name (a.mp4 in two folders): number the later ones
            src = open_source(
                uri,
                realtime=opts.realtime,
                loop=opts.loop,
                source_id=f"{src.source_id}-{n}",
                **live,
            )
        opened.append(src)
    detector = experiment.detector if experiment is not None else _make_detector(opts, opts.model)
    if scheduler is not None:
        check_interval_options(scheduler, [s.source_id for s in opened], detector)
    out_dir = opts.out or Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    sinks: list[Sink] = [JsonlSink(out_dir / "tracks.jsonl")]
    if opts.video:
        sinks += [
            AnnotatedVideoSink(
                out_dir / f"{s.source_id}.mp4",
                fps=s.fps or 30.0,
                source_id=s.source_id,
                trail_length=opts.trail,
            )
            for s in opened
        ]
    if extra_sinks is not None:
        sinks += extra_sinks(opened)
    if experiment is not None:
        sinks.append(experiment.sink)

    enrichers: list[EnricherFactory] = []
    if opts.forecaster and not opts.forecast:
        raise ConfigError("--forecaster needs --forecast (the horizons, e.g. 1,2)")
    if opts.forecast:
        horizons = _parse_horizons(opts.forecast)
        make_forecaster = StreamForecasters(horizons, opts.forecaster, DETECTOR_CV_CONFIG)
        if opts.forecaster and extras is not None:
            extras["forecast"] = make_forecaster.counts

        def forecaster_for(src: Source) -> Enricher:
            return ForecastEnricher(make_forecaster(src.fps, src.source_id), horizons)

        enrichers.append(forecaster_for)
    if opts.topology and embedder is not None:
        from tapetum.identity import (
            AppearanceConfig,
            IdentityConfig,
            IdentityService,
            load_topology,
        )
        from tapetum.identity.enricher import IdentityEnricher, IdentitySummarySink

        import_optional("hnswlib", "identity", "--topology")  # fail now, not mid-stream

        topology = load_topology(opts.topology)
        unknown = sorted({s.source_id for s in opened} - set(topology.cameras))
        if unknown:
            raise ConfigError(
                f"{opts.topology}: sources {unknown} are not cameras of the topology "
                f"(cameras: {list(topology.cameras)}; a source's id is its file stem)"
            )
        appearance = AppearanceConfig()
        identity_config = (
            IdentityConfig() if opts.relink is not False else IdentityConfig(relink=None)
        )
        service = IdentityService(
            topology, identity_config, embedding_dim=appearance.dim(embedder.embedding_dim)
        )
        reid_model = embedder
        sinks.append(IdentitySummarySink(service, out_dir / "identities.json"))

        def identity_for(src: Source) -> Enricher:
            return IdentityEnricher(service, src.source_id, reid_model, appearance)

        enrichers.append(identity_for)
    if opts.classify:
        enrichers.append(_classify_stage(opts, detector.class_names, extras))

    def tracker_for(src: Source) -> Tracker:
        fps = src.fps or 30.0
        tracker = make_tracker(opts.tracker, frame_rate=fps, reid=tracker_reid)
        if opts.relink and not opts.topology:  # with --topology the service re-links
            from tapetum.track.relink import RelinkingTracker

            return RelinkingTracker(tracker, frame_rate=fps)
        return tracker

    pipe = Pipeline(
        opened,
        detector,
        tracker_factory=experiment.tracker_factory if experiment is not None else tracker_for,
        sinks=sinks,
        enrichers=enrichers,
        taps=experiment.taps if experiment is not None else (),
        router=experiment.router if experiment is not None else None,
        config=PipelineConfig(
            max_batch=opts.max_batch,
            max_wait_ms=opts.max_wait_ms,
            drop_policy=policy,
            detect_every=every,
            scheduler=scheduler,
        ),
    )
    return pipe, out_dir


def _classify_stage(
    opts: RunOptions,
    detector_classes: tuple[str, ...],
    extras: dict[str, Callable[[], dict[str, int]]] | None,
) -> EnricherFactory:
    """The ``--classify`` enricher factory (one classifier shared by every stream)."""
    from tapetum.classify import (
        ClassificationEnricher,
        ClassifierService,
        OnnxClassifier,
        load_label_map,
        parse_classify_option,
    )
    from tapetum.classify.enricher import config_from_options
    from tapetum.detect import RuntimeOptions
    from tapetum.detect.providers import parse_provider_list
    from tapetum.pipeline import DropPolicy, Enricher
    from tapetum.sources import Source

    assert opts.classify is not None
    model_path, options = parse_classify_option(opts.classify)
    config = config_from_options(options, detector_classes)
    classifier = OnnxClassifier(
        model_path,
        runtime=RuntimeOptions(
            intra_op_threads=1, workers=1, providers=parse_provider_list(opts.provider)
        ),
    )
    label_map = (
        load_label_map(options["labels"], classifier.class_names) if "labels" in options else None
    )
    # a live source drops its oldest crops when the classifier falls behind; a file waits
    service = ClassifierService(
        classifier,
        label_map,
        policy=DropPolicy.DROP_OLDEST if _is_live(opts) else DropPolicy.BLOCK,
    )
    if extras is not None:

        def finish() -> dict[str, int]:  # after the run: answer what is queued, stop
            service.close()
            return service.stats.as_dict()

        extras["classification"] = finish

    def classifier_for(src: Source) -> Enricher:
        return ClassificationEnricher(service, config)

    return classifier_for


def _parse_horizons(text: str) -> tuple[float, ...]:
    """``"1,2"`` → ``(1.0, 2.0)``; a user error is a ConfigError naming the bad part."""
    try:
        horizons = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--forecast takes seconds like 1,2 — got {text!r}") from None
    if not horizons or any(not 0 < h <= 60 for h in horizons):
        raise ConfigError(f"--forecast horizons must be in (0, 60] seconds, got {text!r}")
    return horizons


class _StopSignals:
    """Counts Ctrl-C and SIGTERM (and, with ``follow_hup``, SIGHUP) while in its block, in
    the main thread; restores the previous handlers on leaving it.

    Ctrl-C is counted by a handler rather than caught as KeyboardInterrupt: the exception
    would surface wherever the main thread happens to be (a stats call, a progress redraw)
    and escape the loop; the count is read at one place per iteration. SIGTERM (a service
    manager, docker stop) counts as a Ctrl-C: the run drains and finishes its files
    instead of dying with them half written. SIGHUP asks a run following a registry alias
    to check it now.
    """

    def __init__(self, follow_hup: bool = False) -> None:
        self.stops: list[str] = []
        self.hangups = 0
        self._in_main = threading.current_thread() is threading.main_thread()
        self._follow_hup = self._in_main and follow_hup and hasattr(signal, "SIGHUP")
        self._previous: dict[int, Any] = {}

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stops.append(signal.Signals(signum).name)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.hangups += 1

    def __enter__(self) -> _StopSignals:
        if self._in_main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_stop)
        if self._follow_hup:
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _run_with_progress(
    pipeline: Pipeline,
    quiet: bool,
    signals: _StopSignals,
    watcher: AliasWatcher | None = None,
) -> PipelineStats:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    pipeline.start()
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[line]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    ) as progress:
        task = progress.add_task("tracking", line="starting…")
        reload = watcher.trigger if watcher is not None else None
        _progress_loop(
            pipeline,
            progress,
            task,
            lambda: len(signals.stops),
            hangups=lambda: signals.hangups,
            reload=reload,
        )
    stops = signals.stops
    if stops:
        how = "queued frames processed" if len(stops) == 1 else "queued frames dropped"
        console.print(f"stopped by {stops[0]} ({how})", highlight=False, markup=False)
    return pipeline.stats()


#: A drain (first Ctrl-C or SIGTERM) that moves no frame or result for this long turns
#: into a stop that drops what is queued (counted), so a stuck sink cannot hang the exit.
_DRAIN_STALL_S = 10.0


def _progress_loop(
    pipeline: Pipeline,
    progress: Progress,
    task: TaskID,
    interrupts: Callable[[], int],
    *,
    hangups: Callable[[], int] = lambda: 0,
    reload: Callable[[], None] | None = None,
) -> None:
    """Refresh the progress line until the pipeline ends; the first Ctrl-C drains what is
    queued, a second one drops it (as does a drain that moves nothing for
    ``_DRAIN_STALL_S``: a stuck sink); a SIGHUP calls ``reload`` (check the model alias
    now)."""
    handled = 0
    reloads = 0
    moved: tuple[int, ...] = ()
    moved_s = time.monotonic()
    while True:
        if hangups() > reloads:
            reloads = hangups()
            if reload is not None:
                reload()
        seen = interrupts()
        if seen > handled:
            handled = seen
            drain = handled == 1
            progress.update(task, description="draining" if drain else "stopping")
            pipeline.stop(drain=drain)
        if pipeline.join(0.25):
            return
        s = pipeline.stats()
        if handled == 1:
            now_moved = (s.frames_read, s.frames_processed, s.frames_dropped,
                         sum(s.sink_written.values()), sum(s.sink_errors.values()),
                         sum(s.sink_dropped.values()))  # fmt: skip
            if now_moved != moved:
                moved, moved_s = now_moved, time.monotonic()
            elif time.monotonic() - moved_s >= _DRAIN_STALL_S:
                console.print(
                    f"draining moved nothing for {_DRAIN_STALL_S:g} s (a stuck sink?): "
                    "dropping what is queued",
                    highlight=False,
                    markup=False,
                )
                handled = 2
                pipeline.stop(drain=False)
        p99 = pipeline.recent_latency_ms("end_to_end").p99_ms
        progress.update(
            task,
            line=(
                f"frames {s.frames_processed}/{s.frames_read}  fps {s.fps:5.1f}  "
                f"dropped {s.frames_dropped}  corrupt {s.frames_corrupt}  "
                f"p99 {p99:5.1f} ms"
            ),
        )


def _print_summary(stats: PipelineStats, out_dir: Path) -> None:
    from rich.table import Table

    table = Table(title="Tapetum run", title_justify="left")
    for col in ("stream", "read", "processed", "dropped", "corrupt", "failed", "fps"):
        table.add_column(col, justify="right" if col != "stream" else "left")
    for s in stats.streams:
        table.add_row(
            s.source_id,
            str(s.frames_read),
            str(s.frames_processed),
            str(s.frames_dropped),
            str(s.frames_corrupt),
            str(s.frames_failed),
            f"{s.fps:.1f}",
        )
    lat = Table(title="latency (ms)", title_justify="left")
    for col in ("stage", "p50", "p95", "p99", "max"):
        lat.add_column(col, justify="right" if col != "stage" else "left")
    for name, summary in stats.latency_ms.items():
        lat.add_row(
            name,
            f"{summary.p50_ms:.1f}",
            f"{summary.p95_ms:.1f}",
            f"{summary.p99_ms:.1f}",
            f"{summary.max_ms:.1f}",
        )
    out = Console()
    out.print(table)
    out.print(lat)
    print_interval_summary(stats, out)
    out.print(
        f"{stats.frames_processed} frames in {stats.elapsed_s:.1f} s ({stats.fps:.1f} FPS); "
        f"outputs in {out_dir}"
    )


def main() -> None:
    """Console entry point: user errors are one line and exit code 2, never a traceback."""
    try:
        app()
    except TapetumError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
