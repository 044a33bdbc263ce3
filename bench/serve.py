"""Serving benchmark: ``POST /v1/detect`` over loopback vs the bare detector call.

One run, with the real YOLOX-nano model and a real (argon2) key store:

1. ``direct``: ``YoloxDetector([image])`` on the already-decoded image, p50/p95/p99 (the
   floor the server cannot beat).
2. ``rest``: uvicorn in a thread of this process on a free loopback port; an async httpx
   client sends the 640×480 JPEG as the raw body (``Content-Type: image/jpeg``, Bearer key)
   at 1, 4 and 16 concurrent clients, each level bounded by ``--requests`` requests or
   ``--seconds`` seconds, whichever comes first. RPS and latency p50/p95/p99 per level.
3. ``overhead_p50_ms``: REST p50 − direct p50 at 1 client (target < 5 ms): HTTP parsing,
   auth (cached key), JPEG decode, JSON encoding, the thread hops and the loopback.
   Measured twice: with the async httpx client of the levels above, and with one
   sequential keep-alive ``http.client`` connection (``rest_lean_client``), whose own
   parsing costs less of the two shared cores; the gap between them is client time.
4. ``grpc``: ``create_grpc_server`` (the public factory) on a free loopback port, sharing
   the direct call's detector; a grpc.aio client with one channel (its own connection) per
   client sends ``Detect`` with the same JPEG, key (``authorization: Bearer`` metadata),
   levels and bounds. Its overhead at p50 likewise, and ``rest_vs_grpc``: gRPC ÷ REST
   ratios of RPS and p50/p95/p99 per level.

For both protocols ``overhead`` splits the p50 overhead by the server's own
``timings_ms["decode"]`` (p50): how much of it is the JPEG decode the direct call skips.
``paired_p50_ms`` asks the same question under the same load: per request, the client's
latency minus the server's own timing of its detector call (``timings_ms["inference"]``,
which at 1 client has no queueing in it), p50. The separately timed direct call runs with
the client process idle, so on 2 cores it is faster than the same call during the load
and inflates ``p50_ms``. The < 5 ms target is reported as met or not met, never asserted.

The image is ``images/bus.jpg`` (810×1080) resized (stretched) to 640×480 with OpenCV and
re-encoded as JPEG at quality 90. The client runs in the same process as the server (as
the loopback tests do), so the client's own CPU time and the GIL count against the server
on a small machine; the numbers are an upper bound on the overhead.

No rate limit (``rate_per_second=None``) so that the load is not throttled into 429s.
Writes JSON (default ``bench/results/serve.json``) and prints a table. Never asserts times.

``--swap-phase`` measures instead what a registry model swap costs the clients: a tmp
SQLite MLflow store holds YOLOX-nano (version 1) and its FP16 child (version 2,
``convert_fp16``); the server serves ``models:/yolox_nano@champion`` as ``tapetum serve``
does (``ModelFollower`` polling every ``--poll-s``), a client process runs ``--swap-clients``
(4) concurrent clients for the whole run, and after ``--steady-s`` seconds of steady state
the alias flips ``--flips`` (10) times, every ``--flip-interval-s``, each flip promoted
through a second registry handle (as an operator's CLI would) and waited for. A request is
"during a swap" when it overlaps a swap's load + warm-up + swap span (from the follower's
``ModelSwap`` records) or the ``--drain-s`` after it; every other request is steady state.
The JSON (default ``bench/results/serve_swap.json``) records failed requests (target 0),
requests/s, p50/p95/p99 during swaps and in steady state and their p99 ratio (target
≤ 2), and each swap's time and poll delay.

    python bench/serve.py                      # assets from $TAPETUM_ASSETS
    python bench/serve.py --requests 100 --seconds 5
    python bench/serve.py --swap-phase         # 4 clients, the alias flipped 10 times
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import uvicorn
from _common import machine_info, pct, write_result

from tapetum.serve.app import create_app
from tapetum.serve.auth import KeyStore, Scope
from tapetum.serve.images import decode_image
from tapetum.serve.settings import ServeSettings, default_detector_factory

REPO = Path(__file__).resolve().parents[1]
LEVELS = (1, 4, 16)
WIDTH, HEIGHT = 640, 480
OVERHEAD_TARGET_MS = 5.0
SWAP_P99_RATIO_TARGET = 2.0
SWAP_MODEL = "yolox_nano"


class LevelRecorder:
    """What one load level saw: client latencies, the server's own timings and errors."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.server_ms: dict[str, list[float]] = {}
        self.paired: list[float] = []  # latency − the server's detector call, per request
        self.errors: dict[str, int] = {}

    def ok(self, latency_ms: float, timings_ms: Any) -> None:
        self.latencies.append(latency_ms)
        for k, v in timings_ms.items():
            self.server_ms.setdefault(k, []).append(v)
        self.paired.append(latency_ms - timings_ms["inference"])

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def result(self, clients: int, elapsed_s: float, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clients": clients,
            **extra,
            "requests": len(self.latencies),
            "seconds": round(elapsed_s, 2),
            "rps": round(len(self.latencies) / elapsed_s, 1),
            **pct(self.latencies),
            # The server's own timings_ms (decode; queue + inference; total), p50.
            "server_timings_p50_ms": {
                k: round(float(np.median(v)), 2) for k, v in self.server_ms.items() if v
            },
            # Per request: client latency − the server's own detector call (same moment,
            # same load), p50. The detector call in the server *is* the direct call.
            "minus_inference_p50_ms": (
                round(float(np.median(self.paired)), 2) if self.paired else None
            ),
        }
        if self.errors:
            out["errors"] = self.errors
        return out


