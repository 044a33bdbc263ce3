"""SIGTERM (a service manager stopping the unit, ``docker stop``) in the middle of a run,
while the sinks are writing: ``tapetum run`` stops reading, finishes what is in flight
(a second SIGTERM drops it instead), closes its files and writes the summary, exit 0. The
counts add up, every JSONL line parses and the annotated video decodes to its last
frame."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import CROWD_FRAMES
from tests.integration.faults.conftest import jsonl_records, readable_frames, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("signals", [1, 2], ids=["drain", "drop"])
def test_sigterm_mid_run_finishes_the_files_and_the_summary(
    signals: int, crowd_video: Path, yolox_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapetum", "run", str(crowd_video), "--model", str(yolox_path),
         "--out", str(out), "--threads", "1", "--realtime", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    tracks = out / "tracks.jsonl"
    try:
        wait_for(
            lambda: (
                proc.poll() is not None
                or (tracks.exists() and tracks.read_bytes().count(b"\n") >= 30)
            ),
            60,
            "the run to write 30 results",
        )
        assert proc.poll() is None, proc.communicate()
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "stopped by SIGTERM" in stderr
    summary = json.loads((out / "summary.json").read_text())
    (stream,) = summary["streams"]
    assert stream["frames_read"] == (
        stream["frames_processed"] + stream["frames_dropped"] + stream["frames_failed"]
    )
    assert stream["frames_failed"] == 0
    assert 30 <= stream["frames_processed"] < CROWD_FRAMES  # stopped early
    if signals == 1:
        assert stream["frames_dropped"] == 0  # the first SIGTERM drains what was queued
    sinks = summary["sinks"]
    assert sinks["failures"] == {}
    for name, written in sinks["written"].items():
        total = written + sinks["dropped"][name] + sinks["errors"][name]
        assert total == stream["frames_processed"], name
    assert len(jsonl_records(tracks)) == sinks["written"]["0-JsonlSink"]
    video = out / "crowd_720p.mp4"
    assert readable_frames(video) == sinks["written"]["1-AnnotatedVideoSink"]
    assert "frames in" in stdout


@pytest.mark.slow
def test_sigterm_with_a_stuck_sink_still_exits_with_the_counts(
    crowd_video: Path, yolox_path: Path, tmp_path: Path
) -> None:
    # tracks.jsonl is a named pipe that a reader opened and never reads: the JSONL sink
    # blocks in a write once the pipe is full, and the file run (which loses nothing, so
    # it waits for its sinks) stalls once the sink's queue is full too. SIGTERM's drain
    # then moves nothing: after 10 s it drops what is queued. Either way the stuck sink is
    # given up after 10 s without progress and the run exits.
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "tracks.jsonl")
    reader = os.open(out / "tracks.jsonl", os.O_RDONLY | os.O_NONBLOCK)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapetum", "run", str(crowd_video), "--model", str(yolox_path),
         "--out", str(out), "--threads", "1", "--no-video", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    try:

        def started() -> bool:  # the first byte of tracks reached the pipe
            with contextlib.suppress(BlockingIOError):
                return os.read(reader, 1) != b""
            return proc.poll() is not None

        wait_for(started, 120, "the run to write its first result")
        time.sleep(3)  # the pipe (64 KiB) fills within the first frames
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(reader)

    assert proc.returncode == 1, stderr  # an output is incomplete
    assert "Traceback" not in stderr
    assert "0-JsonlSink: " in stderr and "stuck in a write for over 10 s" in stderr
    summary = json.loads((out / "summary.json").read_text())
    (stream,) = summary["streams"]
    assert stream["frames_read"] == (
        stream["frames_processed"] + stream["frames_dropped"] + stream["frames_failed"]
    )
    assert stream["frames_processed"] < CROWD_FRAMES
    sinks = summary["sinks"]
    total = sinks["written"]["0-JsonlSink"] + sinks["dropped"]["0-JsonlSink"]
    assert total + sinks["errors"]["0-JsonlSink"] == stream["frames_processed"]
    assert sinks["errors"]["0-JsonlSink"] == 1
