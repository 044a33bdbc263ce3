"""``tapetum run`` as a user runs it: a subprocess on the real video and model, its outputs,
its one-line errors, and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from tests.helpers import CROWD_FRAMES, CROWD_HW, remux_to_mpegts

pytestmark = pytest.mark.integration


def tapetum(*args: str | Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def decoded_frames(path: Path) -> tuple[int, tuple[int, int]]:
    """Frame count and (height, width) of a video file, decoded with PyAV."""
    with av.open(str(path)) as container:
        count, hw = 0, (0, 0)
        for frame in container.decode(video=0):
            count, hw = count + 1, (frame.height, frame.width)
    return count, hw


def assert_summary_consistent(summary: dict[str, object]) -> None:
    streams = summary["streams"]
    assert isinstance(streams, list)
    for key in ("frames_read", "frames_processed", "frames_dropped", "frames_failed"):
        assert summary[key] == sum(s[key] for s in streams), key
    for s in streams:
        assert s["frames_read"] == s["frames_processed"] + s["frames_dropped"] + s["frames_failed"]


def test_run_writes_tracks_video_and_summary(
    crowd_video: Path, yolox_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = tapetum("run", crowd_video, "--model", yolox_path, "--out", out, "--threads", "2")

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "crowd_720p.mp4",
        "summary.json",
        "tracks.jsonl",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert_summary_consistent(summary)
    assert summary["frames_read"] == summary["frames_processed"] == CROWD_FRAMES
    assert summary["frames_dropped"] == summary["frames_failed"] == 0
    assert summary["streams"][0]["source_id"] == "crowd_720p"
    assert summary["streams"][0]["error"] is None
    assert summary["sinks"]["dropped"] == {"0-JsonlSink": 0, "1-AnnotatedVideoSink": 0}
    assert summary["latency_ms"]["end_to_end"]["count"] == CROWD_FRAMES
    assert summary["fps"] > 0

    lines = (out / "tracks.jsonl").read_text().splitlines()
    assert len(lines) == CROWD_FRAMES
    assert sum(len(json.loads(line)["tracks"]) for line in lines) > 1000  # ~16 people a frame

    count, (height, width) = decoded_frames(out / "crowd_720p.mp4")
    assert count == CROWD_FRAMES
    assert (height, width) == (CROWD_HW[0] - CROWD_HW[0] % 2, CROWD_HW[1] - CROWD_HW[1] % 2)
    assert f"{CROWD_FRAMES} frames in" in proc.stdout


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-video", r"cannot open source .*[/]no-such-video\.mp4: no such file"),
        ("bracketed-path", r"cannot open source .*/\[cam1\]/clip\.mp4: no such file"),
        ("missing-model", r"model file not found: .*missing\.onnx"),
        ("not-onnx", r"cannot load .*model\.onnx as an ONNX model"),
        ("imgsz", r"input size 640x640 does not match the model's fixed input 416x416"),
        ("tracker", r"unknown tracker 'foo'; known trackers: botsort, bytetrack, ocsort"),
        ("classes", r"unknown class 'unicorn'"),
        ("drop-policy", r"unknown drop policy 'sometimes'; use one of: block, drop_oldest"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    case: str,
    expected: str,
    crowd_video: Path,
    yolox_path: Path,
    tmp_path: Path,
) -> None:
    video, model, extra = crowd_video, yolox_path, []
    if case == "missing-video":
        video = tmp_path / "no-such-video.mp4"
    elif case == "bracketed-path":
        video = tmp_path / "[cam1]" / "clip.mp4"
    elif case == "missing-model":
        model = tmp_path / "missing.onnx"
    elif case == "not-onnx":
        model = tmp_path / "model.onnx"
        model.write_text("this is not a model\n")
    else:
        value = {"imgsz": "640", "tracker": "foo", "classes": "unicorn,person"}.get(
            case, "sometimes"
        )
        extra = [f"--{case}", value]
    out = tmp_path / "out"

    proc = tapetum("run", video, "--model", model, "--out", out, *extra)

    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert re.search(expected, lines[0]), lines[0]
    assert not out.exists()  # nothing half-written


def test_ctrl_c_drains_and_writes_the_summary(
    crowd_video: Path, yolox_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tapetum",
            "run",
            str(crowd_video),
            "--model",
            str(yolox_path),
            "--out",
            str(out),
            "--threads",
            "2",
            "--realtime",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        # Wait until frames flow: 40 lines of tracks on disk (1.6 s of video).
        tracks = out / "tracks.jsonl"
        deadline = time.monotonic() + 30.0
        while not (tracks.exists() and tracks.read_bytes().count(b"\n") >= 40):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the run never produced a result"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        stdout, stderr = proc.communicate(timeout=15.0)
        exit_s = time.monotonic() - interrupted
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert exit_s < 5.0  # a realtime run would have had 11 s of video left
    summary = json.loads((out / "summary.json").read_text())
    assert_summary_consistent(summary)
    assert 40 <= summary["frames_processed"] < CROWD_FRAMES
    assert summary["frames_dropped"] == 0  # the first Ctrl-C drains what was queued
    lines = (out / "tracks.jsonl").read_text().splitlines()
    assert len(lines) == summary["frames_processed"]
    count, _ = decoded_frames(out / "crowd_720p.mp4")  # closed properly: it decodes
    assert count == summary["frames_processed"]
    assert "frames in" in stdout


def test_two_cameras_share_global_ids_with_a_topology(
    crowd_video: Path, yolox_path: Path, assets: Path, tmp_path: Path
) -> None:
    # Two "cameras" watching the same 2-second clip: every person appears in both at once,
    # so the identity service must give their local tracks common global ids.
    clip = remux_to_mpegts(crowd_video, tmp_path / "clip.ts", max_s=2.0)
    cam_a, cam_b = tmp_path / "a" / "cam.ts", tmp_path / "b" / "cam.ts"
    for cam in (cam_a, cam_b):
        cam.parent.mkdir()
        cam.write_bytes(clip.read_bytes())
    topology = tmp_path / "site.yaml"
    topology.write_text(
        "cameras: [cam, cam-1]\n"
        "links:\n  - {source: cam, target: cam-1, min_s: 0, max_s: 5, bidirectional: true}\n"
    )
    out = tmp_path / "out"
    proc = tapetum(
        "run",
        cam_a,
        cam_b,
        "--model",
        yolox_path,
        "--out",
        out,
        "--no-video",
        "-q",
        "--reid",
        assets / "models" / "osnet_x0_25_msmt17.onnx",
        "--topology",
        topology,
        timeout=120.0,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    by_camera: dict[str, set[int]] = {"cam": set(), "cam-1": set()}
    for r in records:
        by_camera[r["source_id"]] |= {t["global_id"] for t in r["tracks"] if t["global_id"] >= 0}
    shared = by_camera["cam"] & by_camera["cam-1"]
    assert len(shared) >= 0.5 * min(len(by_camera["cam"]), len(by_camera["cam-1"])) > 0


def test_topology_needs_reid(crowd_video: Path, yolox_path: Path, tmp_path: Path) -> None:
    topology = tmp_path / "site.yaml"
    topology.write_text("cameras: [crowd_720p]\n")
    proc = tapetum("run", crowd_video, "--model", yolox_path, "--topology", topology)
    assert proc.returncode == 2 and "--topology needs --reid" in proc.stderr
