"""The asynchronous classification stage with a scripted classifier: the tracking thread
never waits, answers attach on a later frame, the bounded queue drops its oldest jobs and
counts them, the worker batches the crops of many frames into one call, a drain at the end
answers everything, and every crop handed in is accounted for. Also the cadence pieces the
stage rests on: mark/vote, settled tracks, crops cut then normalised into a reused buffer."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tapetum.classify import (
    ClassificationEnricher,
    ClassifierService,
    ClassifierSpec,
    ClassifyConfig,
    TrackLabels,
    crop_batch,
)
from tapetum.classify.crops import cut_crops, normalize_batch
from tapetum.classify.service import CropJob, JobOutcome
from tapetum.core.frame import Frame
from tapetum.errors import ClassifierError, ConfigError
from tapetum.pipeline import DropPolicy
from tests.unit.classify.test_classify import ScriptedClassifier, dets, frame_with

pytestmark = pytest.mark.timeout(60)


class GatedClassifier(ScriptedClassifier):
    """The scripted classifier, whose calls wait until ``gate`` is set (a slow model)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def predict(self, tensor: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self.entered.set()
        assert self.gate.wait(30)
        return super().predict(tensor)


def accounted(stats: dict[str, int], pending: int = 0) -> bool:
    done = stats["crops_classified"] + stats["crops_dropped"] + stats["failed_crops"]
    return stats["crops_submitted"] == done + pending


def test_the_track_stage_does_not_wait_and_labels_attach_on_a_later_frame() -> None:
    clf = GatedClassifier()
    with ClassifierService(clf) as service:
        enrich = ClassificationEnricher(service, ClassifyConfig(min_box_px=0))
        out = enrich(frame_with(0, {0: 230}), dets([5], [0]))  # the model is stuck
        assert out.data["label"].tolist() == [None]  # the label known now: none yet
        assert out.data["label_votes"].tolist() == [0]
        assert service.pending_crops == 1
        out = enrich(frame_with(1, {0: 230}), dets([5], [0]))
        assert out.data["label"].tolist() == [None]  # still not answered, not sent again
        clf.gate.set()
        assert service.drain(10)
        out = enrich(frame_with(2, {0: 230}), dets([5], [0]))
        assert out.data["label"].tolist() == ["A"] and out.data["label_votes"].tolist() == [1]
        stats = service.stats.as_dict()
    assert clf.calls == [1]  # the cadence counts from the sending frame: one crop
    assert stats["results_applied"] == 1 and stats["result_lag_frames_max"] == 2
    assert accounted(stats)


def test_a_full_queue_drops_the_oldest_jobs_and_counts_their_crops() -> None:
    clf = GatedClassifier()
    seen: list[int] = []
    with ClassifierService(clf, queue_crops=4, max_batch=8) as service:
        config = ClassifyConfig(min_box_px=0, every=1)
        enrich = ClassificationEnricher(service, config, lambda f, ids, p: seen.append(f.index))
        enrich(frame_with(0, {0: 200}), dets([1], [0]))
        assert clf.entered.wait(10)  # frame 0's crop is in the (stuck) model
        for i in range(1, 11):  # ten more frames of one crop each: room for four
            enrich(frame_with(i, {0: 200}), dets([1], [0]))
        stats = service.stats.as_dict()
        assert stats["crops_dropped"] == 6 and stats["queue_high_water_crops"] == 4
        assert accounted(stats, pending=service.pending_crops)
        clf.gate.set()
        assert enrich.flush(10)
        stats = service.stats.as_dict()
    assert seen == [0, 7, 8, 9, 10]  # the newest frames were kept
    assert clf.calls == [1, 4]  # the four queued crops in one call
    assert stats["crops_classified"] == 5 and accounted(stats)
    assert int(enrich.state.votes.sum()) == 5


def test_the_worker_joins_the_crops_of_many_frames_and_streams_in_one_call() -> None:
    clf = GatedClassifier()
    with ClassifierService(clf, max_batch=16) as service:
        streams = [ClassificationEnricher(service, ClassifyConfig(min_box_px=0)) for _ in "ab"]
        streams[0](frame_with(0, {0: 200}), dets([1], [0]))
        assert clf.entered.wait(10)
        for i, enrich in enumerate(streams):
            enrich(frame_with(1, {0: 200, 1: 40}), dets([2 + 10 * i, 3 + 10 * i], [0, 1]))
        streams[1](frame_with(2, {2: 90}), dets([4], [2]))
        clf.gate.set()
        assert service.drain(10)
    assert clf.calls == [1, 5]
    assert service.stats.as_dict()["calls"] == 2


def test_a_drain_at_the_end_answers_every_crop_and_counts_add_up() -> None:
    clf = ScriptedClassifier()
    # A queue for every crop the frames ask for (at most 4 a frame): nothing is dropped
    # however far the worker falls behind on a busy machine (drops have a test of their own).
    with ClassifierService(clf, max_batch=4, queue_crops=240) as service:
        enrich = ClassificationEnricher(service, ClassifyConfig(min_box_px=0, every=3))
        for i in range(60):
            tracks = [t for t in range(4) if (i // (10 * (t + 1))) % 2 == 0]  # come and go
            enrich(frame_with(i, {t: 60 * t for t in tracks}), dets(tracks, tracks))
        assert enrich.flush(10)
        assert service.pending_crops == 0
        stats = service.stats.as_dict()
    assert stats["crops_dropped"] == 0 and accounted(stats)
    assert stats["results_applied"] == stats["crops_classified"]
    assert int(enrich.state.votes.sum()) == stats["crops_classified"]
    assert all(n <= 4 for n in clf.calls)


def test_async_and_sync_classify_the_same_crops_and_settle_on_the_same_labels() -> None:
    def run(asynchronous: bool) -> tuple[TrackLabels, int]:
        clf = ScriptedClassifier()
        with ClassifierService(clf) as service:
            config = ClassifyConfig(min_box_px=0, every=4, asynchronous=asynchronous)
            enrich = ClassificationEnricher(service, config)
            for i in range(40):
                blue = {0: 230 if i % 8 else 40, 1: 30, 2: 120 + i}
                d = dets([7, 8, 9], [0, 1, 2])
                d.xyxy[2, 2] += i  # a box that changes
                enrich(frame_with(i, blue), d)
            assert enrich.flush(10)
        return enrich.state, sum(clf.calls)

    (sync, n_sync), (lazy, n_async) = run(False), run(True)
    assert n_sync == n_async == 3 * 10  # three tracks, frames 0, 4, ..., 36
    np.testing.assert_array_equal(sync.votes, lazy.votes)
    np.testing.assert_allclose(sync.prob_sum, lazy.prob_sum, rtol=1e-6)
    ids = np.array([7, 8, 9])
    assert sync.lookup(ids)[0].tolist() == lazy.lookup(ids)[0].tolist()


def test_a_failed_call_is_counted_and_the_stream_goes_on() -> None:
    clf = ScriptedClassifier()
    clf.fail = True
    with ClassifierService(clf) as service:
        enrich = ClassificationEnricher(service, ClassifyConfig(min_box_px=0, every=1))
        for i in range(3):
            out = enrich(frame_with(i, {0: 200}), dets([1], [0]))
            assert enrich.flush(10)  # one call per frame
        assert out.data["label"].tolist() == [None]
        stats = service.stats.as_dict()
        assert stats["failed_calls"] == 3 and stats["failed_crops"] == 3 and accounted(stats)
        with pytest.raises(ClassifierError, match="device lost"):
            service.classify(frame_with(0, {0: 9}).image, dets([1], [0]).xyxy)


def test_a_synchronous_job_is_never_dropped_and_a_closed_service_refuses_jobs() -> None:
    clf = GatedClassifier()
    service = ClassifierService(clf, queue_crops=1)
    pixels = np.zeros((1, 4, 4, 3), np.uint8)
    first = service.submit(CropJob(pixels, np.array([1]), 0, asynchronous=True))
    assert clf.entered.wait(10)
    jobs = [service.submit(CropJob(pixels, np.array([i]), i)) for i in range(3)]
    late = service.submit(CropJob(pixels, np.array([9]), 9, asynchronous=True))
    assert late.outcome == JobOutcome.PENDING  # nothing droppable ahead of it: queued
    clf.gate.set()
    service.close()
    assert [j.outcome for j in (first, *jobs, late)] == [JobOutcome.DONE] * 5
    with pytest.raises(ConfigError, match="closed"):
        service.submit(CropJob(pixels, np.array([1]), 0))


# ---------------------------------------------------------------- cadence pieces


def test_marking_restarts_the_cadence_and_late_votes_of_forgotten_tracks_are_ignored() -> None:
    state = TrackLabels(2, max_age_frames=5)
    ids, area = np.array([1, 2]), np.array([100.0, 100.0])
    state.mark(ids, area, 0)
    assert state.due(ids, area, 3, every=4, grow=2).tolist() == [False, False]
    assert state.lookup(ids)[0].tolist() == [-1, -1]  # sent, not answered: no label
    state.touch(ids[:1], 20)  # track 2 unseen for 20 frames: forgotten
    assert state.vote(ids, np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)) == 1
    assert state.lookup(ids)[2].tolist() == [1, 0]


def test_a_settled_track_is_rechecked_less_often() -> None:
    state = TrackLabels(3)
    ids, area = np.array([1, 2]), np.array([50.0, 50.0])
    sure = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25]], np.float32)  # 2: undecided
    for frame in (0, 10, 20):
        state.add(ids, sure, area, frame)
    due = {f: state.due(ids, area, f, 10, 1.5, settled_every=30).tolist() for f in (30, 49, 50)}
    assert due == {30: [False, True], 49: [False, True], 50: [True, True]}
    assert state.due(ids, area, 30, 10, 1.5).tolist() == [True, True]  # off by default
    assert state.settled(np.array([0, 1]), 3, 0.3).tolist() == [True, False]
    assert state.settled(np.array([0, 1]), 4, 0.3).tolist() == [False, False]


