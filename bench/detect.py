"""Detector precision and batching benchmark: FP32 vs FP16 vs INT8, and the DynamicBatcher.

One run, on CPU, of YOLOX-nano from the shared assets:

1. ``models``: the source (FP32), an FP16 copy and an INT8 copy (static QDQ, per-channel,
   calibrated on frames of the crowd video + coco128 *train2017* images; never the val
   images scored below). For each: file size, latency p50/p95/p99 at batch 1, and
   throughput plus per-frame latency at batch 1/2/4/8 (the latency/throughput trade-off),
   one session with ``--threads`` intra-op threads. Timed runs of the three precisions are
   interleaved and repeated (this shared VM's speed drifts between minutes); the median
   repeat is kept.
2. ``accuracy``: mAP@[.5:.95] and mAP@.5 on coco128 val2017 (128 images) with
   ``tapetum.eval.detect.evaluate_detector`` (conf 0.001, NMS 0.65, 100 boxes per image).
3. ``batcher``: N producer threads each submitting one letterboxed frame at a time (closed
   loop) through a ``DynamicBatcher`` into the FP32 model, ``max_batch`` 1/2/4/8: per-request
   latency p50/p99 (submit → result) and throughput.

Targets are reported, never asserted: INT8 ≥ 1.5× FP32 throughput with ≤ 1.0 mAP point loss.

    python bench/detect.py                 # assets from $TAPETUM_ASSETS; bench/results/detect.json
    python bench/detect.py --quick         # a short smoke run (fewer runs, 32 calibration images)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info, pct, write_result

from tapetum.detect import DetectorConfig, RuntimeOptions, load_detector
from tapetum.detect.batcher import DynamicBatcher
from tapetum.detect.quantize import (
    convert_fp16,
    load_calibration_images,
    model_size_mb,
    plan_calibration,
    quantize_int8,
)
from tapetum.detect.speed import measure_speed

BATCH_SIZES = (1, 2, 4, 8)
TARGET_SPEEDUP = 1.5
TARGET_MAP_LOSS_POINTS = 1.0
MAP_CONFIG = DetectorConfig(conf_threshold=0.001, nms_iou=0.65, max_detections=100)


def build_models(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """FP16 and INT8 copies of the source model in ``work``."""
    fp16, int8 = work / "fp16.onnx", work / "int8.onnx"
    print("converting to FP16…", flush=True)
    convert_fp16(args.model, fp16)
    frames = 32 if args.quick else args.calib_frames
    print(f"quantizing to INT8 ({frames} calibration images)…", flush=True)
    source = load_detector(args.model, args.arch)
    samples = plan_calibration([args.video, args.calib_images], frames)
    report = quantize_int8(args.model, int8, load_calibration_images(samples), source.preprocess)
    print(f"  {report.settings}, {len(report.float_nodes)} float nodes, {report.seconds:.1f} s")
    return {"fp32": args.model, "fp16": fp16, "int8": int8}


def bench_speed(paths: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    runtime = RuntimeOptions(intra_op_threads=args.threads, workers=1)
    detectors = {name: load_detector(p, args.arch, runtime=runtime) for name, p in paths.items()}
    first = next(iter(detectors.values()))
    h, w = first.input_hw
    frame = first.preprocess(np.full((720, 1280, 3), 114, np.uint8))[0]
    runs_b1 = 30 if args.quick else 200
    runs_b = 10 if args.quick else 40
    latency: dict[str, list[float]] = {name: [] for name in paths}
    per_batch: dict[str, dict[int, list[dict[str, Any]]]] = {
        name: {b: [] for b in BATCH_SIZES} for name in paths
    }
    for rep in range(args.repeats):
        print(f"[{rep + 1}/{args.repeats}] speed…", flush=True)
        for b in BATCH_SIZES:
            batch = np.repeat(frame[None], b, axis=0)
            for name, det in detectors.items():  # interleaved: same minute, same machine
                runs = runs_b1 if b == 1 else runs_b
                s = measure_speed(det.model.run, batch, runs=runs, warmup=3)
                per_batch[name][b].append(s.as_dict())
                if b == 1:
                    latency[name].append(s.p50_ms)
    out: dict[str, Any] = {}
    for name, det in detectors.items():
        rows = {}
        for b in BATCH_SIZES:
            reps = per_batch[name][b]
            median = sorted(reps, key=lambda r: r["fps"])[len(reps) // 2]
            rows[str(b)] = median
        b1 = rows["1"]
        out[name] = {
            "path": str(paths[name]),
            "size_mb": round(model_size_mb(paths[name]), 3),
            "provider": det.model.providers[0],
            "threads": det.model.threads,
            "input_hw": [h, w],
            "latency_batch1": {k: b1[k] for k in ("p50_ms", "p95_ms", "p99_ms")},
            "batches": rows,
            "best_fps": max(r["fps"] for r in rows.values()),
        }
    return out


def bench_accuracy(paths: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    try:
        from tapetum.eval.datasets import load_dataset
        from tapetum.eval.detect import evaluate_detector
    except ImportError:  # the detection evaluator is not in this checkout
        return {"skipped": "tapetum.eval.detect not available"}
    dataset = load_dataset(args.coco, split="val2017")
    out: dict[str, Any] = {"dataset": f"{args.coco.name}/val2017", "images": len(dataset)}
    runtime = RuntimeOptions(intra_op_threads=args.threads, workers=1)
    for name, path in paths.items():
        print(f"mAP {name}…", flush=True)
        report = evaluate_detector(load_detector(path, args.arch, MAP_CONFIG, runtime), dataset)
        out[name] = {"map_50_95": round(report.map_50_95, 4), "map_50": round(report.map_50, 4)}
    return out


def bench_batcher(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Closed-loop producers through a DynamicBatcher at several ``max_batch``."""
    detector = load_detector(path, args.arch, runtime=RuntimeOptions(args.threads, workers=1))
    tensor = detector.preprocess(np.full((720, 1280, 3), 114, np.uint8))[0]
    seconds = 2.0 if args.quick else 8.0
    out: dict[str, Any] = {
        "producers": args.producers,
        "max_wait_ms": args.max_wait_ms,
        "seconds": seconds,
    }
    for max_batch in BATCH_SIZES:
        print(f"batcher max_batch={max_batch}…", flush=True)
        out[str(max_batch)] = batcher_run(
            lambda xs: detector.model.run(np.stack(xs)),
            tensor,
            producers=args.producers,
            max_batch=max_batch,
            max_wait_ms=args.max_wait_ms,
            seconds=seconds,
        )
    return out


