"""The learned forecaster end to end: trained on a real MOT17 sequence by ``tapetum train
forecast``, scored by ``tapetum eval forecast``, run by ``tapetum run --forecast 1,2
--forecaster`` on real video, and refused with one clear line when it cannot serve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import remux_to_mpegts

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN_SEQUENCE = "MOT17-09-FRCNN"


def tapetum(*args: str | Path, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_model(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small forecaster trained for two epochs on one sequence (tens of seconds)."""
    out = tmp_path_factory.mktemp("forecaster") / "tiny.onnx"
    proc = tapetum(
        "train",
        "forecast",
        "--data",
        assets / "mot" / "MOT17" / "train" / TRAIN_SEQUENCE,
        "--out",
        out,
        "--epochs",
        "2",
        "--hidden",
        "32",
    )
    assert proc.returncode == 0, proc.stderr
    assert "covariance scale per 0.1 s step" in proc.stdout
    return out


def test_trained_file_carries_its_contract_and_runs_without_torch(tiny_model: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from tapetum.track.forecast_model import LearnedForecaster, load_forecast_model\n"
        f"m = load_forecast_model({str(tiny_model)!r})\n"
        "fc = LearnedForecaster(m)\n"
        "for i in range(15):\n"
        "    fc.update([1, 2], [[100 + 5 * i, 50], [400, 80 - 2 * i]], i / 30, [90, 120])\n"
        "out = fc.predict([1, 2], [1.0, 2.0])\n"
        "assert out.valid.all() and np.isfinite(out.mean_px).all()\n"
        "assert 'torch' not in sys.modules\n"
        "print(m.spec.to_json())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    spec = json.loads(proc.stdout)
    assert spec["task"] == "forecast"
    assert spec["horizon_steps"] * spec["dt_s"] == pytest.approx(2.0)
    assert spec["info"]["trained_on"] == [TRAIN_SEQUENCE]
    assert spec["min_frame_rate_fps"] == 10.0  # trained at 30 fps; the 0.1 s grid allows 10
    assert len(spec["covariance_scale"]) == spec["horizon_steps"]
    assert all(0.1 < s < 10 for s in spec["covariance_scale"])
    # the default recipe: a second network that reads the neighbour context
    assert spec["members"] == 2 and spec["context"]


def test_run_forecasts_every_track_with_the_model_or_counted_fallback(
    tiny_model: Path, crowd_video: Path, yolox_path: Path, tmp_path: Path
) -> None:
    clip = remux_to_mpegts(crowd_video, tmp_path / "clip.ts", max_s=2.0)
    out = tmp_path / "out"
    proc = tapetum(
        "run", clip, "--model", yolox_path, "--out", out, "--no-video", "--threads", "2",
        "--forecast", "1,2", "--forecaster", tiny_model,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    frames = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    tracks = [t for f in frames for t in f["tracks"] if t["track_id"] >= 0]
    assert len(tracks) > 500  # ~16 people a frame for 2 s
    forecasts = np.array([t["forecast_xy"] for t in tracks], dtype=np.float64)
    assert forecasts.shape[1] == 4 and np.isfinite(forecasts).all()
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["forecast"]
    # every tracked row was forecast once: by the model, or by constant velocity while young
    assert counts["model"] + counts["fallback_short_history"] == len(tracks)
    assert counts["model"] > counts["fallback_short_history"] > 0
    assert counts["beyond_horizon"] == 0
    assert 0 <= counts["leaning_cv"] <= counts["model"]
    assert f"forecasts: {counts['model']} by the model" in proc.stdout


def test_eval_scores_the_file_and_warns_it_saw_the_sequence(
    tiny_model: Path, assets: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    proc = tapetum(
        "eval", "forecast", "--data", assets / "mot" / "MOT17" / "train" / TRAIN_SEQUENCE,
        "--forecaster", tiny_model, "--track-stride", "4", "--json", report,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"trained on {TRAIN_SEQUENCE}" in proc.stderr
    scores = json.loads(report.read_text())["scores"]
    for name in ("cv", "ca", "file"):
        one = scores[name]["COMBINED"]["1"]
        assert one["samples"] > 100
        assert 0 < one["coverage_1sigma"] <= one["coverage_2sigma"] <= 1
        assert np.isfinite(one["nll"]) and 0 <= one["miss_rate"] <= 1
    assert scores["file"]["COMBINED"]["1"]["samples"] == scores["cv"]["COMBINED"]["1"]["samples"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--forecast", "1,3"), r"forecasts at most 2 s ahead; asked for 3 s"),
        (("--forecaster", "{yolox}", "--forecast", "1"), r"not a forecaster written by"),
        (("--forecaster", "{model}"), r"--forecaster needs --forecast"),
    ],
)
def test_unusable_forecaster_requests_are_one_line_errors(  # noqa: PLR0917 - fixtures
    tiny_model: Path,
    crowd_video: Path,
    yolox_path: Path,
    tmp_path: Path,
    extra: tuple[str, ...],
    expected: str,
) -> None:
    args = [a.format(yolox=yolox_path, model=tiny_model) for a in extra]
    if "--forecaster" not in args:
        args += ["--forecaster", str(tiny_model)]
    proc = tapetum("run", crowd_video, "--model", yolox_path, "--out", tmp_path, *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert __import__("re").search(expected, lines[0]), lines[0]