def test_crops_cut_then_normalised_into_a_reused_buffer_match_the_one_step_batch() -> None:
    spec = ClassifierSpec.imagenet(16, margin=0.1)
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 30, 50], [70, 0, 200, 10], [40, 20, 79, 59]], np.float32)
    cut = cut_crops(image, boxes, spec)
    assert cut.valid.tolist() == [True, True, True] and cut.skipped == 0
    buffer = np.full((8, 3, 16, 16), np.nan, np.float32)
    out = normalize_batch(cut.pixels, spec, out=buffer[2:5])
    assert np.shares_memory(out, buffer)
    np.testing.assert_array_equal(buffer[2:5], crop_batch(image, boxes, spec).tensor)
    assert np.isnan(buffer[:2]).all() and np.isnan(buffer[5:]).all()
    with pytest.raises(ValueError, match="want float32"):
        normalize_batch(cut.pixels, spec, out=buffer[:2])


def test_the_observer_sees_the_frame_its_crops_came_from() -> None:
    seen: list[tuple[int, list[int]]] = []

    def observe(frame: Frame, ids: Any, probs: Any) -> None:
        seen.append((frame.index, ids.tolist()))

    with ClassifierService(ScriptedClassifier()) as service:
        enrich = ClassificationEnricher(service, ClassifyConfig(min_box_px=0, every=5), observe)
        for i in range(7):
            enrich(frame_with(i, {0: 100, 1: 100}), dets([3, 4], [0, 1]))
        assert enrich.flush(10)
    assert seen == [(0, [3, 4]), (5, [3, 4])]