def batcher_run(
    run_batch: Any,
    tensor: np.ndarray,
    *,
    producers: int,
    max_batch: int,
    max_wait_ms: float,
    seconds: float,
) -> dict[str, Any]:
    """``producers`` threads, each submitting ``tensor`` and waiting for its result, for
    ``seconds``: request latency percentiles and throughput."""
    batcher: DynamicBatcher[np.ndarray, np.ndarray] = DynamicBatcher(
        run_batch, max_batch=max_batch, max_wait_ms=max_wait_ms
    )
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(producers + 1)
    stop_at = time.perf_counter() + 3600.0

    def produce() -> None:
        local = []
        start.wait()
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            batcher.submit(tensor).result()
            local.append((time.perf_counter() - t0) * 1e3)
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=produce) for _ in range(producers)]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    stop_at = t_start + seconds
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    batcher.close()
    stats = batcher.stats()
    return {
        "requests": len(latencies),
        "throughput_fps": round(len(latencies) / wall, 1),
        "latency": pct(latencies),
        "mean_batch": round(stats.mean_batch_size, 2),
        "queue_wait_p50_ms": round(stats.queue_wait_p50_ms, 2),
        "queue_wait_p99_ms": round(stats.queue_wait_p99_ms, 2),
    }


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    models, acc = result["models"], result["accuracy"]
    table = Table(title="precision (CPU)", title_justify="left")
    cols = ["", "MB", "p50", "p95", "p99", *(f"FPS b{b}" for b in BATCH_SIZES), "mAP", "mAP50"]
    for c in cols:
        table.add_column(c, justify="left" if not c else "right")
    for name, m in models.items():
        lat = m["latency_batch1"]
        a = acc.get(name, {})
        table.add_row(
            name,
            f"{m['size_mb']:.2f}",
            f"{lat['p50_ms']:.1f}",
            f"{lat['p95_ms']:.1f}",
            f"{lat['p99_ms']:.1f}",
            *(f"{m['batches'][str(b)]['fps']:.1f}" for b in BATCH_SIZES),
            f"{100 * a['map_50_95']:.1f}" if a else "-",
            f"{100 * a['map_50']:.1f}" if a else "-",
        )
    console.print(table)
    trade = Table(title="per-frame latency p50 (ms) by batch size", title_justify="left")
    trade.add_column("")
    for b in BATCH_SIZES:
        trade.add_column(f"b{b}", justify="right")
    for name, m in models.items():
        rows = m["batches"]
        trade.add_row(name, *(f"{rows[str(b)]['per_frame_p50_ms']:.2f}" for b in BATCH_SIZES))
    console.print(trade)
    b = result["batcher"]
    bt = Table(
        title=f"DynamicBatcher: {b['producers']} producers, max_wait {b['max_wait_ms']} ms (FP32)",
        title_justify="left",
    )
    for c in ("max_batch", "FPS", "p50 ms", "p99 ms", "mean batch", "queue p99 ms"):
        bt.add_column(c, justify="right")
    for mb in BATCH_SIZES:
        r = b[str(mb)]
        bt.add_row(
            str(mb),
            f"{r['throughput_fps']:.1f}",
            f"{r['latency']['p50_ms']:.1f}",
            f"{r['latency']['p99_ms']:.1f}",
            f"{r['mean_batch']:.2f}",
            f"{r['queue_wait_p99_ms']:.1f}",
        )
    console.print(bt)
    console.print(f"targets: {result['targets']}")


