"""Detection interval benchmark: what tracker-only frames cost in tracking accuracy.

On MOTChallenge sequences with their public detections (MOT15 train, MOT17 train FRCNN),
the tracker is given the detections of some frames only and carries its tracks through
the others with its motion model (``PredictingTracker.predict``), exactly as a pipeline
stream with a detection interval does. Every frame's output is scored (HOTA, IDF1, MOTA
through TrackEval, ``tapetum.eval``):

* ``k=1`` … ``k=4``: the detector on every k-th frame (frames 1, 1 + k, …).
* ``adaptive``: the scheduler's policy (``tapetum.pipeline.scheduler``) under a load that
  stays above its ``behind`` threshold until the stream is at its motion cap: intervals
  rise where predictions stay accurate (measured by ``MotionMonitor`` on the detector
  frames) and fall where the scene moves or objects enter. One decision per detector
  frame. ``detector_share`` says which fraction of frames it sent to the detector.

Target: the adaptive policy within 1.0 HOTA point of k = 1 on each dataset.

    python bench/interval.py                      # assets from $TAPETUM_ASSETS
    python bench/interval.py --datasets MOT17 --trackers bytetrack,ocsort   # a subset
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import machine_info, write_result

from tapetum.core.detections import Detections
from tapetum.eval import MotSequence, evaluate_runs, find_sequences, load_sequence
from tapetum.pipeline.scheduler import (
    IntervalPolicy,
    MotionMonitor,
    SchedulerConfig,
    StreamObservation,
)
from tapetum.track import make_tracker
from tapetum.track.base import PredictingTracker

HOTA_TARGET_POINTS = 1.0
FOLDERS = {"MOT15": "MOT15/train", "MOT17": "MOT17/train"}

#: Picks the interval after each detector frame from the stream's monitor.
Schedule = Callable[[MotionMonitor, int], int]


def fixed(k: int) -> Schedule:
    return lambda monitor, current: k


def adaptive(config: SchedulerConfig) -> Schedule:
    """The policy at a load just above ``behind`` while the stream is below its motion cap,
    and steady (neither behind nor with headroom) once it is at or above it."""
    policy = IntervalPolicy(config)
    behind_ms = config.latency_budget_ms * (config.behind_load + 0.05)
    steady_ms = config.latency_budget_ms * (config.headroom_load + config.behind_load) / 2

    def schedule(monitor: MotionMonitor, current: int) -> int:
        seen = StreamObservation(current, float("nan"), 0.0, monitor.motion_rate, monitor.entering)
        below_cap = current < policy.motion_cap(seen)
        seen = StreamObservation(
            current,
            behind_ms if below_cap else steady_ms,
            0.0,
            monitor.motion_rate,
            monitor.entering,
        )
        return policy.decide({"s": seen}).intervals["s"]

    return schedule


def run_with_interval(
    tracker_name: str, seq: MotSequence, dets: list[Detections], schedule: Schedule
) -> tuple[list[Detections], int]:
    """The sequence through a fresh tracker, detections only on the frames the schedule
    leaves to the detector; returns every frame's output and the detector frame count."""
    tracker = make_tracker(tracker_name, seq.info.frame_rate_fps)
    assert isinstance(tracker, PredictingTracker)
    monitor = MotionMonitor()
    width = seq.info.width_px
    out: list[Detections] = []
    interval, since, detector_frames = 1, 0, 0
    for index, frame_dets in enumerate(dets):
        detected = index == 0 or since + 1 >= interval
        if detected:
            tracked = tracker.update(frame_dets)
            since = 0
            detector_frames += 1
        else:
            tracked = tracker.predict()
            since += 1
        monitor.observe(index, tracked, detected, width, frame_dets if detected else None)
        if detected:
            interval = schedule(monitor, interval)
        out.append(tracked)
    return out, detector_frames


def rounded(scores: dict[str, float | int]) -> dict[str, float | int]:
    return {k: round(float(v), 4) if isinstance(v, float) else v for k, v in scores.items()}


def bench_dataset(
    tracker_name: str, data: list[tuple[MotSequence, list[Detections]]], config: SchedulerConfig
) -> dict[str, Any]:
    schedules: dict[str, Schedule] = {f"k={k}": fixed(k) for k in (1, 2, 3, 4)}
    schedules["adaptive"] = adaptive(config)
    result: dict[str, Any] = {}
    for name, schedule in schedules.items():
        t0 = time.perf_counter()
        runs, shares, frames, detected = [], {}, 0, 0
        for seq, dets in data:
            tracks, n_det = run_with_interval(tracker_name, seq, dets, schedule)
            runs.append((seq, tracks))
            shares[seq.name] = round(n_det / len(dets), 3)
            frames += len(dets)
            detected += n_det
        report = evaluate_runs(runs)
        result[name] = {
            "combined": rounded(report.combined.as_dict()),
            "detector_share": round(detected / frames, 4),
            "per_sequence": {
                s: {
                    "hota": round(v.hota, 4),
                    "idf1": round(v.idf1, 4),
                    "detector_share": shares[s],
                }
                for s, v in report.sequences.items()
            },
        }
        c = report.combined
        print(
            f"  {tracker_name:9s} {name:8s} HOTA {100 * c.hota:5.2f}  IDF1 {100 * c.idf1:5.2f}  "
            f"MOTA {100 * c.mota:5.2f}  detector share {detected / frames:.2f}  "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    base = result["k=1"]["combined"]["hota"]
    for entry in result.values():
        entry["hota_delta_points"] = round(100 * (entry["combined"]["hota"] - base), 2)
    return result


def main() -> int:
    assets = Path(
        os.environ.get("TAPETUM_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets")
    )
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mot", type=Path, default=assets / "mot")
    ap.add_argument("--datasets", default="MOT15,MOT17")
    ap.add_argument("--trackers", default="bytetrack,ocsort,botsort")
    ap.add_argument("--max-interval", type=int, default=SchedulerConfig().max_interval)
    ap.add_argument("--motion-error", type=float, default=SchedulerConfig().motion_error)
    ap.add_argument("--out", type=Path, default=Path("bench/results/interval.json"))
    args = ap.parse_args()
    config = SchedulerConfig(max_interval=args.max_interval, motion_error=args.motion_error)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "scheduler": {
            "max_interval": config.max_interval,
            "motion_error": config.motion_error,
            "entering_share": config.entering_share,
        },
        "detections": "public: MOT15 det/det.txt (scores rank-normalised), MOT17 FRCNN",
    }
    targets: dict[str, bool] = {}
    for dataset in (d.strip() for d in args.datasets.split(",")):
        folder = args.mot / FOLDERS[dataset]
        if not folder.is_dir():
            print(f"error: {folder} not found; set TAPETUM_ASSETS", file=sys.stderr)
            return 2
        data = [(s, s.public_detections()) for s in map(load_sequence, find_sequences(folder))]
        print(f"{dataset}: {len(data)} sequences", flush=True)
        result[dataset] = {}
        for tracker in (t.strip() for t in args.trackers.split(",")):
            section = bench_dataset(tracker, data, config)
            result[dataset][tracker] = section
            targets[f"{dataset}/{tracker}: adaptive within {HOTA_TARGET_POINTS} HOTA of k=1"] = (
                section["adaptive"]["hota_delta_points"] >= -HOTA_TARGET_POINTS
            )
    result["targets"] = targets
    write_result(result, args.out)
    for name, ok in targets.items():
        print(f"{'met' if ok else 'MISSED'}: {name}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
