"""Classification of tracks without a real model: crop geometry and pixels, label maps, the
per-track vote driven by a scripted classifier, option parsing, and classifiers whose
output is not one vector per image (tiny ONNX graphs built here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tapetum.classify import (
    ClassificationEnricher,
    ClassifierService,
    ClassifierSpec,
    ClassifyConfig,
    CropFit,
    LabelMap,
    OnnxClassifier,
    OutputKind,
    TrackLabels,
    crop_batch,
    load_label_map,
    parse_classify_option,
)
from tapetum.classify.crops import crop_rects, normalize_batch
from tapetum.classify.enricher import config_from_options
from tapetum.core.detections import NO_TRACK, Detections
from tapetum.core.frame import Frame
from tapetum.detect.spec import ChannelOrder, ModelMeta, PreprocessSpec, write_model_meta
from tapetum.errors import ClassifierError, ConfigError, LabelMapError

pytestmark = pytest.mark.timeout(60)

NAMES = ("cat", "dog", "car")


def SYNC(**kwargs: Any) -> ClassifyConfig:  # noqa: N802 - reads as the config it builds
    """A synchronous stage's config: each frame's own crops are in its result."""
    return ClassifyConfig(asynchronous=False, **kwargs)


# ------------------------------------------------------------------------------ crops


def test_crop_rects_add_margin_and_clip_to_the_frame() -> None:
    spec = ClassifierSpec.imagenet(32, margin=0.1)
    rects, valid = crop_rects(np.array([[10, 20, 110, 70], [-30, -30, 20, 20]]), (60, 100), spec)
    # 100 × 50 box + 10 % per side → 120 × 60, clipped to the 100 × 60 frame
    assert rects.tolist() == [[0, 15, 100, 60], [0, 0, 25, 25]]
    assert valid.tolist() == [True, True]


def test_center_crop_keeps_the_centre_of_the_shorter_side() -> None:
    spec = ClassifierSpec.imagenet(32, fit=CropFit.CENTER_CROP, crop_pct=0.5)
    rects, _ = crop_rects(np.array([[0, 0, 100, 40]]), (100, 200), spec)
    assert rects.tolist() == [[40, 10, 60, 30]]  # 20 × 20 square at the box centre


@pytest.mark.parametrize(
    "box",
    [
        [300, 10, 350, 50],  # right of the frame
        [10, -80, 50, -10],  # above it
        [20, 20, 20, 60],  # zero width
        [30, 30, 10, 10],  # corners swapped
        [np.nan, 0, 10, 10],
        [0, 0, np.inf, 10],
    ],
)
def test_boxes_that_cannot_be_cropped_are_marked_not_cut(box: list[float]) -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    batch = crop_batch(
        image, np.array([box, [0, 0, 50, 50]], np.float32), ClassifierSpec.imagenet(16)
    )
    assert batch.valid.tolist() == [False, True]
    assert batch.tensor.shape == (1, 3, 16, 16)
    assert batch.skipped == 1


def test_crop_pixels_are_normalised_in_the_model_channel_order() -> None:
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, 20:] = (255, 0, 0)  # pure blue in BGR on the right half
    spec = ClassifierSpec.imagenet(8)  # RGB, ImageNet mean/std
    tensor = crop_batch(image, np.array([[20, 0, 40, 40]], np.float32), spec).tensor
    mean, std = np.array(spec.preprocess.mean), np.array(spec.preprocess.std)
    expected = (np.array([0.0, 0.0, 1.0]) - mean) / std  # R, G, B
    np.testing.assert_allclose(tensor[0].mean(axis=(1, 2)), expected, rtol=1e-5)

    bgr = ClassifierSpec(PreprocessSpec((8, 8), channels=ChannelOrder.BGR, scale=1.0))
    raw = crop_batch(image, np.array([[20, 0, 40, 40]], np.float32), bgr).tensor
    assert raw[0, :, 0, 0].tolist() == [255.0, 0.0, 0.0]


def test_letterbox_pads_with_the_spec_colour_and_keeps_the_aspect() -> None:
    image = np.full((100, 100, 3), 200, np.uint8)
    spec = ClassifierSpec(
        PreprocessSpec((20, 20), pad_value=(10, 20, 30), channels=ChannelOrder.RGB),
        CropFit.LETTERBOX,
    )
    tensor = crop_batch(image, np.array([[0, 0, 100, 50]], np.float32), spec).tensor[0]
    assert tensor[:, 0, 0].tolist() == [10.0, 20.0, 30.0]  # padding row (RGB order)
    assert tensor[:, 10, 10].tolist() == [200.0, 200.0, 200.0]  # image in the middle band
    assert (tensor[0, :, 5] == 200).sum() == 10  # 2:1 box → 10 of 20 rows are image


def test_normalize_batch_matches_the_formula() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    spec = ClassifierSpec.imagenet((5, 4))
    out = normalize_batch(pixels, spec)
    rgb = pixels[..., ::-1].astype(np.float64) / 255
    ref = (rgb - np.array(spec.preprocess.mean)) / np.array(spec.preprocess.std)
    np.testing.assert_allclose(out, ref.transpose(0, 3, 1, 2), atol=1e-5)


# ------------------------------------------------------------------------ label maps


def test_label_map_sums_classes_and_puts_the_rest_in_other() -> None:
    m = LabelMap.from_mapping({"pet": ["Cat", 1]}, NAMES)
    probs = np.array([[0.5, 0.2, 0.3], [0.0, 0.1, 0.9]], np.float32)
    assert m.labels == ("pet", "other")
    np.testing.assert_allclose(m.project(probs), [[0.7, 0.3], [0.1, 0.9]], atol=1e-6)


def test_label_map_without_other_renormalises() -> None:
    m = LabelMap.from_mapping({"cat": ["cat"], "dog": ["dog"]}, NAMES, other=None)
    np.testing.assert_allclose(
        m.project(np.array([[0.1, 0.3, 0.6]], np.float32)), [[0.25, 0.75]], atol=1e-6
    )


def test_label_map_naming_unknown_classes_lists_them_with_suggestions() -> None:
    with pytest.raises(LabelMapError, match=r"'dgo' \(did you mean 'dog'\?\), 'plane'"):
        LabelMap.from_mapping({"pet": ["cat", "dgo"], "air": ["plane"]}, NAMES)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"a": ["cat"], "b": ["cat"]}, "in both 'a' and 'b'"),
        ({"a": []}, "needs a list"),
        ({"a": "cat"}, "needs a list"),
        ({}, "no labels"),
        ({"a": [7]}, "no class '7'"),
    ],
)
def test_malformed_label_maps_are_refused(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(LabelMapError, match=message):
        LabelMap.from_mapping(mapping, NAMES)


def test_label_map_files_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("labels:\n  pet: [cat, dog]\nother: rest\n")
    (tmp_path / "m.json").write_text(json.dumps({"vehicle": ["car"]}))
    (tmp_path / "bad.yaml").write_text("labels: [unclosed\n")
    assert load_label_map(tmp_path / "m.yaml", NAMES).labels == ("pet", "rest")
    assert load_label_map(tmp_path / "m.json", NAMES).labels == ("vehicle", "other")
    with pytest.raises(LabelMapError, match="not valid yaml"):
        load_label_map(tmp_path / "bad.yaml", NAMES)
    with pytest.raises(LabelMapError, match="not found"):
        load_label_map(tmp_path / "missing.yaml", NAMES)


def test_builtin_vehicle_map_matches_the_imagenet_names() -> None:
    pytest.importorskip("timm")
    from tapetum.classify.export import imagenet_class_names

    names = imagenet_class_names()
    m = load_label_map("vehicles", names)
    assert m.labels[:4] == ("car", "van", "truck", "bus")
    bus = m.matrix[:, m.labels.index("bus")]
    assert {names[i] for i in np.flatnonzero(bus)} == {"school bus", "trolleybus", "minibus"}


# ----------------------------------------------------------------- per-track voting


def test_tracks_are_due_on_first_sighting_every_n_frames_and_when_grown() -> None:
    state = TrackLabels(2)
    ids, area = np.array([1, 2]), np.array([100.0, 100.0])
    assert state.due(ids, area, 0, every=10, grow=1.5).tolist() == [True, True]
    state.add(ids, np.full((2, 2), 0.5, np.float32), area, 0)
    assert state.due(ids, np.array([100.0, 149.0]), 9, 10, 1.5).tolist() == [False, False]
    assert state.due(ids, np.array([100.0, 150.0]), 9, 10, 1.5).tolist() == [False, True]
    assert state.due(ids, area, 10, 10, 1.5).tolist() == [True, True]


def test_ended_tracks_are_forgotten_and_memory_stays_bounded() -> None:
    state = TrackLabels(3, max_age_frames=5, max_tracks=50)
    for frame in range(1000):  # a new track every frame, each seen once
        ids = np.array([frame])
        state.touch(ids, frame)
        state.add(ids, np.ones((1, 3), np.float32) / 3, np.array([1.0]), frame)
    assert len(state) <= 6
    assert state.lookup(np.array([0]))[0].tolist() == [-1]  # the first track is gone

    crowd = TrackLabels(3, max_age_frames=1000, max_tracks=50)
    ids = np.arange(200)
    crowd.add(ids, np.ones((200, 3), np.float32) / 3, np.ones(200), 0)
    crowd.touch(ids[:10], 1)
    assert len(crowd) == 50 and set(ids[:10].tolist()) <= set(crowd.ids.tolist())


class ScriptedClassifier:
    """A classifier whose answer is written in the crop: the mean of its first channel
    (the crop's blue level, BGR order, ÷255) is the probability of class 0."""

    class_names = ("A", "B")
    spec = ClassifierSpec(PreprocessSpec((4, 4), channels=ChannelOrder.BGR, scale=1 / 255))

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.fail = False

    def predict(self, tensor: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.calls.append(int(tensor.shape[0]))
        if self.fail:
            raise RuntimeError("device lost")
        p0 = tensor[:, 0].mean(axis=(1, 2))
        return np.stack((p0, 1 - p0), axis=1).astype(np.float32)


def frame_with(index: int, blue: dict[int, int]) -> Frame:
    """A 100 × 400 frame: column band k (x 100k .. 100k+100) filled with blue level."""
    image = np.zeros((100, 400, 3), np.uint8)
    for k, level in blue.items():
        image[:, 100 * k : 100 * k + 100, 0] = level
    return Frame("cam", index, image, index / 25, 0.0)


def dets(track_ids: list[int], bands: list[int], classes: list[int] | None = None) -> Detections:
    boxes = [[100 * b + 10, 10, 100 * b + 90, 90] for b in bands]
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.full(len(bands), 0.9, np.float32),
        np.array(classes or [0] * len(bands)),
        np.array(track_ids),
    )


def test_a_track_label_is_the_running_mean_and_resists_one_odd_crop() -> None:
    clf = ScriptedClassifier()
    with ClassifierService(clf) as service:
        enrich = ClassificationEnricher(service, SYNC(every=10, min_box_px=0))
        labels = []
        for i in range(41):
            # A-like crops (blue 230: P(A) 0.90) until frame 20, then B-like (51: P(A) 0.2)
            level = 230 if i < 20 else 51
            out = enrich(frame_with(i, {0: level}), dets([5], [0]))
            labels.append((out.data["label"][0], int(out.data["label_votes"][0])))
        assert clf.calls == [1, 1, 1, 1, 1]  # frames 0, 10, 20, 30, 40
        assert labels[0] == ("A", 1) and labels[19] == ("A", 2)
        assert labels[20] == ("A", 3)  # one odd crop does not flip the label
        assert labels[39] == ("A", 4)  # A 2.20 vs B 1.80
        assert labels[40] == ("B", 5)  # consistently B: it wins (A 2.40 vs B 2.60)
        conf = enrich(frame_with(41, {0: 51}), dets([5], [0])).data["label_confidence"][0]
        assert conf == pytest.approx((2 * 25 / 255 + 3 * 0.8) / 5, abs=1e-3)


def test_only_chosen_classes_and_big_enough_boxes_are_classified() -> None:
    clf = ScriptedClassifier()
    with ClassifierService(clf) as service:
        config = SYNC(class_ids=frozenset({2}), min_box_px=50)
        enrich = ClassificationEnricher(service, config)
        d = dets([1, 2, NO_TRACK], [0, 1, 2], classes=[0, 2, 2])
        d.xyxy[1] = [100, 0, 140, 100]  # 40 px wide: under min_box
        out = enrich(frame_with(0, {0: 200, 1: 200, 2: 200}), d)
        assert out.data["label"].tolist() == [None, None, None]
        assert clf.calls == []
        d.xyxy[1] = [100, 0, 160, 100]
        out = enrich(frame_with(1, {1: 200}), d)
        assert out.data["label"].tolist() == [None, "A", None]
        assert np.isnan(out.data["label_confidence"][0])
        assert out.data["label_votes"].tolist() == [0, 1, 0]


def test_crops_outside_the_frame_are_skipped_and_counted() -> None:
    clf = ScriptedClassifier()
    with ClassifierService(clf) as service:
        enrich = ClassificationEnricher(service, SYNC(min_box_px=0))
        d = dets([1, 2], [0, 1])
        d.xyxy[1] = [500, 10, 560, 90]  # right of the 400 px frame
        out = enrich(frame_with(0, {0: 200}), d)
        assert out.data["label"].tolist() == ["A", None]
        assert clf.calls == [1]
        assert service.stats.as_dict()["crops_skipped"] == 1
        assert service.stats.as_dict()["crops_classified"] == 1


def test_a_failing_classifier_never_fails_the_frame() -> None:
    clf = ScriptedClassifier()
    with ClassifierService(clf) as service:
        enrich = ClassificationEnricher(service, SYNC(min_box_px=0, every=1))
        enrich(frame_with(0, {0: 200}), dets([1], [0]))
        clf.fail = True
        out = enrich(frame_with(1, {0: 200}), dets([1], [0]))
        assert out.data["label"].tolist() == ["A"]  # the label it had
        stats = service.stats.as_dict()
        assert stats["failed_calls"] == 1 and stats["failed_crops"] == 1


def test_streams_share_model_calls() -> None:
    import threading

    clf = ScriptedClassifier()
    with ClassifierService(clf, max_wait_ms=200, max_batch=6) as service:
        enrichers = [ClassificationEnricher(service, SYNC(min_box_px=0)) for _ in range(3)]
        threads = [
            threading.Thread(target=e, args=(frame_with(0, {0: 200}), dets([1, 2], [0, 1])))
            for e in enrichers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert clf.calls == [6]  # three streams' two crops each, one call


def test_label_map_applies_to_track_labels() -> None:
    clf = ScriptedClassifier()
    lm = LabelMap.from_mapping({"good": ["A"]}, clf.class_names, other="bad")
    with ClassifierService(clf, lm, max_wait_ms=0) as service:
        enrich = ClassificationEnricher(service, SYNC(min_box_px=0))
        out = enrich(frame_with(0, {0: 20, 1: 240}), dets([1, 2], [0, 1]))
        assert out.data["label"].tolist() == ["bad", "good"]


# ------------------------------------------------------------------ option parsing


def test_parse_classify_option() -> None:
    path, opts = parse_classify_option("models/cls.onnx:classes=car,bus:every=5:labels=m.yaml")
    assert path == Path("models/cls.onnx")
    assert opts == {"classes": "car,bus", "every": "5", "labels": "m.yaml"}
    assert parse_classify_option("C:/x/cls.onnx:min_box=20") == (
        Path("C:/x/cls.onnx"),
        {"min_box": "20"},
    )
    config = config_from_options(opts, ("person", "car", "bus"))
    assert config.class_ids == frozenset({1, 2}) and config.every == 5
    assert config.asynchronous and config.settled_every is None
    _, opts = parse_classify_option("m.onnx:mode=sync:settle=40")
    config = config_from_options(opts, ())
    assert not config.asynchronous and config.settled_every == 40
    assert config_from_options({}, (), asynchronous=False).asynchronous is False
    assert config_from_options({"mode": "async"}, (), asynchronous=False).asynchronous


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (":every=3", "no model"),
        ("m.onnx:every=3:every=4", "given twice"),
        ("m.onnx:every=3:speed=9", "unknown option"),
    ],
)
def test_bad_classify_options(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_classify_option(text)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"every": "ten"}, "every must be a number"),
        ({"every": "0"}, "every must be ≥ 1"),
        ({"grow": "0.5"}, "grow must be ≥ 1"),
        ({"classes": "plane"}, "unknown class"),
        ({"mode": "later"}, "mode must be async or sync"),
        ({"every": "10", "settle": "5"}, "settle must be ≥ every"),
        ({"settle": "x"}, "settle must be a number"),
    ],
)
def test_bad_classify_values(opts: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_options(opts, ("person", "car"))


# ------------------------------------------------------- classifiers built as ONNX


def tiny_model(path: Path, *, head: str, meta: ModelMeta | None = None) -> Path:
    """An 8 × 8 RGB model: ``vector`` = global average pool → [B, 3] (logits),
    ``softmax`` = the same through a softmax, ``map`` = the [B, 3, 8, 8] input itself."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])
    if head == "map":
        nodes = [helper.make_node("Identity", ["images"], ["out"])]
        out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 8, 8])
    else:
        nodes = [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat" if head == "softmax" else "out"]),
        ]
        if head == "softmax":
            nodes.append(helper.make_node("Softmax", ["flat"], ["out"], axis=1))
        out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph(nodes, "tiny", [x], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta is not None:
        write_model_meta(model, meta)
    onnx.save(model, str(path))
    return path


def test_a_classifier_reads_its_contract_from_metadata(tmp_path: Path) -> None:
    spec = ClassifierSpec(PreprocessSpec((8, 8), channels=ChannelOrder.BGR, scale=1 / 255))
    path = tiny_model(tmp_path / "c.onnx", head="vector", meta=spec.to_meta(NAMES))
    clf = OnnxClassifier(path)
    assert clf.class_names == NAMES and clf.output_kind is OutputKind.LOGITS
    image = np.zeros((20, 20, 3), np.uint8)
    image[..., 2] = 255  # red: channel 2 in BGR
    probs, valid = clf.classify(image, np.array([[0, 0, 20, 20], [30, 30, 40, 40]], np.float32))
    assert valid.tolist() == [True, False]
    assert probs.shape == (1, 3) and probs.sum() == pytest.approx(1.0)
    assert NAMES[int(probs[0].argmax())] == "car"  # the red channel's logit is 1, others 0

    soft = OnnxClassifier(tiny_model(tmp_path / "s.onnx", head="softmax"), spec)
    assert soft.output_kind is OutputKind.PROBABILITIES
    assert soft.class_names == ("class0", "class1", "class2")


def test_a_model_without_one_vector_per_image_is_refused(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "map.onnx", head="map")
    with pytest.raises(ClassifierError, match=r"shape \[2, 3, 8, 8\].*one score vector"):
        OnnxClassifier(path, ClassifierSpec.imagenet(8))


def test_class_names_must_match_the_output(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "c.onnx", head="vector")
    with pytest.raises(ClassifierError, match="2 class names for an output of 3"):
        OnnxClassifier(path, ClassifierSpec.imagenet(8), class_names=("a", "b"))


def test_a_detector_is_not_taken_for_a_classifier(tmp_path: Path) -> None:
    meta = ModelMeta("yolox", PreprocessSpec((8, 8)), NAMES, arch="yolox_nano")
    path = tiny_model(tmp_path / "d.onnx", head="vector", meta=meta)
    with pytest.raises(ClassifierError, match="'yolox' detector"):
        OnnxClassifier(path)


# ------------------------------------------------------------------------ drawing


def test_the_annotated_video_shows_the_track_label(tmp_path: Path) -> None:
    from tapetum.core.result import FrameResult
    from tapetum.sinks.video import AnnotatedVideoSink

    sink = AnnotatedVideoSink(tmp_path / "v.mp4", trail_length=0)
    frame = Frame("cam", 0, np.zeros((200, 400, 3), np.uint8), 0.0, 0.0)
    plain = dets([3], [1])
    labelled = dets([3], [1])
    labelled.data["label"] = np.array(["a long label text"], dtype=object)
    unlabelled = dets([3], [1])
    unlabelled.data["label"] = np.array([None], dtype=object)
    drawn = [sink.annotate(FrameResult(frame, d, ("person",))) for d in (plain, labelled)]
    sink.close()
    text_band = (slice(0, 12), slice(0, 400))  # the label strip above the box top (y=10)
    ink = [int(np.count_nonzero(img[text_band].any(axis=2))) for img in drawn]
    assert ink[1] > ink[0] * 1.5  # the label adds text to the strip
    same = sink.annotate(FrameResult(frame, unlabelled, ("person",)))
    np.testing.assert_array_equal(same, drawn[0])  # no label yet: drawn as before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["efficientnet_lite0", "--int8"], "--int8 needs --calib DATA"),
        (["yolo11n.yaml", "--int8"], "--int8 is for classifiers"),
    ],
)
def test_int8_export_user_errors_are_config_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from tapetum.cli.app import app

    # raised before anything is exported; the console entry point prints it as one
    # "error:" line with exit code 2
    result = CliRunner().invoke(app, ["export", *args, "-o", str(tmp_path / "m.onnx")])
    assert isinstance(result.exception, ConfigError), result.output
    assert message in str(result.exception)
    assert not (tmp_path / "m.onnx").exists()
