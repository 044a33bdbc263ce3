"""Soak test: does a long-running stream hold its memory, file descriptors and threads?

Runs the real command line in a child process for ``--duration`` and samples it every
``--every`` seconds: resident memory (RSS), open file descriptors and threads (psutil),
CPU time, and, from the child's Prometheus ``/metrics``, frames processed, queue depths
and the per-track state every stage holds (``tapetum_state_entries``). After a warm-up it
fits RSS against frames processed by least squares and reports the slope in MB per 10,000
frames (target: < 1), with fds and threads min/max (target: flat).

Modes:

* ``run-file``: ``tapetum run --loop`` on the shared crowd video (720p, 341 frames at 25
  FPS, replayed end to end), unpaced: as many frames per minute as the CPU gives.
  Annotated video, trails and tracks JSONL on, as a user runs it.
* ``run-live``: ``tapetum run tcp://127.0.0.1:PORT``: this script serves the crowd video
  as a live MPEG-TS stream over loopback TCP, looped, each packet sent on its time (a
  camera at 25 FPS; no re-encode), so the child reads a real live source (drop policy,
  reconnect path) at a steady rate.
* ``serve``: ``tapetum serve`` under a steady load over loopback: ``--rate`` POST
  /v1/detect per second (JPEG frames of the crowd video, tracked in sessions that change
  every minute and are left to expire) and, every ``--stream-every`` seconds, a server-side
  stream (POST /v1/streams, the crowd video paced at 25 FPS, results read over SSE to the
  end, then DELETE).

At the end the child is stopped the way a user stops it (SIGINT: drain and write the
summary; SIGTERM for serve) and must exit cleanly.

Usage::

    python bench/soak.py --mode run-file --duration 5m          # about 6 min in all
    python bench/soak.py --mode run-live --duration 30m --cpus 0
    python bench/soak.py --mode serve --duration 1800 --cpus 1

Writes ``bench/results/soak_<mode>.json`` and ``.png`` (``--tag`` adds a suffix) and prints
the JSON's path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info, write_result

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("run-file", "run-live", "serve")
TARGET_MB_PER_10K_FRAMES = 1.0
_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# --------------------------------------------------------------------------- arguments


def parse_duration(text: str) -> float:
    """``"90"`` / ``"90s"`` / ``"5m"`` / ``"2h"`` → seconds.

    >>> parse_duration("5m"), parse_duration("1800"), parse_duration("1.5h")
    (300.0, 1800.0, 5400.0)
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 300, 90s, 5m, 2h)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    seconds = value * {"s": 1, "m": 60, "h": 3600}[unit]
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the duration must be > 0")
    return seconds


def assets_dir() -> Path:
    found = os.environ.get("TAPETUM_ASSETS") or str(ROOT.parent / "shared" / "assets")
    path = Path(found)
    if not (path / "video" / "crowd_720p.avi").is_file():
        sys.exit(f"error: no crowd_720p.avi under {path} (set TAPETUM_ASSETS)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- metrics


def scrape(url: str, timeout_s: float = 5.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text from ``url`` as ``{name: [(labels, value), ...]}``; {} on failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _METRIC_LINE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match.group(3) or ""))
        with contextlib.suppress(ValueError):
            out.setdefault(match.group(1), []).append((labels, float(match.group(4))))
    return out


