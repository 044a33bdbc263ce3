"""The model registry cannot be reached: an MLflow tracking URI pointing at a loopback port
nobody listens on.

- At start-up, ``tapetum serve`` and ``tapetum run`` with ``models:/NAME@champion`` end
  with one ``error:`` line naming the server and the reason, exit 2, no traceback.
- While running, a pipeline following the alias keeps the model it has: every alias check
  fails, is logged and counted, no swap happens, and every frame is processed (a real
  pipeline on the crowd clip paced like a camera, checks every 0.2 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from tapetum.detect import OnnxDetector
from tapetum.pipeline import Pipeline, PipelineConfig
from tapetum.registry import AliasWatcher, ResolvedModel
from tapetum.sources import open_source
from tests.integration.faults.conftest import MODEL_NAME, sha256_of
from tests.integration.serve_harness import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def closed_registry() -> str:
    """An MLflow server URI whose port nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("command", ["serve", "run"])
def test_an_unreachable_registry_at_start_up_is_one_error_line_and_exit_2(
    command: str, closed_registry: str, tmp_path: Path
) -> None:
    args = ["--port", str(free_port()), "--no-auth"] if command == "serve" else ["x.mp4"]
    proc = subprocess.run(
        [sys.executable, "-m", "tapetum", command, *args,
         "--model", f"models:/{MODEL_NAME}@champion", "--registry", closed_registry],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env={**os.environ, "TAPETUM_MODEL_CACHE": str(tmp_path / "cache"), "COLUMNS": "250"},
    )  # fmt: skip

    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert f"cannot reach the MLflow server at {closed_registry}" in lines[0]
    assert "Connection refused" in lines[0]


def test_a_running_pipeline_keeps_its_model_while_the_registry_is_unreachable(
    closed_registry: str,
    detector: OnnxDetector,
    yolox_path: Path,
    camera_clip: Path,
    tmp_path: Path,
) -> None:
    loaded = ResolvedModel(
        yolox_path, MODEL_NAME, 1, sha256_of(yolox_path), "champion", closed_registry
    )
    swaps: list[ResolvedModel] = []
    pipe = Pipeline(
        [open_source(str(camera_clip), realtime=True)],
        detector,
        config=PipelineConfig(inference_workers=1),
    )
    watcher = AliasWatcher(
        f"{MODEL_NAME}@champion",
        swaps.append,
        poll_s=0.2,
        registry=closed_registry,
        cache_dir=tmp_path / "cache",
        current=loaded,
    )
    pipe.start()
    watcher.start()
    try:
        finished = pipe.join(120)
    finally:
        watcher.stop()
    assert finished

    assert swaps == [] and watcher.swaps == []
    assert watcher.current is loaded
    # A check every 0.2 s over a 4 s clip, each one failing fast (connection refused).
    assert watcher.checks >= 5
    assert watcher.errors == watcher.checks
    assert watcher.last_error is not None
    assert f"cannot reach the MLflow server at {closed_registry}" in watcher.last_error
    stats = pipe.stats()
    (stream,) = stats.streams
    assert stats.detector_swaps == 0
    assert stream.frames_read == stream.frames_processed > 0
    assert stream.frames_dropped == stream.frames_failed == 0
