"""A running pipeline follows ``models:/NAME@champion``: when the alias moves, the new
version is loaded, warmed and swapped in while frames keep flowing. Real model (YOLOX-nano
and its FP16 copy), the crowd video paced like a camera, a real SQLite MLflow store.

Through the API: no frame lost or failed, track ids carry across the swap. Through the
CLI: ``tapetum run --realtime`` checks the alias on SIGHUP and records the swap in
``summary.json``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from tapetum.core.result import FrameResult
from tapetum.detect import DetectorConfig, OnnxDetector, RuntimeOptions, load_detector
from tapetum.detect.quantize import convert_fp16
from tapetum.pipeline import Pipeline, PipelineConfig
from tapetum.registry import AliasWatcher, ModelRegistry, ResolvedModel, resolve_model_uri
from tapetum.sinks import CallbackSink
from tapetum.sources import open_source
from tests.helpers import remux_to_mpegts

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

NAME = "crowd-detector"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, yolox_path: Path) -> ModelRegistry:
    root = tmp_path_factory.mktemp("follow")
    fp16 = root / "yolox_nano_fp16.onnx"
    convert_fp16(yolox_path, fp16)
    reg = ModelRegistry(f"sqlite:///{root / 'reg.db'}", artifacts=root / "artifacts")
    v1 = reg.register(yolox_path, NAME)
    reg.register(fp16, NAME, parent=v1.ref)
    return reg


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, crowd_video: Path) -> Path:
    return remux_to_mpegts(crowd_video, tmp_path_factory.mktemp("clip") / "crowd.ts", max_s=8.0)


def _detector(path: Path) -> OnnxDetector:
    return load_detector(
        path, config=DetectorConfig(conf_threshold=0.1), runtime=RuntimeOptions(workers=1)
    )


def test_a_promotion_swaps_the_model_of_a_running_pipeline_without_losing_frames_or_ids(
    registry: ModelRegistry, clip: Path, tmp_path: Path
) -> None:
    registry.promote(NAME, 1, reason="start")
    first = resolve_model_uri(f"models:/{NAME}@champion", registry=registry, cache_dir=tmp_path)
    assert first.version == 1
    results: dict[int, FrameResult] = {}
    lock = threading.Lock()

    def keep(result: FrameResult) -> None:
        with lock:
            results[result.frame.index] = result

    pipe = Pipeline(
        [open_source(str(clip), realtime=True)],
        _detector(first.path),
        sinks=[CallbackSink(keep)],
        config=PipelineConfig(inference_workers=1),
    )
    swapped_at: list[int] = []

    def swap(new: ResolvedModel) -> None:
        detector = _detector(new.path)
        pipe.swap_detector(detector)
        swapped_at.append(pipe.stats().frames_read)

    watcher = AliasWatcher(
        f"{NAME}@champion", swap, poll_s=0.2, registry=registry, cache_dir=tmp_path,
        current=first,
    )  # fmt: skip
    pipe.start()
    watcher.start()
    deadline = time.monotonic() + 60
    while pipe.stats().frames_processed < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    registry.promote(NAME, 2, reason="FP16")
    assert pipe.join(timeout=120)
    watcher.stop()

    stats = pipe.stats()
    assert stats.detector_swaps == 1 and [s.current.version for s in watcher.swaps] == [2]
    (stream,) = stats.streams
    assert stream.frames_failed == 0 and stream.frames_dropped == 0
    assert stream.frames_read == stream.frames_processed == len(results) > 150
    # Objects tracked just before the swap are still tracked after it, under the same ids
    # and near the same place (a reset tracker would reuse small ids for other people).
    k = swapped_at[0]
    assert 60 <= k < stream.frames_read - 30

    def centres(i: int) -> dict[int, tuple[float, float]]:
        d = results[i].detections
        return {
            int(t): (float(b[0] + b[2]) / 2, float(b[1] + b[3]) / 2)
            for t, b in zip(d.tracker_id, d.xyxy, strict=True)
        }

    before, after = centres(k - 1), centres(k + 10)
    same = [
        t for t, (x, y) in before.items()
        if t in after and abs(after[t][0] - x) + abs(after[t][1] - y) < 80
    ]  # fmt: skip
    assert len(before) >= 5
    assert len(same) >= 0.6 * len(before), (before, after)


def test_tapetum_run_checks_the_alias_on_sighup_and_records_the_swap(
    registry: ModelRegistry, clip: Path, tmp_path: Path
) -> None:
    registry.promote(NAME, 1, reason="start")
    out = tmp_path / "run"
    env = {**os.environ, "TAPETUM_MODEL_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapetum", "run", str(clip), "--realtime", "--no-video", "-q",
         "--model", f"models:/{NAME}@champion", "--registry", registry.uri,
         "--model-poll", "3600", "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        tracks = out / "tracks.jsonl"  # flushed every 50 frames: the run is under way
        while not (tracks.exists() and tracks.stat().st_size > 0):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        registry.promote(NAME, 2, reason="FP16")
        proc.send_signal(signal.SIGHUP)  # poll is an hour: only the signal can swap it
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert f"model models:/{NAME}@champion → {NAME}/1 (@champion" in stderr
    assert f"model swap: {NAME}/1 (@champion" in stderr and f"→ {NAME}/2 (@champion" in stderr
    summary = json.loads((out / "summary.json").read_text())
    model = summary["model"]
    assert model["resolved"] == f"models:/{NAME}/1" and model["final"] == f"models:/{NAME}/2"
    assert [s["trigger"] for s in model["swaps"]] == ["manual"]
    assert summary["detector_swaps"] == 1
    assert summary["frames_failed"] == 0
    assert summary["frames_read"] == summary["frames_processed"] + summary["frames_dropped"]


def test_the_follow_example_runs_as_its_readme_says(clip: Path, yolox_path: Path) -> None:
    script = Path(__file__).resolve().parents[3] / "examples" / "registry_follow"
    proc = subprocess.run(
        [sys.executable, str(script / "follow_champion.py"), str(clip), "--model",
         str(yolox_path), "--promote-after", "40"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "swapped to crowd-detector" not in proc.stdout  # its own registry, its own name
    assert "swapped to people-detector/2 (@champion" in proc.stdout
    assert ", 0 dropped, 0 failed; detector swaps: 1" in proc.stdout
    kept, total = (
        int(n) for n in proc.stdout.split("tracks kept across the swap: ")[1].split(" of ")
    )
    assert total >= 5 and kept >= 0.6 * total
