"""``tapetum eval identity``: how well identities hold, with and without ground truth.

* ``--tracks runs/x/tracks.jsonl --topology site.yaml --people 4``: the measures an
  operator can take on their own cameras (:mod:`tapetum.eval.identity_measures`): global
  identities per person, local tracks per identity, identity changes per minute and the
  share of simultaneous sightings on overlapping cameras that share a global id; as the
  ids were shown live, and after the service's later merges (from ``identities.json``
  beside the tracks, when there);
* ``--mot MOT17/train``: single-camera fragmentation on MOTChallenge ground truth with
  the public detections: HOTA, IDF1 and ID switches of a tracker with and without
  tracklet re-linking (:mod:`tapetum.track.relink`).

Heavy modules are imported inside the command so that ``tapetum --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tapetum.errors import ConfigError

if TYPE_CHECKING:
    from tapetum.eval.identity_measures import IdentityMeasures


def identity_command(  # noqa: PLR0917 - typer maps parameters to options
    tracks: Annotated[
        Path | None,
        typer.Option(help="tracks.jsonl of a tapetum run --topology (global_id per track)."),
    ] = None,
    topology: Annotated[
        Path | None,
        typer.Option(help="The run's camera topology: which views overlap (links with overlap)."),
    ] = None,
    people: Annotated[
        int | None, typer.Option(help="How many people the footage shows (your head count).")
    ] = None,
    mot: Annotated[
        Path | None,
        typer.Option(
            help="A MOTChallenge split or sequence folder: IDF1/HOTA with and without "
            "re-linking, on its public detections."
        ),
    ] = None,
    tracker: Annotated[str, typer.Option(help="Tracker for --mot.")] = "bytetrack",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the results as JSON here.")
    ] = None,
) -> None:
    """Measure cross-camera identities of a run (--tracks) and re-linking on MOT (--mot)."""
    if tracks is None and mot is None:
        raise ConfigError("give --tracks (a run's tracks.jsonl) and/or --mot (a MOT folder)")
    result: dict[str, Any] = {}
    if tracks is not None:
        result["tracks"] = _measure_run(tracks, topology, people)
    if mot is not None:
        result["mot"] = _relink_on_mot(mot, tracker)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")


def _measure_run(tracks: Path, topology_path: Path | None, people: int | None) -> dict[str, Any]:
    from tapetum.eval.identity_measures import (
        identity_measures,
        load_resolved_ids,
        load_traces,
        resolve_traces,
    )
    from tapetum.identity import load_topology

    topology = load_topology(topology_path) if topology_path is not None else None
    traces = load_traces(tracks)
    live = identity_measures(traces, topology, people=people)
    summary = tracks.parent / "identities.json"
    resolved = None
    if summary.is_file():
        resolved = identity_measures(
            resolve_traces(traces, load_resolved_ids(summary)), topology, people=people
        )
    _print_measures(live, resolved, title=f"identities in {tracks}")
    return {
        "live": live.as_dict(),
        "after_merges": resolved.as_dict() if resolved is not None else None,
    }


def _print_measures(live: IdentityMeasures, resolved: IdentityMeasures | None, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("measure", no_wrap=True)
    table.add_column("live", justify="right", no_wrap=True)
    table.add_column("merged", justify="right", no_wrap=True)

    def row(name: str, get: Any, fmt: str = "{}") -> None:
        a = get(live)
        b = get(resolved) if resolved is not None else None
        table.add_row(
            name, "-" if a is None else fmt.format(a), "-" if b is None else fmt.format(b)
        )

    row("global identities", lambda m: m.identities)
    if live.people:
        row(f"identities per person ({live.people})", lambda m: m.identities_per_person, "{:.2f}")
    row("local tracks per identity", lambda m: m.local_tracks_per_identity, "{:.2f}")
    row("identity changes per minute", lambda m: m.identity_changes_per_min, "{:.1f}")
    notes = []
    for k, pair in enumerate(live.pairs):
        other = resolved.pairs[k] if resolved is not None else None
        table.add_row(
            f"same id, by position [{k + 1}]",
            _pct(pair.share_by_position),
            _pct(other.share_by_position if other is not None else None),
        )
        table.add_row(
            f"same id, by count [{k + 1}]",
            _pct(pair.share_by_count),
            _pct(other.share_by_count if other is not None else None),
        )
        notes.append(
            f"[{k + 1}] {' / '.join(pair.cameras)}: {pair.matched_by_position or 0} "
            f"simultaneous sightings matched by position (mapping {pair.geometry}); "
            f"by count: of {pair.possible_by_count} = sum of min(n_a, n_b), a lower bound"
        )
    console = Console()
    console.print(table)
    tracks = ", ".join(f"{c}: {n}" for c, n in live.local_tracks.items())
    console.print(f"local tracks: {tracks}", highlight=False)
    for note in notes:
        console.print(note, highlight=False)
    console.print(
        "live: global ids as shown frame by frame; merged: after the service's later "
        "merges (identities.json)",
        highlight=False,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _relink_on_mot(data: Path, tracker: str) -> dict[str, Any]:
    from functools import partial

    from rich.console import Console
    from rich.table import Table

    from tapetum.eval import evaluate_runs, find_sequences, load_sequence, run_tracker
    from tapetum.track import make_tracker
    from tapetum.track.relink import RelinkingTracker

    make_tracker(tracker, 30.0)  # an unknown name fails before any file is read
    sequences = [load_sequence(p) for p in find_sequences(data)]
    missing = [s.name for s in sequences if s.gt is None or s.detections is None]
    if missing:
        raise ConfigError(f"needs gt/gt.txt and det/det.txt (public detections): {missing}")

    def relinking(frame_rate: float) -> RelinkingTracker:
        return RelinkingTracker(make_tracker(tracker, frame_rate), frame_rate=frame_rate)

    reports = {}
    for name, factory in (("without", partial(make_tracker, tracker)), ("with", relinking)):
        runs = [run_tracker(factory, s) for s in sequences]
        reports[name] = evaluate_runs([(s, r.tracks) for s, r in zip(sequences, runs, strict=True)])
    table = Table(title=f"{tracker} on {data}: re-linking off / on", title_justify="left")
    table.add_column("sequence", no_wrap=True)
    for col in ("HOTA", "", "IDF1", " ", "IDSW", "  "):
        table.add_column(col, justify="right")
    names = [*reports["without"].sequences, "combined"]
    for i, name in enumerate(names):
        a, b = (
            (r.combined if name == "combined" else r.sequences[name])
            for r in (reports["without"], reports["with"])
        )
        table.add_row(
            name,
            f"{100 * a.hota:.2f}",
            f"{100 * b.hota:.2f}",
            f"{100 * a.idf1:.2f}",
            f"{100 * b.idf1:.2f}",
            str(a.id_switches),
            str(b.id_switches),
            end_section=i == len(names) - 2,
        )
    Console().print(table)
    return {
        "tracker": tracker,
        "data": str(data),
        "without_relink": {
            "sequences": {k: v.as_dict() for k, v in reports["without"].sequences.items()},
            "combined": reports["without"].combined.as_dict(),
        },
        "with_relink": {
            "sequences": {k: v.as_dict() for k, v in reports["with"].sequences.items()},
            "combined": reports["with"].combined.as_dict(),
        },
    }
