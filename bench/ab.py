"""A/B benchmark: what a shadow variant costs the pipeline, and how long a report takes.

1. ``shadow_cost``: the pipeline on the crowd video with the control alone and with the
   control plus one shadow variant, runs interleaved (A B A B…) so the machine's load
   hits both alike; the shadow's cost per frame (``1/FPS`` difference) against that
   variant's bare inference per frame (ORT alone, the same thread setting, on letterboxed
   frames). Target: cost ≤ 1.1 × bare inference, i.e. the shadow costs its own inference
   and no more (decode and letterbox are shared, the tap is a queue put).
2. ``report_10k``: ``build_report`` and ``write_report`` (JSON + HTML with plots) on a
   recorded experiment of 10,000 frames per arm (2 streams, ~20 tracked boxes a frame,
   agreement rows), synthesised through the real recorder.

Writes ``bench/results/ab.json``. The machine may be shared: its load average is recorded
before and after every run (``machine_info``), and a busy machine explains a slow number.

    python bench/ab.py                      # assets from $TAPETUM_ASSETS
    python bench/ab.py --seconds 4 --rounds 3 --variant yolox_nano_int8.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info, pct, write_result

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.detect import RuntimeOptions, YoloxDetector
from tapetum.experiments import (
    ArmRecorder,
    LiveExperiment,
    box_agreement,
    build_report,
    experiment_from_dict,
    load_arms,
    write_report,
)
from tapetum.experiments.record import DATA_FORMAT
from tapetum.pipeline import Pipeline, PipelineConfig
from tapetum.sources import VideoSource, open_source


def _clip(video: Path, seconds: float, folder: Path) -> Path:
    """The first ``seconds`` of ``video`` as MPEG-TS (no re-encode)."""
    import av

    dst = folder / "clip.ts"
    with av.open(str(video)) as inp, av.open(str(dst), "w", format="mpegts") as out:
        stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            if packet.dts * packet.time_base >= seconds:
                break
            packet.stream = out_stream
            out.mux(packet)
    return dst


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def bare_inference_ms(model: Path, clip: Path, runs: int) -> dict[str, Any]:
    """The variant alone: ORT on letterboxed frames of the clip, one thread, batch 1."""
    detector = YoloxDetector(model, runtime=RuntimeOptions(intra_op_threads=1, workers=1))
    frames = [f.image for f in VideoSource(clip).frames(threading.Event())]
    tensors = [detector.preprocess(img)[0][None] for img in frames[:runs]]
    detector.infer(tensors[0])
    times = []
    for t in tensors:
        t0 = time.perf_counter()
        detector.infer(t)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"mean_ms": round(float(np.mean(times)), 2), **pct(times)}


def _pipeline_run(spec: Any, clip: Path, shadow: bool, folder: Path) -> dict[str, Any]:
    arms = load_arms(spec)
    load_before = _load()
    if shadow:
        exp = LiveExperiment(spec, arms, folder, live=False, write_tracks=False)
        pipe = Pipeline(
            [open_source(str(clip))],
            exp.detector,
            exp.tracker_factory,
            sinks=[exp.sink],
            taps=exp.taps,
            config=PipelineConfig(),
        )
        exp.start(pipe)
        stats = pipe.run()
        exp.finish(stats)
        shared = exp.shadows[0].stats.shared_input
    else:
        pipe = Pipeline([open_source(str(clip))], arms[0].detector, config=PipelineConfig())
        stats = pipe.run()
        shared = 0
    return {
        "frames": stats.frames_processed,
        "elapsed_s": round(stats.elapsed_s, 3),
        "fps": round(stats.fps, 2),
        "ms_per_frame": round(1e3 * stats.elapsed_s / max(1, stats.frames_processed), 2),
        "shared_input_frames": shared,
        "load_average_before": load_before,
        "load_average_after": _load(),
    }


def bench_shadow(model: Path, variant: Path, clip: Path, rounds: int) -> dict[str, Any]:
    spec = experiment_from_dict(
        {
            "name": "bench",
            "control": {"model": str(model)},
            "variants": [{"name": "shadow", "model": str(variant), "threads": 1}],
        }
    )
    runs: dict[str, list[dict[str, Any]]] = {"control_only": [], "control_plus_shadow": []}
    with tempfile.TemporaryDirectory(prefix="tapetum-ab-bench-") as tmp:
        for r in range(rounds):
            for name, shadow in (("control_only", False), ("control_plus_shadow", True)):
                runs[name].append(_pipeline_run(spec, clip, shadow, Path(tmp) / f"{name}{r}"))
                print(f"  {name} round {r + 1}: {runs[name][-1]['fps']} FPS", flush=True)
    bare = bare_inference_ms(variant, clip, 40)
    base = float(np.median([r["ms_per_frame"] for r in runs["control_only"]]))
    with_shadow = float(np.median([r["ms_per_frame"] for r in runs["control_plus_shadow"]]))
    cost = with_shadow - base
    return {
        "runs": runs,
        "control_only_ms_per_frame": round(base, 2),
        "control_plus_shadow_ms_per_frame": round(with_shadow, 2),
        "control_only_fps": round(1e3 / base, 2),
        "control_plus_shadow_fps": round(1e3 / with_shadow, 2),
        "shadow_cost_ms_per_frame": round(cost, 2),
        "variant_bare_inference": bare,
        "cost_over_bare_inference": round(cost / bare["mean_ms"], 3),
        "target_cost_over_bare_inference": 1.1,
        "meets_target": cost <= 1.1 * bare["mean_ms"],
    }


def _synthetic_arm(
    name: str, frames: int, streams: int, rng: np.random.Generator, boxes: np.ndarray
) -> tuple[ArmRecorder, list[Detections]]:
    """``frames`` frames over ``streams`` streams at 25 FPS, ~20 boxes each, tracked."""
    rec = ArmRecorder(name, ("person", "car"))
    out: list[Detections] = []
    per_stream = frames // streams
    for s in range(streams):
        for i in range(per_stream):
            n = int(rng.integers(15, 25))
            xyxy = boxes[:n] + rng.normal(0, 2.0, (n, 4)).astype(np.float32)
            d = Detections(
                xyxy,
                rng.uniform(0.1, 1.0, n).astype(np.float32),
                (rng.random(n) < 0.1).astype(np.int64),
                np.arange(1, n + 1, dtype=np.int64) + 100 * (i // 200),
            )
            frame = Frame(f"cam{s}", i, _NO_IMAGE, i / 25.0, 0.0)
            rec.add(
                frame,
                done_s=i / 25.0,
                latency_ms=float(rng.lognormal(3.5, 0.3)),
                compute_ms=float(rng.lognormal(3.0, 0.2)),
                detections=d,
            )
            out.append(d)
    return rec, out


_NO_IMAGE = np.zeros((1, 1, 3), np.uint8)


def bench_report(frames: int = 10_000) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1200, 30).astype(np.float32)
    y = rng.uniform(0, 650, 30).astype(np.float32)
    boxes = np.column_stack([x, y, x + 40, y + 80])
    t0 = time.perf_counter()
    control, control_dets = _synthetic_arm("control", frames, 2, rng, boxes)
    variant, variant_dets = _synthetic_arm("variant", frames, 2, rng, boxes)
    for row, (v, c) in enumerate(zip(variant_dets, control_dets, strict=True)):
        variant.add_agreement(row, *box_agreement(v, c))
    record_s = time.perf_counter() - t0
    spec = experiment_from_dict(
        {
            "name": "report-bench",
            "control": {"model": "/c.onnx"},
            "variants": [{"name": "variant", "model": "/v.onnx"}],
            "guardrails": [{"metric": "latency_p99_ms", "max_ratio": 1.5}],
            "decision": {"rules": [{"metric": "agreement_f1", "min_effect": 0.1}]},
        }
    )
    with tempfile.TemporaryDirectory(prefix="tapetum-ab-report-") as tmp:
        folder = Path(tmp) / "experiment"
        for rec in (control, variant):
            rec.data().save(folder / "arms" / f"{rec.name}.npz")
        info = {"format": DATA_FORMAT, "spec": spec.to_dict(), "arms": {}}
        (folder / "experiment.json").write_text(json.dumps(info))
        t1 = time.perf_counter()
        report = build_report(tmp)
        t2 = time.perf_counter()
        _, html = write_report(report, tmp)
        t3 = time.perf_counter()
        size = html.stat().st_size
    return {
        "frames_per_arm": frames,
        "streams": 2,
        "units": report.units.units if report.units else 0,
        "resamples": spec.resamples,
        "synthesise_and_record_us_per_frame": round(1e6 * record_s / (2 * frames), 1),
        "analysis_s": round(t2 - t1, 3),
        "json_and_html_s": round(t3 - t2, 3),
        "total_s": round(t3 - t1, 3),
        "html_kb": round(size / 1024, 1),
        "verdict": report.decisions["variant"].verdict.value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    assets = Path(os.environ.get("TAPETUM_ASSETS", "../shared/assets"))
    parser.add_argument("--model", type=Path, default=assets / "models" / "yolox_nano.onnx")
    parser.add_argument(
        "--variant", type=Path, default=None, help="The shadow model (default: --model)."
    )
    parser.add_argument("--video", type=Path, default=assets / "video" / "crowd_720p.avi")
    parser.add_argument("--seconds", type=float, default=4.0, help="Length of the clip.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved runs of each.")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ab.json"))
    args = parser.parse_args()
    result: dict[str, Any] = {
        "machine": machine_info(
            note="shared machine: other engineers' jobs ran during this benchmark; see the "
            "load averages recorded before and after each run"
        ),
        "model": args.model.name,
        "variant": (args.variant or args.model).name,
        "clip_s": args.seconds,
    }
    with tempfile.TemporaryDirectory(prefix="tapetum-ab-clip-") as tmp:
        clip = _clip(args.video, args.seconds, Path(tmp))
        print("shadow cost (control alone vs control + shadow, interleaved):", flush=True)
        result["shadow_cost"] = bench_shadow(
            args.model, args.variant or args.model, clip, args.rounds
        )
    print("report on 10,000 frames per arm:", flush=True)
    result["report_10k"] = bench_report()
    result["machine"]["load_average_end"] = _load()
    write_result(result, args.out)
    s, r = result["shadow_cost"], result["report_10k"]
    print(
        f"control alone {s['control_only_fps']} FPS, with a shadow {s['control_plus_shadow_fps']}"
        f" FPS: the shadow costs {s['shadow_cost_ms_per_frame']} ms/frame = "
        f"{s['cost_over_bare_inference']} x its bare inference "
        f"({s['variant_bare_inference']['mean_ms']} ms); target ≤ 1.1: "
        f"{'met' if s['meets_target'] else 'NOT met'}"
    )
    print(
        f"report: {r['analysis_s']} s analysis + {r['json_and_html_s']} s JSON/HTML for "
        f"{r['frames_per_arm']} frames per arm ({r['html_kb']} KB page)"
    )


if __name__ == "__main__":
    main()
