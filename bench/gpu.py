"""GPU check: detectors on ONNX Runtime's CUDA provider vs the CPU provider of the same
machine, then the pipeline on the crowd video, all through Tapetum's own provider plumbing
(``RuntimeOptions(providers=...)``, :mod:`tapetum.detect.providers`).

Sections, each in its own try/except (a failure is recorded as its error text and the next
section still runs); the JSON is rewritten after every section, so a run cut short keeps
what it measured:

1. ``environment``: ORT version and file, providers installed, the GPU (``nvidia-smi``).
2. ``providers``: the provider a session gets for the requests ``tensorrt``,
   ``tensorrt,cuda``, ``cuda``, ``cpu`` and none, with Tapetum's provider report: where
   TensorRT's libraries are missing this must read as a TensorRT failure and a fallback.
3. ``latency``: each model (YOLOX-nano, plus any other detector under ``ASSETS/models``)
   × precision (FP32; FP16 from ``convert_fp16`` on GPU providers, when onnxconverter-common
   is installed) × provider × batch 1/4/8: per-call p50/p95/p99 and frames/s on letterboxed
   frames of the crowd video, the GPU/CPU ratio per batch, and each GPU run's agreement with
   CPU FP32 (detections at conf 0.3 on the same 8 frames).
4. ``pipeline``: ``Pipeline`` on the crowd video as fast as it decodes, 1 and 4 streams, on
   the GPU provider and on the CPU provider: FPS and end-to-end p50/p95/p99.
5. ``capacity_15fps``: paced 720p streams at 15 FPS on the GPU provider; the largest count
   with end-to-end p99 < 100 ms and ≤ 1 % dropped (one try per level, counts doubled then
   bisected, stopped by the time budget: a quick check, not ``bench/pipeline.py``'s table).

Times are wall-clock on one machine; nothing is asserted.

    python bench/gpu.py --assets /tmp/gpuw/assets --out $OUT/gpu.json
    python bench/gpu.py --providers cpu --quick --out /tmp/gpu_cpu.json   # no GPU: smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info, pct, write_result

from tapetum.detect import DetectorConfig, OnnxDetector, RuntimeOptions, load_detector
from tapetum.detect.providers import CPU, CUDA, GPU_PROVIDERS, TENSORRT

P99_BUDGET_MS = 100.0
BATCHES = (1, 4, 8)
#: requests whose provider reports section 2 records (None: Tapetum's default preference).
PROVIDER_REQUESTS: tuple[tuple[str, ...] | None, ...] = (
    ("tensorrt",),
    ("tensorrt", "cuda"),
    ("cuda",),
    ("cpu",),
    None,
)


class Budget:
    """Seconds left of the whole run; sections skip (and say so) when too few are left."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def error_text(exc: BaseException) -> dict[str, str]:
    """An exception as JSON: its type, message and the last lines of its traceback."""
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return {
        "error": f"{type(exc).__name__}: {str(exc).strip()[:2000]}",
        "traceback": "".join(tb)[-3000:],
    }


def section(result: dict[str, Any], name: str, out: Path, fn: Callable[[], Any]) -> Any:
    """Run one section into ``result[name]`` (its error text if it fails), then save."""
    print(f"== {name}", flush=True)
    t0 = time.perf_counter()
    try:
        value = fn()
    except Exception as exc:
        value = error_text(exc)
        print(f"   failed: {value['error']}", flush=True)
    if isinstance(value, dict):
        value.setdefault("section_s", round(time.perf_counter() - t0, 1))
    result[name] = value
    write_result(result, out)
    return value


# -- 1. environment ------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import onnxruntime as ort

    env: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "onnxruntime_file": str(Path(ort.__file__).parent),
        "available_providers": list(ort.get_available_providers()),
        "device": ort.get_device(),
        "ld_library_path_dirs": len(
            [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        ),
    }
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,memory.total,compute_cap"
        proc = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        env["gpu"] = proc.stdout.strip() or proc.stderr.strip()
    else:
        env["gpu"] = "nvidia-smi not found"
    return env


# -- 2. providers --------------------------------------------------------------------------


