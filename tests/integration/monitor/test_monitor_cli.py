"""``tapetum drift`` and ``tapetum run``'s monitoring options as a user runs them: real
video and model, the profile file, the comparison table, drift events, one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def tapetum(
    *args: str | Path, cwd: Path, timeout: float = 600.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "160"},
    )


@pytest.fixture(scope="module")
def crowd_profile(
    crowd_video: Path, yolox_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    work = tmp_path_factory.mktemp("drift")
    out = work / "crowd.json"
    done = tapetum("drift", "profile", crowd_video, "-o", out, "--model", yolox_path, cwd=work)
    assert done.returncode == 0, done.stderr
    assert "written to" in done.stdout and "brightness" in done.stdout
    return out


def test_a_profile_holds_calibrated_image_and_model_signals(crowd_profile: Path) -> None:
    data = json.loads(crowd_profile.read_text())
    assert data["format"] == "tapetum-drift-profile" and data["frames"] == 341
    scored = {s["name"] for s in data["signals"] if s["threshold"] is not None}
    assert {"brightness", "sharpness", "scene", "confidence", "box_size"} <= scored
    # 14 s of video cannot calibrate 30 s tracking windows: kept, not scored, and said why
    births = next(s for s in data["signals"] if s["name"] == "births")
    assert births["threshold"] is None and "calibration needs" in births["note"]


def test_compare_finds_no_drift_on_the_same_camera(
    crowd_profile: Path, crowd_video: Path, yolox_path: Path, tmp_path: Path
) -> None:
    done = tapetum(
        "drift", "compare", crowd_profile, crowd_video, "--model", yolox_path,
        "--fail-on-drift", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no drift" in done.stdout


def test_compare_finds_another_scene_and_writes_events(
    crowd_profile: Path, assets: Path, tmp_path: Path
) -> None:
    other = assets / "video" / "epfl_campus4" / "campus4-c0.mp4"
    events = tmp_path / "events.jsonl"
    done = tapetum(
        "drift", "compare", crowd_profile, other, "--frames", "200", "--events", events,
        "--fail-on-drift", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "image signals only" in done.stdout
    signals = {json.loads(line)["signal"] for line in events.read_text().splitlines()}
    assert {"brightness", "scene"} <= signals


def test_a_profile_from_a_folder_of_images_a_data_set(assets: Path, tmp_path: Path) -> None:
    images = assets / "coco128" / "images" / "val2017"
    ref = tmp_path / "coco.json"
    done = tapetum("drift", "profile", images, "-o", ref, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(ref.read_text())
    assert data["frames"] == 128
    assert {s["name"] for s in data["signals"]} == {
        "brightness", "contrast", "sharpness", "colour_rg", "colour_bg", "scene",
    }  # fmt: skip
    video = assets / "video" / "crowd_720p.avi"
    compared = tapetum("drift", "compare", ref, video, "--frames", "150", cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    # a top-down hall is not a COCO photo: its layout (the scene thumbnail) gives it away
    assert re.search(r"drift in \d+ signals?: .*scene", compared.stdout), compared.stdout


def test_run_with_drift_writes_events_and_serves_nothing_without_a_port(
    crowd_profile: Path, crowd_video: Path, yolox_path: Path, tmp_path: Path
) -> None:
    events = tmp_path / "drift.jsonl"
    done = tapetum(
        "run", crowd_video, "--model", yolox_path, "--no-video", "-q", "--out", tmp_path / "o",
        "--drift-ref", crowd_profile, "--drift-events", events, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "metrics:" not in done.stderr
    assert not events.exists() or events.read_text() == ""  # the camera it was built on


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["drift", "compare", "none.json", "x.mp4"], "drift profile none.json does not exist"),
        (["drift", "profile", "x.mp4", "-o", "p.json"], "no such file or directory"),
        (["drift", "profile", "x.mp4", "-o", "p.json", "--frames", "0"], "frames must be ≥ 1"),
        (["run", "a.mp4", "-m", "m.onnx", "--drift-events", "e.jsonl"], "--drift-events needs"),
        (["run", "a.mp4", "-m", "m.onnx", "--metrics-port", "70000"], "0-65535"),
    ],
)
def test_monitoring_user_errors_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    done = tapetum(*args, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_taken_metrics_port_is_one_error_line(
    crowd_video: Path, yolox_path: Path, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = tapetum(
            "run", crowd_video, "--model", yolox_path, "--no-video", "-q",
            "--out", tmp_path / "o", "--metrics-port", port, cwd=tmp_path, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}: the port is taken" in done.stderr