def metric_sum(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(v for _, v in metrics.get(name, []))


def by_label(
    metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, label: str
) -> dict[str, float]:
    """Values of ``name`` summed by ``label`` (e.g. queue depths by queue)."""
    out: dict[str, float] = {}
    for labels, value in metrics.get(name, []):
        key = labels.get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out


# --------------------------------------------------------------------------- live source


class LoopbackCamera:
    """Serves a video file as a live MPEG-TS stream on ``tcp://127.0.0.1:PORT``: each client
    gets the file's H.264 packets remuxed (no re-encode), looped with timestamps carried
    on, each sent when its decode time comes (a camera's pace)."""

    def __init__(self, video: Path) -> None:
        self.video = video
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.5)
        self.port = int(self._server.getsockname()[1])
        self.url = f"tcp://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="camera", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._send, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket) -> None:
        import av

        try:
            with conn, conn.makefile("wb") as sink, av.open(sink, "w", format="mpegts") as out:
                self._stream_into(out)
        except (OSError, av.FFmpegError, ValueError):
            pass  # the client went away; it reconnects as a camera client would

    def _stream_into(self, out: Any) -> None:
        import av

        offset = 0  # time_base ticks added on each pass
        start = time.monotonic()
        out_stream = None
        while not self._stop.is_set():
            with av.open(str(self.video)) as inp:
                stream = inp.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(stream)
                rate = stream.guessed_rate or stream.average_rate or 25
                tick = 1 / (float(rate) * float(stream.time_base))
                last = 0
                for packet in inp.demux(stream):
                    if self._stop.is_set():
                        return
                    if packet.dts is None:  # the demuxer's final flush packet
                        continue
                    due = start + float((packet.dts + offset) * stream.time_base)
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    last = max(last, packet.dts)
                    packet.dts += offset
                    if packet.pts is not None:
                        packet.pts += offset
                    packet.stream = out_stream
                    out.mux(packet)
                offset += last + round(tick)


# --------------------------------------------------------------------------- serve load