def main() -> int:
    assets = Path(
        os.environ.get("TAPETUM_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets")
    )
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, default=assets / "models" / "yolox_nano.onnx")
    ap.add_argument("--arch", default=None, help="model family when the file does not say")
    ap.add_argument("--video", type=Path, default=assets / "video" / "crowd_720p.avi")
    ap.add_argument("--calib-images", type=Path, default=assets / "coco128/images/train2017")
    ap.add_argument("--coco", type=Path, default=assets / "coco128")
    ap.add_argument("--calib-frames", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: all cores)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved speed repeats")
    ap.add_argument("--producers", type=int, default=8, help="batcher producer threads")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/detect.json"))
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    args = ap.parse_args()
    missing = [p for p in (args.model, args.video, args.calib_images, args.coco) if not p.exists()]
    if missing:
        print(f"error: assets not found ({', '.join(map(str, missing))}); set TAPETUM_ASSETS",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.quick:
        args.repeats = 1
    import onnxruntime as ort

    result: dict[str, Any] = {
        "machine": machine_info(onnxruntime=ort.__version__),
        "quick": args.quick,
    }
    with tempfile.TemporaryDirectory(prefix="tapetum-bench-") as tmp:
        paths = build_models(args, Path(tmp))
        result["models"] = bench_speed(paths, args)
        result["accuracy"] = bench_accuracy(paths, args)
        result["batcher"] = bench_batcher(paths["fp32"], args)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    m, acc = result["models"], result["accuracy"]
    speedup_b1 = m["int8"]["batches"]["1"]["fps"] / m["fp32"]["batches"]["1"]["fps"]
    speedup_best = m["int8"]["best_fps"] / m["fp32"]["best_fps"]
    targets: dict[str, Any] = {
        "int8_speedup_batch1": round(speedup_b1, 2),
        "int8_speedup_best_batch": round(speedup_best, 2),
        "int8_speedup_target": TARGET_SPEEDUP,
        "speed_met": speedup_best >= TARGET_SPEEDUP,
    }
    if "int8" in acc:
        loss = 100 * (acc["fp32"]["map_50_95"] - acc["int8"]["map_50_95"])
        targets.update(
            int8_map_loss_points=round(loss, 2),
            map_loss_target_points=TARGET_MAP_LOSS_POINTS,
            accuracy_met=loss <= TARGET_MAP_LOSS_POINTS,
        )
    result["targets"] = targets
    write_result(result, args.out)
    print_tables(result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
