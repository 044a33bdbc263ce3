"""``tapetum optimize`` as a user runs it: a subprocess on the real model, its table and
JSON, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def tapetum(*args: str | Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"},
    )


def test_fp16_with_data_reports_size_speed_and_map(
    yolox_path: Path, assets: Path, tmp_path: Path
) -> None:
    out, report = tmp_path / "fp16.onnx", tmp_path / "report.json"
    proc = tapetum(
        "optimize", yolox_path, "--precision", "fp16", "-o", out, "--runs", "10",
        "--data", assets / "coco128", "--split", "val2017", "--json", report,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    summary = json.loads(report.read_text())
    src, res, change = summary["source"], summary["result"], summary["change"]
    assert res["size_mb"] < 0.6 * src["size_mb"]
    assert src["fps"] > 0 and res["p99_ms"] >= res["p50_ms"] > 0
    assert src["map_50_95"] == pytest.approx(0.338, abs=0.005)
    assert abs(change["map_50_95_points"]) < 0.5  # FP16 costs no accuracy
    for label in ("size (MB)", "p50 batch 1 (ms)", "FPS batch 1", "mAP@[.5:.95]", "mAP@.5"):
        assert label in proc.stdout


def test_int8_from_a_video_and_a_folder(yolox_path: Path, assets: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "int8.onnx", tmp_path / "int8.json"
    proc = tapetum(
        "optimize", yolox_path, "--precision", "int8", "-o", out, "--runs", "5",
        "--calib", assets / "video" / "crowd_720p.avi",
        "--calib", assets / "coco128" / "images" / "train2017",
        "--calib-frames", "8", "--json", report,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(report.read_text())
    assert summary["conversion"]["calibration_images"] == 8
    assert summary["conversion"]["format"] == "QDQ"
    assert summary["result"]["size_mb"] < 0.5 * summary["source"]["size_mb"]
    assert "map_50_95" not in summary["source"]  # no --data, no accuracy
    assert "wrote" in proc.stdout


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-model", "model file not found"),
        ("bad-precision", "unknown --precision 'int4'"),
        ("empty-calib", "holds no images"),
        ("int8-without-calib", "needs --calib"),
        ("missing-data", "no such file or folder"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    case: str, expected: str, yolox_path: Path, tmp_path: Path
) -> None:
    model, precision = yolox_path, "int8"
    calib: list[str | Path] = ["--calib", tmp_path / "empty"]
    (tmp_path / "empty").mkdir()
    extra: list[str | Path] = []
    if case == "missing-model":
        model = tmp_path / "missing.onnx"
    elif case == "bad-precision":
        precision = "int4"
    elif case == "int8-without-calib":
        calib = []
    elif case == "missing-data":
        precision, calib = "fp16", []
        extra = ["--data", tmp_path / "no-dataset"]
    proc = tapetum(
        "optimize", model, "--precision", precision, "-o", tmp_path / "out.onnx", *calib, *extra
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert not (tmp_path / "out.onnx").exists()
