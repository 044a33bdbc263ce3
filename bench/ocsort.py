"""OC-SORT benchmark: Tapetum's ``OCSortTracker`` vs ``trackers.OCSORTTracker``.

Both trackers get the same synthetic scene (objects on straight noisy paths, each missed on
5% of frames) and this prints the per-frame ``update`` time, p50 and p95 in milliseconds,
plus identity switches and reported boxes so a speed-up is not bought with worse tracking.
Never asserts a time.

    python bench/ocsort.py --objects 50 --frames 600
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import supervision as sv
from trackers import OCSORTTracker

from tapetum.core.detections import Detections
from tapetum.track import OCSortTracker

Frame = tuple[np.ndarray, np.ndarray, np.ndarray]


def _scene(n_objects: int, n_frames: int, seed: int) -> list[Frame]:
    rng = np.random.default_rng(seed)
    start = rng.uniform([50, 50], [1850, 1000], (n_objects, 2))
    velocity = rng.uniform(-4, 4, (n_objects, 2))
    size = rng.uniform([20, 40], [60, 120], (n_objects, 2))
    frames = []
    for f in range(n_frames):
        seen = np.flatnonzero(rng.random(n_objects) > 0.05)
        seen = seen[rng.permutation(seen.size)]
        centre = start[seen] + velocity[seen] * f + rng.normal(0, 1, (seen.size, 2))
        boxes = np.hstack((centre - size[seen] / 2, centre + size[seen] / 2)).astype(np.float32)
        frames.append((boxes, rng.uniform(0.65, 0.95, seen.size).astype(np.float32), seen))
    return frames


def _id_switches(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
    last: dict[int, int] = {}
    switches = reported = 0
    for objects, ids in rows:
        for obj, tid in zip(objects.tolist(), ids.tolist(), strict=True):
            if tid >= 0:
                reported += 1
                switches += int(obj in last and last[obj] != tid)
                last[obj] = tid
    return switches, reported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scene = _scene(args.objects, args.frames, args.seed)

    ours, theirs = OCSortTracker(), OCSORTTracker()
    times: dict[str, list[float]] = {"tapetum": [], "trackers": []}
    rows: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"tapetum": [], "trackers": []}
    for boxes, scores, objects in scene:
        dets = Detections(boxes, scores, np.zeros(len(boxes), np.int64), data={"obj": objects})
        start = time.perf_counter()
        out = ours.update(dets)
        times["tapetum"].append(time.perf_counter() - start)
        rows["tapetum"].append((out.data["obj"], out.tracker_id))

        sv_dets = sv.Detections(
            xyxy=boxes, confidence=scores, class_id=np.zeros(len(boxes), int), data={"obj": objects}
        )
        start = time.perf_counter()
        res = theirs.update(sv_dets)
        times["trackers"].append(time.perf_counter() - start)
        rows["trackers"].append((res.data["obj"], np.asarray(res.tracker_id)))

    for name in ("tapetum", "trackers"):
        ms = np.asarray(times[name]) * 1e3
        switches, reported = _id_switches(rows[name])
        print(
            f"{name:9s} p50 {np.percentile(ms, 50):.3f} ms/frame  p95 {np.percentile(ms, 95):.3f}"
            f"  id switches {switches}  reported boxes {reported}"
        )


if __name__ == "__main__":
    main()