class ServeLoad:
    """Steady requests on a ``tapetum serve`` at ``base``: detect calls at ``rate`` per
    second in tracking sessions that change every ``session_s``, and a server-side stream
    every ``stream_every_s`` seconds, read to its end over SSE and then deleted."""

    def __init__(
        self,
        base: str,
        *,
        jpegs: list[bytes],
        video_name: str,
        rate: float,
        stream_every_s: float,
        session_s: float = 60.0,
    ) -> None:
        self.base = base
        self.jpegs = jpegs
        self.video_name = video_name
        self.rate = rate
        self.stream_every_s = stream_every_s
        self.session_s = session_s
        self.detect_ok = 0
        self.detect_failed = 0
        self.streams_started = 0
        self.streams_failed = 0
        self.stream_frames = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._detect_loop, name="detect-load", daemon=True),
            threading.Thread(target=self._stream_loop, name="stream-load", daemon=True),
        ]

    @property
    def frames(self) -> int:
        return self.detect_ok + self.stream_frames

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _note(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)

    def _detect_loop(self) -> None:
        import httpx

        period = 1.0 / self.rate
        start = time.monotonic()
        k = 0
        with httpx.Client(base_url=self.base, timeout=30.0) as client:
            while not self._stop.is_set():
                due = start + k * period
                wait = due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return
                session = f"soak-{int((time.monotonic() - start) // self.session_s)}"
                jpeg = self.jpegs[k % len(self.jpegs)]
                try:
                    resp = client.post(
                        "/v1/detect",
                        content=jpeg,
                        params={"session_id": session},
                        headers={"content-type": "image/jpeg"},
                    )
                    ok = resp.status_code == 200
                except httpx.HTTPError as exc:
                    ok = False
                    self._note(f"detect: {exc!r}")
                else:
                    if not ok:
                        self._note(f"detect: HTTP {resp.status_code} {resp.text[:200]}")
                self.detect_ok += ok
                self.detect_failed += not ok
                k += 1

    def _stream_loop(self) -> None:
        import httpx

        with httpx.Client(base_url=self.base, timeout=60.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self._one_stream(client)
                except httpx.HTTPError as exc:
                    self.streams_failed += 1
                    self._note(f"stream: {exc!r}")
                left = self.stream_every_s - (time.monotonic() - started)
                if self._stop.wait(max(left, 1.0)):
                    return

    def _one_stream(self, client: Any) -> None:
        resp = client.post("/v1/streams", json={"uri": self.video_name, "realtime": True})
        if resp.status_code != 201:
            self.streams_failed += 1
            self._note(f"stream start: HTTP {resp.status_code} {resp.text[:200]}")
            return
        self.streams_started += 1
        sid = resp.json()["stream_id"]
        with client.stream("GET", f"/v1/streams/{sid}/results") as feed:
            for line in feed.iter_lines():
                if line.startswith("data:"):
                    self.stream_frames += 1
                if line.startswith("event: end") or self._stop.is_set():
                    break
        client.delete(f"/v1/streams/{sid}")


def crowd_jpegs(video: Path, every: int = 2) -> list[bytes]:
    """Every ``every``-th frame of ``video`` as JPEG (quality 85)."""
    import av
    import cv2

    out = []
    with av.open(str(video)) as inp:
        for i, frame in enumerate(inp.decode(video=0)):
            if i % every == 0:
                ok, buf = cv2.imencode(".jpg", frame.to_ndarray(format="bgr24"), [1, 85])
                if ok:
                    out.append(buf.tobytes())
    return out


# --------------------------------------------------------------------------- sampling


@dataclass
class Sample:
    t_s: float
    frames: int
    rss_mb: float
    fds: int
    threads: int
    cpu_s: float
    queues: dict[str, float] = field(default_factory=dict)
    state: dict[str, float] = field(default_factory=dict)


def sample(proc: Any, t_s: float, frames: int, metrics: dict[str, Any]) -> Sample:
    """One look at the child (psutil ``proc``) and its scraped ``metrics``."""
    with proc.oneshot():
        cpu = proc.cpu_times()
        s = Sample(
            t_s=round(t_s, 2),
            frames=frames,
            rss_mb=round(proc.memory_info().rss / 2**20, 2),
            fds=proc.num_fds(),
            threads=proc.num_threads(),
            cpu_s=round(cpu.user + cpu.system, 2),
        )
    queues = by_label(metrics, "tapetum_queue_depth", "queue")
    sinks = metric_sum(metrics, "tapetum_sink_queue_depth")
    s.queues = {**queues, **({"sinks": sinks} if "tapetum_sink_queue_depth" in metrics else {})}
    s.state = by_label(metrics, "tapetum_state_entries", "structure")
    s.state.update(by_label(metrics, "tapetum_sink_state_entries", "structure"))
    active = metric_sum(metrics, "tapetum_active_tracks")
    if "tapetum_active_tracks" in metrics:
        s.state["active_tracks"] = active
    return s


def fit_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y on x and its standard error (nan with < 3 points)."""
    if x.size < 3 or np.ptp(x) == 0:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    se = np.sqrt(resid @ resid / (x.size - 2) / np.sum((x - x.mean()) ** 2))
    return float(slope), float(se)


def rss_slopes(samples: list[Sample]) -> tuple[float, float, float]:
    """RSS against frames processed (MB per frame, its standard error) and against time
    (MB per second), by least squares."""
    rss = np.array([s.rss_mb for s in samples], np.float64)
    per_frame, per_frame_se = fit_slope(np.array([s.frames for s in samples], np.float64), rss)
    per_s, _ = fit_slope(np.array([s.t_s for s in samples], np.float64), rss)
    return per_frame, per_frame_se, per_s


def analyse(samples: list[Sample], warmup_s: float) -> dict[str, Any]:
    """RSS slope after warm-up (per 10,000 frames and per hour), fds/threads ranges, and the
    range of every queue and state structure after warm-up."""
    after = [s for s in samples if s.t_s >= warmup_s]
    if len(after) < 3:
        return {"error": f"only {len(after)} samples after the {warmup_s:.0f} s warm-up"}
    frames = np.array([s.frames for s in after], np.float64)
    t = np.array([s.t_s for s in after], np.float64)
    rss = np.array([s.rss_mb for s in after], np.float64)
    per_frame, per_frame_se, per_s = rss_slopes(after)
    cpu = (after[-1].cpu_s - after[0].cpu_s) / max(t[-1] - t[0], 1e-9)

    def span(values: list[float]) -> dict[str, float]:
        return {"min": min(values), "max": max(values)}

    queues = sorted({k for s in after for k in s.queues})
    state = sorted({k for s in after for k in s.state})
    slope_10k = per_frame * 1e4
    return {
        "samples_after_warmup": len(after),
        "frames_after_warmup": int(frames[-1] - frames[0]),
        "fps_after_warmup": round(float((frames[-1] - frames[0]) / (t[-1] - t[0])), 2),
        "rss_mb_at_warmup": float(rss[0]),
        "rss_mb_at_end": float(rss[-1]),
        "rss_mb": span(rss.tolist()),
        "rss_slope_mb_per_10k_frames": round(slope_10k, 3),
        "rss_slope_se_mb_per_10k_frames": round(per_frame_se * 1e4, 3),
        "rss_slope_mb_per_hour": round(per_s * 3600, 2),
        "fds": span([s.fds for s in after]),
        "threads": span([s.threads for s in after]),
        "fds_whole_run": span([s.fds for s in samples]),
        "threads_whole_run": span([s.threads for s in samples]),
        "cpu_cores_used": round(float(cpu), 2),
        "queues": {k: span([s.queues.get(k, 0.0) for s in after]) for k in queues},
        "state_entries": {k: span([s.state.get(k, 0.0) for s in after]) for k in state},
        "target_mb_per_10k_frames": TARGET_MB_PER_10K_FRAMES,
        "rss_target_met": bool(abs(slope_10k) < TARGET_MB_PER_10K_FRAMES),
        "fds_flat": flat([s.fds for s in after]),
        "threads_flat": flat([s.threads for s in after]),
        **idle_floors(samples, warmup_s),
    }


def idle_floors(samples: list[Sample], warmup_s: float) -> dict[str, Any]:
    """Serve mode: the resident memory a server keeps between its streams. Each stretch of
    samples with no stream running (no queue reported) gives its lowest RSS (after the
    server's periodic trim); the slope of those floors after warm-up is what the server
    holds on to for good, without the swing of a stream's own working memory that the fit
    over all samples carries. Empty when the run had fewer than three idle stretches."""
    floors: list[Sample] = []
    stretch: list[Sample] = []
    for s in [*samples, None]:
        if s is not None and not s.queues:
            stretch.append(s)
            continue
        if stretch:
            floors.append(min(stretch, key=lambda x: x.rss_mb))
            stretch = []
    after = [f for f in floors if f.t_s >= warmup_s]
    if len(after) < 3:
        return {}
    per_frame, per_frame_se, per_s = rss_slopes(after)
    return {
        "idle_stretches_after_warmup": len(after),
        "idle_floor_mb": {"first": after[0].rss_mb, "last": after[-1].rss_mb},
        "idle_floor_slope_mb_per_10k_frames": round(per_frame * 1e4, 3),
        "idle_floor_slope_se_mb_per_10k_frames": round(per_frame_se * 1e4, 3),
        "idle_floor_slope_mb_per_hour": round(per_s * 3600, 2),
    }


def flat(values: list[int]) -> bool:
    """No upward trend: the second half's minimum and maximum exceed the first half's by at
    most 1 (a server's streams bring threads and fds that go again: the range is fine, a
    drift is not)."""
    first, second = values[: len(values) // 2], values[len(values) // 2 :]
    if not first:
        return True
    return max(second) <= max(first) + 1 and min(second) <= min(first) + 1


def plot(samples: list[Sample], summary: dict[str, Any], warmup_s: float, out: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([s.t_s for s in samples]) / 60
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    ax = axes[0]
    ax.plot(t, [s.rss_mb for s in samples], lw=1.2, label="RSS")
    after = [s for s in samples if s.t_s >= warmup_s]
    slope = summary.get("rss_slope_mb_per_10k_frames")
    if len(after) >= 3 and slope is not None:
        f = np.array([s.frames for s in after], np.float64)
        r = np.array([s.rss_mb for s in after], np.float64)
        k, b = np.polyfit(f, r, 1)
        ax.plot(
            np.array([s.t_s for s in after]) / 60,
            k * f + b,
            "--",
            lw=1,
            label=f"fit after warm-up: {slope:+.2f} MB / 10k frames",
        )
    ax.axvline(warmup_s / 60, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("RSS (MB)")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[1]
    ax.plot(t, [s.fds for s in samples], label="open fds")
    ax.plot(t, [s.threads for s in samples], label="threads")
    ax.set_ylabel("count")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[2]
    for k in sorted({k for s in samples for k in s.queues}):
        ax.plot(t, [s.queues.get(k, 0.0) for s in samples], lw=0.8, label=f"queue {k}")
    ax.set_ylabel("queued")
    if ax.lines:
        ax.legend(loc="upper right", fontsize=8)
    ax = axes[3]
    for k in sorted({k for s in samples for k in s.state}):
        ax.plot(t, [s.state.get(k, 0.0) for s in samples], lw=0.8, label=k)
    ax.set_ylabel("state entries")
    if ax.lines:
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- the run


def child_command(args: argparse.Namespace, assets: Path, work: Path) -> tuple[list[str], str]:
    """The child's command line and its metrics URL."""
    video = assets / "video" / "crowd_720p.avi"
    model = assets / "models" / "yolox_nano.onnx"
    port = free_port()
    base = [sys.executable, "-m", "tapetum"]
    if args.mode == "serve":
        cmd = [
            *base, "serve", "--model", str(model), "--no-auth", "--host", "127.0.0.1",
            "--port", str(port), "--grpc-port", "0", "--rate", "0",
            "--media-root", str(video.parent),
        ]  # fmt: skip
        return cmd, f"http://127.0.0.1:{port}"
    source = str(video) if args.mode == "run-file" else args.camera_url
    cmd = [
        *base, "run", source, "--model", str(model), "--out", str(work / "run"), "--quiet",
        "--metrics-port", str(port), "--threads", str(args.threads), "--workers", "1",
    ]  # fmt: skip
    if args.mode == "run-file":
        cmd.append("--loop")
    if not args.video:
        cmd.append("--no-video")
    cmd += args.extra
    return cmd, f"http://127.0.0.1:{port}"


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the child exited with code {proc.returncode} while starting")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def stop_child(
    proc: subprocess.Popen[bytes], mode: str, log_path: Path, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Stop the child as a user would; how it went. Clean: it exited by itself within
    ``timeout_s`` with no traceback in its log, with code 0 (a run writes its summary
    first), or, for serve, by the SIGTERM uvicorn raises again once it has shut down."""
    sig = signal.SIGTERM if mode == "serve" else signal.SIGINT
    t0 = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        code = proc.wait(timeout_s)
        killed = False
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        killed = True
    traceback = "Traceback" in log_path.read_text(errors="replace")
    expected = (0, -signal.SIGTERM) if mode == "serve" else (0,)
    return {
        "signal": sig.name,
        "exit_code": code,
        "stop_s": round(time.monotonic() - t0, 2),
        "killed_after_timeout": killed,
        "traceback_in_log": traceback,
        "clean_exit": code in expected and not killed and not traceback,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--mode", choices=MODES, default="run-file")
    add("--duration", type=parse_duration, default=300.0, help="e.g. 300, 5m, 2h")
    add(
        "--warmup",
        type=parse_duration,
        default=None,
        help="excluded from the fit (default: 20%% of the duration, 30 s to 5 min)",
    )
    add("--every", type=float, default=5.0, help="seconds between samples")
    add("--threads", type=int, default=1, help="run modes: ONNX Runtime threads")
    add("--cpus", default=None, help="pin the child to these CPUs, e.g. 0 or 0,1")
    add("--no-video", dest="video", action="store_false", help="run modes: no annotated video")
    add("--rate", type=float, default=4.0, help="serve: detect calls per second")
    add("--stream-every", type=float, default=60.0, help="serve: seconds between streams")
    add("--tag", default="", help="suffix of the result files")
    add("--out", type=Path, default=RESULTS, help="folder of the result files")
    add("--keep", action="store_true", help="keep the child's output folder")
    add("extra", nargs="*", help="more options for tapetum run (after --)")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(300.0, max(30.0, 0.2 * args.duration))
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")
    return args


def launch(
    cmd: list[str], work: Path, cpus: set[int] | None
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start the child, its output in ``work/child.log``; pinned to ``cpus`` from its
    start (it inherits this thread's affinity), so it sizes its thread pools to them."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_path = work / "child.log"
    previous = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        os.sched_setaffinity(0, previous)
    return proc, log_path


def watch(
    args: argparse.Namespace,
    proc: subprocess.Popen[bytes],
    metrics_url: str,
    load: ServeLoad | None,
) -> list[Sample]:
    """Sample the child every ``args.every`` seconds for ``args.duration``."""
    import psutil

    child = psutil.Process(proc.pid)
    samples: list[Sample] = []
    t0 = time.monotonic()
    while (now := time.monotonic() - t0) < args.duration and proc.poll() is None:
        metrics = scrape(metrics_url)
        if load is not None:
            frames = load.frames
        else:
            frames = int(metric_sum(metrics, "tapetum_stream_frames_processed_total"))
        with contextlib.suppress(psutil.Error):
            samples.append(sample(child, now, frames, metrics))
        if samples and len(samples) % 12 == 1:
            s = samples[-1]
            print(
                f"  {now / 60:5.1f} min  frames {s.frames:7d}  RSS {s.rss_mb:7.1f} MB  "
                f"fds {s.fds:3d}  threads {s.threads:3d}",
                flush=True,
            )
        time.sleep(max(0.0, args.every - (time.monotonic() - t0 - now)))
    return samples


def load_report(load: ServeLoad | None) -> dict[str, Any] | None:
    if load is None:
        return None
    return {
        "detect_ok": load.detect_ok,
        "detect_failed": load.detect_failed,
        "streams_started": load.streams_started,
        "streams_failed": load.streams_failed,
        "stream_frames": load.stream_frames,
        "errors": load.errors,
    }


def run_report(work: Path) -> dict[str, Any] | None:
    """The counters of the child's own ``summary.json`` (run modes)."""
    path = work / "run" / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    keys = ("frames_read", "frames_processed", "frames_dropped", "frames_failed")
    return {k: summary[k] for k in (*keys, "frames_corrupt", "elapsed_s", "fps")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    assets = assets_dir()
    os.environ["TAPETUM_ASSETS"] = str(assets)
    video = assets / "video" / "crowd_720p.avi"
    work = Path(tempfile.mkdtemp(prefix=f"soak-{args.mode}-"))
    camera = LoopbackCamera(video) if args.mode == "run-live" else None
    args.camera_url = camera.url if camera is not None else None
    cmd, base = child_command(args, assets, work)
    metrics_url = f"{base}/metrics"
    print(f"soak {args.mode}: {' '.join(cmd)}", flush=True)
    cpus = {int(c) for c in args.cpus.split(",")} if args.cpus else None
    proc, log_path = launch(cmd, work, cpus)
    load: ServeLoad | None = None
    samples: list[Sample] = []
    try:
        wait_ready(f"{base}/readyz" if args.mode == "serve" else metrics_url, proc)
        if args.mode == "serve":
            load = ServeLoad(
                base,
                jpegs=crowd_jpegs(video),
                video_name=video.name,
                rate=args.rate,
                stream_every_s=args.stream_every,
            )
            load.start()
        samples = watch(args, proc, metrics_url, load)
    finally:
        if load is not None:
            load.stop()
        stop = stop_child(proc, args.mode, log_path)
        if camera is not None:
            camera.close()
    summary = analyse(samples, args.warmup)
    result: dict[str, Any] = {
        "mode": args.mode,
        "command": ["python" if c == sys.executable else c for c in cmd],
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "every_s": args.every,
        "cpus": args.cpus,
        "summary": summary,
        "stop": stop,
        "run_summary": run_report(work),
        "load": load_report(load),
        "camera_connections": camera.connections if camera is not None else None,
        "child_log_tail": (
            [] if stop["clean_exit"] else log_path.read_text(errors="replace").splitlines()[-15:]
        ),
        "machine": machine_info(),
        "samples": [vars(s) for s in samples],
    }
    name = f"soak_{args.mode.replace('-', '_')}{'_' + args.tag if args.tag else ''}"
    out_json = args.out / f"{name}.json"
    write_result(result, out_json)
    plot(samples, summary, args.warmup, args.out / f"{name}.png", f"tapetum soak, {args.mode}")
    if args.keep:
        print(f"child output kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    keys = ("rss_slope_mb_per_10k_frames", "rss_slope_se_mb_per_10k_frames", "rss_mb_at_warmup")
    keys += ("rss_mb_at_end", "fds", "threads", "cpu_cores_used", "fps_after_warmup")
    print(json.dumps({**{k: summary.get(k) for k in keys}, "stop": stop}, indent=1))
    print(out_json)
    return 0 if stop["clean_exit"] and "error" not in summary else 1


if __name__ == "__main__":
    sys.exit(main())
