"""Identity benchmark: identities that hold on real cameras, and what holding them costs.

Two parts, one JSON (``bench/results/identity.json``):

* **campus4** (two synchronised, overlapping cameras; shared assets
  ``video/epfl_campus4/``, about four people): the clip is detected (YOLOX-nano),
  tracked (BoT-SORT with OSNet ReID) and described (ReID of usable crops, colour
  signatures) once, cached, then replayed through the identity service with re-linking
  and overlapping-view matching each off and on, once showing every identity from a
  track's first frame (no confirmation, ``confirm_s`` 0), and once as before this work
  (the issue's topology: a 0-5 s link both ways, no overlap, no mask; ReID only, no
  re-linking, no confirmation). For each: the ground-truth-free measures of ``tapetum
  eval identity`` (identities, identities per person, local tracks per identity, identity
  changes per minute, the share of simultaneous sightings sharing an id by position and
  by count), live and after the service's later merges, and the service's per-frame
  cost (``observe`` p50/p95/p99, milliseconds);
* **mot** (MOT15 + MOT17 train, public detections): HOTA, IDF1 and ID switches of
  ByteTrack, OC-SORT and BoT-SORT with and without tracklet re-linking, and the per-frame
  cost of the tracker alone and with the re-linker.

    python bench/identity.py                          # assets from $TAPETUM_ASSETS
    python bench/identity.py --cache /tmp/campus4.npz # keep the recording between runs
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info, pct, write_result

from tapetum.eval import evaluate_runs, find_sequences, load_sequence, run_tracker
from tapetum.eval.identity import CameraRecording, record_cameras, replay_cameras
from tapetum.eval.identity_measures import identity_measures, resolve_traces, traces_from_records
from tapetum.identity import (
    AppearanceConfig,
    CameraLink,
    CameraTopology,
    IdentityConfig,
    load_topology,
)
from tapetum.track import make_tracker
from tapetum.track.relink import RelinkingTracker

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "examples" / "identity" / "campus4.yaml"
PEOPLE = 4
TRACKERS = ("bytetrack", "ocsort", "botsort")


def campus4(assets: Path, cache: Path | None, frames: int | None) -> dict[str, Any]:
    topology = load_topology(TOPOLOGY)
    source = "recorded by this run"
    if cache is not None and cache.is_file():
        recording = CameraRecording.load(cache)
        source = f"cached recording {cache.name} (same detector, tracker and ReID)"
    else:
        video = assets / "video" / "epfl_campus4"
        recording = record_cameras(
            [video / "campus4-c0.mp4", video / "campus4-c1.mp4"],
            assets / "models" / "yolox_nano.onnx",
            assets / "models" / "osnet_x0_25_msmt17.onnx",
            frames=frames,
            masks={c: topology.spec(c).mask for c in topology.cameras},
        )
        if cache is not None:
            recording.save(cache)
    before = CameraTopology.build(
        list(topology.cameras),
        [CameraLink(topology.cameras[0], topology.cameras[1], 0.0, 5.0)],
        bidirectional=True,
    )
    runs = {
        "before (issue's topology, ReID only, no re-linking)": (
            before,
            IdentityConfig(relink=None, overlap=None, confirm_s=0.0, confirm_frames=1),
            AppearanceConfig(0.0),
        ),
        "re-linking off, overlap matching off": (
            topology,
            IdentityConfig(relink=None, overlap=None),
            None,
        ),
        "re-linking on, overlap matching off": (topology, IdentityConfig(overlap=None), None),
        "re-linking off, overlap matching on": (topology, IdentityConfig(relink=None), None),
        "re-linking and overlap matching on, ids shown from a track's first frame": (
            topology,
            IdentityConfig(confirm_s=0.0, confirm_frames=1),
            None,
        ),
        "re-linking on, overlap matching on (default)": (topology, IdentityConfig(), None),
    }
    out: dict[str, Any] = {}
    for name, (topo, config, look) in runs.items():
        service, records, costs = replay_cameras(recording, topo, config, look)
        traces = traces_from_records(records)
        issued = {int(g) for tr in traces.values() for g in tr.global_id if g > 0}
        resolved = {g: service.resolve(g) for g in issued}
        live = identity_measures(traces, topology, people=PEOPLE)
        merged = identity_measures(resolve_traces(traces, resolved), topology, people=PEOPLE)
        out[name] = {
            "live": _measures(live),
            "after_merges": _measures(merged),
            "relinks": service.relinks(),
            "observe_ms": pct(costs),
        }
        print(f"{name}: {out[name]}", file=sys.stderr)
    return {
        "topology": str(TOPOLOGY.relative_to(ROOT)),
        "recording": source,
        "people": PEOPLE,
        "frames_per_camera": {c: len(f) for c, f in recording.frames.items()},
        "runs": out,
    }


def _measures(m: Any) -> dict[str, Any]:
    pair = m.pairs[0]
    return {
        "identities": m.identities,
        "identities_per_person": m.identities_per_person,
        "local_tracks": m.local_tracks,
        "local_tracks_per_identity": m.local_tracks_per_identity,
        "identity_changes_per_min": m.identity_changes_per_min,
        "simultaneous_same_id_by_position": pair.share_by_position,
        "simultaneous_sightings_by_position": pair.matched_by_position,
        "simultaneous_same_id_by_count": pair.share_by_count,
        "position_geometry": pair.geometry,
    }


def mot(assets: Path) -> dict[str, Any]:
    sequences = [
        load_sequence(p)
        for split in ("MOT15/train", "MOT17/train")
        for p in find_sequences(assets / "mot" / split)
    ]
    detections = [s.public_detections() for s in sequences]
    out: dict[str, Any] = {"sequences": [s.name for s in sequences], "trackers": {}}
    for name in TRACKERS:

        def relinking(fps: float, tracker: str = name) -> RelinkingTracker:
            return RelinkingTracker(make_tracker(tracker, fps), frame_rate=fps)

        row = {}
        for label, factory in (("without", partial(make_tracker, name)), ("with", relinking)):
            runs = [run_tracker(factory, s, d) for s, d in zip(sequences, detections, strict=True)]
            report = evaluate_runs([(s, r.tracks) for s, r in zip(sequences, runs, strict=True)])
            c = report.combined
            row[f"{label}_relink"] = {
                "hota": round(100 * c.hota, 2),
                "idf1": round(100 * c.idf1, 2),
                "assa": round(100 * c.assa, 2),
                "mota": round(100 * c.mota, 2),
                "id_switches": c.id_switches,
                "tracker_ms": pct(np.concatenate([r.frame_times_ms for r in runs])),
            }
        out["trackers"][name] = row
        print(f"{name}: {row}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--assets",
        type=Path,
        default=Path(os.environ.get("TAPETUM_ASSETS", ROOT.parent / "shared" / "assets")),
    )
    parser.add_argument("--cache", type=Path, help="campus4 recording (.npz) to reuse or write")
    parser.add_argument("--frames", type=int, help="campus4 frames per camera (default all)")
    parser.add_argument("--skip-mot", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "identity.json")
    args = parser.parse_args()
    result = {
        "machine": machine_info(),
        "campus4": campus4(args.assets, args.cache, args.frames),
        "mot": None if args.skip_mot else mot(args.assets),
    }
    write_result(result, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