def test_block_policy_makes_a_stream_wait_for_room_and_loses_nothing() -> None:
    clf = GatedClassifier()
    service = ClassifierService(clf, queue_crops=2, policy=DropPolicy.BLOCK)
    pixels = np.zeros((1, 4, 4, 3), np.uint8)
    jobs = [service.submit(CropJob(pixels, np.array([0]), 0, asynchronous=True))]
    assert clf.entered.wait(10)
    jobs += [service.submit(CropJob(pixels, np.array([i]), i, asynchronous=True)) for i in (1, 2)]
    blocked = threading.Thread(
        target=lambda: jobs.append(
            service.submit(CropJob(pixels, np.array([3]), 3, asynchronous=True))
        )
    )
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive() and len(jobs) == 3  # waiting for room, not dropped
    clf.gate.set()
    blocked.join(10)
    service.close()
    assert [j.outcome for j in jobs] == [JobOutcome.DONE] * 4
    assert service.stats.as_dict()["crops_dropped"] == 0


def test_drop_newest_policy_drops_the_new_job() -> None:
    clf = GatedClassifier()
    service = ClassifierService(clf, queue_crops=1, policy=DropPolicy.DROP_NEWEST)
    pixels = np.zeros((1, 4, 4, 3), np.uint8)
    service.submit(CropJob(pixels, np.array([0]), 0, asynchronous=True))
    assert clf.entered.wait(10)
    kept, new = (
        service.submit(CropJob(pixels, np.array([i]), i, asynchronous=True)) for i in (1, 2)
    )
    assert new.outcome == JobOutcome.DROPPED and kept.outcome == JobOutcome.PENDING
    clf.gate.set()
    service.close()
    stats = service.stats.as_dict()
    assert stats["crops_dropped"] == 1 and stats["crops_classified"] == 2 and accounted(stats)
