"""``RemoteDetector`` with a fake stub: proto → Detections, what goes on the wire, and how
each gRPC outcome drives the circuit breaker."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

pytest.importorskip("grpc")

import cv2
import grpc

from tapetum.core.breaker import BreakerState, CircuitBreaker, CircuitOpenError
from tapetum.core.detections import NO_TRACK
from tapetum.errors import ConfigError, ModelLoadError
from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.remote import RemoteBackendError, RemoteDetector, detections_from_proto


class FakeRpcError(grpc.RpcError, grpc.Call):
    def __init__(self, code: grpc.StatusCode, details: str, error_code: str | None = None):
        self._code = code
        self._details = details
        self._trailing = (("tapetum-error-code", error_code),) if error_code else ()

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


def _state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # a call, so mypy does not narrow it between checks


def _det(box: Sequence[float], conf: float, cls: int, track: int | None = None) -> pb.Detection:
    msg = pb.Detection(
        box=pb.Box(x1=box[0], y1=box[1], x2=box[2], y2=box[3]),
        confidence=conf,
        class_id=cls,
        class_name="x",
    )
    if track is not None:
        msg.track_id = track
    return msg


class FakeStub:
    """Records every call; ``DetectBatch`` answers one box per image, or raises ``error``."""

    def __init__(self, num_classes: int = 80) -> None:
        self.num_classes = num_classes
        self.error: Exception | None = None
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    def _info(self) -> pb.ModelInfo:
        return pb.ModelInfo(
            name="yolox_nano",
            path="/m/yolox_nano.onnx",
            input_width=416,
            input_height=320,
            num_classes=self.num_classes,
            providers=["CPUExecutionProvider"],
        )

    def ListModels(self, request: Any, **kw: Any) -> pb.ListModelsResponse:  # noqa: N802
        self.calls.append(("ListModels", request, kw))
        return pb.ListModelsResponse(models=[self._info()])

    def DescribeModel(self, request: Any, **kw: Any) -> pb.ModelInfo:  # noqa: N802
        self.calls.append(("DescribeModel", request, kw))
        return self._info()

    def DetectBatch(self, request: Any, **kw: Any) -> pb.BatchDetectResponse:  # noqa: N802
        self.calls.append(("DetectBatch", request, kw))
        if self.error is not None:
            raise self.error
        items = [
            pb.BatchItem(detections=[_det((i, 2, 10 + i, 20), 0.5, i)])
            for i in range(len(request.images))
        ]
        return pb.BatchDetectResponse(results=items)

    def count(self, method: str) -> int:
        return sum(1 for name, _, _ in self.calls if name == method)


def _remote(stub: FakeStub, **kw: Any) -> RemoteDetector:
    return RemoteDetector("127.0.0.1:1", kw.pop("api_key", "k"), stub=stub, **kw)


def test_detections_from_proto_builds_typed_arrays() -> None:
    det = detections_from_proto(
        [_det((1.5, 2, 30, 40.25), 0.9, 5, track=7), _det((0, 0, 1, 1), 0.25, 0)]
    )
    assert det.xyxy.dtype == np.float32 and det.xyxy.shape == (2, 4)
    np.testing.assert_array_equal(det.xyxy, [[1.5, 2, 30, 40.25], [0, 0, 1, 1]])
    np.testing.assert_allclose(det.confidence, [0.9, 0.25], rtol=1e-6)
    assert det.class_id.dtype == np.int64 and det.class_id.tolist() == [5, 0]
    # The node's session tracks mean nothing to the caller's tracker.
    assert det.tracker_id.tolist() == [NO_TRACK, NO_TRACK]
    assert len(detections_from_proto([])) == 0


def test_model_info_fetched_once_and_exposed() -> None:
    stub = FakeStub()
    remote = _remote(stub)
    assert remote.input_hw == (320, 416)
    assert len(remote.class_names) == 80 and remote.class_names[5] == "bus"
    assert str(remote.model.path) == "/m/yolox_nano.onnx"
    assert remote.model.providers == ["CPUExecutionProvider"]
    remote([np.zeros((4, 4, 3), np.uint8)])
    assert stub.count("ListModels") == 1


def test_named_model_uses_describe_model() -> None:
    stub = FakeStub()
    _remote(stub, model_name="yolox_nano")
    assert [name for name, _, _ in stub.calls] == ["DescribeModel"]
    assert stub.calls[0][1].name == "yolox_nano"


def test_class_count_mismatch_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="3 classes"):
        _remote(FakeStub(num_classes=3))
    remote = _remote(FakeStub(num_classes=3), class_names=["a", "b", "c"])
    assert remote.class_names == ("a", "b", "c")


def test_requests_carry_jpeg_conf_key_deadline_and_are_chunked() -> None:
    stub = FakeStub()
    remote = _remote(stub, api_key="tpk_1", timeout_s=0.7, conf_threshold=0.2, max_batch=2)
    images = [np.full((30 + i, 40, 3), 10 * i, np.uint8) for i in range(5)]
    out = remote(images)
    assert [d.class_id.tolist() for d in out] == [[0], [1], [0], [1], [0]]  # order kept
    batches = [(req, kw) for name, req, kw in stub.calls if name == "DetectBatch"]
    assert [len(req.images) for req, _ in batches] == [2, 2, 1]
    req, kw = batches[0]
    assert kw["timeout"] == 0.7
    assert kw["metadata"] == (("authorization", "Bearer tpk_1"),)
    assert req.HasField("conf") and req.conf == pytest.approx(0.2)
    item = req.images[1]
    assert item.content_type == "image/jpeg"
    decoded = cv2.imdecode(np.frombuffer(item.data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (31, 40, 3)
    assert remote([]) == []


def test_no_key_sends_no_metadata_and_none_conf_sends_no_conf() -> None:
    stub = FakeStub()
    _remote(stub, api_key=None, conf_threshold=None)([np.zeros((4, 4, 3), np.uint8)])
    _, req, kw = stub.calls[-1]
    assert kw["metadata"] == () and not req.HasField("conf")


def test_refusals_count_as_success_and_carry_the_nodes_code() -> None:
    stub = FakeStub()
    breaker = CircuitBreaker("t", failure_threshold=1, reset_timeout_s=10)
    remote = _remote(stub, breaker=breaker)
    stub.error = FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "too big", "image_too_large")
    with pytest.raises(RemoteBackendError) as info:
        remote([np.zeros((4, 4, 3), np.uint8)])
    err = info.value
    assert (err.status, err.error_code, err.transient) == (
        "INVALID_ARGUMENT",
        "image_too_large",
        False,
    )
    assert "too big" in str(err) and "127.0.0.1:1" in str(err)
    assert _state(breaker) is BreakerState.CLOSED


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_unavailable_and_deadline_open_the_breaker_then_fail_fast(code: Any) -> None:
    now = [0.0]
    breaker = CircuitBreaker("t", failure_threshold=2, reset_timeout_s=5, clock=lambda: now[0])
    stub = FakeStub()
    remote = _remote(stub, breaker=breaker)
    frame = np.zeros((4, 4, 3), np.uint8)
    stub.error = FakeRpcError(code, "down")
    for _ in range(2):
        with pytest.raises(RemoteBackendError, match=code.name):
            remote([frame])
    assert _state(breaker) is BreakerState.OPEN
    sent = stub.count("DetectBatch")
    with pytest.raises(CircuitOpenError) as info:
        remote([frame])
    assert stub.count("DetectBatch") == sent  # no network while open
    assert info.value.retry_after_s == pytest.approx(5.0)

    now[0] = 5.0  # half-open: one trial; it fails, so the breaker opens again
    with pytest.raises(RemoteBackendError):
        remote([frame])
    assert _state(breaker) is BreakerState.OPEN
    now[0] = 10.0
    stub.error = None
    assert len(remote([frame])[0]) == 1
    assert _state(breaker) is BreakerState.CLOSED


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        RemoteDetector("https://host:1/x", None, stub=FakeStub())
    with pytest.raises(ConfigError):
        RemoteDetector("host:1", None, timeout_s=0, stub=FakeStub())
