"""Tracker benchmark: Tapetum's trackers vs the same algorithms in the ``trackers`` library.

Every tracker sees identical detections per sequence:

* MOT17 train (7 sequences) and MOT20-01: detections derived from the ground truth with
  the seeded noise model of ``tapetum.eval.noise`` (no ``det.txt`` is shipped for them);
* MOT15 train (6 sequences): the official public detections (scores rank-normalised).

Reported per tracker and per dataset: HOTA, DetA, AssA, MOTA, IDF1, ID switches (TrackEval,
through ``tapetum.eval``), and the per-frame ``update`` time p50/p95/p99. Both sides run with
their own defaults (what a user gets); the JSON records them.

    python bench/track.py                 # assets from $TAPETUM_ASSETS
    python bench/track.py --datasets MOT15
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info, write_result

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.eval import (
    MotSequence,
    evaluate_runs,
    find_sequences,
    load_sequence,
    run_tracker,
    simulate_detections,
)
from tapetum.track import Tracker, make_tracker

HOTA_TOLERANCE_POINTS = 0.3
SPEEDUP_TARGET = 5.0


class TrackersLibTracker:
    """The ``trackers`` library behind Tapetum's Tracker protocol (conversion included in
    the timed call: a ``supervision.Detections`` round trip, a few microseconds)."""

    def __init__(self, tracker: Any) -> None:
        self._tracker = tracker

    def update(self, detections: Detections, frame: Frame | None = None) -> Detections:
        out = Detections.from_supervision(self._tracker.update(detections.to_supervision()))
        return out[out.tracker_id >= 0]

    def reset(self) -> None:
        self._tracker.reset()


def their_factory(name: str) -> Callable[[float], Tracker]:
    import trackers

    cls = {
        "bytetrack": trackers.ByteTrackTracker,
        "ocsort": trackers.OCSORTTracker,
        "botsort": trackers.BoTSORTTracker,
    }[name]
    return lambda fps: TrackersLibTracker(cls(frame_rate=fps))


def our_factory(name: str) -> Callable[[float], Tracker]:
    return lambda fps: make_tracker(name, fps)


def load_dataset(root: Path, name: str, seed: int) -> list[tuple[MotSequence, list[Detections]]]:
    folder = {"MOT15": "MOT15/train", "MOT17": "MOT17/train", "MOT20": "MOT20/train"}[name]
    out = []
    for path in find_sequences(root / folder):
        seq = load_sequence(path)
        if name == "MOT15":
            dets = seq.public_detections()
        else:
            dets = simulate_detections(seq, seed=seed).per_frame()
        out.append((seq, dets))
    return out


def bench_one(
    factory: Callable[[float], Tracker], data: list[tuple[MotSequence, list[Detections]]]
) -> dict[str, Any]:
    runs = [(seq, run_tracker(factory, seq, dets)) for seq, dets in data]
    report = evaluate_runs([(seq, run.tracks) for seq, run in runs])
    times = np.concatenate([run.frame_times_ms for _, run in runs])
    p50, p95, p99 = np.percentile(times, [50, 95, 99])
    return {
        "combined": {k: round(float(v), 4) for k, v in report.combined.as_dict().items()},
        "per_sequence": {
            name: {k: round(float(v), 4) for k, v in s.as_dict().items()}
            for name, s in report.sequences.items()
        },
        "frame_time_ms": {
            "p50": round(float(p50), 4),
            "p95": round(float(p95), 4),
            "p99": round(float(p99), 4),
            "mean": round(float(times.mean()), 4),
            "frames": int(times.size),
        },
    }


def truncate(seq: MotSequence, frames: int) -> MotSequence:
    """The first ``frames`` frames of a sequence (ground truth cut to match)."""
    assert seq.gt is not None
    keep = seq.gt.frame <= frames
    gt = dataclasses.replace(
        seq.gt,
        **{
            f.name: getattr(seq.gt, f.name)[keep]
            for f in dataclasses.fields(seq.gt)
            if f.name != "benchmark"
        },
    )
    info = dataclasses.replace(seq.info, length_frames=frames)
    return dataclasses.replace(seq, info=info, gt=gt, detections=None)


def bench_reid(mot: Path, reid_model: Path, seed: int) -> dict[str, Any]:
    """BoT-SORT with and without ReID on the MOT17 frames whose pictures are shipped
    (MOT17-04: 8 frames, MOT17-02: 4), same simulated detections for both."""
    import cv2

    from tapetum.track.reid import ReidEmbedder

    embedder = ReidEmbedder(reid_model)
    out: dict[str, Any] = {}
    runs: dict[str, list[tuple[MotSequence, list[Detections]]]] = {"without": [], "with": []}
    for name in ("MOT17-04-FRCNN", "MOT17-02-FRCNN"):
        folder = mot / "MOT17" / "train" / name
        images = sorted((folder / "img1").glob("*.jpg"))
        full = load_sequence(folder)
        seq = truncate(full, len(images))
        dets = simulate_detections(full, seed=seed).per_frame()[: len(images)]
        for mode in ("without", "with"):
            tracker = make_tracker(
                "botsort", full.info.frame_rate_fps, embedder if mode == "with" else None
            )
            tracks = []
            for i, (path, d) in enumerate(zip(images, dets, strict=True)):
                image = cv2.imread(str(path))
                frame = Frame(name, i, image, i / full.info.frame_rate_fps, 0.0)
                tracks.append(tracker.update(d, frame))
            runs[mode].append((seq, tracks))
    for mode, pairs in runs.items():
        report = evaluate_runs(pairs)
        out[f"{mode}_reid"] = {k: round(float(v), 4) for k, v in report.combined.as_dict().items()}
    out["frames"] = {"MOT17-04-FRCNN": 8, "MOT17-02-FRCNN": 4}
    out["idf1_delta_points"] = round(
        100 * (out["with_reid"]["idf1"] - out["without_reid"]["idf1"]), 2
    )
    return out


def bench_forecast(mot: Path) -> dict[str, Any]:
    from tapetum.eval.forecast import (
        COMBINED,
        ForecastEvalConfig,
        default_forecasters,
        evaluate_forecasts,
    )

    seqs = [load_sequence(p) for p in find_sequences(mot / "MOT17" / "train")]
    config = ForecastEvalConfig(horizons_s=(1.0, 2.0))
    report = evaluate_forecasts(seqs, default_forecasters(), config)
    return {
        name: {
            f"{h:g}s": {
                k: round(float(getattr(report.get(name, COMBINED, h), k)), 4)
                for k in ("ade_px", "fde_px", "ade_norm", "fde_norm", "samples")
            }
            for h in config.horizons_s
        }
        for name in default_forecasters()
    }


def bench_cross_camera(assets: Path) -> dict[str, Any]:
    """Global-id link precision/recall on two overlapping crops of the crowd video (see
    ``tapetum.eval.identity`` for the set-up and its pseudo ground truth)."""
    from tapetum.eval.identity import link_scores, record_two_camera_crops, replay
    from tapetum.identity import IdentityConfig

    rec = record_two_camera_crops(
        assets / "video" / "crowd_720p.avi",
        assets / "models" / "yolox_nano.onnx",
        assets / "models" / "osnet_x0_25_msmt17.onnx",
    )
    out: dict[str, Any] = {"local_tracks": rec.num_tracks}
    for threshold in (0.90, 0.92, 0.95):
        service = replay(rec, config=IdentityConfig(match_threshold=threshold))
        out[f"match_threshold={threshold:.2f}"] = dataclasses.asdict(link_scores(rec, service))
    return out


def main() -> int:
    assets = Path(
        os.environ.get("TAPETUM_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets")
    )
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mot", type=Path, default=assets / "mot")
    ap.add_argument("--datasets", nargs="+", default=["MOT17", "MOT15", "MOT20"])
    ap.add_argument("--trackers", nargs="+", default=["bytetrack", "ocsort", "botsort"])
    ap.add_argument(
        "--reid-model", type=Path, default=assets / "models" / "osnet_x0_25_msmt17.onnx"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/track.json"))
    args = ap.parse_args()
    if not args.mot.is_dir():
        print(f"error: MOT data not found at {args.mot}; set TAPETUM_ASSETS", file=sys.stderr)
        return 2

    result: dict[str, Any] = {
        "machine": machine_info(),
        "detections": {
            "MOT15": "official public det.txt, scores rank-normalised per sequence",
            "MOT17": f"ground truth + DetectionNoise() defaults, seed {args.seed}",
            "MOT20": f"ground truth + DetectionNoise() defaults, seed {args.seed}",
        },
        "results": {},
    }
    rows = []
    for dataset in args.datasets:
        data = load_dataset(args.mot, dataset, args.seed)
        for name in args.trackers:
            print(f"{dataset}: {name} (tapetum vs trackers)…", flush=True)
            ours = bench_one(our_factory(name), data)
            theirs = bench_one(their_factory(name), data)
            hota_delta = 100 * (ours["combined"]["hota"] - theirs["combined"]["hota"])
            speedup = theirs["frame_time_ms"]["p50"] / ours["frame_time_ms"]["p50"]
            result["results"][f"{dataset}/{name}"] = {
                "tapetum": ours,
                "trackers": theirs,
                "hota_delta_points": round(hota_delta, 2),
                "idf1_delta_points": round(
                    100 * (ours["combined"]["idf1"] - theirs["combined"]["idf1"]), 2
                ),
                "speedup_p50": round(speedup, 2),
                "targets": {
                    "hota_within_0.3_or_better": hota_delta >= -HOTA_TOLERANCE_POINTS,
                    "speedup_ge_5x": speedup >= SPEEDUP_TARGET,
                },
            }
            rows.append((dataset, name, ours, theirs, hota_delta, speedup))

    print("ReID: BoT-SORT with and without appearance on the shipped MOT17 frames…", flush=True)
    result["reid"] = bench_reid(args.mot, args.reid_model, args.seed)
    print("cross-camera identities on two crops of the crowd video…", flush=True)
    result["cross_camera"] = bench_cross_camera(assets)
    print("forecasting: ADE/FDE on MOT17 ground truth…", flush=True)
    result["forecast_mot17"] = bench_forecast(args.mot)
    write_result(result, args.out)
    print(
        f"\n{'dataset':8s} {'tracker':10s} {'HOTA ours/theirs':>18s} {'IDF1 ours/theirs':>18s} "
        f"{'MOTA ours/theirs':>18s} {'ms/frame p50 ours/theirs':>26s} {'speed-up':>9s}"
    )
    for dataset, name, ours, theirs, hota_delta, speedup in rows:
        o, t = ours["combined"], theirs["combined"]
        print(
            f"{dataset:8s} {name:10s} {100 * o['hota']:8.2f}/{100 * t['hota']:<8.2f} "
            f"{100 * o['idf1']:8.2f}/{100 * t['idf1']:<8.2f} "
            f"{100 * o['mota']:8.2f}/{100 * t['mota']:<8.2f} "
            f"{ours['frame_time_ms']['p50']:12.3f}/{theirs['frame_time_ms']['p50']:<12.3f} "
            f"{speedup:8.1f}×   (HOTA {hota_delta:+.2f} pts)"
        )
    reid = result["reid"]
    print(
        f"ReID (BoT-SORT, {sum(reid['frames'].values())} MOT17 frames with pictures): IDF1 "
        f"{100 * reid['without_reid']['idf1']:.2f} → {100 * reid['with_reid']['idf1']:.2f} "
        f"({reid['idf1_delta_points']:+.2f} pts)"
    )
    for name, by_h in result["forecast_mot17"].items():
        cells = ", ".join(
            f"{h}: ADE {v['ade_px']:.1f} px / FDE {v['fde_px']:.1f} px" for h, v in by_h.items()
        )
        print(f"forecast {name}: {cells}")
    for key, value in result["cross_camera"].items():
        if key.startswith("match_threshold"):
            print(
                f"cross-camera {key}: precision {value['precision']:.2f}, "
                f"recall {value['recall']:.2f} ({value['true_links']} true links, "
                f"{value['false_links']} false, {value['missed_links']} missed)"
            )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
