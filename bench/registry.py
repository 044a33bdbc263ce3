"""Model registry benchmark: how long ``models:/NAME@champion`` takes to resolve.

One run against a registry of YOLOX-nano from the shared assets (by default a fresh SQLite
store in a temporary folder, the embedded default's kind; ``--registry`` for any other):

1. ``warm``: ``resolve_model_uri`` repeated in one process with the file already in the
   local cache: one registry read (the alias) plus the sha256 of the cached file (checked on
   every load). Target: p50 < 50 ms. Split into its two parts (``alias_lookup``,
   ``hash_check``) measured separately.
2. ``cold_process``: a new Python process resolving once (import MLflow, open the store,
   look up, hash): what ``tapetum run --model models:/…`` pays before its first frame.
3. ``cold_cache``: a resolve with an empty cache (download from the artifact store, hash,
   atomic rename into the cache).

Never asserts a time; the target is reported next to the measurement.

    python bench/registry.py                          # bench/results/registry.json
    python bench/registry.py --registry http://127.0.0.1:5000 --runs 100
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_info, pct, write_result

from tapetum.registry import (
    ArtifactCache,
    ModelRef,
    ModelRegistry,
    resolve_model_uri,
    sha256_file,
)

TARGET_P50_MS = 50.0
NAME = "bench-yolox-nano"


def _timed_ms(fn: Any, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    assets = Path(os.environ.get("TAPETUM_ASSETS", "../shared/assets"))
    parser.add_argument("--model", type=Path, default=assets / "models" / "yolox_nano.onnx")
    parser.add_argument("--registry", help="Store URI (default: a fresh SQLite store).")
    parser.add_argument("--runs", type=int, default=300, help="Warm resolves timed.")
    parser.add_argument("--cold-runs", type=int, default=3, help="New processes timed.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/registry.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tapetum-registry-bench-") as tmp:
        work = Path(tmp)
        uri = args.registry or f"sqlite:///{work / 'registry.db'}"
        t0 = time.perf_counter()
        reg = ModelRegistry(uri, artifacts=work / "artifacts")
        open_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        info = reg.register(args.model, NAME, command="bench/registry.py")
        register_s = time.perf_counter() - t0
        reg.promote(NAME, info.version, "champion", reason="benchmark")
        ref = f"models:/{NAME}@champion"
        cache = work / "cache"

        t0 = time.perf_counter()
        resolve_model_uri(ref, registry=reg, cache_dir=cache)
        cold_cache_ms = (time.perf_counter() - t0) * 1e3
        for _ in range(10):  # warm-up: SQLAlchemy's statement cache, the page cache
            resolve_model_uri(ref, registry=reg, cache_dir=cache)
        print(f"timing {args.runs} warm resolves…", flush=True)
        warm = _timed_ms(lambda: resolve_model_uri(ref, registry=reg, cache_dir=cache), args.runs)
        alias = _timed_ms(lambda: reg.get_version(ModelRef(NAME, alias="champion")), args.runs)
        cached = ArtifactCache(cache).path_for(info.sha256)
        hashing = _timed_ms(lambda: sha256_file(cached), args.runs)

        print(f"timing {args.cold_runs} new processes…", flush=True)
        cold_process = [_resolve_in_new_process(ref, uri, cache) for _ in range(args.cold_runs)]

    warm_stats = pct(warm)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "store": "sqlite (fresh, local)" if args.registry is None else args.registry,
        "model": {"file": args.model.name, "size_mb": round(info_size_mb(args.model), 3)},
        "target": {"warm_p50_ms": TARGET_P50_MS, "met": warm_stats["p50_ms"] < TARGET_P50_MS},
        "warm": warm_stats,
        "warm_parts": {"alias_lookup": pct(alias), "hash_check": pct(hashing)},
        "cold_cache_ms": round(cold_cache_ms, 2),
        "cold_process_ms": pct(cold_process),
        "setup_s": {"open_store": round(open_s, 2), "register": round(register_s, 2)},
    }
    write_result(result, args.out)
    parts = result["warm_parts"]
    print(
        f"warm resolve p50 {warm_stats['p50_ms']} ms (target < {TARGET_P50_MS}), "
        f"p99 {warm_stats['p99_ms']} ms; alias lookup p50 {parts['alias_lookup']['p50_ms']} ms, "
        f"hash p50 {parts['hash_check']['p50_ms']} ms; "
        f"new process {result['cold_process_ms']['p50_ms']:.0f} ms; wrote {args.out}"
    )


def _resolve_in_new_process(ref: str, uri: str, cache: Path) -> float:
    """Milliseconds a fresh interpreter takes from importing the registry to a resolved,
    hash-checked file (the cache is warm)."""
    code = (
        "import sys, time; t0 = time.perf_counter(); "
        "from tapetum.registry import resolve_model_uri; "
        "resolve_model_uri(sys.argv[1], registry=sys.argv[2], cache_dir=sys.argv[3]); "
        "print((time.perf_counter() - t0) * 1e3)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, ref, uri, str(cache)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(proc.stdout.strip())


def info_size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


if __name__ == "__main__":
    main()