def assets_dir() -> Path:
    env = os.environ.get("TAPETUM_ASSETS")
    return Path(env) if env else (REPO / ".." / "shared" / "assets").resolve()


def make_jpeg(assets: Path) -> bytes:
    img = cv2.imread(str(assets / "images" / "bus.jpg"))
    if img is None:
        raise SystemExit(f"cannot read {assets / 'images' / 'bus.jpg'}")
    img = cv2.resize(img, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """uvicorn in a background thread of this process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise SystemExit("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            resp = client.get("/readyz")
            if resp.status_code == 200:
                return
            if resp.json().get("status") == "failed":
                raise SystemExit(f"model failed to load: {resp.text}")
            time.sleep(0.1)
    raise SystemExit("model never became ready")


def bench_direct(settings: ServeSettings, jpeg: bytes, n: int) -> tuple[dict[str, Any], Any]:
    detector = default_detector_factory(settings)
    image = decode_image(jpeg, "image/jpeg", settings.image_limits)
    for _ in range(5):
        detector([image])
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        detector([image])
        times.append((time.perf_counter() - t0) * 1e3)
    t0 = time.perf_counter()
    for _ in range(20):
        decode_image(jpeg, "image/jpeg", settings.image_limits)
    decode_ms = (time.perf_counter() - t0) / 20 * 1e3
    return {
        **pct(times),
        "jpeg_decode_ms": round(decode_ms, 2),
        "recommended_workers": int(getattr(detector, "recommended_workers", 1)),
    }, detector


async def _load_level(
    url: str,
    headers: dict[str, str],
    jpeg: bytes,
    clients: int,
    *,
    max_requests: int,
    seconds: float,
) -> dict[str, Any]:
    rec = LevelRecorder()
    issued = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        # Warm the connections (and the key cache) before the clock starts.
        await asyncio.gather(
            *(client.post("/v1/detect", content=jpeg, headers=headers) for _ in range(clients))
        )
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal issued
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                t0 = time.perf_counter()
                resp = await client.post("/v1/detect", content=jpeg, headers=headers)
                dt = (time.perf_counter() - t0) * 1e3
                if resp.status_code == 200:
                    rec.ok(dt, resp.json()["timings_ms"])
                else:
                    rec.error(str(resp.status_code))

        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return rec.result(clients, elapsed)


def bench_rest(
    settings: ServeSettings, store: KeyStore, raw_key: str, jpeg: bytes, args: argparse.Namespace
) -> tuple[dict[str, Any], int]:
    app = create_app(settings, key_store=store)
    headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "image/jpeg"}
    with ThreadServer(app) as server:
        wait_ready(server.url)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            resp = client.post("/v1/detect", content=jpeg, headers=headers)
            resp.raise_for_status()
            n_dets = len(resp.json()["detections"])
        levels = {
            str(c): _in_client_process(
                _rest_level,
                url=server.url,
                headers=headers,
                jpeg=jpeg,
                clients=c,
                requests=args.requests,
                seconds=args.seconds,
            )
            for c in LEVELS
        }
        levels["1_lean"] = _in_client_process(
            _rest_lean_level,
            url=server.url,
            headers=headers,
            jpeg=jpeg,
            requests=args.requests,
            seconds=args.seconds,
        )
    return levels, n_dets


def _rest_lean_level(
    *, url: str, headers: dict[str, str], jpeg: bytes, requests: int, seconds: float
) -> dict[str, Any]:
    """One client on one keep-alive connection with the standard library's http.client:
    the leanest Python client, so less of the client's own parsing is counted."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    rec = LevelRecorder()

    def post() -> tuple[int, bytes]:
        conn.request("POST", "/v1/detect", body=jpeg, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()

    for _ in range(5):
        post()
    start = time.perf_counter()
    while len(rec.latencies) < requests and time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        status, body = post()
        dt = (time.perf_counter() - t0) * 1e3
        if status == 200:
            rec.ok(dt, json.loads(body)["timings_ms"])
        else:
            rec.error(str(status))
    elapsed = time.perf_counter() - start
    conn.close()
    return rec.result(1, elapsed, client="http.client")


def _rest_level(
    *, url: str, headers: dict[str, str], jpeg: bytes, clients: int, requests: int, seconds: float
) -> dict[str, Any]:
    return asyncio.run(
        _load_level(url, headers, jpeg, clients, max_requests=requests, seconds=seconds)
    )


def _grpc_level(
    *,
    target: str,
    metadata: tuple[tuple[str, str], ...],
    jpeg: bytes,
    clients: int,
    requests: int,
    seconds: float,
) -> dict[str, Any]:
    return asyncio.run(
        _grpc_load_level(target, metadata, jpeg, clients, max_requests=requests, seconds=seconds)
    )


def _in_client_process(fn: Any, **kwargs: Any) -> dict[str, Any]:
    """Run one load level in a separate process, as a real client would be: in the
    server's process the client's event loop competes for the interpreter lock and its
    time would be counted as server overhead."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        result: dict[str, Any] = pool.submit(fn, **kwargs).result()
    return result


def _grpc_server(settings: ServeSettings, detector: Any, store: KeyStore, port: int) -> Any:
    """The gRPC server through its public factory (not started), on a ready
    ``DetectionService`` around this process's detector."""
    from tapetum.serve.grpc.server import create_grpc_server
    from tapetum.serve.service import DetectionService

    service = DetectionService(settings, lambda _settings: detector)
    service.start()
    if not service.wait_ready(60.0):
        raise SystemExit("the gRPC DetectionService never became ready")
    return create_grpc_server(settings, service, store, None, port)


async def _grpc_load_level(
    target: str,
    metadata: tuple[tuple[str, str], ...],
    jpeg: bytes,
    clients: int,
    *,
    max_requests: int,
    seconds: float,
) -> dict[str, Any]:
    import grpc

    from tapetum.serve.grpc._gen import tapetum_pb2 as pb
    from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc

    request = pb.DetectRequest(image=jpeg, content_type="image/jpeg")
    rec = LevelRecorder()
    issued = 0
    # One channel (and, with a local subchannel pool, one HTTP/2 connection) per client:
    # channels with equal arguments would otherwise share one connection.
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(clients)
    ]
    try:
        stubs = [pb_grpc.DetectorStub(ch) for ch in channels]
        # Warm the connections (and the key cache) before the clock starts.
        await asyncio.gather(*(stub.Detect(request, metadata=metadata) for stub in stubs))
        start = time.perf_counter()
        deadline = start + seconds

        async def worker(stub: Any) -> None:
            nonlocal issued
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                t0 = time.perf_counter()
                try:
                    resp = await stub.Detect(request, metadata=metadata, timeout=60)
                except grpc.aio.AioRpcError as exc:
                    rec.error(exc.code().name)
                    continue
                rec.ok((time.perf_counter() - t0) * 1e3, resp.timings_ms)

        await asyncio.gather(*(worker(stub) for stub in stubs))
        elapsed = time.perf_counter() - start
    finally:
        for ch in channels:
            await ch.close()
    return rec.result(clients, elapsed)


def bench_grpc(
    settings: ServeSettings,
    detector: Any,
    store: KeyStore,
    raw_key: str,
    *,
    jpeg: bytes,
    args: argparse.Namespace,
) -> dict[str, dict[str, Any]]:
    """``Detect`` at the same levels, the server in its own threads, a grpc.aio client."""
    port = free_port()
    server = _grpc_server(settings, detector, store, port)
    server.start()
    metadata = (("authorization", f"Bearer {raw_key}"),)
    try:
        return {
            str(c): _in_client_process(
                _grpc_level,
                target=f"127.0.0.1:{port}",
                metadata=metadata,
                jpeg=jpeg,
                clients=c,
                requests=args.requests,
                seconds=args.seconds,
            )
            for c in LEVELS
        }
    finally:
        server.stop(grace=5).wait()


def overhead(
    levels: dict[str, dict[str, Any]], direct: dict[str, Any], level: str = "1"
) -> dict[str, Any]:
    """p50 at 1 client − direct p50, and the part of it that is the server's JPEG decode."""
    one = levels[level]
    over = one["p50_ms"] - direct["p50_ms"]
    decode = one["server_timings_p50_ms"].get("decode")
    out: dict[str, Any] = {
        "p50_ms": round(over, 2),
        "target_ms": OVERHEAD_TARGET_MS,
        "target_met": bool(over < OVERHEAD_TARGET_MS),
    }
    if decode is not None:
        out["server_decode_p50_ms"] = decode
        out["excl_server_decode_p50_ms"] = round(over - decode, 2)
        out["decode_share_of_overhead"] = round(decode / over, 3) if over > 0 else None
        out["target_met_excl_decode"] = bool(over - decode < OVERHEAD_TARGET_MS)
    inference = one["server_timings_p50_ms"].get("inference")
    if inference is not None:
        # Outside the server's timed span (decode + inference): transport, auth, parsing,
        # encoding, thread hops, the client.
        out["outside_server_timings_p50_ms"] = round(
            one["p50_ms"] - one["server_timings_p50_ms"].get("total", decode + inference), 2
        )
    paired = one.get("minus_inference_p50_ms")
    if paired is not None:
        # The same question under the same load: the server's own detector call is timed
        # on every request, so the separately measured direct p50 (taken with the client
        # process idle) does not have to stand in for it.
        out["paired_p50_ms"] = paired
        out["target_met_paired"] = bool(paired < OVERHEAD_TARGET_MS)
    return out


def compare(rest: dict[str, Any], grpc_levels: dict[str, Any]) -> dict[str, Any]:
    """gRPC ÷ REST per level (RPS: > 1 means gRPC serves more; latency: < 1 means faster)."""
    return {
        c: {
            "rest_rps": rest[c]["rps"],
            "grpc_rps": grpc_levels[c]["rps"],
            "rps_ratio_grpc_over_rest": round(grpc_levels[c]["rps"] / rest[c]["rps"], 3),
            **{
                f"{p}_ratio_grpc_over_rest": round(grpc_levels[c][p] / rest[c][p], 3)
                for p in ("p50_ms", "p95_ms", "p99_ms")
            },
        }
        for c in rest
        if c in grpc_levels
    }


def _print_levels(name: str, levels: dict[str, Any], direct_p50: float) -> None:
    print(f"\n{name}")
    print(
        f"{'clients':>8} {'requests':>9} {'RPS':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'p50/direct':>11}"
    )
    for lvl in levels.values():
        ratio = lvl["p50_ms"] / direct_p50
        print(
            f"{lvl['clients']:>8}{'*' if lvl.get('client') else ' '}{lvl['requests']:>8} "
            f"{lvl['rps']:>8} {lvl['p50_ms']:>8} "
            f"{lvl['p95_ms']:>8} {lvl['p99_ms']:>8} {ratio:>10.2f}x"
            + (f"  errors {lvl['errors']}" if "errors" in lvl else "")
        )
    print(f"server-side timings_ms p50 at 1 client: {levels['1']['server_timings_p50_ms']}")
    if any(lvl.get("client") for lvl in levels.values()):
        print("* one sequential client with the standard library's http.client")


def _print_overhead(name: str, over: dict[str, Any]) -> None:
    verdict = "met" if over["target_met"] else "not met"
    line = (
        f"{name} overhead at p50, 1 client: {over['p50_ms']} ms "
        f"(< {over['target_ms']} ms: {verdict})"
    )
    if "server_decode_p50_ms" in over:
        share = over["decode_share_of_overhead"]
        line += (
            f"; of which JPEG decode {over['server_decode_p50_ms']} ms"
            + (f" ({share:.0%})" if share is not None else "")
            + f", without it {over['excl_server_decode_p50_ms']} ms"
        )
    if "paired_p50_ms" in over:
        paired = "met" if over["target_met_paired"] else "not met"
        line += (
            f"\n    per request, latency − the server's own detector call: "
            f"{over['paired_p50_ms']} ms ({paired})"
        )
    print(line)


def print_table(result: dict[str, Any]) -> None:
    direct = result["direct"]
    print(
        f"\ndirect detector call (decoded {WIDTH}x{HEIGHT}): p50 {direct['p50_ms']} ms, "
        f"p95 {direct['p95_ms']} ms, p99 {direct['p99_ms']} ms (n={direct['n']}); "
        f"JPEG decode {direct['jpeg_decode_ms']} ms"
    )
    _print_levels("REST POST /v1/detect", result["rest"], direct["p50_ms"])
    grpc_result = result["grpc"]
    if isinstance(grpc_result, dict):
        _print_levels("gRPC Detect", grpc_result["levels"], direct["p50_ms"])
    print()
    _print_overhead("REST (httpx client)", result["overhead"]["rest"])
    _print_overhead("REST (http.client)", result["overhead"]["rest_lean_client"])
    if isinstance(grpc_result, dict):
        _print_overhead("gRPC", result["overhead"]["grpc"])
        print("\nREST vs gRPC (ratio = gRPC / REST)")
        print(
            f"{'clients':>8} {'REST RPS':>9} {'gRPC RPS':>9} {'RPS x':>7} "
            f"{'REST p50':>9} {'gRPC p50':>9} {'p50 x':>7} {'REST p95':>9} {'gRPC p95':>9} "
            f"{'p95 x':>7} {'REST p99':>9} {'gRPC p99':>9} {'p99 x':>7}"
        )
        for c, row in result["rest_vs_grpc"].items():
            r, g = result["rest"][c], grpc_result["levels"][c]
            print(
                f"{c:>8} {row['rest_rps']:>9} {row['grpc_rps']:>9} "
                f"{row['rps_ratio_grpc_over_rest']:>7.2f} "
                f"{r['p50_ms']:>9} {g['p50_ms']:>9} {row['p50_ms_ratio_grpc_over_rest']:>7.2f} "
                f"{r['p95_ms']:>9} {g['p95_ms']:>9} {row['p95_ms_ratio_grpc_over_rest']:>7.2f} "
                f"{r['p99_ms']:>9} {g['p99_ms']:>9} {row['p99_ms_ratio_grpc_over_rest']:>7.2f}"
            )
    else:
        print(f"gRPC: {grpc_result}")


# ----------------------------------------------------------------------------- swap phase


async def _swap_load(
    *,
    url: str,
    headers: dict[str, str],
    jpeg: bytes,
    clients: int,
    seconds: float,
    started: Any,
) -> dict[str, Any]:
    """``clients`` back-to-back clients for ``seconds``; every request as (start, end,
    status) in wall-clock seconds (the server's swap records use the same clock)."""
    records: list[tuple[float, float, int]] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await asyncio.gather(
            *(client.post("/v1/detect", content=jpeg, headers=headers) for _ in range(clients))
        )
        started.set()
        t_start = time.time()
        deadline = t_start + seconds

        async def worker() -> None:
            while time.time() < deadline:
                t0 = time.time()
                try:
                    resp = await client.post("/v1/detect", content=jpeg, headers=headers)
                    status = resp.status_code
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    status = 0
                records.append((t0, time.time(), status))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return {"records": records, "errors": errors, "start": t_start}


def _swap_client(**kwargs: Any) -> dict[str, Any]:
    return asyncio.run(_swap_load(**kwargs))


def _overlaps(t0: float, t1: float, windows: list[tuple[float, float]]) -> bool:
    return any(t0 < end and t1 > start for start, end in windows)


def _swap_summary(
    load: dict[str, Any], swaps: list[Any], flips: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """Failed requests, requests/s and latency during swaps vs steady state."""
    records = load["records"]
    windows = [(s.at - s.seconds, s.at + args.drain_s) for s in swaps]
    ok = [(t0, t1) for t0, t1, status in records if status == 200]
    failed = [status for _, _, status in records if status != 200]
    during = [(t1 - t0) * 1e3 for t0, t1 in ok if _overlaps(t0, t1, windows)]
    steady = [(t1 - t0) * 1e3 for t0, t1 in ok if not _overlaps(t0, t1, windows)]
    first_flip = flips[0]["promoted_at"] if flips else float("inf")
    before = [(t0, t1) for t0, t1 in ok if t1 < first_flip]
    flipping = [(t0, t1) for t0, t1 in ok if t0 >= first_flip]
    end = max(t1 for _, t1, _ in records)
    ratio = round(pct(during)["p99_ms"] / pct(steady)["p99_ms"], 3) if during and steady else None
    statuses: dict[str, int] = {}
    for status in failed:
        statuses[str(status or "no_response")] = statuses.get(str(status or "no_response"), 0) + 1
    return {
        "requests": len(records),
        "failed_requests": len(failed),
        "failed_target": 0,
        "failed_target_met": not failed,
        "failed_by_status": statuses,
        "client_errors": load["errors"],
        "rps_steady_phase": round(len(before) / max(1e-9, first_flip - load["start"]), 1),
        "rps_while_flipping": round(len(flipping) / max(1e-9, end - first_flip), 1),
        "steady": pct(steady) if steady else None,
        "during_swaps": pct(during) if during else None,
        "p99_ratio_during_over_steady": ratio,
        "p99_ratio_target": SWAP_P99_RATIO_TARGET,
        "p99_ratio_target_met": ratio is not None and ratio <= SWAP_P99_RATIO_TARGET,
        "swap_windows_s": round(sum(b - a for a, b in windows), 2),
        "swaps": [
            {
                "to_version": s.current.version,
                "trigger": s.trigger,
                "load_warm_swap_s": round(s.seconds, 3),
                "poll_delay_s": round(s.at - s.seconds - f["promoted_at"], 3),
            }
            for s, f in zip(swaps, flips, strict=False)
        ],
    }


def bench_swap(
    model: Path, jpeg: bytes, args: argparse.Namespace, tmp: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the swap phase's summary, its setup) on a tmp registry; see the module docstring."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tapetum.detect.quantize import convert_fp16
    from tapetum.registry import ModelRegistry, resolve_model_uri
    from tapetum.serve.follow import ModelFollower
    from tapetum.serve.service import DetectionService

    fp16 = tmp / "yolox_nano_fp16.onnx"
    convert_fp16(model, fp16)
    uri = f"sqlite:///{tmp / 'registry.db'}"
    reg = ModelRegistry(uri, artifacts=tmp / "artifacts")
    v1 = reg.register(model, SWAP_MODEL, command="bench/serve.py --swap-phase")
    reg.register(fp16, SWAP_MODEL, parent=v1.ref, command="bench/serve.py --swap-phase")
    reg.promote(SWAP_MODEL, 1, reason="bench: start")
    cache = tmp / "cache"
    resolved = resolve_model_uri(f"models:/{SWAP_MODEL}@champion", registry=reg, cache_dir=cache)
    settings = ServeSettings(
        model_path=resolved.path,
        model_name=SWAP_MODEL,
        rate_per_second=None,
        batch_requests=args.batch_requests,
    )
    store = KeyStore(tmp / "keys.db")
    _, raw_key = store.create("bench", [Scope.INFER])
    service = DetectionService(settings)
    follower = ModelFollower(service, resolved, registry=reg, poll_s=args.poll_s, cache_dir=cache)
    app = create_app(settings, key_store=store, service=service, follower=follower)
    operator = ModelRegistry(uri)  # a second handle, as the operator's own process has
    headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "image/jpeg"}
    total_s = args.steady_s + args.flips * args.flip_interval_s + args.tail_s
    flips: list[dict[str, Any]] = []
    ctx = multiprocessing.get_context("spawn")
    try:
        with ThreadServer(app) as server, ctx.Manager() as manager:
            wait_ready(server.url)
            started = manager.Event()
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                future = pool.submit(
                    _swap_client,
                    url=server.url,
                    headers=headers,
                    jpeg=jpeg,
                    clients=args.swap_clients,
                    seconds=total_s,
                    started=started,
                )
                if not started.wait(120):
                    raise SystemExit("the swap-phase client did not start")
                time.sleep(args.steady_s)
                for i in range(args.flips):
                    slot = time.monotonic() + args.flip_interval_s
                    target = 2 if follower.current.version == 1 else 1
                    promoted_at = time.time()
                    operator.promote(SWAP_MODEL, target, reason=f"bench: flip {i + 1}")
                    deadline = time.monotonic() + 120
                    while follower.current.version != target:
                        if time.monotonic() > deadline:
                            raise SystemExit(f"flip {i + 1}: the server never served {target}")
                        time.sleep(0.02)
                    flips.append({"to_version": target, "promoted_at": promoted_at})
                    time.sleep(max(0.0, slot - time.monotonic()))
                load = future.result()
    finally:
        service.close()
        store.close()
    assert follower.watcher is not None
    summary = _swap_summary(load, follower.watcher.swaps, flips, args)
    setup = {
        "model_versions": {
            "1": "yolox_nano.onnx (FP32)",
            "2": "its FP16 child (tapetum.detect.quantize.convert_fp16)",
        },
        "served_as": f"models:/{SWAP_MODEL}@champion",
        "clients": args.swap_clients,
        "client": "httpx.AsyncClient in a separate process, back to back, one connection "
        "per client",
        "flips": args.flips,
        "flip_interval_s": args.flip_interval_s,
        "steady_s": args.steady_s,
        "poll_s": args.poll_s,
        "drain_s": args.drain_s,
        "batch_requests": args.batch_requests,
        "seconds": round(total_s, 1),
    }
    return summary, setup


def print_swap(result: dict[str, Any]) -> None:
    s = result["swap_phase"]
    print(
        f"\nswap phase: {result['setup']['clients']} clients, alias flipped "
        f"{len(s['swaps'])} times; {s['requests']} requests, {s['failed_requests']} failed "
        f"(target 0: {'met' if s['failed_target_met'] else 'NOT met'})"
    )
    print(f"{'':>14} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for name in ("steady", "during_swaps"):
        row = s[name]
        if row:
            print(
                f"{name:>14} {row['n']:>6} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['p99_ms']:>8}"
            )
    verdict = "met" if s["p99_ratio_target_met"] else "NOT met"
    print(
        f"p99 during swaps / steady: {s['p99_ratio_during_over_steady']} (target ≤ "
        f"{s['p99_ratio_target']}: {verdict}); requests/s steady {s['rps_steady_phase']}, "
        f"while flipping {s['rps_while_flipping']}"
    )
    times = [w["load_warm_swap_s"] for w in s["swaps"]]
    if times:
        print(f"load + warm-up + swap: {min(times)}-{max(times)} s per swap")


def main_swap(args: argparse.Namespace, model: Path, jpeg: bytes) -> int:
    out = args.out or REPO / "bench" / "results" / "serve_swap.json"
    machine = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        summary, setup = bench_swap(model, jpeg, args, Path(tmp))
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result = {
        "machine": machine,
        "image": "images/bus.jpg as is (810x1080 JPEG)",
        "setup": setup,
        "swap_phase": summary,
    }
    write_result(result, out)
    print_swap(result)
    print(f"\nwrote {out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=200, help="per level, at most")
    parser.add_argument("--seconds", type=float, default=10.0, help="per level, at most")
    parser.add_argument("--direct-n", type=int, default=100)
    parser.add_argument(
        "--batch-requests",
        type=int,
        default=ServeSettings.__dataclass_fields__["batch_requests"].default,
        help="server-side dynamic batching of concurrent requests (1: off)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file (default bench/results/serve.json, or serve_swap.json with --swap-phase)",
    )
    swap = parser.add_argument_group("swap phase")
    swap.add_argument(
        "--swap-phase",
        action="store_true",
        help="only the registry swap phase: clients hammer /v1/detect while the alias flips",
    )
    swap.add_argument("--swap-clients", type=int, default=4)
    swap.add_argument("--flips", type=int, default=10)
    swap.add_argument("--flip-interval-s", type=float, default=4.0)
    swap.add_argument("--steady-s", type=float, default=15.0, help="steady state before flips")
    swap.add_argument("--tail-s", type=float, default=2.0, help="load after the last flip")
    swap.add_argument("--poll-s", type=float, default=0.25, help="the server's alias poll")
    swap.add_argument(
        "--drain-s",
        type=float,
        default=0.5,
        help="after a swap, how long requests still count as during it",
    )
    args = parser.parse_args()

    assets = args.assets or assets_dir()
    model = assets / "models" / "yolox_nano.onnx"
    if not model.exists():
        raise SystemExit(f"model not found: {model} (set TAPETUM_ASSETS)")
    if args.swap_phase:
        return main_swap(args, model, (assets / "images" / "bus.jpg").read_bytes())
    args.out = args.out or REPO / "bench" / "results" / "serve.json"
    jpeg = make_jpeg(assets)
    settings = ServeSettings(
        model_path=model, rate_per_second=None, batch_requests=args.batch_requests
    )

    with tempfile.TemporaryDirectory() as tmp:
        store = KeyStore(Path(tmp) / "keys.db")
        _, raw_key = store.create("bench", [Scope.INFER])
        direct, detector = bench_direct(settings, jpeg, args.direct_n)
        rest, n_dets = bench_rest(settings, store, raw_key, jpeg, args)
        grpc_result: str | dict[str, Any]
        try:
            grpc_levels = bench_grpc(settings, detector, store, raw_key, jpeg=jpeg, args=args)
        except ImportError as exc:  # grpcio is the optional ``grpc`` extra
            grpc_result = f"not available ({exc})"
        else:
            grpc_result = {
                "client": "grpc.aio in a separate process, one channel (own connection) per client",
                "levels": grpc_levels,
            }
        store.close()

    result: dict[str, Any] = {
        "machine": machine_info(),
        "model": str(model.name),
        "image": {
            "source": "images/bus.jpg resized (stretched) to 640x480, JPEG quality 90",
            "bytes": len(jpeg),
            "detections_at_default_conf": n_dets,
        },
        "bounds": {"requests_per_level": args.requests, "seconds_per_level": args.seconds},
        "batch_requests": args.batch_requests,
        "rest_client": "httpx.AsyncClient in a separate process (keep-alive, one connection "
        "per client), so the client's work is not counted as server overhead",
        "direct": direct,
        "rest": rest,
        "overhead_p50_ms": round(rest["1"]["p50_ms"] - direct["p50_ms"], 2),
        # The same without the JPEG decode, which the direct call does not do.
        "overhead_p50_excl_decode_ms": round(
            rest["1"]["p50_ms"] - direct["p50_ms"] - direct["jpeg_decode_ms"], 2
        ),
        "overhead_target_ms": OVERHEAD_TARGET_MS,
        "grpc": grpc_result,
        # Per protocol: p50 at 1 client − direct p50; the JPEG decode part is the server's
        # own timings_ms["decode"] (p50), so the part without it is not blamed on decode.
        "overhead": {
            "rest": overhead(rest, direct),
            "rest_lean_client": overhead(rest, direct, "1_lean"),
        },
    }
    if isinstance(grpc_result, dict):
        result["overhead"]["grpc"] = overhead(grpc_result["levels"], direct)
        result["rest_vs_grpc"] = compare(rest, grpc_result["levels"])
    write_result(result, args.out)
    print_table(result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