def provider_reports(model: Path) -> dict[str, Any]:
    """What a session gets for each request: chosen provider, chain, the report's line."""
    out: dict[str, Any] = {}
    for request in PROVIDER_REQUESTS:
        key = ",".join(request) if request else "default"
        t0 = time.perf_counter()
        try:
            det = open_detector(model, RuntimeOptions(providers=request, workers=1))
            report = det.model.provider_report
            out[key] = {
                "chosen": report.chosen,
                "chain": list(report.chain),
                "fell_back": report.fell_back,
                "summary": report.summary(),
                "open_s": round(time.perf_counter() - t0, 2),
            }
        except Exception as exc:
            out[key] = error_text(exc)
        print(f"   {key}: {out[key].get('summary', out[key].get('error'))}", flush=True)
    return out


def open_detector(path: Path, runtime: RuntimeOptions, config: DetectorConfig | None = None) -> Any:
    """A detector for ``path``: family ``yolox`` for files named yolox*, else inferred."""
    arch = "yolox" if path.name.lower().startswith("yolox") else None
    return load_detector(path, arch, config, runtime)


# -- 3. latency ----------------------------------------------------------------------------


def sample_frames(video: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of the video (BGR uint8), through Tapetum's source."""
    from tapetum.sources import VideoSource

    frames: list[np.ndarray] = []
    stop = threading.Event()
    for frame in VideoSource(video).frames(stop):
        frames.append(frame.image)
        if len(frames) >= count:
            stop.set()
            break
    return frames


def time_calls(
    run: Callable[[np.ndarray], Any], x: np.ndarray, *, warmup: int, calls: int, max_s: float
) -> dict[str, Any]:
    """``run(x)`` ``warmup`` times untimed, then up to ``calls`` times within ``max_s``
    (at least 5): per-call latency and frames/s."""
    for _ in range(warmup):
        run(x)
    times: list[float] = []
    t_start = time.perf_counter()
    while len(times) < calls and (len(times) < 5 or time.perf_counter() - t_start < max_s):
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    total = time.perf_counter() - t_start
    return {
        "batch": int(x.shape[0]),
        "latency": pct(times),
        "frames_per_s": round(x.shape[0] * len(times) / total, 1),
    }


def detect_all(det: OnnxDetector, tensors: np.ndarray, metas: list[Any]) -> list[Any]:
    """One batch of letterboxed frames → each frame's detections."""
    raw = det.infer(tensors)
    return [det.postprocess(raw[i], meta) for i, meta in enumerate(metas)]


def agreement(ref: list[Any], got: list[Any]) -> dict[str, Any]:
    """Detections of a run vs the reference (CPU FP32) on the same frames: counts, and the
    largest corner difference on frames where the counts match."""
    worst = 0.0
    for a, b in zip(ref, got, strict=True):
        if len(a.xyxy) and len(a.xyxy) == len(b.xyxy):
            worst = max(worst, float(np.abs(np.sort(a.xyxy, 0) - np.sort(b.xyxy, 0)).max()))
    return {
        "detections_ref_cpu_fp32": sum(len(d.xyxy) for d in ref),
        "detections": sum(len(d.xyxy) for d in got),
        "max_box_diff_px_same_count_frames": round(worst, 2),
    }


def latency_run(det: OnnxDetector, tensors: np.ndarray, calls: int, max_s: float) -> dict[str, Any]:
    """One session at each batch of :data:`BATCHES`."""
    run: dict[str, Any] = {
        "provider": det.model.providers[0],
        "report": det.model.provider_report.summary(),
        "threads": det.model.threads,
        "batches": {},
    }
    for b in BATCHES:
        timed = time_calls(det.infer, tensors[:b], warmup=3, calls=calls, max_s=max_s)
        run["batches"][str(b)] = timed
        lat = timed["latency"]
        print(
            f"     batch {b}: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, "
            f"{timed['frames_per_s']} frames/s",
            flush=True,
        )
    return run


def latency_model(
    path: Path,
    providers: list[str],
    frames: list[np.ndarray],
    *,
    calls: int,
    max_s: float,
    budget: Budget,
    scratch: Path,
) -> dict[str, Any]:
    """Every provider × precision of one model; CPU FP32 first, as the reference."""
    entry: dict[str, Any] = {"runs": {}}
    precisions = {"fp32": path}
    if any(p in GPU_PROVIDERS for p in providers):
        try:
            from tapetum.detect.quantize import convert_fp16

            precisions["fp16"] = convert_fp16(path, scratch / f"{path.stem}_fp16.onnx").output
        except Exception as exc:
            entry["fp16"] = {"skipped": error_text(exc)["error"]}
    ref: list[Any] | None = None
    prepared: tuple[np.ndarray, list[Any]] | None = None
    for provider in [CPU] * (CPU in providers) + [p for p in providers if p != CPU]:
        for precision, file in precisions.items():
            if precision == "fp16" and provider not in GPU_PROVIDERS:
                continue  # ORT's CPU provider has few FP16 kernels: casts, not a result
            key = f"{provider.removesuffix('ExecutionProvider').lower()}_{precision}"
            if budget.left() < 20:
                entry["runs"][key] = {"skipped": "time budget"}
                continue
            print(f"   {path.name} {key}", flush=True)
            try:
                runtime = RuntimeOptions(providers=(provider,), workers=1, allow_spinning=True)
                det = open_detector(file, runtime, DetectorConfig(conf_threshold=0.3))
                if prepared is None:
                    pairs = [det.preprocess(f) for f in frames]
                    prepared = (np.stack([t for t, _ in pairs]), [m for _, m in pairs])
                run = latency_run(det, prepared[0], calls, max_s)
                found = detect_all(det, *prepared)
                if provider == CPU and precision == "fp32":
                    ref = found
                elif ref is not None:
                    run["agreement_with_cpu_fp32"] = agreement(ref, found)
                entry["runs"][key] = run
            except Exception as exc:
                entry["runs"][key] = error_text(exc)
    entry["gpu_vs_cpu_frames_per_s"] = ratios(entry["runs"])
    return entry


def latency(
    models: list[Path],
    providers: list[str],
    video: Path,
    *,
    quick: bool,
    budget: Budget,
    scratch: Path,
) -> dict[str, Any]:
    frames = sample_frames(video, max(BATCHES))
    calls, max_s = (20, 1.0) if quick else (200, 3.0)
    out: dict[str, Any] = {"calls_per_point": calls, "max_s_per_point": max_s, "models": {}}
    for path in models:
        out["models"][path.name] = latency_model(
            path, providers, frames, calls=calls, max_s=max_s, budget=budget, scratch=scratch
        )
    return out


def ratios(runs: dict[str, Any]) -> dict[str, dict[str, float]]:
    """frames/s of each GPU run over CPU FP32's, per batch."""
    cpu = runs.get("cpu_fp32", {}).get("batches")
    if not cpu:
        return {}
    out: dict[str, dict[str, float]] = {}
    for key, run in runs.items():
        batches = run.get("batches") if isinstance(run, dict) else None
        if key == "cpu_fp32" or not batches or run.get("provider") == CPU:
            continue
        out[key] = {
            b: round(v["frames_per_s"] / cpu[b]["frames_per_s"], 2)
            for b, v in batches.items()
            if b in cpu and cpu[b]["frames_per_s"]
        }
    return out


# -- 4. pipeline ---------------------------------------------------------------------------


def pipeline_run(detector: Any, video: Path, streams: int) -> dict[str, Any]:
    """``streams`` copies of the video through ``Pipeline`` as fast as they decode."""
    from tapetum.pipeline import Pipeline, PipelineConfig
    from tapetum.sources import VideoSource

    config = PipelineConfig(inference_workers=detector.recommended_workers)
    sources = [VideoSource(video, source_id=f"s{i}") for i in range(streams)]
    t0 = time.perf_counter()
    d = Pipeline(sources, detector, config=config).run().as_dict()
    e2e = d["latency_ms"]["end_to_end"]
    return {
        "streams": streams,
        "fps": d["fps"],
        "frames": d["frames_processed"],
        "dropped": d["frames_dropped"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "end_to_end": {k: round(e2e[k], 2) for k in ("p50_ms", "p95_ms", "p99_ms")},
        "stages_p99_ms": {k: round(v["p99_ms"], 2) for k, v in d["latency_ms"].items()},
    }


def pipeline_section(
    model: Path, providers: list[str], video: Path, *, quick: bool, budget: Budget
) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model.name, "video": video.name}
    stream_counts = (1,) if quick else (1, 4)
    # the GPU first: it is what this check is for; the CPU run is the ratio's reference
    for provider in sorted(providers, key=lambda p: p == CPU):
        name = provider.removesuffix("ExecutionProvider").lower()
        try:
            # as `tapetum run` makes it: conf 0.1 (ByteTrack's low band), workers chosen
            det = open_detector(
                model, RuntimeOptions(providers=(provider,)), DetectorConfig(conf_threshold=0.1)
            )
            runs: dict[str, Any] = {
                "provider": det.model.providers[0],
                "inference_workers": det.recommended_workers,
                "threads_per_worker": det.model.threads,
            }
            for n in stream_counts:
                if budget.left() < 30:
                    runs[f"{n}_streams"] = {"skipped": "time budget"}
                    continue
                print(f"   {name}: {n} stream(s)…", flush=True)
                runs[f"{n}_streams"] = pipeline_run(det, video, n)
                r = runs[f"{n}_streams"]
                print(f"     {r['fps']} FPS, e2e p99 {r['end_to_end']['p99_ms']} ms", flush=True)
            out[name] = runs
        except Exception as exc:
            out[name] = error_text(exc)
    gpu = next(
        (k for k in out if k in ("cuda", "tensorrt") and out[k].get("provider") in GPU_PROVIDERS),
        None,
    )
    if gpu and "cpu" in out:
        out["gpu_vs_cpu_fps"] = {
            k: round(out[gpu][k]["fps"] / out["cpu"][k]["fps"], 2)
            for k in out[gpu]
            if k.endswith("_streams")
            and "fps" in out[gpu].get(k, {})
            and out["cpu"].get(k, {}).get("fps")
        }
    return out


# -- 5. capacity ---------------------------------------------------------------------------


def paced_level(detector: Any, video: Path, streams: int, seconds: float) -> dict[str, Any]:
    from tapetum.pipeline import Pipeline, PipelineConfig
    from tapetum.sources import VideoSource
    from tapetum.sources.paced import PacedSource

    sources = [
        PacedSource(
            lambda: VideoSource(video, decoder_threads=1), 15.0, f"cam{i}", duration_s=seconds
        )
        for i in range(streams)
    ]
    config = PipelineConfig(inference_workers=detector.recommended_workers)
    stats = Pipeline(sources, detector, config=config).run()
    e2e = stats.latency_ms["end_to_end"]
    read = stats.frames_read
    drop = stats.frames_dropped / read if read else 1.0
    return {
        "streams": streams,
        "frames_read": read,
        "frames_processed": stats.frames_processed,
        "drop_rate": round(drop, 4),
        "batches": stats.batches,
        "end_to_end": {
            "p50_ms": round(e2e.p50_ms, 2),
            "p95_ms": round(e2e.p95_ms, 2),
            "p99_ms": round(e2e.p99_ms, 2),
        },
        "sustained": bool(e2e.p99_ms < P99_BUDGET_MS and drop <= 0.01),
    }


def capacity(
    model: Path, provider: str, video: Path, *, quick: bool, budget: Budget, max_streams: int
) -> dict[str, Any]:
    """Double the stream count until a level fails, then bisect; each level costs about
    ``seconds`` plus start-up, and the search stops when the budget runs low."""
    seconds = 3.0 if quick else 8.0
    det = open_detector(
        model, RuntimeOptions(providers=(provider,)), DetectorConfig(conf_threshold=0.1)
    )
    levels: list[dict[str, Any]] = []
    best, worst = 0, max_streams + 1
    n = 1 if quick else 4
    note = ""
    # resolution: an eighth of the sustained count (bisecting to one stream costs minutes)
    while worst - best > max(1, best // 8):
        if budget.left() < seconds * 2.5 + 10:
            note = "stopped by the time budget"
            break
        print(f"   {n} × 15 FPS…", flush=True)
        level = paced_level(det, video, n, seconds)
        levels.append(level)
        print(
            f"     p99 {level['end_to_end']['p99_ms']} ms, dropped {level['drop_rate']:.2%}"
            f" → {'ok' if level['sustained'] else 'not sustained'}",
            flush=True,
        )
        if level["sustained"]:
            best = n
        else:
            worst = n
        n = min(n * 2, max_streams) if worst > max_streams else (best + worst) // 2
        if n <= best or n >= worst:
            break
        if quick and len(levels) >= 2:
            note = "quick: two levels only"
            break
    return {
        "provider": det.model.providers[0],
        "seconds_per_level": seconds,
        "max_streams_sustained": best,
        "first_failing_level": worst if worst <= max_streams else None,
        "levels": levels,
        "rule": "p99 end-to-end < 100 ms and ≤ 1% frames dropped, one try per level",
        "note": note or "one try per level (bench/pipeline.py's table wants two)",
    }


# -- main ----------------------------------------------------------------------------------


def default_models(models_dir: Path) -> list[Path]:
    """YOLOX-nano first, then the other float detectors in the folder (not INT8 files, not
    re-identification models)."""
    found = sorted(
        p
        for p in models_dir.glob("*.onnx")
        if "int8" not in p.name and not p.name.startswith("osnet")
    )
    return sorted(found, key=lambda p: p.name != "yolox_nano.onnx")


def main() -> int:
    assets_default = os.environ.get(
        "TAPETUM_ASSETS", str(Path(__file__).resolve().parents[2] / "shared" / "assets")
    )
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--assets", type=Path, default=Path(assets_default))
    ap.add_argument("--model", type=Path, action="append", help="detector ONNX (repeat)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/gpu.json"))
    ap.add_argument(
        "--providers",
        default="",
        help="comma-separated (cuda,cpu,...); default: the GPU providers installed, then cpu",
    )
    ap.add_argument("--quick", action="store_true", help="few calls, short paced runs")
    ap.add_argument("--budget-s", type=float, default=270.0, help="stop starting sections after")
    ap.add_argument("--max-streams", type=int, default=48, help="capacity search ceiling")
    args = ap.parse_args()
    budget = Budget(args.budget_s)
    video = args.assets / "video" / "crowd_720p.avi"
    models = args.model or default_models(args.assets / "models")
    if not video.is_file() or not models or not all(m.is_file() for m in models):
        print(f"error: assets not found under {args.assets} (video, models)", file=sys.stderr)
        return 2
    import onnxruntime as ort

    from tapetum.detect.providers import parse_provider_list

    installed = list(ort.get_available_providers())
    wanted = list(parse_provider_list(args.providers) or ())
    if not wanted:
        wanted = [p for p in (CUDA,) if p in installed] + [CPU]
    gpu = next((p for p in wanted if p in GPU_PROVIDERS), None)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "args": {
            "assets": str(args.assets),
            "models": [m.name for m in models],
            "providers": wanted,
            "quick": args.quick,
            "budget_s": args.budget_s,
        },
    }
    section(result, "environment", args.out, environment)
    section(result, "providers", args.out, lambda: provider_reports(models[0]))
    if TENSORRT not in installed:
        result["providers"]["note"] = "TensorRT provider not in this ORT build"
    with tempfile.TemporaryDirectory() as scratch:
        section(
            result,
            "latency",
            args.out,
            lambda: latency(
                models, wanted, video, quick=args.quick, budget=budget, scratch=Path(scratch)
            ),
        )
    section(
        result,
        "pipeline",
        args.out,
        lambda: pipeline_section(models[0], wanted, video, quick=args.quick, budget=budget),
    )
    section(
        result,
        "capacity_15fps",
        args.out,
        lambda: capacity(
            models[0],
            gpu or CPU,
            video,
            quick=args.quick,
            budget=budget,
            max_streams=args.max_streams,
        ),
    )
    result["total_s"] = round(args.budget_s - budget.left(), 1)
    write_result(result, args.out)
    print(f"wrote {args.out} in {result['total_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
