"""``export_model`` refuses bad requests before importing torch, and never downloads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tapetum.cli.export import _read_names
from tapetum.detect.classes import COCO80
from tapetum.detect.export import export_model
from tapetum.errors import ConfigError, MissingDependencyError, ModelLoadError


def test_output_must_be_onnx(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must end in \.onnx"):
        export_model("yolo11n.yaml", tmp_path / "model.pt")


def test_input_size_must_be_a_multiple_of_32(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multiple of 32"):
        export_model("yolo11n.yaml", tmp_path / "m.onnx", imgsz=100)


def test_a_missing_checkpoint_is_not_downloaded(tmp_path: Path) -> None:
    # "yolov8n.pt" is a name Ultralytics would fetch from the internet
    with pytest.raises(ModelLoadError, match="does not download weights: pass the path"):
        export_model("yolov8n.pt", tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="checkpoint not found"):
        export_model("tf_efficientdet_d0", tmp_path / "m.onnx", weights=tmp_path / "no.pth")


def test_unknown_sources_and_arches_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot export 'resnet50'"):
        export_model("resnet50", tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="unknown arch"):
        export_model("yolo11n.yaml", tmp_path / "m.onnx", arch="mobilenet")


def test_missing_torch_names_the_export_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'tapetum\[export\]'"):
        export_model("yolo11n.yaml", tmp_path / "m.onnx")


def test_class_names_option(tmp_path: Path) -> None:
    assert _read_names("coco80") == COCO80
    names = tmp_path / "names.txt"
    names.write_text("cat\n\ndog\n")
    assert _read_names(str(names)) == ("cat", "dog")
    with pytest.raises(ConfigError, match="neither coco80"):
        _read_names(str(tmp_path / "nope.txt"))
