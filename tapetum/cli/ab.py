"""``tapetum ab`` and ``tapetum run --experiment``: A/B experiments from the command line.

    tapetum ab check exp.yaml                       # models, classes, shares: ok or why not
    tapetum run crowd.mp4 --experiment exp.yaml -o runs/ab      # shadow or canary, live
    tapetum ab offline exp.yaml runs/ab             # mAP / HOTA on the file's labelled data
    tapetum ab report runs/ab [--act]               # ab_report.json + ab_report.html

``tapetum run --experiment`` also runs the offline step when the file has one, then writes
the report and prints the decisions; with ``--act`` (there or on ``ab report``) they are
applied through the registry (see :mod:`tapetum.experiments.act`). Every refusal is one
``error:`` line and exit code 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tapetum.registry.settings import ENV_REGISTRY_URI

if TYPE_CHECKING:
    from tapetum.detect import RuntimeOptions
    from tapetum.experiments import ExperimentReport, ExperimentSpec, LiveExperiment, LoadedArm
    from tapetum.experiments.spec import ArmSpec
    from tapetum.pipeline import PipelineStats

ab_app = typer.Typer(
    name="ab",
    help="A/B experiments: check an experiment file, score its arms offline, report and "
    "decide (promote / hold / rollback), act through the registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RegistryOption = Annotated[
    str | None,
    typer.Option(
        "--registry",
        envvar=ENV_REGISTRY_URI,
        help="Registry of the models:/ arms (default: sqlite:///tapetum-registry.db).",
    ),
]


def _out(text: str) -> None:
    from rich.console import Console

    Console(soft_wrap=True).print(text, highlight=False, markup=False)


def prepare_arms(
    path: Path,
    *,
    registry: str | None,
    threads: int = 0,
    workers: int = 0,
    provider: str | None = None,
) -> tuple[ExperimentSpec, list[LoadedArm]]:
    """Read the experiment and load its arms: everything is checked here, before any source
    is opened or frame read (``ExperimentSpecError`` otherwise)."""
    from tapetum.detect import RuntimeOptions
    from tapetum.detect.providers import parse_provider_list
    from tapetum.experiments import load_arms, load_experiment
    from tapetum.experiments.spec import CONTROL, Mode

    spec = load_experiment(path)
    providers = parse_provider_list(provider)

    def runtime_for(arm: ArmSpec) -> RuntimeOptions:
        shadow_variant = arm.name != CONTROL and spec.mode is Mode.SHADOW
        if shadow_variant:  # its own thread beside the pipeline: one core unless told
            return RuntimeOptions(intra_op_threads=arm.threads or 1, workers=1, providers=providers)
        return RuntimeOptions(
            intra_op_threads=arm.threads or threads, workers=workers, providers=providers
        )

    return spec, load_arms(spec, registry=registry, runtime_for=runtime_for)


def describe_arms(spec: ExperimentSpec, arms: list[LoadedArm]) -> str:
    lines = [f"experiment {spec.name}: {spec.mode.value}"]
    shares = {s.arm: s for s in spec.shares}
    for arm in arms:
        s = arm.spec
        share = (
            f", {100 * shares[arm.name].share:g}% of {spec.split_by.value}s"
            if arm.name in shares
            else ""
        )
        lines.append(
            f"  {arm.name:<12} {arm.source.describe()}: {arm.detector.meta.family} "
            f"{arm.detector.input_hw[0]}x{arm.detector.input_hw[1]}, {len(arm.class_names)} "
            f"classes, conf {s.conf:g}, nms {s.nms_iou:g}, {s.tracker}{share}"
        )
    for rule in spec.rules:
        lines.append(f"  rule         {rule.describe()}")
    for g in spec.guardrails:
        lines.append(f"  guardrail    {g.describe()}")
    return "\n".join(lines)


@ab_app.command("check")
def check(
    experiment: Annotated[Path, typer.Argument(help="The experiment file (YAML or JSON).")],
    registry: RegistryOption = None,
) -> None:
    """Validate an experiment file: fields, canary shares, models (resolved and loaded),
    classes of every variant against the control's."""
    spec, arms = prepare_arms(experiment, registry=registry)
    _out(describe_arms(spec, arms) + "\nok")


