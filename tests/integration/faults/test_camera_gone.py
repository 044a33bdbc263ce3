"""The camera goes away for good. ``tapetum run`` tries the reconnect attempts it was given,
then gives the stream up: its results so far are on disk, whole, the summary counts add
up, and the run ends with one ``error:`` line and exit code 1, so that the service
manager running it knows (exit 0 would read as "done"). With ``--reconnect-attempts 0``
the source keeps trying for as long as it runs and picks the camera up when it is back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tapetum.errors import SourceError
from tapetum.sources import VideoSource
from tests.integration.faults.camera import Camera
from tests.integration.faults.conftest import CLIP_S, jsonl_records, wait_for
from tests.integration.serve_harness import free_port

pytestmark = pytest.mark.integration


def _quick_to_retry(camera: Camera, attempts: int | None) -> VideoSource:
    """A reader of ``camera`` that retries every 20-50 ms, ``attempts`` times in a row."""
    return VideoSource(
        camera.url,
        reconnect_initial_delay_s=0.02,
        reconnect_max_delay_s=0.05,
        reconnect_max_attempts=attempts,
        open_timeout_s=2.0,
        read_timeout_s=1.0,
    )


def test_a_camera_gone_for_good_ends_the_run_with_an_error_and_whole_files(
    camera_clip: Path, yolox_path: Path, tmp_path: Path
) -> None:
    camera = Camera(camera_clip, "tcp", free_port(), CLIP_S)
    camera.start()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapetum", "run", camera.url, "--model", str(yolox_path),
         "--out", str(out), "--threads", "1", "--no-video", "-q", "--reconnect-attempts", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    tracks = out / "tracks.jsonl"
    try:
        wait_for(
            lambda: (
                proc.poll() is not None
                or (tracks.exists() and tracks.read_bytes().count(b"\n") >= 20)
            ),
            60,
            "the run to write 20 results",
        )
        assert proc.poll() is None, proc.communicate()
        camera.kill()  # and it never comes back
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        camera.kill()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in (stdout + stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stdout + stderr
    assert "stream ended early" in errors[0]
    assert "gave up after 2 failed reconnect attempts" in errors[0]
    summary = json.loads((out / "summary.json").read_text())
    (stream,) = summary["streams"]
    assert "gave up" in stream["error"]
    assert stream["frames_read"] == (
        stream["frames_processed"] + stream["frames_dropped"] + stream["frames_failed"]
    )
    assert stream["frames_processed"] >= 20
    assert len(jsonl_records(tracks)) == summary["sinks"]["written"]["0-JsonlSink"]


def test_without_a_limit_the_source_keeps_trying_until_the_camera_is_back(
    camera_clip: Path,
) -> None:
    camera = Camera(camera_clip, "tcp", free_port(), CLIP_S)
    camera.start()
    source = _quick_to_retry(camera, attempts=None)
    stop = threading.Event()
    frames: list[int] = []
    failure: list[BaseException] = []

    def read() -> None:
        try:
            frames.extend(f.index for f in source.frames(stop))
        except BaseException as exc:
            failure.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_for(lambda: source.stats.frames_decoded >= 10, 60, "frames from the camera")
        camera.kill()
        # Far more failed attempts in a row than the default limit of 10.
        wait_for(lambda: source.stats.errors >= 30, 60, "30 failed reconnect attempts")
        assert reader.is_alive() and not failure
        decoded = source.stats.frames_decoded
        camera.start()
        wait_for(lambda: source.stats.frames_decoded >= decoded + 10, 60, "frames once back")
    finally:
        stop.set()
        reader.join(30)
        camera.kill()

    assert not reader.is_alive()
    assert not failure, failure  # stopped, not given up
    assert source.stats.reconnects == 1
    assert frames == sorted(set(frames))


def test_a_limit_of_attempts_gives_the_stream_up_with_a_reason(camera_clip: Path) -> None:
    camera = Camera(camera_clip, "tcp", free_port(), CLIP_S)
    camera.start()
    source = _quick_to_retry(camera, attempts=3)
    frames = 0
    started = time.monotonic()
    try:
        with pytest.raises(SourceError, match="gave up after 3 failed reconnect attempts"):
            for _ in source.frames(threading.Event()):
                frames += 1
                if frames == 10:
                    camera.kill()
    finally:
        camera.kill()
    assert frames >= 10
    assert time.monotonic() - started < 30
