"""The experiment file: what validates, what is refused (with the field in the message),
canary buckets, relative paths, and the run folder's record of the spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tapetum.errors import ConfigError, ExperimentSpecError
from tapetum.experiments import (
    Goal,
    Mode,
    Requirement,
    SplitBy,
    TrafficSplit,
    experiment_from_dict,
    load_experiment,
)
from tapetum.experiments.spec import spec_from_plain


def _spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "exp",
        "control": {"model": "/m/a.onnx"},
        "variants": [{"name": "b", "model": "/m/b.onnx", "conf": 0.3}],
    }
    return base | over


def test_a_minimal_file_is_a_shadow_experiment_with_defaults() -> None:
    spec = experiment_from_dict(_spec())
    assert spec.mode is Mode.SHADOW
    assert [a.name for a in spec.arms] == ["control", "b"]
    assert spec.control.conf == 0.1 and spec.variants[0].conf == 0.3
    assert spec.variants[0].tracker == "bytetrack"
    assert spec.window_s == 1.0 and spec.confidence == 0.95 and spec.alias == "champion"


def test_yaml_file_with_relative_paths_resolves_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text(
        "name: rel\n"
        "control: {model: models/a.onnx}\n"
        "variants:\n  - {name: b, model: 'models:/yolox@challenger', tracker: ocsort}\n"
        "decision:\n  rules:\n    - {metric: latency_p99_ms, require: better, min_effect: 5}\n"
        "offline: {data: coco128, split: val2017}\n"
    )
    spec = load_experiment(tmp_path / "exp.yaml")
    assert spec.control.model == str(tmp_path / "models" / "a.onnx")
    assert spec.variants[0].model == "models:/yolox@challenger"  # a registry ref stays
    assert spec.variants[0].is_registered and not spec.control.is_registered
    assert spec.offline is not None and spec.offline.data == tmp_path / "coco128"
    rule = spec.rules[0]
    assert rule.goal is Goal.DECREASE  # the metric's own direction
    assert rule.require is Requirement.BETTER


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variants": [{"name": "b", "model": "b.onnx", "conf": 1.5}]}, "variants.0.conf"),
        ({"variants": []}, "variants"),
        ({"mode": "canary"}, "needs a canary section"),
        ({"colour": "red"}, "colour"),
        ({"name": "has space"}, "name"),
        (
            {"variants": [{"name": "control", "model": "b.onnx"}]},
            "'control' names the control",
        ),
        (
            {"variants": [{"name": "b", "model": "b.onnx"}, {"name": "b", "model": "c.onnx"}]},
            "two arms are named 'b'",
        ),
        ({"guardrails": [{"metric": "latency_p99_ms"}]}, "give a bound"),
        ({"guardrails": [{"metric": "p99", "max": 10}]}, "unknown metric 'p99'"),
        ({"decision": {"rules": [{"metric": "mAP", "min_effect": 0.1}]}}, "unknown metric 'mAP'"),
        ({"decision": {"confidence": 1.5}}, "decision.confidence"),
        ({"offline": {"split": "val2017"}}, "give data"),
        ({"canary": {"shares": {"b": 0.2}}}, "shares are for mode canary"),
    ],
)
def test_bad_files_are_refused_naming_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ExperimentSpecError, match=message) as info:
        experiment_from_dict(_spec(**change), path=Path("exp.yaml"))
    assert str(info.value).startswith("exp.yaml: ")
    assert isinstance(info.value, ConfigError)  # the CLI's one-line error, the API's 422


def test_overlapping_canary_shares_are_refused() -> None:
    two = [{"name": "b", "model": "b.onnx"}, {"name": "c", "model": "c.onnx"}]
    ranges = {"by": "stream", "shares": {"b": [0.0, 0.3], "c": [0.2, 0.5]}}
    with pytest.raises(ExperimentSpecError, match=r"'b' \[0, 0.3\) and 'c' \[0.2, 0.5\) overlap"):
        experiment_from_dict(_spec(variants=two, mode="canary", canary=ranges))
    too_much = {"by": "frame", "shares": {"b": 0.6, "c": 0.6}}
    with pytest.raises(ExperimentSpecError, match="more than 1"):
        experiment_from_dict(_spec(variants=two, mode="canary", canary=too_much))
    with pytest.raises(ExperimentSpecError, match="no variant named 'x'"):
        experiment_from_dict(_spec(mode="canary", canary={"by": "stream", "shares": {"x": 0.1}}))


def test_canary_shares_lay_out_buckets_in_file_order() -> None:
    two = [{"name": "b", "model": "b.onnx"}, {"name": "c", "model": "c.onnx"}]
    spec = experiment_from_dict(
        _spec(variants=two, mode="canary", canary={"by": "key", "shares": {"b": 0.1, "c": 0.25}})
    )
    assert spec.split_by is SplitBy.KEY
    assert [(s.arm, s.low, s.high) for s in spec.shares] == [("b", 0.0, 0.1), ("c", 0.1, 0.35)]


def test_traffic_split_is_sticky_and_follows_the_shares() -> None:
    spec = experiment_from_dict(
        _spec(mode="canary", canary={"by": "stream", "shares": {"b": 0.25}})
    )
    split = TrafficSplit(spec.name, spec.shares)
    keys = [f"cam-{i}" for i in range(4000)]
    first = [split.arm_for(k) for k in keys]
    assert first == [split.arm_for(k) for k in keys]  # sticky
    share = first.count("b") / len(keys)
    assert 0.22 < share < 0.28
    other = TrafficSplit("another-experiment", spec.shares)
    assert [other.arm_for(k) for k in keys] != first  # a new experiment reshuffles
    frames = [split.arm_for_frame("cam-1", i) for i in range(4000)]
    assert 0.22 < frames.count("b") / len(frames) < 0.28  # a frame split mixes one stream


def test_the_run_folder_record_reads_back_as_the_same_experiment(tmp_path: Path) -> None:
    spec = experiment_from_dict(
        _spec(
            mode="canary",
            canary={"by": "header", "header": "X-Cohort", "shares": {"b": 0.5}},
            guardrails=[{"metric": "error_rate", "max": 0.01}],
            decision={"rules": [{"metric": "map_50", "relative": True, "min_effect": 0.02}]},
            offline={"data": "/d/coco", "mot": "/d/mot"},
        )
    )
    record = json.loads(json.dumps(spec.to_dict()))
    again = spec_from_plain(record)
    assert again == spec
    assert again.header == "x-cohort"


@pytest.mark.parametrize("name", ["shadow_int8.yaml", "canary_by_key.yaml"])
def test_the_example_files_validate(name: str) -> None:
    folder = Path(__file__).parents[3] / "examples" / "ab_shadow"
    spec = load_experiment(folder / name)
    assert spec.variants and (spec.rules or spec.guardrails)
    if spec.offline is not None:  # relative to the file: the shared assets beside the repo
        assert spec.offline.data == folder / "../../../shared/assets/coco128"
