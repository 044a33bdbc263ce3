"""Outputs that cannot be finished: ``tapetum run`` writing to a disk that fills up (a
1 MB tmpfs) or past a file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored, as a quota would
act). The documented policy: the run carries on to the end of its input, each result a
sink could not write is counted in the summary, and the command ends with one ``error:``
line naming the sink and the reason, exit code 1. What is on disk stays usable: every
JSONL line parses, the annotated MP4 decodes to its last whole fragment."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import remux_to_mpegts
from tests.integration.faults.conftest import jsonl_records, readable_frames

pytestmark = pytest.mark.integration

CLIP_S = 4.0


@pytest.fixture(scope="module")
def clip(crowd_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return remux_to_mpegts(crowd_video, tmp_path_factory.mktemp("clip") / "clip.ts", CLIP_S)


def _run(
    clip: Path, model: Path, out: Path, *extra: str, file_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    def limit() -> None:  # in the child, before exec: the limit and the ignored signal stay
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run(
        [sys.executable, "-m", "tapetum", "run", str(clip), "--model", str(model),
         "--out", str(out), "--threads", "1", "-q", *extra],
        capture_output=True, text=True, timeout=120, check=False, preexec_fn=limit,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "250"},
    )  # fmt: skip


def _assert_counts_add_up(summary: dict[str, object]) -> dict[str, dict[str, int]]:
    """Every frame processed, dropped or failed; every result per sink written, dropped or
    failed. Returns the per-sink counts."""
    streams = summary["streams"]
    assert isinstance(streams, list) and len(streams) == 1
    (stream,) = streams
    assert stream["frames_read"] == (
        stream["frames_processed"] + stream["frames_dropped"] + stream["frames_failed"]
    )
    assert stream["frames_failed"] == 0 and stream["frames_processed"] > 0
    sinks = summary["sinks"]
    assert isinstance(sinks, dict)
    for name, written in sinks["written"].items():
        total = written + sinks["dropped"][name] + sinks["errors"][name]
        assert total == stream["frames_processed"], name
    return sinks


def _assert_video_usable(video: Path, written: int) -> int:
    """The MP4 decodes from start to end; returns its frames (at most those written:
    the frames of a fragment cut short by the failure are lost)."""
    frames = readable_frames(video)
    assert 0 < frames <= written
    return frames


@pytest.mark.parametrize(
    ("video", "file_limit"),
    [
        pytest.param(True, 600_000, id="video-past-600kB"),
        pytest.param(False, 100_000, id="jsonl-past-100kB"),
    ],
)
def test_a_file_size_limit_fails_the_sink_not_the_run(
    video: bool, file_limit: int, clip: Path, yolox_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = _run(clip, yolox_path, out, *([] if video else ["--no-video"]), file_limit=file_limit)

    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    failed_sink = "1-AnnotatedVideoSink" if video else "0-JsonlSink"
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, proc.stderr
    assert f"outputs incomplete: {failed_sink}: " in error_lines[0]
    assert "File too large" in error_lines[0]
    summary = json.loads((out / "summary.json").read_text())
    sinks = _assert_counts_add_up(summary)
    assert sinks["errors"][failed_sink] > 0
    assert "File too large" in sinks["failures"][failed_sink]
    assert set(sinks["failures"]) == {failed_sink}
    records = jsonl_records(out / "tracks.jsonl")
    assert len(records) == sinks["written"]["0-JsonlSink"]
    if video:
        assert sinks["errors"]["0-JsonlSink"] == 0
        _assert_video_usable(out / "clip.mp4", sinks["written"][failed_sink])


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs mounted for the test (root and CAP_SYS_ADMIN needed, else skipped)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or 'mount failed'}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_the_sinks_not_the_run(
    small_disk: Path, clip: Path, yolox_path: Path
) -> None:
    out = small_disk / "out"
    proc = _run(clip, yolox_path, out)

    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, proc.stderr
    assert "outputs incomplete: " in error_lines[0]
    assert "No space left on device" in error_lines[0]
    # The summary is on disk if it fitted, else the last line of stdout.
    summary_file = out / "summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
    else:
        assert "summary.json: No space left on device (printed on stdout" in error_lines[0]
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    sinks = _assert_counts_add_up(summary)
    assert sinks["errors"]["1-AnnotatedVideoSink"] > 0
    records = jsonl_records(out / "tracks.jsonl")
    assert len(records) == sinks["written"]["0-JsonlSink"]
    _assert_video_usable(out / "clip.mp4", sinks["written"]["1-AnnotatedVideoSink"])
