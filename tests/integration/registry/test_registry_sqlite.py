"""The model registry as a user drives it, on a real MLflow SQLite store in a tmp folder and
the shared assets: register YOLOX-nano, make its INT8 and FP16 children with ``optimize
--register``, evaluate all three on coco128 val2017, promote, roll back, print the lineage
tree and the model card; then the failure modes (unknown names, missing and corrupt
artifacts) as one ``error:`` line and exit code 2.

The registry is built once per module by running the CLI (each step a subprocess, as a
user would); the tests read what it left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("faster_coco_eval")

from tapetum.errors import ArtifactCorruptError, ArtifactMissingError
from tapetum.registry import (
    ModelRegistry,
    parse_model_ref,
    resolve_model_uri,
    sha256_file,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

NAME = "yolox_nano"


@dataclass
class Store:
    """A registry built by the CLI, and how to run more commands against it."""

    root: Path
    uri: str
    env: dict[str, str]
    outputs: dict[str, subprocess.CompletedProcess[str]]

    def tapetum(
        self, *args: str | Path, timeout: float = 300, cache: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = self.env if cache is None else {**self.env, "TAPETUM_MODEL_CACHE": str(cache)}
        return subprocess.run(
            [sys.executable, "-m", "tapetum", *map(str, args)],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, key: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        proc = self.tapetum(*args)
        assert proc.returncode == 0, f"{' '.join(map(str, args))}\n{proc.stdout}\n{proc.stderr}"
        self.outputs[key] = proc
        return proc

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.uri)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> Store:
    root = tmp_path_factory.mktemp("registry")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
        "TAPETUM_MODEL_CACHE": str(root / "cache"),
        "TAPETUM_USER": "tester",
    }
    env.pop("TAPETUM_REGISTRY_URI", None)  # the embedded default, in the working directory
    s = Store(root, f"sqlite:///{root / 'tapetum-registry.db'}", env, {})
    coco = assets / "coco128"
    s.ok("register", "models", "register", assets / "models" / "yolox_nano.onnx", "--name", NAME,
         "--description", "COCO detector for people and vehicle counting")  # fmt: skip
    s.ok("int8", "optimize", f"models:/{NAME}/1", "--precision", "int8", "-o", "int8.onnx",
         "--calib", assets / "video" / "crowd_720p.avi", "--calib", coco / "images" / "train2017",
         "--calib-frames", "8", "--runs", "3", "--register", NAME)  # fmt: skip
    # A file, not a URI: the parent is found by its sha256.
    s.ok("fp16", "optimize", assets / "models" / "yolox_nano.onnx", "--precision", "fp16",
         "-o", "fp16.onnx", "--runs", "3", "--register", NAME)  # fmt: skip
    for version in (1, 2, 3):
        s.ok(f"eval{version}", "models", "eval", f"{NAME}/{version}", "--data", coco,
             "--split", "val2017")  # fmt: skip
    s.ok("promote1", "models", "promote", NAME, "1", "--reason", "baseline")
    s.ok("promote2", "models", "promote", NAME, "2", "--reason", "INT8 is faster")
    s.ok("rollback", "models", "rollback", NAME, "--reason", "misses small people")
    s.ok("lineage", "models", "lineage", f"{NAME}/1")
    s.ok("card", "models", "card", f"{NAME}/2", "-o", "card.md")
    s.ok("show", "models", "show", NAME, "--json")
    s.ok("show2", "models", "show", f"{NAME}/2", "--json")
    s.ok("list", "models", "list", "--json")
    return s


def _json(store: Store, key: str) -> Any:
    return json.loads(store.outputs[key].stdout)


def test_the_default_store_is_created_in_the_working_directory(store: Store) -> None:
    assert (store.root / "tapetum-registry.db").is_file()
    stored = list((store.root / "tapetum-artifacts").rglob("*.onnx"))
    assert sorted(p.name for p in stored) == ["fp16.onnx", "int8.onnx", "yolox_nano.onnx"]
    assert _json(store, "list") == [
        {
            "name": NAME,
            "versions": 3,
            "latest_version": 3,
            "aliases": {"champion": 1},
            "updated": _json(store, "list")[0]["updated"],
        }
    ]


def test_versions_carry_the_files_metadata_hash_and_parent(store: Store, assets: Path) -> None:
    versions = {v["version"]: v for v in _json(store, "show")["versions"]}
    assert versions[1]["sha256"] == sha256_file(assets / "models" / "yolox_nano.onnx")
    assert versions[2]["sha256"] == sha256_file(store.root / "int8.onnx")
    assert versions[3]["sha256"] == sha256_file(store.root / "fp16.onnx")
    assert [versions[v]["precision"] for v in (1, 2, 3)] == ["fp32", "int8", "fp16"]
    assert {versions[v]["family"] for v in (1, 2, 3)} == {"yolox"}
    assert {versions[v]["input"] for v in (1, 2, 3)} == {"416x416"}
    assert [versions[v]["parent"] for v in (1, 2, 3)] == [None, f"{NAME}/1", f"{NAME}/1"]
    info = store.registry().get_version(parse_model_ref(f"{NAME}/1"))
    assert len(info.class_names) == 80 and info.class_names[0] == "person"
    preprocess = json.loads(info.tags["tapetum.preprocess"])
    assert preprocess["channels"] == "bgr" and preprocess["resize"] == "letterbox"


def test_the_int8_child_records_its_command_and_calibration_data(store: Store) -> None:
    v2 = _json(store, "show2")
    assert v2["command"].startswith(f"tapetum optimize models:/{NAME}/1 --precision int8")
    assert v2["params"]["calib_frames"] == "8" and v2["params"]["precision"] == "int8"
    assert "tapetum 0.1.0" in v2["code_version"]
    calib = {d["name"]: d for d in v2["datasets"] if d["context"] == "calibration"}
    assert set(calib) == {"crowd_720p.avi", "coco128/images/train2017"}
    assert all(len(d["sha256"]) == 64 for d in calib.values())
    # The MLflow run holds the same datasets as MLflow entities, digests included.
    run_id = store.registry().get_version(parse_model_ref(f"{NAME}/2")).run_id
    assert run_id is not None
    assert {d.name for d in store.registry().run(run_id).datasets} == set(calib)


def test_evaluations_are_metrics_of_a_run_linked_to_each_version(store: Store) -> None:
    reg = store.registry()
    maps, digests = {}, set()
    for version in (1, 2, 3):
        records = reg.evaluations(reg.get_version(parse_model_ref(f"{NAME}/{version}")))
        assert len(records) == 1
        ev = records[0]
        assert ev.dataset is not None and ev.dataset.name == "coco128/val2017"
        assert ev.metrics["images"] == 128 and ev.metrics["fps"] > 0
        assert 0 < ev.metrics["recall_75"] < ev.metrics["recall_50"] <= 1
        maps[version] = ev.metrics["map_50_95"]
        digests.add(ev.dataset.digest)
    assert maps[1] == pytest.approx(0.338, abs=0.005)  # YOLOX-nano's level on these images
    assert abs(maps[3] - maps[1]) < 0.005  # FP16 costs no accuracy
    assert maps[1] - 0.06 < maps[2] < maps[1]  # INT8 from 8 frames costs a little
    assert len(digests) == 1  # the same evaluation set, recognisably
    shown = _json(store, "show2")["evaluations"]
    assert [e["dataset"] for e in shown] == ["coco128/val2017"]
    assert shown[0]["metrics"]["map_50_95"] == pytest.approx(maps[2])


def test_promote_and_rollback_keep_a_history_and_the_alias_follows(store: Store) -> None:
    assert store.outputs["promote2"].stdout.strip() == f"{NAME}@champion → 2 (was 1)"
    assert store.outputs["rollback"].stdout.strip() == (f"{NAME}@champion → 1 (rolled back from 2)")
    show = _json(store, "show")
    assert show["aliases"] == {"champion": 1}
    history = show["alias_history"]["champion"]
    assert [(e["action"], e["version"], e["previous"]) for e in history] == [
        ("promote", 1, None),
        ("promote", 2, 1),
        ("rollback", 1, 2),
    ]
    assert [e["reason"] for e in history] == ["baseline", "INT8 is faster", "misses small people"]
    assert {e["by"] for e in history} == {"tester"}
    resolved = resolve_model_uri(
        f"models:/{NAME}@champion", registry=store.uri, cache_dir=store.root / "c2"
    )
    assert resolved.version == 1 and sha256_file(resolved.path) == resolved.sha256


def test_the_lineage_prints_as_a_tree(store: Store) -> None:
    lines = store.outputs["lineage"].stdout.splitlines()
    assert lines[0].startswith(f"{NAME}/1  fp32 yolox 416x416  sha256 ")
    assert lines[0].endswith("@champion  ◀")
    branches = [line for line in lines if line.startswith(("├── ", "└── "))]
    assert [b.split()[1] for b in branches] == [f"{NAME}/2", f"{NAME}/3"]
    assert "int8" in branches[0] and "fp16" in branches[1]
    text = "\n".join(lines)
    assert "calibration: crowd_720p.avi (sha256 " in text
    assert f"$ tapetum optimize models:/{NAME}/1 --precision int8" in text
    # The INT8 child's own lineage runs from the root down to it.
    child = store.tapetum("models", "lineage", f"{NAME}/2")
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines()[0].startswith(f"{NAME}/1  fp32")
    assert f"└── {NAME}/2  int8" in child.stdout and f"{NAME}/3" not in child.stdout


def test_the_model_card_states_data_metrics_lineage_and_limits(store: Store) -> None:
    card = (store.root / "card.md").read_text()
    assert card.startswith(f"# Model card: {NAME} version 2")
    intended = card.split("## Intended use")[1].split("## Model details")[0]
    assert "COCO detector for people" not in intended  # version 1's description, not 2's
    assert "| Precision | int8 |" in card and "| Input | 416x416 |" in card
    assert "| calibration | crowd_720p.avi |" in card and "calib_frames=8" in card
    assert "Evaluated on **coco128/val2017 (sha256 `" in card
    assert "| metric | value | parent | change |" in card  # compared with version 1
    assert f"1. `{NAME}/1` fp32" in card and f"2. `{NAME}/2` int8 **(this version)**" in card
    assert "INT8: activation ranges come from the calibration data" in card
    assert "## Classes (80)" in card


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("models", "show", "nope"), "no registered model 'nope'"),
        (("models", "show", f"{NAME}/9"), f"model '{NAME}' has no version 9 (versions 1-3)"),
        (("models", "promote", NAME, "9"), "has no version 9"),
        (("run", "x.mp4", "--model", f"models:/{NAME}@prod"), "has no alias 'prod'"),
        (("eval", "detect", "-m", "models:/nope/1", "--data", "x"), "no registered model"),
        (("models", "show", "bad name!"), "model name 'bad name!'"),
    ],
)
def test_registry_errors_are_one_line_and_exit_2(
    store: Store, args: tuple[str, ...], message: str
) -> None:
    proc = store.tapetum(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_a_missing_or_corrupted_artifact_is_caught_before_use(store: Store) -> None:
    reg = store.registry()
    info = reg.get_version(parse_model_ref(f"{NAME}/3"))
    stored = Path(info.source) / info.file_name
    original = stored.read_bytes()
    try:  # damage the stored file in place (restored after), resolve with fresh caches
        stored.write_bytes(original[:-10] + b"0123456789")  # flipped bytes, same size
        with pytest.raises(ArtifactCorruptError, match="sha256 mismatch"):
            resolve_model_uri(f"models:/{NAME}/3", registry=reg, cache_dir=store.root / "k1")
        stored.unlink()
        with pytest.raises(ArtifactMissingError, match=f"{NAME}/3 is missing"):
            resolve_model_uri(f"models:/{NAME}/3", registry=reg, cache_dir=store.root / "k2")
        # (The module's cache still holds a good copy and would serve it: a fresh cache.)
        proc = store.tapetum(
            "eval", "detect", "-m", f"models:/{NAME}/3", "--data", "x", cache=store.root / "k4"
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"error: the model file of {NAME}/3 is missing")
    finally:
        stored.write_bytes(original)
    # A file damaged in the local cache is noticed on load and fetched again.
    cache = store.root / "k3"
    first = resolve_model_uri(f"models:/{NAME}/3", registry=reg, cache_dir=cache)
    first.path.write_bytes(b"rot")
    again = resolve_model_uri(f"models:/{NAME}/3", registry=reg, cache_dir=cache)
    assert again.path == first.path and sha256_file(again.path) == info.sha256
