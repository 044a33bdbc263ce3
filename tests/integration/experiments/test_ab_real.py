"""A/B experiments as a team runs them, on the shared crowd video, coco128 and MOT17 frames,
with a real MLflow registry in a tmp folder:

* FP32 against INT8 YOLOX-nano (quantized here from a few calibration frames) in shadow
  mode from the command line: a report with every metric and a decision, and an HTML
  page that renders in headless Chromium with its plots and no console error;
* the same model at confidence 0.6 (a deliberately worse variant) caught by the
  agreement rules and rolled back with ``--act``: the alias moves back and the evidence
  is recorded on the version;
* a variant that is more accurate but slow (a wrapper that sleeps in inference) rolled
  back by its p99 latency guardrail;
* experiment files refused before any frame is read (unknown model, overlapping canary
  shares, a variant whose classes differ from the control's).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("mlflow")
pytest.importorskip("faster_coco_eval")
pytest.importorskip("trackeval")

from tapetum.detect import YoloxDetector
from tapetum.detect.quantize import (
    load_calibration_images,
    plan_calibration,
    quantize_int8,
)
from tapetum.experiments import (
    METRICS,
    LiveExperiment,
    Verdict,
    apply_decisions,
    build_report,
    experiment_from_dict,
    load_arms,
    write_report,
)
from tapetum.experiments.offline import evaluate_offline
from tapetum.pipeline import DropPolicy, Pipeline, PipelineConfig
from tapetum.registry import ModelRef, ModelRegistry
from tapetum.sources import open_source
from tests.helpers import remux_to_mpegts

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

NAME = "yolox_nano"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ONLINE = [m for m, info in METRICS.items() if info.scope.value == "online"]
OFFLINE = [m for m, info in METRICS.items() if info.scope.value == "offline"]


@dataclasses.dataclass
class Registry:
    root: Path
    uri: str
    env: dict[str, str]

    def open(self) -> ModelRegistry:
        return ModelRegistry(self.uri)

    def tapetum(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tapetum", *map(str, args)],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )


@pytest.fixture(scope="module")
def clip(crowd_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 2 s of the crowd video (50 frames) as MPEG-TS."""
    return remux_to_mpegts(crowd_video, tmp_path_factory.mktemp("clip") / "crowd.ts", max_s=2.0)


