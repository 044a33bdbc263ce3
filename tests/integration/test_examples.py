"""The scripts in ``examples/`` run as their READMEs say: subprocesses on the real model,
video, MOT17 detections and a real ``tapetum serve``, checked on what they print."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.integration.serve_harness import free_port, wait_ready

pytestmark = pytest.mark.integration

EXAMPLES = REPO_ROOT / "examples"
LINE_COUNTER = EXAMPLES / "line_zone_counter" / "line_zone_counter.py"
TRACK_EXTERNAL = EXAMPLES / "track_external_detections" / "track_external_detections.py"
REST_CLIENT = EXAMPLES / "serve_clients" / "rest_client.py"
GRPC_CLIENT = EXAMPLES / "serve_clients" / "grpc_client.py"
WATCH_DRIFT = EXAMPLES / "monitoring" / "watch_drift.py"
#: YOLOX-nano on bus.jpg at conf 0.35 (PROVENANCE.md): the bus and three people.
BUS_CLASSES = ["bus", "person", "person", "person"]


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
    )


def numbers(pattern: str, text: str) -> tuple[int, ...]:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in output:\n{text}"
    return tuple(int(g) for g in match.groups())


# --------------------------------------------------------------------- line_zone_counter
def test_line_counter_counts_people_crossing_the_crowd_video(
    crowd_video: Path, yolox_path: Path
) -> None:
    proc = run(LINE_COUNTER, crowd_video, "--model", yolox_path, "--max-frames", "60")
    assert proc.returncode == 0, proc.stderr
    frames, tracks = numbers(r"frames: (\d+)\s+tracks: (\d+)", proc.stdout)
    crossed_in, crossed_out = numbers(r"line crossings: in (\d+)\s+out (\d+)", proc.stdout)
    (peak,) = numbers(r"zone: peak (\d+) at once", proc.stdout)
    assert frames == 60
    # 30-40 people walk through the hall: in 1.2 s some cross the middle of the frame.
    assert tracks >= 10
    assert crossed_in + crossed_out >= 1
    assert crossed_in + crossed_out <= tracks  # 1.2 s: no one crosses more than once
    assert 1 <= peak <= tracks


def test_line_counter_rejects_a_malformed_line(crowd_video: Path, yolox_path: Path) -> None:
    proc = run(LINE_COUNTER, crowd_video, "--model", yolox_path, "--line", "0,360,1280,360,5,5")
    assert proc.returncode == 2
    assert "--line takes 2 x,y points" in proc.stderr


# --------------------------------------------------------------- track_external_detections
@pytest.fixture(scope="module")
def mot17_09(assets: Path) -> Path:
    return assets / "mot" / "MOT17" / "train" / "MOT17-09-FRCNN"


def test_tracker_on_public_detections_writes_mot_rows(mot17_09: Path, tmp_path: Path) -> None:
    out = tmp_path / "MOT17-09.txt"
    proc = run(TRACK_EXTERNAL, mot17_09, "--out", out, "--max-frames", "100")
    assert proc.returncode == 0, proc.stderr
    rows, tracks = numbers(r"(\d+) rows, (\d+) tracks", proc.stdout)
    table = np.loadtxt(out, delimiter=",", ndmin=2)
    assert table.shape == (rows, 10)
    assert table[:, 0].min() == 1 and table[:, 0].max() <= 100
    assert np.unique(table[:, 1]).size == tracks
    assert 5 <= tracks <= 18  # the ground truth has 9 pedestrians in these frames
    assert np.all(table[:, 4:6] > 0)  # widths and heights in pixels
    # Tracks persist: most identities span more than a few frames.
    spans = [np.ptp(table[table[:, 1] == tid, 0]) for tid in np.unique(table[:, 1])]
    assert np.median(spans) >= 20


def test_tracker_scores_equal_tapetum_eval_track(mot17_09: Path, tmp_path: Path) -> None:
    proc = run(TRACK_EXTERNAL, mot17_09, "--out", tmp_path / "MOT17-09.txt", "--eval")
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"HOTA ([\d.]+)\s+MOTA ([\d.-]+)\s+IDF1 ([\d.]+)", proc.stdout)
    assert match, proc.stdout
    report = tmp_path / "eval.json"
    cli = run("-m", "tapetum", "eval", "track", "--data", mot17_09, "--out", report)
    assert cli.returncode == 0, cli.stderr
    combined = json.loads(report.read_text())["combined"]
    # Fed frame by frame from det.txt, the tracker matches the built-in evaluation run.
    expected = [f"{combined[k]:.3f}" for k in ("hota", "mota", "idf1")]
    assert list(match.groups()) == expected
    assert combined["hota"] > 0.3


def test_tracker_refuses_eval_of_part_of_a_sequence(mot17_09: Path, tmp_path: Path) -> None:
    proc = run(TRACK_EXTERNAL, mot17_09, "--out", tmp_path / "x.txt", "--max-frames", "9", "--eval")
    assert proc.returncode == 2
    assert "leave out --max-frames" in proc.stderr


# ------------------------------------------------------------------------ serve_clients
@dataclass
class Server:
    url: str
    grpc_target: str
    key: str

    def client_args(self, api: str) -> list[str | Path]:
        """The client script of ``api`` and its option naming this server."""
        if api == "rest":
            return [REST_CLIENT, "--url", self.url]
        return [GRPC_CLIENT, "--target", self.grpc_target]


@pytest.fixture(scope="module")
def server(yolox_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``tapetum serve`` started as the README says, with a key from ``tapetum keys``."""
    pytest.importorskip("grpc")
    pytest.importorskip("fastapi")
    folder = tmp_path_factory.mktemp("example-serve")
    db, log = folder / "keys.db", folder / "serve.log"
    created = run("-m", "tapetum", "keys", "create", "--name", "examples", "--db", db)
    assert created.returncode == 0, created.stderr
    port, grpc_port = free_port(), free_port()
    args = ["--model", yolox_path, "--port", port, "--grpc-port", grpc_port, "--keys-db", db]
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapetum", "serve", *map(str, args)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            _wait_listening(client, proc, log)
            wait_ready(client, timeout_s=120)
        yield Server(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", created.stdout.strip())
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_listening(client: httpx.Client, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"tapetum serve exited:\n{log.read_text()}"
        try:
            client.get("/healthz")
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"tapetum serve did not listen within 60 s:\n{log.read_text()}")


@pytest.mark.parametrize("api", ["rest", "grpc"])
def test_client_gets_the_bus_and_three_people(server: Server, assets: Path, api: str) -> None:
    image = assets / "images" / "bus.jpg"
    proc = run(*server.client_args(api), image, env={"TAPETUM_API_KEY": server.key})
    assert proc.returncode == 0, proc.stderr
    first, *objects = proc.stdout.splitlines()
    assert first == "yolox_nano: 4 objects in 810x1080"
    assert sorted(line.split()[0] for line in objects) == BUS_CLASSES


@pytest.mark.parametrize(("api", "reason"), [("rest", "HTTP 401"), ("grpc", "UNAUTHENTICATED")])
def test_client_with_a_wrong_key_prints_the_servers_reason(
    server: Server, assets: Path, api: str, reason: str
) -> None:
    image = assets / "images" / "bus.jpg"
    proc = run(*server.client_args(api), image, env={"TAPETUM_API_KEY": "not-a-key"})
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {reason}"), proc.stderr
    assert proc.stdout == ""


# --------------------------------------------------------------------------- monitoring
def test_watch_drift_reports_the_darkening_once_after_it_starts(
    crowd_video: Path, yolox_path: Path
) -> None:
    proc = run(WATCH_DRIFT, crowd_video, "--model", yolox_path, "--darken-from", "150")
    assert proc.returncode == 0, proc.stderr
    (first,) = numbers(r"drift: brightness at frame (\d+)", proc.stdout)
    assert 150 < first <= 150 + 150  # within the 150-frame target
    assert proc.stdout.count("drift: brightness") == 1  # hysteresis: once
    assert numbers(r"frames processed: (\d+)", proc.stdout) == (341,)
    assert "drifting at the end: True" in proc.stdout
    assert "dashboard: http://127.0.0.1:" in proc.stdout
