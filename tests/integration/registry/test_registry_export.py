"""``tapetum export --register``: an Ultralytics checkpoint (built here from a packaged
config, random weights) exported and registered in one command, with the export's
parameters as the version's lineage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

pytest.importorskip("mlflow")

from tapetum.cli.app import app
from tapetum.registry import ModelRef, ModelRegistry, sha256_file
from tests.integration.ultralytics_env import offline_ultralytics

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def ultralytics(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return offline_ultralytics(tmp_path_factory.mktemp("ultralytics-config"))


def test_export_register_records_the_export_as_the_versions_lineage(
    ultralytics: ModuleType, tmp_path: Path
) -> None:
    model = ultralytics.YOLO("yolo11n.yaml")  # a packaged config: nothing to download
    checkpoint = tmp_path / "yolo11n_random.pt"
    model.save(str(checkpoint))
    out, uri = tmp_path / "yolo11n.onnx", f"sqlite:///{tmp_path / 'reg.db'}"

    proc = subprocess.run(  # as a user runs it: the command line is recorded
        [sys.executable, "-m", "tapetum", "export", str(checkpoint), "-o", str(out),
         "--imgsz", "320", "--names", "coco80", "--register", "yolo11n", "--registry", uri],
        capture_output=True, text=True, timeout=600, check=False, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "registered yolo11n/1: yolov8 fp32 320x320, 80 classes" in proc.stdout

    info = ModelRegistry(uri).get_version(ModelRef("yolo11n", version=1))
    assert info.sha256 == sha256_file(out) and info.parent is None
    assert info.tags["tapetum.arch"].lower() == "yolo11n"
    assert info.tags["tapetum.exported_from"]  # the checkpoint it came from
    assert "--register yolo11n" in info.command and info.command.startswith("tapetum export")
    assert info.run_id is not None
    params = ModelRegistry(uri).run(info.run_id).params
    assert params["imgsz"] == "320" and params["names"] == "coco80"
    assert params["source"] == str(checkpoint)


def test_a_classifier_cannot_be_registered(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["export", "efficientnet_lite0", "-o", str(tmp_path / "c.onnx"), "--register", "c"]
    )
    assert result.exit_code != 0
    assert "the registry holds detectors, not classifiers" in str(result.exception)
