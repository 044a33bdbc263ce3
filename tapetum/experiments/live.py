"""An experiment wired into one pipeline run (``tapetum run … --experiment exp.yaml``).

*Shadow*: the pipeline runs the control and emits its results; a batch tap hands every
batch, with its model inputs, to one :class:`~tapetum.experiments.shadow.ShadowRunner` per
variant. *Canary*: a detector router sends each stream (sticky by source id) or each frame
(by source id and frame index) to the arm its hash bucket names; every arm's results are
emitted, a by-stream variant with its own tracker.

Either way a recorder sink records every emitted result for its arm, and in shadow mode
pairs it with the variants' (agreement). When the run ends, :meth:`LiveExperiment.finish`
writes the run folder::

    RUN_DIR/experiment/experiment.json        the spec, the arms, the pipeline's stats
    RUN_DIR/experiment/arms/<arm>.npz         per-frame, per-box and agreement columns
    RUN_DIR/experiment/variants/<arm>.jsonl   a shadow variant's tracks (as tracks.jsonl)

Example:
    >>> from tapetum.experiments import LiveExperiment, load_arms, load_experiment
    >>> spec = load_experiment("exp.yaml")                          # doctest: +SKIP
    >>> exp = LiveExperiment(spec, load_arms(spec), Path("runs/ab"), live=False)  # doctest: +SKIP
    >>> pipe = Pipeline(sources, exp.detector, exp.tracker_factory, sinks=[exp.sink],
    ...                 taps=exp.taps, router=exp.router)           # doctest: +SKIP
    >>> exp.start(pipe); stats = pipe.run(); exp.finish(stats)      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.detect.base import StagedDetector
from tapetum.errors import ConfigError, ExperimentSpecError
from tapetum.experiments.agreement import AgreementBook
from tapetum.experiments.arms import LoadedArm
from tapetum.experiments.record import DATA_FORMAT, ArmRecorder
from tapetum.experiments.shadow import ShadowRunner
from tapetum.experiments.spec import CONTROL, ExperimentSpec, Mode, SplitBy
from tapetum.experiments.split import TrafficSplit
from tapetum.pipeline.hooks import BatchTap, DetectorRouter
from tapetum.pipeline.queues import DropPolicy
from tapetum.sources.base import Source
from tapetum.track.base import Tracker

if TYPE_CHECKING:
    from tapetum.detect import OnnxDetector
    from tapetum.pipeline.runtime import Pipeline, PipelineStats

__all__ = ["EXPERIMENT_DIR", "LiveExperiment", "save_run"]

#: The experiment's sub-folder of a run folder.
EXPERIMENT_DIR = "experiment"


class LiveExperiment:
    """Hooks for a :class:`~tapetum.pipeline.runtime.Pipeline` and the record they fill.

    Args:
        spec: the experiment.
        arms: its loaded arms, control first (:func:`~tapetum.experiments.arms.load_arms`).
        run_dir: the run folder (the data go to ``run_dir/experiment``).
        live: live sources (a shadow drops its oldest batch rather than hold the control).
        write_tracks: also write each shadow variant's tracks as JSONL.
    """

    def __init__(
        self,
        spec: ExperimentSpec,
        arms: Sequence[LoadedArm],
        run_dir: Path,
        *,
        live: bool,
        write_tracks: bool = True,
    ) -> None:
        if spec.mode is Mode.CANARY and spec.split_by not in (SplitBy.STREAM, SplitBy.FRAME):
            raise ExperimentSpecError(
                f"experiment {spec.name!r}: a pipeline splits by stream or frame; a split by "
                f"{spec.split_by} is for the server"
            )
        self.spec = spec
        self.arms = {arm.name: arm for arm in arms}
        self.control = arms[0]
        self.folder = run_dir / EXPERIMENT_DIR
        self.live = live
        self.recorders = {a.name: ArmRecorder(a.name, a.class_names) for a in arms}
        self.book = AgreementBook({a.name: self.recorders[a.name] for a in arms[1:]})
        self.shadows: list[ShadowRunner] = []
        self.split = TrafficSplit(spec.name, spec.shares)
        if spec.mode is Mode.SHADOW:
            policy = DropPolicy.DROP_OLDEST if live else DropPolicy.BLOCK
            self.shadows = [
                ShadowRunner(
                    arm,
                    self.control,
                    self.recorders[arm.name],
                    self.book,
                    tracks_path=self.folder / "variants" / f"{arm.name}.jsonl"
                    if write_tracks
                    else None,
                    policy=policy,
                )
                for arm in arms[1:]
            ]
        self.sink = _RecorderSink(self)
        self._started = datetime.now(UTC)

    # ------------------------------------------------------------------ pipeline pieces
    @property
    def detector(self) -> OnnxDetector:
        """The pipeline's detector: the control's."""
        return self.control.detector

    @property
    def taps(self) -> list[BatchTap]:
        return [shadow.tap for shadow in self.shadows]

    @property
    def router(self) -> DetectorRouter | None:
        return self._route if self.spec.mode is Mode.CANARY else None

    def tracker_factory(self, source: Source) -> Tracker:
        """A stream's tracker: its arm's on a by-stream canary, the control's otherwise."""
        fps = source.fps or 30.0
        for shadow in self.shadows:
            shadow.set_frame_rate(source.source_id, fps)
        arm = self.control
        if self.spec.mode is Mode.CANARY and self.spec.split_by is SplitBy.STREAM:
            arm = self.arms[self.split.arm_for(source.source_id)]
        return arm.make_tracker(fps)

    def arm_for(self, source_id: str, frame_index: int) -> str:
        """The arm whose result an emitted frame is."""
        if self.spec.mode is Mode.SHADOW:
            return CONTROL
        if self.spec.split_by is SplitBy.STREAM:
            return self.split.arm_for(source_id)
        return self.split.arm_for_frame(source_id, frame_index)

    def _route(self, source: Source, frame: Frame) -> StagedDetector:
        return self.arms[self.arm_for(source.source_id, frame.index)].detector

    # ------------------------------------------------------------------ lifecycle
    def start(self, pipeline: Pipeline) -> None:
        """Check the pipeline can run every arm, warm the variants, start the shadows."""
        if pipeline.config.detect_every != 1 or pipeline.config.scheduler is not None:
            raise ConfigError(
                "an experiment compares the arms' detections on every frame: run it without "
                "a detection interval (detect_every 1, no scheduler)"
            )
        for arm in list(self.arms.values())[1:]:
            if self.spec.mode is Mode.CANARY:
                if arm.detector.max_batch < pipeline.max_batch:
                    raise ConfigError(
                        f"variant {arm.name!r} takes batches of up to {arm.detector.max_batch}; "
                        f"the pipeline forms batches of {pipeline.max_batch}"
                    )
                h, w = arm.detector.input_hw
                arm.detector.infer(np.zeros((pipeline.max_batch, 3, h, w), np.float32))
        for shadow in self.shadows:
            shadow.start()

    def record(self, result: FrameResult) -> None:
        """One emitted result (the recorder sink's thread)."""
        frame = result.frame
        arm = self.arm_for(frame.source_id, frame.index)
        timings = result.timings_ms
        latency_ms = timings.get("end_to_end", float("nan"))
        compute_ms = sum(timings.get(k, 0.0) for k in ("infer", "postprocess", "track"))
        self.recorders[arm].add(
            frame,
            done_s=frame.arrival_s + latency_ms / 1e3,
            latency_ms=latency_ms,
            compute_ms=compute_ms,
            detections=result.detections,
        )
        if self.shadows:
            self.book.control((frame.source_id, frame.index), result.detections)

    def finish(self, stats: PipelineStats, *, drain: bool = True) -> Path:
        """Stop the shadows (finishing what they hold with ``drain``), attribute the
        pipeline's failures, write the run folder; returns ``run_dir/experiment``."""
        shadow_stats = {s.arm.name: s.close(drain=drain).as_dict() for s in self.shadows}
        self.book.finish()
        for s in stats.streams:
            arm = CONTROL
            if self.spec.mode is Mode.CANARY:
                if self.spec.split_by is not SplitBy.STREAM:
                    continue  # a failed frame's arm is not known to the pipeline
                arm = self.split.arm_for(s.source_id)
            self.recorders[arm].add_stream_failures(s.source_id, s.frames_failed)
        for name, counts in shadow_stats.items():
            counts["paired"] = self.book.paired[name]
            counts["unpaired"] = self.book.unpaired[name]
        extra = {"live": self.live, "pipeline": stats.as_dict(), "shadow": shadow_stats}
        save_run(
            self.folder, self.spec, self.arms, self.recorders, started=self._started, extra=extra
        )
        return self.folder


def save_run(
    folder: Path,
    spec: ExperimentSpec,
    arms: Mapping[str, LoadedArm],
    recorders: Mapping[str, ArmRecorder],
    *,
    started: datetime,
    extra: Mapping[str, Any],
) -> None:
    """Write a run folder: each arm's columns and ``experiment.json`` (the spec, the arms'
    models, ``extra``, the machine's load)."""
    for name, recorder in recorders.items():
        recorder.data().save(folder / "arms" / f"{name}.npz")
    info = {
        "format": DATA_FORMAT,
        "spec": spec.to_dict(),
        "arms": {name: arm.as_dict() for name, arm in arms.items()},
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
        "machine": {"cpu_count": os.cpu_count(), "load_average": _load()},
        "tapetum": _version(),
    }
    tmp = folder / "experiment.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(folder / "experiment.json")  # a reader never sees half a file


class _RecorderSink:
    """The pipeline sink that records every emitted result for its arm."""

    def __init__(self, experiment: LiveExperiment) -> None:
        self._experiment = experiment
        self.written = 0

    def write(self, result: FrameResult) -> None:
        self._experiment.record(result)
        self.written += 1

    def close(self) -> None:
        return None


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _version() -> str:
    import tapetum

    return tapetum.__version__
