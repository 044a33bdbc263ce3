"""``tapetum export`` on models built here from the libraries' configs, with random weights
spread out so boxes and scores differ (default initialisation gives every anchor the same
score). Each exported file must load with no ``--arch`` and give the library's own
predictor's detections on the same image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from tapetum.cli.app import app
from tapetum.detect import DetectorConfig, RuntimeOptions, load_detector
from tapetum.detect.classes import COCO80, COCO90
from tapetum.detect.letterbox import LetterboxTransform
from tapetum.detect.spec import ChannelOrder, ResizeMode
from tests.integration.ultralytics_env import offline_ultralytics

pytestmark = pytest.mark.integration

TWO_THREADS = RuntimeOptions(intra_op_threads=2, workers=1)


@pytest.fixture(scope="module")
def ultralytics(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return offline_ultralytics(tmp_path_factory.mktemp("ultralytics-config"))


@pytest.fixture(scope="module")
def images(assets: Path) -> dict[str, np.ndarray]:
    return {n: cv2.imread(str(assets / "images" / f"{n}.jpg")) for n in ("bus", "zidane")}


def spread_weights(model: Any, head_bias: dict[int, float], gain: float = 1.0) -> None:
    """Random weights that keep signal through the network: conv weights N(0, gain²/fan_in),
    random BN statistics, and the class heads (convs or linear layers with one of
    ``head_bias``'s output widths) given biases around the mean there (below zero, so
    scores spread under 0.5)."""
    import torch

    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.weight.requires_grad:
            fan_in = module.weight[0].numel()
            torch.nn.init.normal_(module.weight, 0.0, gain / fan_in**0.5)
            if module.bias is not None and module.out_channels in head_bias:
                torch.nn.init.normal_(module.bias, head_bias[module.out_channels], 0.5)
        elif isinstance(module, torch.nn.Linear) and module.out_features in head_bias:
            module.reset_parameters()  # RT-DETR's score heads start out constant
            torch.nn.init.normal_(module.bias, head_bias[module.out_features], 1.0)
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 2.0)


def cli_export(*args: str | Path) -> str:
    result = CliRunner().invoke(app, ["export", *map(str, args)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


def threshold_between(scores: np.ndarray, rank: int) -> float:
    """A threshold halfway between the ``rank``-th and next best score (no ties at it)."""
    best = np.sort(scores)[::-1]
    return float((best[rank] + best[rank + 1]) / 2)


def assert_same_detections(ours: Any, boxes: Any, min_boxes: int) -> None:
    """Our detections equal an Ultralytics ``Boxes``: count, order, classes, 1 px boxes."""
    assert len(ours) == len(boxes) >= min_boxes
    np.testing.assert_array_equal(ours.class_id, boxes.cls.numpy().astype(int))
    np.testing.assert_allclose(ours.xyxy, boxes.xyxy.numpy(), atol=1.0)
    np.testing.assert_allclose(ours.confidence, boxes.conf.numpy(), atol=1e-4)


@pytest.mark.parametrize(
    ("name", "imgsz", "names"),
    [("yolov8n", None, None), ("yolo11n", 320, "coco80"), ("yolov5nu", None, None)],
)
def test_ultralytics_export_matches_ultralytics_predictor(  # noqa: PLR0917 - fixtures
    name: str,
    imgsz: int | None,
    names: str | None,
    ultralytics: ModuleType,
    images: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch").manual_seed(0)
    model = ultralytics.YOLO(f"{name}.yaml")  # a packaged config: nothing to download
    spread_weights(model.model, {80: -2.0}, gain=1.5)
    checkpoint = tmp_path / f"{name}_random.pt"
    model.save(str(checkpoint))
    out = tmp_path / f"{name}.onnx"
    extra = [*(("--imgsz", str(imgsz)) if imgsz else ()), *(("--names", names) if names else ())]
    printed = cli_export(checkpoint, "-o", out, *extra)
    assert f"wrote {out}" in printed and "yolov8" in printed

    det = load_detector(out, runtime=TWO_THREADS)  # no arch: the metadata says
    side = imgsz or 640
    assert det.meta.family == "yolov8" and det.input_hw == (side, side)
    assert det.meta.arch.lower() == name and "ultralytics" in det.meta.version
    assert det.class_names == (COCO80 if names else tuple(str(i) for i in range(80)))
    assert det.letterbox.centered and det.letterbox.rgb and det.max_batch > 1

    reference = ultralytics.YOLO(str(out), task="detect")
    for image in images.values():
        raw = det.infer(det.preprocess(image)[0][None])[0]
        conf = threshold_between(raw[4:].max(axis=0), rank=200)
        det.config = DetectorConfig(conf_threshold=conf, nms_iou=0.7)
        # rect=False: the fixed-size letterbox Tapetum batches with (Ultralytics' predict
        # would otherwise pad a dynamic-size model only up to a stride multiple)
        theirs = reference.predict(image, conf=conf, iou=0.7, imgsz=side, rect=False)
        assert_same_detections(det([image])[0], theirs[0].boxes, min_boxes=10)
    batched = det(list(images.values()))
    for image, found in zip(images.values(), batched, strict=True):
        np.testing.assert_allclose(found.xyxy, det([image])[0].xyxy, atol=1e-2)


@pytest.mark.slow
def test_rtdetr_export_matches_ultralytics_predictor(
    ultralytics: ModuleType, images: dict[str, np.ndarray], tmp_path: Path
) -> None:
    pytest.importorskip("torch").manual_seed(0)
    model = ultralytics.RTDETR("rtdetr-l.yaml")
    spread_weights(model.model, {80: -2.0})
    checkpoint = tmp_path / "rtdetr-l_random.pt"
    model.save(str(checkpoint))
    out = tmp_path / "rtdetr.onnx"
    cli_export(checkpoint, "-o", out, "--arch", "rtdetr")

    det = load_detector(out, runtime=TWO_THREADS)
    assert det.meta.family == "rtdetr" and det.input_hw == (640, 640)
    assert det.meta.preprocess.resize is ResizeMode.STRETCH and not det.family.needs_nms

    reference = ultralytics.RTDETR(str(out))
    for image in images.values():
        raw = det.infer(det.preprocess(image)[0][None])[0]
        conf = threshold_between(raw[:, 4], rank=100)
        det.config = DetectorConfig(conf_threshold=conf)
        theirs = reference.predict(image, conf=conf, imgsz=640, rect=False, verbose=False)
        boxes = theirs[0].boxes
        order = np.argsort(-boxes.conf.numpy(), kind="stable")
        ours = det([image])[0]
        assert len(ours) == len(boxes) == 101
        assert len(np.unique(ours.xyxy.round(), axis=0)) > 50  # distinct boxes
        np.testing.assert_array_equal(ours.class_id, boxes.cls.numpy()[order].astype(int))
        # Ultralytics' RT-DETR predictor leaves boxes unclipped; Tapetum clips to the frame
        h, w = image.shape[:2]
        want = np.clip(boxes.xyxy.numpy()[order], 0, [w, h, w, h])
        np.testing.assert_allclose(ours.xyxy, want, atol=1.0)


@pytest.mark.slow
def test_effdet_export_matches_effdet_predict_bench(
    images: dict[str, np.ndarray], tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    effdet = pytest.importorskip("effdet")
    torch.manual_seed(0)
    bench = effdet.create_model(
        "tf_efficientdet_d0", bench_task="predict", pretrained=False, pretrained_backbone=False
    )
    spread_weights(bench.model, {9 * 90: -2.0})  # 9 anchors x 90 classes per cell
    bench.eval()
    checkpoint = tmp_path / "d0_random.pth"
    torch.save(bench.model.state_dict(), checkpoint)
    out = tmp_path / "d0.onnx"
    cli_export("tf_efficientdet_d0", "--weights", checkpoint, "-o", out)

    det = load_detector(out, runtime=TWO_THREADS)
    assert det.meta.family == "effdet" and det.input_hw == (512, 512)
    assert det.class_names == COCO90
    pre = det.meta.preprocess
    assert pre.channels is ChannelOrder.RGB and pre.mean is not None and pre.std is not None
    assert det.max_batch > 1

    det.config = DetectorConfig(conf_threshold=0.3)
    for image in images.values():
        tensor, meta = det.preprocess(image)
        with torch.no_grad():  # effdet's own predictor on the same input tensor
            theirs = bench(torch.from_numpy(tensor[None])).numpy()[0]
        ours = det([image])[0]
        # the top 20 (well-separated scores); lower down, near-equal scores may swap
        top = 20
        assert len(ours) >= top and theirs[top, 4] > 0.3
        np.testing.assert_array_equal(ours.class_id[:top], theirs[:top, 5].astype(int) - 1)
        want = LetterboxTransform.boxes_to_source(theirs[:top, :4].astype(np.float32), meta)
        np.testing.assert_allclose(ours.xyxy[:top], want, atol=1.0)
        np.testing.assert_allclose(ours.confidence[:top], theirs[:top, 4], atol=1e-4)
        assert len(np.unique(ours.xyxy[:top].round(), axis=0)) == top


def test_export_errors_are_one_line_and_do_not_download(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tapetum", "export", "yolov8n.pt", "-o", str(tmp_path / "x.onnx")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "does not download weights" in lines[0]
    assert not (tmp_path / "yolov8n.pt").exists() and not (tmp_path / "x.onnx").exists()
