"""Experiments on the pipeline with numpy fakes (no model, no video): the router and tap
hooks, shadow and canary wiring, agreement, the recorded columns, the online metrics of
known data, and the report files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.detect.letterbox import LetterboxMeta, LetterboxTransform
from tapetum.experiments import (
    ArmRecorder,
    LiveExperiment,
    LoadedArm,
    ModelSource,
    Verdict,
    box_agreement,
    build_report,
    experiment_from_dict,
    write_report,
)
from tapetum.experiments.agreement import AgreementBook
from tapetum.experiments.online import online_estimates, unit_index, unit_table
from tapetum.experiments.record import ArmData
from tapetum.pipeline import Pipeline, PipelineConfig
from tapetum.pipeline.hooks import TappedFrame
from tests.unit.pipeline.test_pipeline_unit import FakeDetector, FakeSource

pytestmark = pytest.mark.timeout(60)


class ArmDetector(FakeDetector):
    """The fake with what an arm needs (letterbox, meta, config) and a box count of its
    own: ``boxes`` person boxes per frame, the first ones shared by every arm."""

    class _Meta:
        family = "fake"

    def __init__(self, boxes: int = 3, **kw: Any) -> None:
        super().__init__(**kw)
        self.boxes = boxes
        self.letterbox = LetterboxTransform((8, 8))
        self.meta = self._Meta()
        self.config = None

    def postprocess(self, raw: npt.NDArray[np.float32], meta: LetterboxMeta) -> Detections:
        x = np.arange(self.boxes, dtype=np.float32) * 20.0
        xyxy = np.column_stack([x, x, x + 10, x + 10])
        return Detections(
            xyxy, np.full(self.boxes, 0.9, np.float32), np.zeros(self.boxes, np.int64)
        )


def _arm(spec: Any, name: str, detector: ArmDetector) -> LoadedArm:
    return LoadedArm(spec.arm(name), detector, ModelSource(Path(f"{name}.onnx")))  # type: ignore[arg-type]


def _spec(**over: Any) -> Any:
    return experiment_from_dict(
        {
            "name": "fake",
            "control": {"model": "/a.onnx", "tracker": "bytetrack"},
            "variants": [{"name": "v", "model": "/b.onnx"}],
            "decision": {
                "window_s": 0.2,
                "resamples": 200,
                "rules": [{"metric": "agreement_recall", "min_effect": 0.1}],
            },
        }
        | over
    )


# ------------------------------------------------------------------------------ hooks


def test_taps_see_every_detector_frame_once_with_its_model_input() -> None:
    seen: list[TappedFrame] = []
    detector = FakeDetector()
    pipe = Pipeline(
        [FakeSource("a", 1, n_frames=12), FakeSource("b", 2, n_frames=9)],
        detector,
        taps=[lambda batch, det: seen.extend(batch)],
        config=PipelineConfig(inference_workers=2),
    )
    stats = pipe.run()
    assert stats.frames_processed == 21
    by_stream = {s: sorted(t.seq for t in seen if t.frame.source_id == s) for s in ("a", "b")}
    assert by_stream == {"a": list(range(12)), "b": list(range(9))}
    for t in seen:  # the tensor the control was given: (tag, frame index) in channels 0, 1
        assert (t.tensor[0, 0, 0], t.tensor[1, 0, 0]) == (
            {"a": 1, "b": 2}[t.frame.source_id],
            t.frame.index,
        )


def test_a_router_sends_frames_to_their_own_detector() -> None:
    control, other = FakeDetector(), FakeDetector()
    pipe = Pipeline(
        [FakeSource("a", 1, n_frames=10), FakeSource("b", 2, n_frames=10)],
        control,
        router=lambda src, frame: other if src.source_id == "b" or frame.index % 5 == 0 else None,
    )
    pipe.run()
    ran = {  # tag 0: the warm-up batch of zeros
        det: sorted(f for batch in det.batches for f in batch if f[0]) for det in (control, other)
    }
    expect_other = sorted([(2, i) for i in range(10)] + [(1, 0), (1, 5)])
    assert ran[other] == expect_other
    assert len(ran[control]) == 8


# ------------------------------------------------------------------------- agreement


def _dets(boxes: list[list[float]], classes: list[int]) -> Detections:
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.full(len(classes), 0.5),
        np.asarray(classes),
    )


def test_box_agreement_matches_same_class_boxes_at_iou_half() -> None:
    control = _dets([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0, 0, 1])
    variant = _dets(
        [[0, 0, 10, 10], [21, 0, 31, 10], [40, 0, 50, 10], [60, 0, 70, 10]],  # 2nd: IoU 0.82
        [0, 0, 2, 0],  # 3rd box: right place, wrong class
    )
    classes, tp, n_var, n_ctl = box_agreement(variant, control)
    assert classes.tolist() == [0, 1, 2]
    assert tp.tolist() == [2, 0, 0]
    assert n_var.tolist() == [3, 0, 1]
    assert n_ctl.tolist() == [2, 1, 0]
    shifted = _dets([[6, 0, 16, 10]], [0])  # IoU 4/16 = 0.25 with the first control box
    assert box_agreement(shifted, control)[1].tolist() == [0, 0]


def test_agreement_book_pairs_whichever_side_comes_first() -> None:
    rec = ArmRecorder("v", ("person",))
    book = AgreementBook({"v": rec}, capacity=2)
    d = _dets([[0, 0, 10, 10]], [0])
    frame = Frame("s", 0, np.zeros((1, 1, 3), np.uint8), 0.0, 0.0)
    row = rec.add(frame, done_s=0, latency_ms=1, compute_ms=1, detections=d)
    book.control(("s", 0), d)
    book.variant("v", ("s", 0), row, d)  # control first
    book.variant("v", ("s", 1), row, d)  # variant first
    book.control(("s", 1), d)
    for i in range(2, 6):  # control results whose variant never comes
        book.control(("s", i), d)
    book.finish()
    assert book.paired["v"] == 2
    assert book.unpaired["v"] == 4
    assert rec.data().agree_tp.tolist() == [1, 1]


# ------------------------------------------------------------------------ live wiring


def test_shadow_records_every_frame_for_both_arms_and_emits_only_the_control(
    tmp_path: Path,
) -> None:
    spec = _spec()
    emitted: list[int] = []
    arms = [_arm(spec, "control", ArmDetector(3)), _arm(spec, "v", ArmDetector(2))]
    exp = LiveExperiment(spec, arms, tmp_path, live=False)
    sources = [
        FakeSource("a", 1, n_frames=20, period_s=0.01),
        FakeSource("b", 2, n_frames=20, period_s=0.01),
    ]
    from tapetum.sinks import CallbackSink

    pipe = Pipeline(
        sources,
        exp.detector,
        exp.tracker_factory,
        sinks=[exp.sink, CallbackSink(lambda r: emitted.append(len(r.detections)))],
        taps=exp.taps,
        router=exp.router,
    )
    exp.start(pipe)
    folder = exp.finish(pipe.run())
    control = ArmData.load(folder / "arms" / "control.npz")
    variant = ArmData.load(folder / "arms" / "v.npz")
    assert control.frames == variant.frames == 40
    assert set(emitted) <= {0, 3}  # the control's boxes only (tracks start after a frame)
    assert exp.shadows[0].stats.shared_input == 40  # one letterbox for both arms
    info = json.loads((folder / "experiment.json").read_text())
    assert info["shadow"]["v"]["paired"] == 40 and info["shadow"]["v"]["unpaired"] == 0
    assert (folder / "variants" / "v.jsonl").read_text().count("\n") == 40
    report = build_report(tmp_path)
    effects = report.effects["v"]
    assert effects["agreement_recall"].variant == pytest.approx(2 / 3, abs=0.05)
    assert effects["agreement_precision"].variant == pytest.approx(1.0)
    assert report.decisions["v"].verdict is Verdict.ROLLBACK  # recall 0.67 loses > 0.1


def test_canary_by_stream_sends_whole_streams_to_the_variant(tmp_path: Path) -> None:
    spec = _spec(mode="canary", canary={"by": "stream", "shares": {"v": 0.5}})
    variant = ArmDetector(1)
    arms = [_arm(spec, "control", ArmDetector(3)), _arm(spec, "v", variant)]
    exp = LiveExperiment(spec, arms, tmp_path, live=False)
    ids = [f"cam{i}" for i in range(8)]
    want = {i: exp.split.arm_for(i) for i in ids}
    assert set(want.values()) == {"control", "v"}
    sources = [FakeSource(i, k + 1, n_frames=5) for k, i in enumerate(ids)]
    pipe = Pipeline(sources, exp.detector, exp.tracker_factory, sinks=[exp.sink], router=exp.router)
    exp.start(pipe)
    folder = exp.finish(pipe.run())
    for name in ("control", "v"):
        data = ArmData.load(folder / "arms" / f"{name}.npz")
        assert sorted(data.streams) == sorted(i for i in ids if want[i] == name)
        assert data.frames == 5 * len(data.streams)
    ran_variant = {f[0] for batch in variant.batches for f in batch if f[0]}
    assert ran_variant == {k + 1 for k, i in enumerate(ids) if want[i] == "v"}


# -------------------------------------------------------------------- online metrics


def _synthetic_arm(name: str, *, failed: list[int] = ()) -> ArmData:  # type: ignore[assignment]
    """One stream, 10 frames at 10 fps, 2 windows of 0.5 s; track 1 in frames 0-9 but
    missing in 4 and 7 (two breaks), track 2 in frames 0-2."""
    rec = ArmRecorder(name, ("person",))
    for i in range(10):
        tracks = [1] if i not in (4, 7) else []
        tracks += [2] if i < 3 else []
        d = Detections(
            np.tile([0, 0, 10, 10], (len(tracks), 1)),
            np.full(len(tracks), 0.5, np.float32),
            np.zeros(len(tracks), np.int64),
            np.asarray(tracks, np.int64),
        )
        frame = Frame("s", i, np.zeros((1, 1, 3), np.uint8), i / 10, 0.0)
        rec.add(
            frame,
            done_s=i * 0.1,
            latency_ms=10.0 + i,
            compute_ms=5.0,
            detections=None if i in failed else d,
        )
    return rec.data()


def test_online_metrics_of_known_data() -> None:
    arm = _synthetic_arm("control", failed=[9])
    index = unit_index([arm], 0.5)
    assert index.units == 2
    est = online_estimates(arm, unit_table(arm, index), None)
    assert est["error_rate"].value == pytest.approx(0.1)
    assert est["fps"].value == pytest.approx(10.0)
    assert est["capacity_fps"].value == pytest.approx(200.0)
    boxes = sum(len(t) for t in ([1] if i not in (4, 7) else [] for i in range(9))) + 3
    assert est["detections_per_frame"].value == pytest.approx(boxes / 9)
    assert est["track_length_frames"].value == pytest.approx((7 + 3) / 2)  # 0-8 minus 4, 7
    assert est["fragments_per_track"].value == pytest.approx(2 / 2)
    assert est["tracks_per_window"].value == pytest.approx((2 + 1) / 2)
    assert est["latency_p50_ms"].value == pytest.approx(14.0)


def test_report_files_hold_every_metric_and_the_plots(tmp_path: Path) -> None:
    spec = _spec()
    arms = [_arm(spec, "control", ArmDetector(3)), _arm(spec, "v", ArmDetector(2))]
    exp = LiveExperiment(spec, arms, tmp_path, live=False)
    pipe = Pipeline(
        [FakeSource("a", 1, n_frames=30, period_s=0.01)],
        exp.detector,
        exp.tracker_factory,
        sinks=[exp.sink],
        taps=exp.taps,
    )
    exp.start(pipe)
    exp.finish(pipe.run())
    json_path, html_path = write_report(build_report(tmp_path), tmp_path)
    data = json.loads(json_path.read_text())
    online = data["arms"]["v"]["online"]
    assert {"fps", "latency_p99_ms", "agreement_f1", "track_length_frames"} <= set(online)
    assert data["decisions"] == {"v": "rollback"}
    page = html_path.read_text()
    assert page.count("<svg") == 3  # confidence, latency CDF, agreement (no offline data)
    assert not re.search(r"(?:src|href)=[\"']?https?:|url\(https?:|@import", page)  # self-contained
    assert 'data-verdict="rollback"' in page


# ------------------------------------------------------------------------ the server


def test_a_server_splits_by_key_or_header_not_by_stream(tmp_path: Path) -> None:
    from tapetum.errors import ExperimentSpecError
    from tapetum.experiments.serving import ServerExperiment

    by_stream = _spec(mode="canary", canary={"by": "stream", "shares": {"v": 0.5}})
    arms = [_arm(by_stream, "control", ArmDetector()), _arm(by_stream, "v", ArmDetector())]
    with pytest.raises(ExperimentSpecError, match="a server splits requests by key or header"):
        ServerExperiment(by_stream, arms, tmp_path)
    by_header = _spec(
        mode="canary", canary={"by": "header", "header": "X-Camera", "shares": {"v": 0.5}}
    )
    exp = ServerExperiment(by_header, arms, tmp_path)
    assert exp.assign("key", {"x-camera": "cam-1"}, None) is None  # arms not loaded yet
    exp.ready.set()
    cams = [f"cam-{i}" for i in range(40)]
    got = [exp.assign("key", {"x-camera": c}, None) for c in cams]
    assert all(a is not None for a in got)
    assert {a.arm for a in got if a} == {"control", "v"}
    assert [a.arm for a in got if a] == [exp.split.arm_for(c) for c in cams]
    assert all(a.unit.startswith("h:") and "cam" not in a.unit for a in got if a)  # no raw value
    no_header = exp.assign("key", {}, None)
    assert no_header is not None and no_header.arm == "control"
    assert exp.assign("key", {"x-camera": "cam-1"}, "yolox_nano") is None  # names a model
