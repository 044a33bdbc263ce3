"""``tapetum eval``: score trackers on MOTChallenge data.

Heavy modules (TrackEval, scipy, the trackers) are imported inside the commands so that
``tapetum --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tapetum.errors import ConfigError

if TYPE_CHECKING:
    from tapetum.eval import TrackerRun, TrackingReport, TrackingScores

eval_app = typer.Typer(
    name="eval",
    help="Evaluate trackers (and later detectors) on benchmark data.",
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
