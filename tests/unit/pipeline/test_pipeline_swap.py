"""Swapping the detector of a running pipeline (``Pipeline.swap_detector``): no frame lost or
decoded by the wrong model, tracks keep their ids, a model of another input size works.
Numpy-only fakes, no model files."""

from __future__ import annotations

import threading
import time

import numpy as np
import numpy.typing as npt
import pytest

from tapetum.core.detections import Detections
from tapetum.core.result import FrameResult
from tapetum.detect.letterbox import LetterboxMeta
from tapetum.errors import ConfigError
from tapetum.pipeline import Pipeline, PipelineConfig
from tapetum.sinks import CallbackSink
from tests.unit.pipeline.test_pipeline_unit import FakeSource, assert_accounted

pytestmark = pytest.mark.timeout(30)


class LabelledDetector:
    """A fake model named by its one class. Its tensors have its own input size (so a frame
    preprocessed by one model cannot be inferred by another without a shape error) and
    carry the frame index; it records the frames it inferred and decoded."""

    def __init__(self, name: str, hw: tuple[int, int], max_batch: int = 16) -> None:
        self.class_names = (name,)
        self.input_hw = hw
        self.max_batch = max_batch
        self.inferred: list[int] = []
        self.decoded: list[int] = []
        self.warmups = 0

    def preprocess(
        self, image: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.float32], LetterboxMeta]:
        tensor = np.full((3, *self.input_hw), float(image[0, 0, 1]) + 1.0, np.float32)
        return tensor, LetterboxMeta(1.0, 0.0, 0.0, (image.shape[0], image.shape[1]))

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        assert batch.shape[2:] == self.input_hw, "a frame reached the wrong model"
        if not batch.any():  # the warm-up batch of zeros
            self.warmups += 1
        else:
            self.inferred += [int(t[0, 0, 0]) - 1 for t in batch]
        return batch[:, 0, 0, :1].copy()

    def postprocess(self, raw: npt.NDArray[np.float32], meta: LetterboxMeta) -> Detections:
        self.decoded.append(int(raw[0]) - 1)
        return Detections(
            xyxy=np.array([[2.0, 2.0, 10.0, 12.0]], np.float32),
            confidence=np.array([0.9], np.float32),
            class_id=np.array([0], np.int64),
        )


def _run_with_swap(
    old: LabelledDetector, new: LabelledDetector, swap_after: int, n_frames: int = 60
) -> tuple[Pipeline, list[FrameResult]]:
    results: list[FrameResult] = []
    lock = threading.Lock()

    def keep(result: FrameResult) -> None:
        with lock:
            results.append(result)

    source = FakeSource("cam", tag=1, n_frames=n_frames, period_s=0.01)
    pipe = Pipeline(
        [source],
        old,
        sinks=[CallbackSink(keep)],
        config=PipelineConfig(max_batch=2, max_wait_ms=20.0, warmup=False),
    )
    pipe.start()
    deadline = time.monotonic() + 10.0
    while pipe.stats().frames_processed < swap_after and time.monotonic() < deadline:
        time.sleep(0.002)
    pipe.swap_detector(new)
    assert pipe.join(timeout=10.0)
    return pipe, results


def test_a_swap_mid_stream_loses_no_frame_and_each_frame_stays_on_one_model() -> None:
    old, new = LabelledDetector("old", (8, 8)), LabelledDetector("new", (12, 12))
    pipe, results = _run_with_swap(old, new, swap_after=20)

    stats = pipe.stats()
    assert_accounted(stats)
    assert stats.frames_processed == 60 and stats.frames_failed == 0
    assert stats.detector_swaps == 1 and stats.as_dict()["detector_swaps"] == 1
    assert new.warmups == 1  # warmed before it took a frame
    # Each model decoded exactly the frames it inferred; together, every frame once.
    assert sorted(old.decoded) == sorted(old.inferred)
    assert sorted(new.decoded) == sorted(new.inferred)
    assert sorted(old.decoded + new.decoded) == list(range(60))
    # The switch happens once, in frame order: old model's frames first, then the new one's.
    names = [r.class_names[0] for r in sorted(results, key=lambda r: r.frame.index)]
    switch = names.index("new")
    assert switch >= 20 and names == ["old"] * switch + ["new"] * (60 - switch)


def test_tracks_keep_their_ids_across_a_swap() -> None:
    old, new = LabelledDetector("person", (8, 8)), LabelledDetector("person", (8, 8))
    _, results = _run_with_swap(old, new, swap_after=15)

    ids = [
        int(r.detections.tracker_id[0])
        for r in sorted(results, key=lambda r: r.frame.index)
        if len(r.detections)
    ]
    assert len(ids) >= 55  # the tracker confirms the box within a frame or two
    assert set(ids) == {ids[0]}  # one object, one id, before and after the swap
    assert old.decoded and new.decoded


def test_a_model_taking_smaller_batches_is_refused() -> None:
    old = LabelledDetector("a", (8, 8))
    pipe = Pipeline(
        [FakeSource("cam", tag=1, n_frames=1)],
        old,
        config=PipelineConfig(max_batch=4, warmup=False),
    )
    with pytest.raises(ConfigError, match="batches of up to 2"):
        pipe.swap_detector(LabelledDetector("b", (8, 8), max_batch=2))
    assert pipe.detector is old