@ab_app.command("offline")
def offline(
    experiment: Annotated[Path, typer.Argument(help="The experiment file (YAML or JSON).")],
    run_dir: Annotated[Path, typer.Argument(help="Run folder to add the offline scores to.")],
    registry: RegistryOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Score every arm on the experiment's labelled data (mAP with image-bootstrap
    intervals; HOTA/IDF1 on its MOT sequences) into RUN_DIR/experiment/offline.*."""
    from tapetum.errors import ConfigError

    spec, arms = prepare_arms(experiment, registry=registry)
    if spec.offline is None:
        raise ConfigError(f"{experiment} has no offline section (data or mot) to score")
    run_offline(spec, arms, run_dir, quiet=quiet)
    _out(f"offline scores in {run_dir / 'experiment'}")


def run_offline(spec: ExperimentSpec, arms: list[LoadedArm], run_dir: Path, *, quiet: bool) -> None:
    """The offline step: score, save, and record the spec for a folder without a live run."""
    from rich.console import Console
    from rich.progress import Progress

    from tapetum.experiments.live import EXPERIMENT_DIR
    from tapetum.experiments.offline import evaluate_offline
    from tapetum.experiments.record import DATA_FORMAT

    assert spec.offline is not None
    folder = run_dir / EXPERIMENT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with Progress(console=Console(stderr=True), disable=quiet, transient=True) as progress:
        task = progress.add_task("offline", total=None)

        def show(what: str, done: int, total: int) -> None:
            progress.update(task, description=f"offline {what}", completed=done, total=total)

        result = evaluate_offline(arms, spec.offline, seed=spec.seed, progress=show)
    result.save(folder, spec.confidence)
    if not (folder / "experiment.json").is_file():
        record = {
            "format": DATA_FORMAT,
            "spec": spec.to_dict(),
            "arms": {a.name: a.as_dict() for a in arms},
        }
        (folder / "spec.json").write_text(json.dumps(record, indent=2) + "\n")


@ab_app.command("report")
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder with experiment data.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write the report (RUN_DIR).")
    ] = None,
    act: Annotated[
        bool,
        typer.Option(
            "--act",
            help="Apply the decisions through the registry: evidence on each variant's "
            "version, promote to / roll back the alias.",
        ),
    ] = False,
    registry: RegistryOption = None,
) -> None:
    """Analyse RUN_DIR: metrics per arm with bootstrap intervals, effects, decisions;
    write ab_report.json and a self-contained ab_report.html."""
    from tapetum.experiments import build_report

    analysis = build_report(run_dir)
    finish_report(analysis, out or run_dir, act=act, registry=registry)


def finish_report(
    analysis: ExperimentReport, out_dir: Path, *, act: bool, registry: str | None
) -> None:
    """Write the report, print the decisions, act if asked."""
    from tapetum.experiments import apply_decisions, write_report

    json_path, html_path = write_report(analysis, out_dir)
    lines = []
    for name, decision in analysis.decisions.items():
        lines.append(f"{name}: {decision.verdict.value.upper()} — {decision.summary}")
    lines.append(f"report: {html_path} ({json_path.name})")
    _out("\n".join(lines))
    if act:
        for action in apply_decisions(analysis, json_path, registry):
            _out(
                f"act {action.variant} ({action.version}): {action.verdict.value}: "
                f"{action.done}; evidence run {action.evidence_run}"
            )


# ------------------------------------------------------------------ tapetum run --experiment


def plain_model(model: str | None, act: bool) -> str:
    """``tapetum run`` without ``--experiment``: ``--model`` is required, ``--act`` is not
    for it."""
    from tapetum.errors import ConfigError

    if model is None:
        raise ConfigError("--model is required (or --experiment FILE, which names the models)")
    if act:
        raise ConfigError("--act applies an experiment's decisions: it needs --experiment")
    return model


@dataclass(slots=True)
class ExperimentPlan:
    """What ``tapetum run --experiment`` prepared before opening any source."""

    spec: ExperimentSpec
    arms: list[LoadedArm]
    act: bool
    registry: str | None

    @property
    def control_path(self) -> Path:
        return self.arms[0].source.path

    @classmethod
    def prepare(
        cls,
        path: Path,
        model: str | None,
        *,
        act: bool,
        registry: str | None,
        threads: int,
        workers: int,
        provider: str | None,
    ) -> ExperimentPlan:
        """Read the file, resolve and load every arm, check classes (and, with ``act``,
        that every arm is a registered version), all before a frame is read."""
        from tapetum.errors import ConfigError, ExperimentSpecError

        if model is not None:
            raise ConfigError("--experiment names the models (control and variants); drop --model")
        spec, arms = prepare_arms(
            path, registry=registry, threads=threads, workers=workers, provider=provider
        )
        if act:
            files = [a.name for a in arms if not a.source.registered]
            if files:
                raise ExperimentSpecError(
                    f"{path}: --act moves registry aliases, but arm(s) {', '.join(files)} are "
                    "files; name them models:/NAME/VERSION or models:/NAME@ALIAS"
                )
        return cls(spec, arms, act, registry)

    def live(self, out_dir: Path, *, live: bool) -> LiveExperiment:
        """The experiment's pipeline hooks, recording into ``out_dir/experiment``."""
        from tapetum.experiments import LiveExperiment

        return LiveExperiment(self.spec, self.arms, out_dir, live=live)

    def finish(
        self, experiment: LiveExperiment, stats: PipelineStats, out_dir: Path, *, quiet: bool
    ) -> dict[str, str]:
        """After the pipeline: write the data, run the offline step, report, act; returns
        the decisions for the run summary."""
        from tapetum.experiments import build_report

        experiment.finish(stats)
        if self.spec.offline is not None:
            run_offline(self.spec, self.arms, out_dir, quiet=quiet)
        analysis = build_report(out_dir)
        finish_report(analysis, out_dir, act=self.act, registry=self.registry)
        return {name: d.verdict.value for name, d in analysis.decisions.items()}
