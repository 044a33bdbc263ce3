"""Drift benchmark: how fast synthetic shifts are found, how often unshifted video alarms.

For each scene (the crowd video; the EPFL campus camera with its first half as reference
and its second half as unseen video), on the real pipeline (YOLOX-nano, ByteTrack) at a
25 FPS video clock:

1. ``profile``: a reference profile from the reference frames (``ProfileRecorder``);
2. ``unshifted_live``: the test frames played forward and back (no cut at the loop) through
   the pipeline with a ``DriftMonitor``: any drift onset is a false alarm;
3. ``unshifted_replay``: the recorded results of one forward-and-back cycle fed to a fresh
   monitor again and again (frame numbers continue, track ids are renumbered per cycle)
   until ``--hours`` of video: false alarms per hour without an hour of inference;
4. ``shifts``: the same stream with a shift applied from frame ``--shift-at`` on
   (brightness −40 %, Gaussian blur σ = 3 px, a camera shift and zoom (crop), a switch to
   the other scene's video, a switch to coco128 images held one second each): the
   detection delay in frames from the first shifted frame to the monitor's first drift
   onset, and which signals fired.

Targets: every shift within 150 frames (6 s at 25 FPS), zero false alarms.

    python bench/drift.py                      # assets from $TAPETUM_ASSETS
    python bench/drift.py --quick              # crowd only, shorter runs
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import machine_info, write_result

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.detect import DetectorConfig, YoloxDetector
from tapetum.monitor import DriftMonitor, DriftProfile, ProfileRecorder
from tapetum.pipeline import Pipeline
from tapetum.sources import VideoSource
from tapetum.sources.base import SourceBase, SourceStats

FPS = 25.0
Image = np.ndarray
Shift = Callable[[Image, int], Image]


class ClipSource(SourceBase):
    """Frames of a clip played forward and back (``n`` in all) at a 25 FPS clock, with
    ``shift`` applied from frame ``shift_at`` on. Not live: every frame is processed."""

    def __init__(
        self,
        frames: list[Image],
        source_id: str,
        n: int,
        shift: Shift | None = None,
        shift_at: int = 0,
    ) -> None:
        self._frames = frames
        self._source_id = source_id
        self._live = False
        self._fps = FPS
        self._stats = SourceStats()
        self.n = n
        self.shift = shift
        self.shift_at = shift_at

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        for i in range(self.n):
            if stop.is_set():
                return
            image = self._frames[ping_pong(i, len(self._frames))]
            if self.shift is not None and i >= self.shift_at:
                image = self.shift(image, i)
            self._stats.frames_decoded += 1
            yield Frame(self._source_id, i, image, i / FPS, time.perf_counter())


def ping_pong(i: int, n: int) -> int:
    period = 2 * n - 2
    k = i % period
    return k if k < n else period - k


def decode(path: Path, limit: int | None = None) -> list[Image]:
    out = []
    for frame in VideoSource(path).frames(threading.Event()):
        out.append(frame.image)
        if limit is not None and len(out) >= limit:
            break
    return out


def make_shifts(hw: tuple[int, int], other: list[Image], images: list[Image]) -> dict[str, Shift]:
    h, w = hw
    y0, y1, x0, x1 = int(0.10 * h), int(0.90 * h), int(0.15 * w), int(0.95 * w)

    def fit(im: Image) -> Image:  # resized per frame: a resized copy of a whole video is GBs
        return cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)

    def crop(im: Image, i: int) -> Image:
        return cv2.resize(im[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_LINEAR)

    return {
        "brightness_minus_40pct": lambda im, i: cv2.convertScaleAbs(im, alpha=0.6),
        "gaussian_blur_sigma3": lambda im, i: cv2.GaussianBlur(im, (0, 0), 3.0),
        "camera_shift_crop": crop,
        "scene_switch_video": lambda im, i: fit(other[ping_pong(i, len(other))]),
        "scene_switch_coco128": lambda im, i: fit(images[(i // int(FPS)) % len(images)]),
    }


class TimedMonitor:
    """A DriftMonitor sink that also times its own work and keeps one cycle of results."""

    def __init__(self, monitor: DriftMonitor, keep: int = 0) -> None:
        self.monitor = monitor
        self.keep = keep
        self.kept: list[FrameResult] = []
        self.seconds = 0.0
        self.frames = 0

    def write(self, result: FrameResult) -> None:
        if len(self.kept) < self.keep:
            self.kept.append(result)
        t0 = time.perf_counter()
        self.monitor.write(result)
        self.seconds += time.perf_counter() - t0
        self.frames += 1

    def close(self) -> None:
        pass


def run_stream(
    detector: YoloxDetector,
    frames: list[Image],
    profile: DriftProfile,
    n: int,
    *,
    shift: Shift | None = None,
    shift_at: int = 0,
    keep: int = 0,
) -> tuple[TimedMonitor, float]:
    monitor = TimedMonitor(DriftMonitor(profile, fps=FPS), keep)
    src = ClipSource(frames, "cam", n, shift, shift_at)
    t0 = time.perf_counter()
    Pipeline([src], detector, sinks=[monitor]).run()
    return monitor, time.perf_counter() - t0


def onsets(monitor: DriftMonitor) -> list[dict[str, Any]]:
    return [
        {"signal": e.signal, "frame": e.frame_index, "score": round(e.score, 2)}
        for e in monitor.events
        if e.state == "drift"
    ]


def replay(cycle: list[FrameResult], profile: DriftProfile, frames: int) -> dict[str, Any]:
    """Feed one recorded cycle again and again to a fresh monitor for ``frames`` frames."""
    monitor = DriftMonitor(profile, fps=FPS)
    t0 = time.perf_counter()
    n = len(cycle)
    for i in range(frames):
        c, k = divmod(i, n)
        r = cycle[k]
        det = r.detections
        tid = np.where(det.tracker_id >= 0, det.tracker_id + c * 10_000_000, det.tracker_id)
        renumbered = Detections(det.xyxy, det.confidence, det.class_id, tid, det.embeddings)
        f = r.frame
        frame = Frame(f.source_id, i, f.image, i / FPS, f.arrival_s)
        monitor.write(FrameResult(frame, renumbered, r.class_names, r.timings_ms))
    seconds = time.perf_counter() - t0
    alarms = onsets(monitor)
    hours = frames / FPS / 3600
    return {
        "frames": frames,
        "hours_of_video": round(hours, 3),
        "false_alarms": len(alarms),
        "false_alarms_per_hour": round(len(alarms) / hours, 3),
        "alarms": alarms[:20],
        "max_score": max_scores(monitor),
        "monitor_ms_per_frame": round(seconds / frames * 1e3, 3),
    }


def max_scores(monitor: DriftMonitor) -> dict[str, float | None]:
    status = monitor.snapshot().get("cam", {})
    return {
        name: (round(s.max_score, 3) if s.max_score is not None else None)
        for name, s in status.items()
    }


def bench_scene(
    name: str,
    detector: YoloxDetector,
    ref_frames: list[Image],
    test_frames: list[Image],
    *,
    shifts: dict[str, Shift],
    args: argparse.Namespace,
) -> dict[str, Any]:
    print(f"[{name}] profile from {len(ref_frames)} frames", flush=True)
    recorder = ProfileRecorder(fps=FPS)
    t0 = time.perf_counter()
    Pipeline([ClipSource(ref_frames, "cam", len(ref_frames))], detector, sinks=[recorder]).run()
    profile = recorder.build(name, model="yolox_nano.onnx")
    out: dict[str, Any] = {
        "reference_frames": len(ref_frames),
        "test_frames": len(test_frames),
        "profile_s": round(time.perf_counter() - t0, 1),
        "signals_scored": {
            r.spec.name: {"test": r.spec.kind.value, "threshold": round(r.threshold, 4)}
            for r in profile.scored()
            if r.threshold is not None
        },
        "signals_not_scored": {
            r.spec.name: r.note for r in profile.references.values() if r.threshold is None
        },
    }
    cycle = 2 * len(test_frames) - 2
    live_n = max(args.live_frames, cycle)
    print(f"[{name}] unshifted live run, {live_n} frames", flush=True)
    live, wall = run_stream(detector, test_frames, profile, live_n, keep=cycle)
    alarms = onsets(live.monitor)
    out["unshifted_live"] = {
        "frames": live_n,
        "hours_of_video": round(live_n / FPS / 3600, 4),
        "false_alarms": len(alarms),
        "alarms": alarms,
        "max_score": max_scores(live.monitor),
        "pipeline_fps": round(live_n / wall, 1),
        "monitor_ms_per_frame": round(live.seconds / max(live.frames, 1) * 1e3, 3),
    }
    replay_n = int(args.hours * 3600 * FPS)
    print(f"[{name}] unshifted replay, {replay_n} frames", flush=True)
    out["unshifted_replay"] = replay(live.kept, profile, replay_n)
    out["shifts"] = {}
    for shift_name, shift in shifts.items():
        n = args.shift_at + args.after
        mon, _ = run_stream(detector, test_frames, profile, n, shift=shift, shift_at=args.shift_at)
        events = onsets(mon.monitor)
        before = [e for e in events if e["frame"] < args.shift_at]
        after = [e for e in events if e["frame"] >= args.shift_at]
        delay = after[0]["frame"] - args.shift_at if after else None
        out["shifts"][shift_name] = {
            "shift_at_frame": args.shift_at,
            "detected": delay is not None,
            "delay_frames": delay,
            "delay_s": round(delay / FPS, 2) if delay is not None else None,
            "signals": {e["signal"]: e["frame"] - args.shift_at for e in after},
            "false_alarms_before_shift": len(before),
        }
        print(f"[{name}] {shift_name}: delay {delay} frames, {after[:4]}", flush=True)
    return out


def main() -> int:
    assets = Path(os.environ.get("TAPETUM_ASSETS", "../shared/assets"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=assets / "models" / "yolox_nano.onnx")
    ap.add_argument("--out", type=Path, default=Path("bench/results/drift.json"))
    ap.add_argument("--live-frames", type=int, default=3000, help="unshifted live run length")
    ap.add_argument("--hours", type=float, default=1.0, help="unshifted replay, hours of video")
    ap.add_argument("--shift-at", type=int, default=500, help="first shifted frame")
    ap.add_argument("--after", type=int, default=300, help="frames played after the shift")
    ap.add_argument("--quick", action="store_true", help="crowd only, shorter runs")
    args = ap.parse_args()
    if args.quick:
        args.live_frames, args.hours = 700, 0.1
    started = time.time()
    machine = machine_info()
    detector = YoloxDetector(args.model, DetectorConfig(conf_threshold=0.1))
    crowd = decode(assets / "video" / "crowd_720p.avi")
    campus = decode(assets / "video" / "epfl_campus4" / "campus4-c0.mp4")
    coco = sorted((assets / "coco128" / "images" / "val2017").glob("*.jpg"))
    coco_images = [cv2.imread(str(p)) for p in coco[:64]]
    scenes: dict[str, Any] = {}
    crowd_shifts = make_shifts(crowd[0].shape[:2], campus, coco_images)
    scenes["crowd"] = bench_scene("crowd", detector, crowd, crowd, shifts=crowd_shifts, args=args)
    scenes["crowd"]["note"] = (
        "reference: the whole 341-frame clip; test: the same clip played forward and back"
    )
    if not args.quick:
        ref, test = campus[:1000], campus[1000:]
        campus_shifts = make_shifts(campus[0].shape[:2], crowd, coco_images)
        scenes["campus4_c0"] = bench_scene(
            "campus4_c0", detector, ref, test, shifts=campus_shifts, args=args
        )
        scenes["campus4_c0"]["note"] = (
            "reference: frames 0-999 (40 s); test: frames 1000-1998, never seen by the profile"
        )
    delays = [s["delay_frames"] for sc in scenes.values() for s in sc["shifts"].values()]
    false_alarms = sum(
        sc["unshifted_live"]["false_alarms"]
        + sc["unshifted_replay"]["false_alarms"]
        + sum(s["false_alarms_before_shift"] for s in sc["shifts"].values())
        for sc in scenes.values()
    )
    result = {
        "benchmark": "drift",
        "model": args.model.name,
        "fps_clock": FPS,
        "targets": {"delay_frames_max": 150, "false_alarms_per_hour": 0},
        "summary": {
            "shifts": len(delays),
            "detected": sum(d is not None for d in delays),
            "max_delay_frames": max((d for d in delays if d is not None), default=None),
            "false_alarms_total": false_alarms,
            "all_within_150_frames": all(d is not None and d <= 150 for d in delays),
        },
        "scenes": scenes,
        "machine": {**machine, "load_average_end": [round(v, 2) for v in os.getloadavg()]},
        "note": (
            "shared 2-core machine, other engineers' jobs running (see load_average): "
            "pipeline FPS is not a performance figure here; delays are counted in frames "
            "of the 25 FPS video clock and do not depend on machine speed"
        ),
        "wall_s": round(time.time() - started, 1),
    }
    write_result(result, args.out)
    print(result["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
