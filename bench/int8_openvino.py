"""INT8 vs FP32 on a second CPU runtime: the same two ONNX files under OpenVINO.

``bench/detect.py`` measures INT8 under ONNX Runtime. This asks whether another runtime
gets more from the same quantized file: OpenVINO reads the QDQ graph and runs its
convolutions in u8/i8 (the script prints the runtime precisions it chose), so a speed-up
it cannot find is the CPU's, not ONNX Runtime's. Batch 1 latency p50/p99 and throughput at
batch 1 and 8, FP32 and INT8 timed alternately, with the CPU's int8 dot-product features
(AVX512-VNNI, AVX-VNNI, AMX) recorded beside them.

OpenVINO is not a Tapetum dependency: ``pip install openvino`` first.

    tapetum optimize yolox_nano.onnx -o int8.onnx --precision int8 --calib crowd_720p.avi
    python bench/int8_openvino.py --int8 int8.onnx     # bench/results/int8_openvino.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

INT8_FEATURES = ("avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8", "avx512f", "avx2")


def cpu_info() -> dict[str, Any]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), ""
    )
    flags = set(
        next(
            (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
        )
    )
    return {
        "model": model,
        "cores": os.cpu_count(),
        "int8_features": [f for f in INT8_FEATURES if f in flags],
    }


def compile_model(core: Any, path: Path, batch: int, threads: int) -> Any:
    model = core.read_model(str(path))
    shape = [batch, *list(model.inputs[0].get_partial_shape().get_min_shape())[1:]]
    model.reshape({model.inputs[0].get_any_name(): shape})
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    return core.compile_model(model, "CPU", config), shape


def runtime_precisions(compiled: Any) -> dict[str, int]:
    """Convolutions by the precision OpenVINO runs them in."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) == "Convolution":
            counts[info["runtimePrecision"].astype(str)] += 1
    return dict(counts)


def time_calls(request: Any, x: np.ndarray, calls: int) -> np.ndarray:
    for _ in range(5):
        request.infer({0: x})
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        request.infer({0: x})
        out[i] = (time.perf_counter() - start) * 1000.0
    return out


def main() -> int:
    assets = Path(
        os.environ.get("TAPETUM_ASSETS", Path(__file__).resolve().parents[2] / "shared" / "assets")
    )
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--fp32", type=Path, default=assets / "models" / "yolox_nano.onnx")
    ap.add_argument(
        "--int8", type=Path, required=True, help="from `tapetum optimize --precision int8`"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--calls", type=int, default=200, help="timed calls per model and batch")
    ap.add_argument(
        "--repeats", type=int, default=3, help="alternating repeats; the median is kept"
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results/int8_openvino.json"))
    args = ap.parse_args()
    try:
        import openvino as ov
    except ImportError:
        print("error: this benchmark needs OpenVINO: pip install openvino", file=sys.stderr)
        return 2
    for path in (args.fp32, args.int8):
        if not path.exists():
            print(f"error: model not found: {path}", file=sys.stderr)
            return 2

    core = ov.Core()
    result: dict[str, Any] = {
        "cpu": cpu_info(),
        "openvino": ov.__version__,
        "threads": args.threads,
    }
    models = {"fp32": args.fp32, "int8": args.int8}
    for batch in (1, 8):
        compiled = {k: compile_model(core, p, batch, args.threads) for k, p in models.items()}
        times: dict[str, list[np.ndarray]] = {k: [] for k in models}
        for _ in range(args.repeats):  # alternate: this VM's speed drifts between minutes
            for name, (model, shape) in compiled.items():
                x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
                times[name].append(
                    time_calls(model.create_infer_request(), x, max(args.calls // batch, 20))
                )
        for name, runs in times.items():
            pick = runs[int(np.argsort([np.median(r) for r in runs])[len(runs) // 2])]
            p50, p99 = np.percentile(pick, [50, 99])
            entry = result.setdefault(name, {"convolutions": runtime_precisions(compiled[name][0])})
            entry[f"batch{batch}"] = {
                "p50_ms": round(float(p50), 2),
                "p99_ms": round(float(p99), 2),
                "fps": round(batch * 1000.0 / float(p50), 1),
            }
    for batch in (1, 8):
        key = f"batch{batch}"
        result[f"int8_speedup_{key}"] = round(
            result["int8"][key]["fps"] / result["fp32"][key]["fps"], 2
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
