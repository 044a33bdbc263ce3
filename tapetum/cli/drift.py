"""``tapetum drift``: build a camera's reference profile, compare a source with it offline.

``tapetum drift profile SOURCE -o ref.json --model M`` runs SOURCE (a camera for a while,
a video, or a folder of images: a data set) through the detector and tracker and writes
every signal's reference with its calibrated threshold; without ``--model`` only the
image signals are profiled. ``tapetum drift compare ref.json SOURCE --model M`` runs the
live monitor over SOURCE and prints, per signal, the whole-source statistic, the windows
over the line and when the drift state was entered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tapetum.errors import ConfigError

if TYPE_CHECKING:
    from tapetum.core.frame import Frame
    from tapetum.detect import OnnxDetector
    from tapetum.monitor import DriftEvent, DriftMonitor, ProfileRecorder
    from tapetum.sinks.base import Sink
    from tapetum.sources.base import Source, SourceStats

drift_app = typer.Typer(
    name="drift",
    help="Data and model drift: build a camera's reference profile, compare a source with it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        help="ONNX detector: adds the model and tracking signals (without it: image only).",
    ),
]
FramesOption = Annotated[
    int | None, typer.Option(help="Read at most this many frames (default: the whole source).")
]
FpsOption = Annotated[
    float | None,
    typer.Option(help="Frame rate of the video clock (default: the source's, else 25)."),
]
ArchOption = Annotated[
    str | None, typer.Option(help="Model family when the file does not say (see tapetum run).")
]
ConfOption = Annotated[float, typer.Option(help="Detection confidence threshold.")]
TrackerOption = Annotated[str, typer.Option(help="Tracker: bytetrack, ocsort, botsort.")]
ReidOption = Annotated[
    Path | None,
    typer.Option(help="OSNet ReID model with --tracker botsort: adds the appearance signal."),
]


@dataclass(frozen=True, slots=True)
class _RunSpec:
    source: str
    model: Path | None
    frames: int | None
    fps: float | None
    arch: str | None
    conf: float
    tracker: str
    reid: Path | None


class _FirstFrames:
    """The first ``limit`` frames of a source (the Source protocol)."""

    def __init__(self, inner: Source, limit: int | None) -> None:
        self.inner = inner
        self.limit = limit

    @property
    def source_id(self) -> str:
        return self.inner.source_id

    @property
    def is_live(self) -> bool:
        return False  # profiling reads every frame: block, never drop

    @property
    def fps(self) -> float | None:
        return self.inner.fps

    @property
    def stats(self) -> SourceStats:
        return self.inner.stats

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        for n, frame in enumerate(self.inner.frames(stop)):
            if self.limit is not None and n >= self.limit:
                return
            yield frame


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _detector(spec: _RunSpec) -> OnnxDetector:
    from tapetum.detect import DetectorConfig, RuntimeOptions, load_detector

    assert spec.model is not None
    return load_detector(
        spec.model, spec.arch, DetectorConfig(conf_threshold=spec.conf), RuntimeOptions()
    )


def _open(spec: _RunSpec) -> tuple[_FirstFrames, float]:
    """The source (its first ``spec.frames``) and the frame rate of its video clock.

    A folder of images is a data set of independent pictures, not a video: its clock runs
    at the image-statistics rate, so every image is sampled and a window holds as many
    images as it holds samples of a video."""
    from tapetum.monitor.drift_features import FeatureExtractor
    from tapetum.sources import ImageFolderSource, open_source

    if spec.frames is not None and spec.frames < 1:
        raise ConfigError(f"frames must be ≥ 1, got {spec.frames}")
    if spec.fps is not None and spec.fps <= 0:
        raise ConfigError(f"fps must be > 0, got {spec.fps}")
    inner = open_source(spec.source)
    source = _FirstFrames(inner, spec.frames)
    if spec.fps is None and isinstance(inner, ImageFolderSource):
        return source, 1.0 / FeatureExtractor().image_period_s
    return source, float(spec.fps or source.fps or 25.0)


def _run(
    spec: _RunSpec,
    source: _FirstFrames,
    fps: float,
    sinks: list[Sink],
    recorder: ProfileRecorder | None = None,
) -> int:
    """Run ``source`` into ``sinks`` (through the model, or image signals only into
    ``recorder``); returns frames read."""
    from tapetum.pipeline import Pipeline, PipelineConfig
    from tapetum.track import make_tracker

    if spec.model is None:
        assert recorder is not None
        n = 0
        for frame in source.frames(threading.Event()):
            recorder.write_image(frame.index, frame.image)
            n += 1
        return n
    embedder = None
    if spec.reid is not None:
        from tapetum.track.reid import ReidEmbedder

        if spec.tracker.strip().lower() != "botsort":
            raise ConfigError("--reid is used by --tracker botsort")
        embedder = ReidEmbedder(spec.reid, threads=1)
    make_tracker(spec.tracker, 30.0, embedder)  # a bad name fails before the model loads

    def tracker_for(src: Source) -> Any:
        return make_tracker(spec.tracker, frame_rate=fps, reid=embedder)

    pipe = Pipeline([source], _detector(spec), tracker_for, sinks=sinks, config=PipelineConfig())
    stats = pipe.run()
    (stream,) = stats.streams
    if stream.error and stream.frames_processed == 0:
        raise ConfigError(f"cannot read {spec.source}: {stream.error}")
    return stream.frames_read


@drift_app.command("profile")
def profile_command(  # noqa: PLR0917 - typer maps parameters to options
    source: Annotated[str, typer.Argument(help="Camera URL, video file or folder of images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Profile JSON to write.")],
    model: ModelOption = None,
    frames: FramesOption = None,
    fps: FpsOption = None,
    arch: ArchOption = None,
    conf: ConfOption = 0.1,
    tracker: TrackerOption = "bytetrack",
    reid: ReidOption = None,
    margin: Annotated[
        float, typer.Option(help="Threshold = margin × the largest score the reference reached.")
    ] = 1.5,
) -> None:
    """Build SOURCE's reference profile: every signal's reference and calibrated threshold."""
    from tapetum.errors import TapetumError
    from tapetum.monitor import ProfileRecorder

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec = _RunSpec(source, model, frames, fps, arch, conf, tracker, reid)
    try:
        if margin <= 0:
            raise ConfigError(f"margin must be > 0, got {margin}")
        opened, clock = _open(spec)
        recorder = ProfileRecorder(fps=clock)
        _run(spec, opened, clock, [recorder], recorder)
        profile = recorder.build(
            Path(source).name or source, model=model.name if model else None, margin=margin
        )
        profile.save(out)
    except TapetumError as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"drift profile of {profile.source}", title_justify="left")
    for col in ("signal", "family", "test", "values", "null max", "threshold"):
        table.add_column(col, justify="left" if col in ("signal", "family", "test") else "right")
    for ref in profile.references.values():
        table.add_row(
            ref.spec.name,
            ref.spec.family,
            ref.spec.kind.value,
            str(ref.count),
            _num(ref.null_max),
            _num(ref.threshold),
        )
    console_out = Console()
    console_out.print(table)
    for ref in profile.references.values():
        if ref.note:
            console_out.print(f"{ref.spec.name}: {ref.note}", highlight=False)
    console_out.print(
        f"{profile.frames} frames, {profile.duration_s:.1f} s of video; "
        f"{len(profile.scored())} signals scored; written to {out}",
        highlight=False,
    )


@drift_app.command("compare")
def compare_command(  # noqa: PLR0917 - typer maps parameters to options
    reference: Annotated[Path, typer.Argument(help="Profile JSON (tapetum drift profile).")],
    source: Annotated[str, typer.Argument(help="Camera URL, video file or folder of images.")],
    model: ModelOption = None,
    frames: FramesOption = None,
    fps: FpsOption = None,
    arch: ArchOption = None,
    conf: ConfOption = 0.1,
    tracker: TrackerOption = "bytetrack",
    reid: ReidOption = None,
    events: Annotated[
        Path | None, typer.Option(help="Append drift events to this JSONL file.")
    ] = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit 1 if any signal entered drift.")
    ] = False,
) -> None:
    """Run the drift monitor over SOURCE against REFERENCE and print a table per signal."""
    from tapetum.errors import TapetumError
    from tapetum.monitor import DriftEventWriter, DriftMonitor, DriftProfile, ProfileRecorder

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    spec = _RunSpec(source, model, frames, fps, arch, conf, tracker, reid)
    try:
        profile = DriftProfile.load(reference)
        opened, clock = _open(spec)
        image_only = None
        if spec.model is None:
            image_only = [n for n, r in profile.references.items() if r.spec.family == "image"]
        monitor = DriftMonitor(
            profile,
            fps=clock,
            on_event=[DriftEventWriter(events)] if events else [],
            signals=image_only,
        )
        recorder = ProfileRecorder(fps=clock, image_hz=profile.image_hz)
        if spec.model is None:
            n = _run_image_only(opened, monitor, recorder)
        else:
            n = _run(spec, opened, clock, [monitor, recorder])
    except TapetumError as exc:
        raise _fail(str(exc)) from None
    drifted = _print_comparison(profile, monitor, recorder, n, model is None)
    if fail_on_drift and drifted:
        raise typer.Exit(1)


def _run_image_only(source: _FirstFrames, monitor: DriftMonitor, recorder: ProfileRecorder) -> int:
    """Feed frames without a model: image signals only (empty detections)."""
    from tapetum.core.detections import Detections
    from tapetum.core.result import FrameResult

    n = 0
    for frame in source.frames(threading.Event()):
        monitor.write(FrameResult(frame, Detections.empty()))
        recorder.write_image(frame.index, frame.image)
        n += 1
    return n


def _print_comparison(
    profile: Any, monitor: DriftMonitor, recorder: ProfileRecorder, frames: int, image_only: bool
) -> bool:
    from tapetum.monitor.drift_signals import score_window

    status = next(iter(monitor.snapshot().values()), {})
    onsets: dict[str, DriftEvent] = {}
    for event in monitor.events:
        if event.state == "drift":
            onsets.setdefault(event.signal, event)
    duration = frames / recorder.extractor.fps
    table = Table(
        title=f"drift of {frames} frames ({duration:.1f} s) against {profile.source}",
        title_justify="left",
    )
    cols = ("signal", "test", "threshold", "whole", "over", "max", "state", "first drift")
    for col in cols:
        table.add_column(col, justify="left" if col in ("signal", "test", "state") else "right")
    for name, ref in profile.references.items():
        if ref.threshold is None:
            continue
        if image_only and ref.spec.family != "image":
            continue
        whole = score_window(ref, recorder.payloads.get(name, []), duration)
        st = status.get(name)
        onset = onsets.get(name)
        table.add_row(
            name,
            ref.spec.kind.value,
            _num(ref.threshold),
            _num(whole),
            f"{st.over}/{st.checks}" if st else "-",
            _num(st.max_score) if st else "-",
            ("[bold red]drift[/]" if st.drifting else "ok") if st else "-",
            f"{onset.t_s:.1f} s #{onset.frame_index}" if onset else "-",
        )
    out = Console()
    out.print(table)
    drifted = sorted(onsets)
    if drifted:
        plural = "s" if len(drifted) != 1 else ""
        out.print(f"[bold red]drift[/] in {len(drifted)} signal{plural}: {', '.join(drifted)}")
    else:
        out.print("no drift: every signal stayed within its threshold")
    if image_only:
        out.print("(image signals only: pass --model for the model and tracking signals)")
    return bool(drifted)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"
