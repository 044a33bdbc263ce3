"""Alias history (replay, rollback targets, tag keys), lineage trees and model cards:
pure functions over records, no MLflow."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapetum.errors import RegistryError
from tapetum.registry import (
    AliasEvent,
    CardInputs,
    DatasetRecord,
    EvaluationRecord,
    RunRecord,
    VersionInfo,
    build_lineage,
    render_model_card,
    render_tree,
)
from tapetum.registry.aliases import alias_events, event_key, holder_stack, rollback_target

SHA = "ab" * 32


def promote(version: int) -> AliasEvent:
    return AliasEvent.make("promote", version, None, "ana")


def rollback(version: int) -> AliasEvent:
    return AliasEvent.make("rollback", version, None, "ana")


# ------------------------------------------------------------------------ alias history


def test_rollback_goes_back_one_holder_at_a_time() -> None:
    events = [promote(1), promote(2), promote(3)]
    assert rollback_target(events, current=3) == 2
    events.append(rollback(2))
    assert holder_stack(events) == [1, 2]
    assert rollback_target(events, current=2) == 1


def test_repromoting_the_holder_adds_no_step_and_a_version_can_return() -> None:
    events = [promote(1), promote(2), promote(2), promote(1)]
    assert holder_stack(events) == [1, 2, 1]
    assert rollback_target(events, current=1) == 2


def test_an_alias_moved_outside_tapetum_rolls_back_to_the_last_holder_tapetum_set() -> None:
    assert rollback_target([promote(1), promote(2)], current=7) == 2


def test_nothing_to_roll_back_to_is_an_error() -> None:
    with pytest.raises(RegistryError, match="no earlier holder"):
        rollback_target([promote(1)], current=1)
    with pytest.raises(RegistryError):
        rollback_target([], current=None)


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5)), max_size=30))
def test_replay_always_ends_on_the_last_events_version(steps: list[tuple[bool, int]]) -> None:
    events = [promote(v) if up else rollback(v) for up, v in steps]
    stack = holder_stack(events)
    if events:
        assert stack[-1] == events[-1].version  # the alias is where the last change put it
    assert all(a != b for a, b in itertools.pairwise(stack))  # no empty steps


def test_event_keys_sort_by_time_and_never_collide() -> None:
    keys = [event_key("champion", at_ns=t) for t in (5, 5, 10**18, 42)]
    assert len(set(keys)) == 4
    assert sorted(keys)[-1] == keys[2]  # widest timestamp sorts last despite more digits
    assert all(k.startswith("tapetum.alias.champion.") for k in keys)


def test_history_reads_only_its_alias_and_skips_malformed_entries() -> None:
    tags = {
        event_key("champion", 1): promote(1).model_dump_json(),
        event_key("champion", 2): "{not json",
        event_key("challenger", 3): promote(9).model_dump_json(),
        event_key("champion", 4): rollback(1).model_dump_json(),
        "unrelated": "x",
    }
    events = [e for _, e in alias_events(tags, "champion")]
    assert [(e.action, e.version) for e in events] == [("promote", 1), ("rollback", 1)]


# ------------------------------------------------------------------------ lineage


def version(n: int, precision: str, parent: str | None = None, **tags: str) -> VersionInfo:
    all_tags = {
        "tapetum.sha256": f"{n:02d}" * 32,
        "tapetum.precision": precision,
        "tapetum.family": "yolox",
        "tapetum.input_hw": "416x416",
        "tapetum.classes": "person,car",
        "tapetum.ready": "true",
        "tapetum.command": f"tapetum cmd {n}",
        **tags,
    }
    if parent:
        all_tags["tapetum.parent"] = parent
    return VersionInfo("m", n, all_tags, run_id=f"run{n}", created_ms=1_796_000_000_000)


def test_the_tree_runs_from_the_root_to_the_version_then_its_children() -> None:
    root, int8, child = version(1, "fp32"), version(2, "int8", "m/1"), version(4, "int8", "m/2")
    fp16 = version(3, "fp16", "m/1")
    runs = {
        "run2": RunRecord(
            "run2", "", {}, {}, {"mlflow.user": "ana"},
            [DatasetRecord("crowd.mp4", "/d/crowd.mp4", "cd" * 32, 1, "calibration")],
        )
    }  # fmt: skip
    text = render_tree(build_lineage([root, int8], {"m/2": [child], "m/1": [fp16]}, runs))
    lines = text.splitlines()
    assert lines[0].startswith("m/1  fp32 yolox 416x416  sha256 010101010101")
    assert "└── m/2  int8" in text and text.count("◀") == 1 and "m/2" in text.split("◀")[0]
    assert "calibration: crowd.mp4 (sha256 cdcdcdcdcdcd, 1 files)" in text
    assert "$ tapetum cmd 2" in text
    assert "└── m/4  int8" in text  # the version's own child, under it
    assert "m/3" not in text  # a sibling branch is not part of this version's lineage
    assert next(line for line in lines if "m/4" in line).startswith("    ")  # nested under m/2


def test_a_parent_that_is_gone_still_shows_as_the_root() -> None:
    orphan = version(5, "int8", "other/9")
    text = render_tree(build_lineage([orphan], {}, {}))
    assert text.splitlines()[0] == "other/9  (no longer in the registry)"


# ------------------------------------------------------------------------ model card


def evaluation(map_50_95: float, digest: str = "ef" * 32) -> EvaluationRecord:
    data = DatasetRecord("coco128/val2017", "/d/coco128", digest, 128, "evaluation")
    metrics = {"map_50_95": map_50_95, "map_50": 0.5, "fps": 20.0, "images": 128.0}
    return EvaluationRecord(data, metrics, {}, "evalrun", 1_796_000_000_000)


def test_the_card_names_data_metrics_lineage_and_derived_limitations() -> None:
    parent, v = version(1, "fp32"), version(2, "int8", "m/1")
    run = RunRecord(
        "run2", "", {"calib_frames": "64"}, {}, {"mlflow.user": "ana"},
        [DatasetRecord("crowd.mp4", "/d/crowd.mp4", "cd" * 32, 1, "calibration")],
    )  # fmt: skip
    md = render_model_card(
        CardInputs(
            version=v,
            registry_uri="sqlite:///r.db",
            lineage=[parent, v],
            registration=run,
            evaluations=[evaluation(0.317)],
            parent_evaluations=[evaluation(0.338)],
        )
    )
    assert md.startswith("# Model card: m version 2\n")
    for section in ("Intended use", "Model details", "Classes (2)", "Data", "Evaluation",
                    "Lineage (root first)", "Limitations"):  # fmt: skip
        assert f"## {section}" in md
    assert "| calibration | crowd.mp4 | `/d/crowd.mp4` | `cdcdcdcdcdcdcdcd` | 1 |" in md
    assert "calib_frames=64" in md
    assert "Evaluated on **coco128/val2017 (sha256 `efefefefefefefef`" in md
    assert "| mAP@[.5:.95] | 31.7 | 33.8 | -2.10 pts |" in md
    assert "1. `m/1` fp32" in md and "2. `m/2` int8 **(this version)**" in md
    assert "INT8: activation ranges come from the calibration data" in md
    assert "-2.10 mAP points" in md
    assert "128 images of coco128/val2017 only" in md


def test_an_unevaluated_version_says_so() -> None:
    md = render_model_card(CardInputs(version(1, "fp32"), "sqlite:///r.db", [version(1, "fp32")]))
    assert "Not evaluated yet: `tapetum models eval m/1 --data …`" in md
    assert "accuracy has not been measured" in md
    assert "No calibration or training data was recorded" in md


def test_version_tags_expose_what_was_registered() -> None:
    v = version(2, "int8", "m/1", **{"tapetum.eval.coco128/val2017": "r1"})
    assert v.ready and v.parent is not None and v.parent.short == "m/1"
    assert v.class_names == ("person", "car")
    assert v.evaluation_runs == {"coco128/val2017": "r1"}
    half = VersionInfo("m", 3, {k: t for k, t in v.tags.items() if k != "tapetum.ready"})
    assert not half.ready  # a registration that did not finish is not a usable version
    assert (
        json.loads(AliasEvent.make("promote", 2, 1, "ana", "why").model_dump_json())["reason"]
        == "why"
    )
