"""``tapetum run --loop``: a file replayed as a never-ending stream, stopped by Ctrl-C, with
its per-track state on ``/metrics`` while it runs."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import CROWD_FPS, CROWD_FRAMES
from tests.integration.cli.test_cli import _env, assert_summary_consistent

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_looped_file_runs_past_its_end_with_indexes_and_time_counting_on(
    crowd_video: Path, yolox_path: Path, tmp_path: Path
) -> None:
    out, port = tmp_path / "out", _free_port()
    cmd = [
        sys.executable, "-m", "tapetum", "run", str(crowd_video), "--model", str(yolox_path),
        "--out", str(out), "--threads", "2", "--loop", "--no-video", "--quiet",
        "--metrics-port", str(port),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    try:
        tracks = out / "tracks.jsonl"
        deadline = time.monotonic() + 120.0
        while not (tracks.exists() and tracks.read_bytes().count(b"\n") > CROWD_FRAMES + 20):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the loop never went past the file's end"
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert_summary_consistent(summary)
    assert summary["frames_processed"] > CROWD_FRAMES + 20
    records = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    indexes = [r["frame_index"] for r in records]
    assert indexes == list(range(len(records)))  # one index per frame, across the passes
    times = [r["timestamp_s"] for r in records]
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert min(steps) > 0  # time runs on over the loop's seam
    assert max(steps) < 3 / CROWD_FPS
    assert times[-1] > CROWD_FRAMES / CROWD_FPS
    tracked = [line for line in metrics.splitlines() if line.startswith("tapetum_state_entries")]
    assert any('structure="tracker_tracks"' in line for line in tracked), metrics[-2000:]
