"""DetectionService: readiness, the shared inference limit, sessions and request checks,
with a fake numpy detector (no model, no web framework)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pytest

from tapetum.core.detections import Detections
from tapetum.errors import ConfigError
from tapetum.serve.service import DetectionService, NotReadyError
from tapetum.serve.settings import ApiError, ServeSettings

Image = npt.NDArray[np.uint8]


class _FakeDetector:
    """Two fixed boxes per image; counts how many calls overlap."""

    class_names = ("person", "car")
    input_hw = (32, 32)
    recommended_workers = 2

    class model:  # noqa: N801 - mirrors YoloxDetector.model
        path = Path("fake.onnx")
        providers: ClassVar[list[str]] = ["CPUExecutionProvider"]

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls = 0

    def __call__(self, images: Sequence[Image]) -> list[Detections]:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.delay_s)
            return [
                Detections(
                    np.array([[2, 2, 12, 12], [16, 16, 30, 30]], np.float32),
                    np.array([0.9, 0.5], np.float32),
                    np.array([0, 1], np.int64),
                )
                for _ in images
            ]
        finally:
            with self.lock:
                self.running -= 1


def _settings(**kw: object) -> ServeSettings:
    return ServeSettings(model_path=Path("fake.onnx"), require_auth=False, **kw)  # type: ignore[arg-type]


def _ready(detector: _FakeDetector, **kw: object) -> DetectionService:
    service = DetectionService(_settings(**kw), lambda _s: detector)
    service.start()
    assert service.wait_ready(5.0), service.load_error
    return service


def _image() -> Image:
    return np.zeros((24, 40, 3), np.uint8)


def test_not_ready_until_loaded_then_warmed() -> None:
    gate = threading.Event()
    detector = _FakeDetector()

    def factory(_settings: ServeSettings) -> _FakeDetector:
        gate.wait(5.0)
        return detector

    service = DetectionService(_settings(), factory)
    with pytest.raises(NotReadyError) as info:
        service.detect(_image())
    assert (info.value.status, info.value.code) == (503, "not_ready")
    assert info.value.headers == {"Retry-After": "1"}
    assert info.value.detail == "the model is still loading"
    service.start()
    service.start()  # idempotent
    assert not service.wait_ready(0.05)
    assert not service.ready
    gate.set()
    assert service.wait_ready(5.0)
    assert service.load_error is None
    assert detector.calls == 1  # the warmup
    assert service.model_info().input_width == 32


def test_failed_load_is_reported() -> None:
    def factory(_settings: ServeSettings) -> _FakeDetector:
        raise OSError("no such model")

    service = DetectionService(_settings(), factory)
    service.start()
    assert not service.wait_ready(5.0)
    assert service.load_error == "OSError: no such model"
    with pytest.raises(NotReadyError) as info:
        service.model_info()
    assert info.value.failed
    assert info.value.detail == "OSError: no such model"


def test_one_limit_caps_concurrency_across_callers() -> None:
    detector = _FakeDetector(delay_s=0.05)
    service = _ready(detector, warmup=False)
    errors: list[BaseException] = []

    def rest_like() -> None:  # as REST would, from anyio worker threads
        try:
            for _ in range(4):
                service.detect(_image())
        except BaseException as exc:
            errors.append(exc)

    def grpc_like() -> None:
        try:
            for _ in range(4):
                service.detect_batch([_image(), _image()])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (rest_like, rest_like, grpc_like, grpc_like)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert detector.calls == 16
    assert detector.peak == 2  # recommended_workers, across both kinds of caller


def test_session_ids_keep_their_tracks() -> None:
    service = _ready(_FakeDetector(), warmup=False)
    first = [service.detect(_image(), session_id="cam-1") for _ in range(3)][-1]
    assert first.session_id == "cam-1"
    ids = sorted(d.track_id for d in first.detections if d.track_id is not None)
    assert ids
    again = service.detect(_image(), session_id="cam-1")
    assert sorted(d.track_id for d in again.detections if d.track_id is not None) == ids
    assert len(service.sessions) == 1
    other = service.detect(_image(), session_id="cam-2")
    assert len(service.sessions) == 2
    assert other.session_id == "cam-2"
    assert service.detect(_image()).session_id is None


def test_request_errors() -> None:
    service = _ready(_FakeDetector(), warmup=False, conf_threshold=0.3, min_conf_threshold=0.1)
    assert service.check_conf(None) == 0.3
    assert len(service.detect(_image(), conf=0.6).detections) == 1
    with pytest.raises(ApiError, match="below this server's floor") as info:
        service.check_conf(0.05)
    assert (info.value.status, info.value.code) == (422, "invalid_request")
    with pytest.raises(ApiError, match=r"is not in \[0, 1\]"):
        service.detect(_image(), conf=1.5)
    with pytest.raises(ApiError, match="an entry is empty"):
        service.detect(_image(), classes=["person", " "])
    with pytest.raises(ConfigError):
        service.class_ids(["zebra"])
    found = service.detect(_image(), classes=["car"]).detections
    assert [d.class_name for d in found] == ["car"]
    with pytest.raises(ApiError, match="session_id: must match") as info:
        service.detect(_image(), session_id="bad id!")
    assert info.value.status == 422
    with pytest.raises(ApiError, match="no model named") as info:
        service.model_info("other")
    assert (info.value.status, info.value.code) == (404, "unknown_model")
    with pytest.raises(ApiError, match="one or more images"):
        service.detect_batch([])
    small = _ready(_FakeDetector(), warmup=False, max_batch=2)
    with pytest.raises(ApiError, match="at most 2 files") as info:
        small.detect_batch([_image()] * 3)
    assert info.value.status == 413


def test_unknown_tracker_fails_at_construction() -> None:
    with pytest.raises(ConfigError):
        DetectionService(_settings(tracker="nope"), lambda _s: _FakeDetector())


class _StagedFake(_FakeDetector):
    """A staged detector whose one box per image encodes the image's fill value, so a
    result handed to the wrong request shows; records every inference batch size."""

    max_batch = 16

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s)
        self.batch_sizes: list[int] = []

    def preprocess(self, image: Image) -> tuple[npt.NDArray[np.float32], object]:
        return np.full((3, 4, 4), float(image[0, 0, 0]), np.float32), None

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with self.lock:
            self.batch_sizes.append(len(batch))
        time.sleep(self.delay_s)
        return batch[:, 0, 0, :1]  # (B, 1): the fill value

    def __call__(self, images: Sequence[Image]) -> list[Detections]:
        with self.lock:
            self.calls += 1
        raw = np.stack([self.preprocess(image)[0] for image in images])[:, 0, 0, :1]
        return [self.postprocess(r, None) for r in raw]

    def postprocess(self, raw: npt.NDArray[np.float32], meta: object) -> Detections:
        value = float(raw[0])
        return Detections(
            np.array([[value, 0, value + 1, 1]], np.float32),
            np.array([0.9], np.float32),
            np.array([0], np.int64),
        )


def test_concurrent_requests_share_model_calls_and_keep_their_own_results() -> None:
    detector = _StagedFake(delay_s=0.03)
    service = _ready(detector, batch_requests=8)
    results: dict[int, float] = {}

    def call(i: int) -> None:
        image = np.full((24, 40, 3), i, np.uint8)
        response = service.detect(image)
        results[i] = response.detections[0].box.x1

    threads = [threading.Thread(target=call, args=(i,)) for i in range(1, 25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: float(i) for i in range(1, 25)}  # every request got its own
    served = detector.batch_sizes  # (the warm-up is a whole-detector call)
    assert sum(served) == 24
    assert max(served) > 1, served  # busy workers let requests queue into batches
    assert max(served) <= 8
    service.close()
    service.close()  # idempotent
    assert service.detect(np.full((24, 40, 3), 7, np.uint8)).detections[0].box.x1 == 7.0


def test_a_lone_request_is_not_held_back_and_batching_can_be_off() -> None:
    detector = _StagedFake()
    service = _ready(detector, batch_requests=8)
    for i in range(3):
        service.detect(np.full((24, 40, 3), i, np.uint8))
    assert detector.batch_sizes == [1, 1, 1]
    off = _StagedFake()
    service_off = _ready(off, batch_requests=1)
    service_off.detect(_image())
    assert off.batch_sizes == []  # no batcher: whole-detector calls
    assert off.calls == 2  # warm-up + the request
    service.close()


def test_batching_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="batch_requests"):
        _settings(batch_requests=0)
    with pytest.raises(ConfigError, match="batch_wait_ms"):
        _settings(batch_wait_ms=-1.0)