@pytest.fixture(scope="module")
def int8_path(yolox_path: Path, assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YOLOX-nano INT8 through tapetum.detect.quantize, calibrated on 8 frames."""
    out = tmp_path_factory.mktemp("int8") / "yolox_nano_int8.onnx"
    samples = plan_calibration([assets / "video" / "crowd_720p.avi"], 8)
    detector = YoloxDetector(yolox_path)
    quantize_int8(yolox_path, out, load_calibration_images(samples), detector.preprocess)
    return out


@pytest.fixture(scope="module")
def registry(
    yolox_path: Path, int8_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """v1 FP32 @champion, v2 its INT8, v3 the FP32 file again; @challenger went 1 → 3,
    @candidate 1 → 3 (so both can roll back to 1)."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'registry.db'}"
    cache = root / "cache"
    previous = os.environ.get("TAPETUM_MODEL_CACHE")
    os.environ["TAPETUM_MODEL_CACHE"] = str(cache)
    reg = ModelRegistry(uri, artifacts=root / "artifacts")
    v1 = reg.register(yolox_path, NAME)
    reg.register(int8_path, NAME, parent=v1.ref)
    reg.register(yolox_path, NAME, description="the FP32 file again")
    reg.promote(NAME, 1, "champion", reason="baseline")
    for alias in ("challenger", "candidate"):
        reg.promote(NAME, 1, alias, reason="first")
        reg.promote(NAME, 3, alias, reason="try v3")
    env = {
        **os.environ,
        "TAPETUM_REGISTRY_URI": uri,
        "TAPETUM_MODEL_CACHE": str(cache),
        "TAPETUM_USER": "tester",
        "COLUMNS": "200",
    }
    yield Registry(root, uri, env)
    if previous is None:
        os.environ.pop("TAPETUM_MODEL_CACHE", None)
    else:
        os.environ["TAPETUM_MODEL_CACHE"] = previous


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def render(page: Path) -> tuple[str, list[str]]:
    """(the DOM after the page's script ran, every console line) of a local page."""
    assert CHROMIUM is not None
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


# --------------------------------------------------------------------------- shadow


def test_fp32_vs_int8_shadow_gives_every_metric_and_a_decision(
    registry: Registry, clip: Path, assets: Path, tmp_path: Path
) -> None:
    exp = _write(
        tmp_path / "int8.json",
        {
            "name": "int8-shadow",
            "control": {"model": f"models:/{NAME}@champion"},
            "variants": [{"name": "int8", "model": f"models:/{NAME}/2"}],
            "mode": "shadow",
            "guardrails": [
                {"metric": "latency_p99_ms", "max_ratio": 3.0},
                {"metric": "error_rate", "max": 0.01},
            ],
            "decision": {
                "window_s": 0.25,
                "resamples": 500,
                "rules": [
                    {"metric": "map_50_95", "require": "not_worse", "min_effect": 0.03},
                    {"metric": "agreement_f1", "require": "not_worse", "min_effect": 0.25},
                ],
            },
            "offline": {
                "data": str(assets / "coco128"),
                "split": "val2017",
                "max_images": 24,
                "resamples": 300,
                "mot": str(assets / "mot" / "MOT17" / "train" / "MOT17-04-FRCNN"),
            },
        },
    )
    run = tmp_path / "run"
    proc = registry.tapetum("run", clip, "--experiment", exp, "-o", run, "--no-video", "-q")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert re.search(r"int8: (PROMOTE|HOLD|ROLLBACK) — ", proc.stdout), proc.stdout
    report = json.loads((run / "ab_report.json").read_text())
    for arm in ("control", "int8"):
        assert report["arms"][arm]["frames"] == 50
        assert set(ONLINE) <= set(report["arms"][arm]["online"]), arm
        assert set(OFFLINE) <= set(report["arms"][arm]["offline"]), arm
        assert report["arms"][arm]["classes"]["person"]["boxes"] > 500
    effects = report["variants"]["int8"]["effects"]
    assert set(METRICS) == set(effects)
    for metric in ("map_50_95", "latency_p99_ms", "agreement_f1", "detections_per_frame"):
        lo, hi = effects[metric]["diff_ci"]
        assert lo is not None and lo <= effects[metric]["diff"] <= hi, metric
    assert report["arms"]["control"]["model"]["version"] == 1
    assert report["arms"]["int8"]["model"]["version"] == 2
    agreement = effects["agreement_f1"]["variant"]
    assert 0.6 < agreement < 1.0  # INT8 mostly agrees with FP32, not perfectly
    assert report["variants"]["int8"]["agreement_per_class"]["person"]["f1"][0] > 0.6
    decision = report["variants"]["int8"]["decision"]
    assert decision["verdict"] in ("promote", "hold", "rollback") and decision["summary"]
    assert {c["metric"] for c in decision["checks"]} == {
        "map_50_95",
        "agreement_f1",
        "latency_p99_ms",
        "error_rate",
    }
    info = json.loads((run / "experiment" / "experiment.json").read_text())
    assert info["shadow"]["int8"]["shared_input"] == 50  # one letterbox for both models
    assert info["shadow"]["int8"]["paired"] == 50
    offline = json.loads((run / "experiment" / "offline.json").read_text())
    assert offline["sequences"] == ["MOT17-04-FRCNN"] and offline["images"] == 24
    # the report page, in a browser
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    dom, console = render(run / "ab_report.html")
    assert console == []
    assert 'data-plots="4"' in dom  # the page's own script ran and counted its plots
    for plot in ("confidence", "latency", "agreement", "map"):
        assert f'data-plot="{plot}"' in dom
    assert 'data-verdict="' in dom


def test_the_browser_check_sees_a_page_error(tmp_path: Path) -> None:
    """The console check above is not vacuous: a broken script is reported."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>reportNothing();</script></body></html>")
    _, console = render(page)
    assert any("ReferenceError" in line for line in console)


# --------------------------------------------------------------- rollback with --act


def test_a_worse_variant_is_rolled_back_with_act(
    registry: Registry, clip: Path, tmp_path: Path
) -> None:
    exp = _write(
        tmp_path / "strict.json",
        {
            "name": "strict-conf",
            "control": {"model": f"models:/{NAME}@champion"},
            "variants": [{"name": "strict", "model": f"models:/{NAME}@challenger", "conf": 0.6}],
            "decision": {
                "window_s": 0.25,
                "resamples": 500,
                "rules": [
                    {"metric": "agreement_recall", "min_effect": 0.1},
                    {"metric": "detections_per_frame", "relative": True, "min_effect": 0.1},
                ],
            },
        },
    )
    reg = registry.open()
    assert reg.get_model(NAME).aliases["challenger"] == 3
    run = tmp_path / "run"
    proc = registry.tapetum(
        "run", clip, "--experiment", exp, "-o", run, "--no-video", "-q", "--act"
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "strict: ROLLBACK — agreement_recall" in proc.stdout
    assert "rolled back @challenger to version 1 (from 3)" in proc.stdout
    report = json.loads((run / "ab_report.json").read_text())
    recall = report["variants"]["strict"]["effects"]["agreement_recall"]
    assert recall["variant"] < 0.8 and recall["diff_ci"][1] < -0.1
    assert reg.get_model(NAME).aliases["challenger"] == 1
    last = reg.alias_history(NAME, "challenger")[-1]
    assert last.action == "rollback" and last.version == 1 and last.by == "tester"
    assert "A/B strict-conf: rollback" in last.reason and "evidence run" in last.reason
    evidence = [
        e
        for e in reg.evaluations(reg.get_version(ModelRef(NAME, version=3)))
        if e.dataset and e.dataset.name == "ab/strict-conf"
    ]
    assert len(evidence) == 1
    assert evidence[0].settings["verdict"] == "rollback"
    assert evidence[0].metrics["ab.agreement_recall.diff_hi"] < -0.1
    assert reg.get_model(NAME).aliases["champion"] == 1  # the control is untouched


# ---------------------------------------------------------------- the p99 guardrail


class SlowInference:
    """Wraps a detector's inference with a fixed delay (injected latency, no CPU)."""

    def __init__(self, infer: Any, delay_s: float) -> None:
        self.infer, self.delay_s = infer, delay_s

    def __call__(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        time.sleep(self.delay_s)
        out: npt.NDArray[np.float32] = self.infer(batch)
        return out


def test_a_more_accurate_but_slow_variant_is_rolled_back_by_its_p99_guardrail(
    registry: Registry, clip: Path, assets: Path, tmp_path: Path
) -> None:
    reg = registry.open()
    spec = experiment_from_dict(
        {
            "name": "slow-but-better",
            "control": {"model": f"models:/{NAME}@champion", "conf": 0.6},
            "variants": [{"name": "slow", "model": f"models:/{NAME}@candidate", "conf": 0.1}],
            "guardrails": [{"metric": "latency_p99_ms", "max_ratio": 1.5}],
            "decision": {
                "window_s": 0.25,
                "resamples": 500,
                "rules": [{"metric": "map_50_95", "require": "better", "min_effect": 0.02}],
            },
            "offline": {
                "data": str(assets / "coco128"),
                "split": "val2017",
                "max_images": 24,
                "resamples": 300,
            },
        }
    )
    arms = load_arms(spec, registry=reg)
    run = tmp_path / "run"
    assert spec.offline is not None
    offline = evaluate_offline(arms, spec.offline)  # what the models are, before the delay
    offline.save(run / "experiment", spec.confidence)
    arms[1].detector.infer = SlowInference(arms[1].detector.infer, 1.0)  # type: ignore[method-assign]
    exp = LiveExperiment(spec, arms, run, live=True)
    pipe = Pipeline(
        [open_source(str(clip), realtime=True)],
        exp.detector,
        exp.tracker_factory,
        sinks=[exp.sink],
        taps=exp.taps,
        config=PipelineConfig(source_queue_size=1, drop_policy=DropPolicy.DROP_OLDEST),
    )
    exp.start(pipe)
    exp.finish(pipe.run())
    report = build_report(run)
    json_path, _ = write_report(report, run)
    decision = report.decisions["slow"]
    outcomes = {(c.kind, c.metric): c.outcome.value for c in decision.checks}
    assert outcomes == {("rule", "map_50_95"): "pass", ("guardrail", "latency_p99_ms"): "fail"}
    assert decision.verdict is Verdict.ROLLBACK
    assert report.effects["slow"]["latency_p99_ms"].ratio_ci[0] > 1.5
    assert report.effects["slow"]["map_50_95"].diff_ci[0] > 0.02  # it is more accurate
    actions = apply_decisions(report, json_path, reg)
    assert actions[0].done == "rolled back @candidate to version 1 (from 3)"
    assert reg.get_model(NAME).aliases["candidate"] == 1


# --------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def renamed_classes(yolox_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YOLOX-nano whose metadata calls its classes otherwise ('person' → 'pedestrian')."""
    import onnx

    from tapetum.detect.spec import write_model_meta

    meta = YoloxDetector(yolox_path).meta
    names = tuple("pedestrian" if n == "person" else n for n in meta.class_names)
    model = onnx.load(str(yolox_path))
    write_model_meta(model, dataclasses.replace(meta, class_names=names))
    path = tmp_path_factory.mktemp("renamed") / "yolox_pedestrians.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("variants", "extra", "message"),
    [
        (
            [{"name": "b", "model": f"models:/{NAME}/9"}],
            {},
            r"arm 'b': .*version 9",
        ),
        ([{"name": "b", "model": "missing.onnx"}], {}, r"arm 'b': model file not found"),
        (
            [{"name": "b", "model": "YOLOX"}, {"name": "c", "model": "YOLOX"}],
            {"mode": "canary", "canary": {"shares": {"b": [0, 0.5], "c": [0.25, 0.75]}}},
            r"canary.shares of 'b' \[0, 0.5\) and 'c' \[0.25, 0.75\) overlap",
        ),
        (
            [{"name": "b", "model": "RENAMED"}],
            {},
            r"variant 'b' \(yolox_pedestrians.onnx\) detects other classes than the control "
            r"\(80 vs 80\): only the control has person; only the variant has pedestrian",
        ),
    ],
)
def test_bad_experiments_are_refused_before_any_frame_is_read(  # noqa: PLR0917 - fixtures
    registry: Registry,
    clip: Path,
    yolox_path: Path,
    renamed_classes: Path,
    tmp_path: Path,
    variants: list[dict[str, str]],
    extra: dict[str, Any],
    message: str,
) -> None:
    files = {"YOLOX": str(yolox_path), "RENAMED": str(renamed_classes)}
    for v in variants:
        v["model"] = files.get(v["model"], v["model"])
    exp = _write(
        tmp_path / "bad.json",
        {"name": "bad", "control": {"model": str(yolox_path)}, "variants": variants} | extra,
    )
    run = tmp_path / "run"
    proc = registry.tapetum("run", clip, "--experiment", exp, "-o", run, "-q")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not run.exists()  # nothing was opened or written


# ----------------------------------------------------------------------- the example


def test_the_shadow_example_runs_as_its_readme_says(
    clip: Path, yolox_path: Path, tmp_path: Path
) -> None:
    script = Path(__file__).parents[3] / "examples" / "ab_shadow" / "ab_shadow.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(clip),
            "--model",
            str(yolox_path),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^frames: 50 \(both arms\), report: .*ab_report.html$", proc.stdout, re.M)
    recall = re.search(r"agreement_recall: control 1.000, variant (0\.\d+)", proc.stdout)
    assert recall is not None and float(recall.group(1)) < 0.9, proc.stdout
    assert re.search(r"^decision: (promote|hold|rollback) \(", proc.stdout, re.M)
    assert (tmp_path / "ab_report.html").is_file() and (tmp_path / "tracks.jsonl").is_file()
