"""``RemoteDetector`` against real gRPC servers on loopback: a Tapetum node with the real
YOLOX-nano model, a node that hangs, and an address where nothing listens."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("grpc")
pytest.importorskip("fastapi")

import cv2
import grpc

from tapetum.core.breaker import BreakerState, CircuitBreaker, CircuitOpenError
from tapetum.detect.classes import COCO80
from tapetum.serve.app import DetectorLike, ServeSettings, default_detector_factory
from tapetum.serve.auth import KeyStore
from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc
from tapetum.serve.grpc.server import create_grpc_server
from tapetum.serve.remote import RemoteBackendError, RemoteDetector
from tapetum.serve.service import DetectionService

pytestmark = pytest.mark.integration

CONF = 0.35


def _state(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state  # a call, so mypy does not narrow it between checks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------- a real upstream node


@pytest.fixture(scope="module")
def bus(assets: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(assets / "images" / "bus.jpg"))
    assert image is not None
    return image.astype(np.uint8, copy=False)


@pytest.fixture(scope="module")
def local_detector(yolox_path: Path) -> DetectorLike:
    return default_detector_factory(ServeSettings(model_path=yolox_path))


@pytest.fixture(scope="module")
def upstream(
    yolox_path: Path, local_detector: DetectorLike, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A Tapetum gRPC node with auth on; yields (address, a read+infer key)."""
    store = KeyStore(tmp_path_factory.mktemp("remote-keys") / "keys.db")
    key = store.create("lead-node", ["read", "infer"])[1]
    settings = ServeSettings(model_path=yolox_path, conf_threshold=CONF)
    service = DetectionService(settings, lambda _settings: local_detector)
    service.start()
    assert service.wait_ready(60.0), service.load_error
    port = _free_port()
    server = create_grpc_server(settings, service, store, None, port)
    server.start()
    try:
        yield f"127.0.0.1:{port}", key
    finally:
        server.stop(grace=1).wait()
        store.close()


def test_remote_matches_local_detector_on_bus(
    upstream: tuple[str, str], local_detector: DetectorLike, bus: npt.NDArray[np.uint8]
) -> None:
    address, key = upstream
    with RemoteDetector(f"grpc://{address}", key) as remote:
        assert remote.input_hw == local_detector.input_hw
        assert remote.class_names == local_detector.class_names
        # The backend shows its model's folder only to admin keys; this one is not.
        assert remote.model.path == Path(local_detector.model.path.name)

        found = remote([bus])[0]
        found = found[found.confidence >= CONF]
        names = sorted(remote.class_names[i] for i in found.class_id)
        assert names == ["bus", "person", "person", "person"]

        local = local_detector([bus])[0]
        local = local[local.confidence >= CONF]
        # Same objects in the same score order; the JPEG re-encode moves boxes < 1 px.
        r, l_ = np.argsort(-found.confidence), np.argsort(-local.confidence)
        np.testing.assert_array_equal(found.class_id[r], local.class_id[l_])
        np.testing.assert_allclose(found.xyxy[r], local.xyxy[l_], atol=1.0)
        assert remote.breaker.state is BreakerState.CLOSED


def test_remote_with_a_wrong_key_is_refused_at_startup(upstream: tuple[str, str]) -> None:
    address, _ = upstream
    with pytest.raises(RemoteBackendError) as info:
        RemoteDetector(address, "tpk_not_a_key")
    assert info.value.status == "UNAUTHENTICATED" and not info.value.transient


# ----------------------------------------------------------------- a node that hangs


class HangingNode(pb_grpc.DetectorServicer):
    """Answers model info at once; ``DetectBatch`` sleeps ``hang_s`` while ``hang`` is set
    (woken early by ``release`` so the server can stop)."""

    def __init__(self, hang_s: float) -> None:
        self.hang_s = hang_s
        self.hang = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def ListModels(  # noqa: N802 - generated servicer's name
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[
                pb.ModelInfo(
                    name="fake",
                    family="yolox",
                    path="/models/fake.onnx",
                    input_width=416,
                    input_height=416,
                    num_classes=len(COCO80),
                    providers=["CPUExecutionProvider"],
                )
            ]
        )

    def DetectBatch(  # noqa: N802 - generated servicer's name
        self, request: pb.BatchDetectRequest, context: grpc.ServicerContext
    ) -> pb.BatchDetectResponse:
        self.calls += 1
        if self.hang.is_set():
            self.release.wait(self.hang_s)
        box = pb.Box(x1=1, y1=2, x2=30, y2=40)
        item = pb.BatchItem(
            image=pb.ImageSize(width=64, height=48),
            detections=[pb.Detection(box=box, confidence=0.9, class_id=5, class_name="bus")],
        )
        return pb.BatchDetectResponse(model="fake", results=[item] * len(request.images))


@pytest.fixture
def hanging() -> Iterator[tuple[str, HangingNode]]:
    node = HangingNode(hang_s=5.0)
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_DetectorServicer_to_server(node, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", node
    finally:
        node.release.set()
        server.stop(grace=0).wait()


def test_timeouts_open_the_breaker_and_a_half_open_trial_closes_it(
    hanging: tuple[str, HangingNode],
) -> None:
    address, node = hanging
    frame = np.zeros((48, 64, 3), np.uint8)
    breaker = CircuitBreaker("remote-test", failure_threshold=3, reset_timeout_s=0.5)
    remote = RemoteDetector(address, None, timeout_s=0.2, breaker=breaker)
    try:
        assert len(remote([frame])[0]) == 1  # fast while not hanging

        node.hang.set()
        for _ in range(breaker.failure_threshold):
            with pytest.raises(RemoteBackendError) as info:
                remote([frame])
            assert info.value.status == "DEADLINE_EXCEEDED" and info.value.transient
        assert _state(breaker) is BreakerState.OPEN

        calls = node.calls
        t0 = time.perf_counter()
        with pytest.raises(CircuitOpenError) as refused:
            remote([frame])
        assert time.perf_counter() - t0 < 0.05
        assert node.calls == calls  # failed fast: the node never saw it
        assert 0 < refused.value.retry_after_s <= 0.5
        assert "DEADLINE_EXCEEDED" in refused.value.reason

        node.hang.clear()
        time.sleep(0.55)
        assert _state(breaker) is BreakerState.HALF_OPEN
        found = remote([frame])[0]  # the trial call
        assert _state(breaker) is BreakerState.CLOSED
        np.testing.assert_allclose(found.xyxy, [[1, 2, 30, 40]])
        assert found.class_id.tolist() == [5]
        assert remote.class_names[5] == "bus"
    finally:
        remote.close()


# ----------------------------------------------------------------- nothing listening


def test_unavailable_node_counts_as_failure_and_is_described_once_up() -> None:
    address = f"127.0.0.1:{_free_port()}"
    breaker = CircuitBreaker("remote-down", failure_threshold=3, reset_timeout_s=0.3)
    t0 = time.perf_counter()
    remote = RemoteDetector(address, None, timeout_s=1.0, breaker=breaker)  # does not raise
    try:
        assert breaker.snapshot().consecutive_failures == 1  # the model-info call
        with pytest.raises(RemoteBackendError) as info:
            remote([np.zeros((8, 8, 3), np.uint8)])
        assert info.value.status == "UNAVAILABLE"
        with pytest.raises(RemoteBackendError):
            _ = remote.input_hw
        assert _state(breaker) is BreakerState.OPEN
        assert time.perf_counter() - t0 < 2.0  # refused connections fail fast, no deadline
        with pytest.raises(CircuitOpenError):
            _ = remote.class_names

        # The node comes up on that address: after the pause it is described and used.
        node = HangingNode(hang_s=5.0)
        server = grpc.server(ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_DetectorServicer_to_server(node, server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(address)
        server.start()
        try:
            time.sleep(0.35)
            assert remote.input_hw == (416, 416)
            assert _state(breaker) is BreakerState.CLOSED
            assert len(remote([np.zeros((48, 64, 3), np.uint8)])[0]) == 1
        finally:
            server.stop(grace=0).wait()
    finally:
        remote.close()
