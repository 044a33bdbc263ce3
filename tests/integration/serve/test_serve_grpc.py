"""The gRPC API end to end: a real server on loopback, the real YOLOX-nano model, a real
key store and rate limiter, and the generated client stub."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("grpc")
pytest.importorskip("fastapi")

import grpc

from tapetum.serve.app import DetectorLike, ServeSettings, default_detector_factory
from tapetum.serve.auth import KeyStore
from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc
from tapetum.serve.grpc.server import create_grpc_server
from tapetum.serve.ratelimit import RateLimit, RateLimiter
from tapetum.serve.service import DetectionService

pytestmark = pytest.mark.integration

LIMITED_METHOD = "/tapetum.v1.Detector/ListModels"
LIMITED_BURST = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    stub: pb_grpc.DetectorStub
    keys: dict[str, str]
    models: Path  # a model folder beside the default model's

    def auth(self, name: str, header: str = "authorization") -> tuple[tuple[str, str], ...]:
        value = f"Bearer {self.keys[name]}" if header == "authorization" else self.keys[name]
        return ((header, value),)


@pytest.fixture(scope="module")
def served(yolox_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store = KeyStore(tmp_path_factory.mktemp("grpc-keys") / "keys.db")
    keys = {
        scopes: store.create(scopes, scopes.split("+"))[1]
        for scopes in ("read", "infer", "admin", "read+infer")
    }
    limiter = RateLimiter(
        RateLimit(per_second=1000, burst=1000),
        {LIMITED_METHOD: RateLimit(per_second=0.2, burst=LIMITED_BURST)},
    )
    models = tmp_path_factory.mktemp("models")  # a second model folder, for junk.onnx
    settings = ServeSettings(
        model_path=yolox_path,
        conf_threshold=0.35,
        max_batch=4,
        model_roots=(yolox_path.parent, models),
    )
    detector: DetectorLike = default_detector_factory(settings)
    port = _free_port()
    # The default model is built here; models loaded at runtime (LoadModel) for real.
    service = DetectionService(
        settings, lambda s: detector if s is settings else default_detector_factory(s)
    )
    service.start()
    assert service.wait_ready(120.0), service.load_error
    server = create_grpc_server(settings, service, store, limiter, port)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(pb_grpc.DetectorStub(channel), keys, models)
    finally:
        channel.close()
        server.stop(grace=2).wait()
        store.close()


@pytest.fixture(scope="module")
def bus_jpg(assets: Path) -> bytes:
    return (assets / "images" / "bus.jpg").read_bytes()


def _classes(resp: pb.DetectResponse | pb.BatchItem) -> list[str]:
    return sorted(d.class_name for d in resp.detections)


def _error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if isinstance(result, Iterator):  # a stream fails when read
            list(result)
    return info.value


def _trailing(err: grpc.RpcError) -> dict[str, str]:
    return dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]


def test_detect_finds_bus_and_three_people(served: Served, bus_jpg: bytes) -> None:
    resp = served.stub.Detect(
        pb.DetectRequest(image=bus_jpg, content_type="image/jpeg"), metadata=served.auth("infer")
    )
    assert _classes(resp) == ["bus", "person", "person", "person"]
    assert (resp.image.width, resp.image.height) == (810, 1080)
    assert resp.model == "yolox_nano" and not resp.HasField("session_id")
    bus = next(d for d in resp.detections if d.class_name == "bus")
    assert bus.confidence > 0.85 and not bus.HasField("track_id")
    assert set(resp.timings_ms) == {"decode", "inference", "total"}


def test_detect_with_x_api_key_and_class_filter(served: Served, bus_jpg: bytes) -> None:
    resp = served.stub.Detect(
        pb.DetectRequest(image=bus_jpg, content_type="image/jpeg", classes=["bus"], conf=0.5),
        metadata=served.auth("infer", header="x-api-key"),
    )
    assert _classes(resp) == ["bus"]


def test_batch_detects_each_image(served: Served, bus_jpg: bytes, assets: Path) -> None:
    zidane = (assets / "images" / "zidane.jpg").read_bytes()
    resp = served.stub.DetectBatch(
        pb.BatchDetectRequest(
            images=[
                pb.ImageData(data=bus_jpg, content_type="image/jpeg"),
                pb.ImageData(data=zidane, content_type="image/jpeg"),
            ]
        ),
        metadata=served.auth("infer"),
    )
    assert len(resp.results) == 2
    assert _classes(resp.results[0]) == ["bus", "person", "person", "person"]
    assert "person" in _classes(resp.results[1])


def test_stream_keeps_order_and_track_ids(served: Served, bus_jpg: bytes) -> None:
    frames = [
        pb.DetectRequest(image=bus_jpg, content_type="image/jpeg", session_id="cam-1")
        for _ in range(3)
    ]
    # The 2nd frame is cropped (PNG of another size) so the order is visible in the answers.
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(bus_jpg, np.uint8), cv2.IMREAD_COLOR)
    ok, png = cv2.imencode(".png", img[:, :800])
    assert ok
    frames[1] = pb.DetectRequest(image=png.tobytes(), content_type="image/png")
    results = list(served.stub.DetectStream(iter(frames), metadata=served.auth("infer")))
    assert [r.image.width for r in results] == [810, 800, 810]
    assert [r.session_id for r in results] == ["cam-1", "", "cam-1"]
    tracks = [{d.track_id for d in r.detections if d.HasField("track_id")} for r in results]
    assert tracks[0], "the first frame starts tracks"
    assert tracks[0] == tracks[1] == tracks[2], "a stream keeps its track ids"
    # A new stream is a new session: its ids start afresh, not after the first stream's.
    again = list(served.stub.DetectStream(iter(frames[:1]), metadata=served.auth("infer")))
    assert {d.track_id for d in again[0].detections if d.HasField("track_id")} == tracks[0]


def test_models_list_describe_unknown(served: Served) -> None:
    (info,) = served.stub.ListModels(pb.ListModelsRequest(), metadata=served.auth("read")).models
    assert (info.name, info.family, info.num_classes, info.input_width) == (
        "yolox_nano",
        "yolox",
        80,
        416,
    )
    assert "CPUExecutionProvider" in info.providers
    assert info.path == "yolox_nano.onnx", "a key without admin sees the file name only"
    one = served.stub.DescribeModel(
        pb.DescribeModelRequest(name="yolox_nano"), metadata=served.auth("read")
    )
    assert one == info
    err = _error(
        lambda: served.stub.DescribeModel(
            pb.DescribeModelRequest(name="yolov99"), metadata=served.auth("read")
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert "no model named 'yolov99'" in err.details()  # type: ignore[attr-defined]


def test_health_needs_no_key(served: Served) -> None:
    resp = served.stub.Health(pb.HealthRequest())
    assert resp.status == pb.HealthResponse.STATUS_OK and resp.model_loaded


def test_admin_loads_detects_with_and_unloads_a_model(
    served: Served, bus_jpg: bytes, yolox_path: Path, tmp_path: Path
) -> None:
    stub, admin = served.stub, served.auth("admin")
    request = pb.LoadModelRequest(name="second", path=str(yolox_path), conf=0.35)
    for other in ("read", "infer", "read+infer"):
        err = _error(lambda other=other: stub.LoadModel(request, metadata=served.auth(other)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    err = _error(
        lambda: stub.LoadModel(
            pb.LoadModelRequest(name="second", path="/no/such.onnx"), metadata=admin
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "/no/such.onnx" in err.details()  # type: ignore[attr-defined]
    junk = served.models / "junk.onnx"
    junk.write_bytes(b"not a model")
    err = _error(
        lambda: stub.LoadModel(pb.LoadModelRequest(name="second", path=str(junk)), metadata=admin)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert _trailing(err)["tapetum-error-code"] == "model_load_failed"

    info = stub.LoadModel(request, metadata=admin)
    try:
        assert (info.name, info.num_classes, info.path) == ("second", 80, str(yolox_path))
        err = _error(lambda: stub.LoadModel(request, metadata=admin))
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
        assert _trailing(err)["tapetum-error-code"] == "model_exists"
        listed = stub.ListModels(pb.ListModelsRequest(), metadata=served.auth("read+infer"))
        assert [m.name for m in listed.models] == ["yolox_nano", "second"]
        resp = stub.Detect(
            pb.DetectRequest(image=bus_jpg, content_type="image/jpeg", model="second"),
            metadata=served.auth("infer"),
        )
        assert resp.model == "second"
        assert _classes(resp) == ["bus", "person", "person", "person"]
        batch = stub.DetectBatch(
            pb.BatchDetectRequest(
                images=[pb.ImageData(data=bus_jpg, content_type="image/jpeg")], model="second"
            ),
            metadata=served.auth("infer"),
        )
        assert batch.model == "second"
        assert _classes(batch.results[0]) == ["bus", "person", "person", "person"]
        err = _error(lambda: stub.UnloadModel(pb.ModelRef(name="yolox_nano"), metadata=admin))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    finally:
        left = stub.UnloadModel(pb.ModelRef(name="second"), metadata=admin)
    assert [m.name for m in left.models] == ["yolox_nano"]
    err = _error(
        lambda: stub.Detect(
            pb.DetectRequest(image=bus_jpg, content_type="image/jpeg", model="second"),
            metadata=served.auth("infer"),
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert _trailing(err)["tapetum-error-code"] == "unknown_model"


def _rpcs(served: Served, bus_jpg: bytes) -> dict[str, tuple[str, Callable[..., Any]]]:
    """Every protected RPC → (scope it needs, call with the given metadata)."""
    image = pb.DetectRequest(image=bus_jpg, content_type="image/jpeg")
    unknown = pb.StreamRef(id="no-such-stream")
    return {
        "Detect": ("infer", lambda md: served.stub.Detect(image, metadata=md)),
        "DetectBatch": (
            "infer",
            lambda md: served.stub.DetectBatch(
                pb.BatchDetectRequest(
                    images=[pb.ImageData(data=bus_jpg, content_type="image/jpeg")]
                ),
                metadata=md,
            ),
        ),
        "DetectStream": ("infer", lambda md: served.stub.DetectStream(iter([image]), metadata=md)),
        "ListModels": (
            "read",
            lambda md: served.stub.ListModels(pb.ListModelsRequest(), metadata=md),
        ),
        "DescribeModel": (
            "read",
            lambda md: served.stub.DescribeModel(
                pb.DescribeModelRequest(name="yolox_nano"), metadata=md
            ),
        ),
        "StartStream": (
            "infer",
            lambda md: served.stub.StartStream(
                pb.StartStreamRequest(uri="/no/such/clip.ts"), metadata=md
            ),
        ),
        "ListStreams": (
            "read",
            lambda md: served.stub.ListStreams(pb.ListStreamsRequest(), metadata=md),
        ),
        "GetStream": ("read", lambda md: served.stub.GetStream(unknown, metadata=md)),
        "StopStream": ("infer", lambda md: served.stub.StopStream(unknown, metadata=md)),
        "StreamResults": ("read", lambda md: served.stub.StreamResults(unknown, metadata=md)),
        "LoadModel": (
            "admin",
            lambda md: served.stub.LoadModel(
                pb.LoadModelRequest(name="extra", path="/no/such.onnx"), metadata=md
            ),
        ),
        "UnloadModel": (
            "admin",
            lambda md: served.stub.UnloadModel(pb.ModelRef(name="no-such-model"), metadata=md),
        ),
        "ReloadModel": (
            "admin",
            lambda md: served.stub.ReloadModel(pb.ModelRef(name="yolox_nano"), metadata=md),
        ),
    }


#: RPCs whose authorised call in the table fails past auth, and how.
_AUTHORISED_ERRORS = {
    "StartStream": (grpc.StatusCode.INVALID_ARGUMENT, "bad_source"),
    "GetStream": (grpc.StatusCode.NOT_FOUND, "unknown_stream"),
    "StopStream": (grpc.StatusCode.NOT_FOUND, "unknown_stream"),
    "StreamResults": (grpc.StatusCode.NOT_FOUND, "unknown_stream"),
    "LoadModel": (grpc.StatusCode.INVALID_ARGUMENT, "bad_model_path"),
    "UnloadModel": (grpc.StatusCode.NOT_FOUND, "unknown_model"),
    # served from a file: there is no registry alias to follow
    "ReloadModel": (grpc.StatusCode.FAILED_PRECONDITION, "model_not_followed"),
}


def test_every_rpc_but_health_needs_a_key_and_its_scope(served: Served, bus_jpg: bytes) -> None:
    rpcs = _rpcs(served, bus_jpg)
    assert set(rpcs) | {"Health"} == set(
        pb.DESCRIPTOR.services_by_name["Detector"].methods_by_name
    ), "a new RPC must be added to _rpcs"
    for name, (scope, call) in rpcs.items():
        missing = _error(lambda call=call: call(()))
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED, name  # type: ignore[attr-defined]
        assert _trailing(missing)["tapetum-error-code"] == "missing_api_key"
        bogus = _error(lambda call=call: call((("authorization", "Bearer not-a-key"),)))
        assert bogus.code() == grpc.StatusCode.UNAUTHENTICATED, name  # type: ignore[attr-defined]
        other = "read" if scope == "infer" else "infer"
        denied = _error(lambda call=call, other=other: call(served.auth(other)))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, name  # type: ignore[attr-defined]
        assert f"lacks the {scope!r} scope needed by {name}" in denied.details()  # type: ignore[attr-defined]
        allowed = served.auth("admin" if scope == "admin" else "read+infer")
        if name in _AUTHORISED_ERRORS:
            err = _error(lambda call=call, allowed=allowed: call(allowed))
            code, error_code = _AUTHORISED_ERRORS[name]
            assert err.code() == code, (name, err.details())  # type: ignore[attr-defined]
            assert _trailing(err)["tapetum-error-code"] == error_code
            continue
        result = call(allowed)
        if name == "DetectStream":
            assert len(list(result)) == 1


@pytest.mark.parametrize(
    ("request_", "code", "error_code"),
    [
        (
            pb.DetectRequest(image=b"\xff\xd8\xff\xe0garbage", content_type="image/jpeg"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "corrupt_image",
        ),
        (
            pb.DetectRequest(image=b"", content_type="image/jpeg"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty_image",
        ),
        (
            pb.DetectRequest(image=b"GIF89a", content_type="image/gif"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unsupported_media_type",
        ),
        (
            pb.DetectRequest(image=b"x", content_type="image/jpeg", conf=0.01),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_request",
        ),
        (
            pb.DetectRequest(image=b"x", content_type="image/jpeg", classes=["unicorn"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_request",
        ),
        (
            pb.DetectRequest(image=b"x", content_type="image/jpeg", session_id="a b/../c"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_request",
        ),
        (
            pb.DetectRequest(image=b"x" * (11 * 1024 * 1024), content_type="image/jpeg"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "message_too_large",  # Detect's message limit, checked before parsing
        ),
    ],
    ids=[
        "corrupt",
        "empty",
        "gif",
        "conf below floor",
        "unknown class",
        "bad session",
        "too large",
    ],
)
def test_bad_input_is_a_client_error_with_a_reason(
    served: Served, request_: pb.DetectRequest, code: grpc.StatusCode, error_code: str
) -> None:
    err = _error(lambda: served.stub.Detect(request_, metadata=served.auth("infer")))
    assert err.code() == code, err.details()  # type: ignore[attr-defined]
    assert _trailing(err)["tapetum-error-code"] == error_code
    assert err.details()  # type: ignore[attr-defined]


def test_corrupt_frame_in_a_stream_says_which(served: Served, bus_jpg: bytes) -> None:
    frames = [
        pb.DetectRequest(image=bus_jpg, content_type="image/jpeg"),
        pb.DetectRequest(image=bus_jpg[: len(bus_jpg) // 2], content_type="image/jpeg"),
    ]
    stream = served.stub.DetectStream(iter(frames), metadata=served.auth("infer"))
    assert len(next(stream).detections) == 4
    err = _error(lambda: list(stream))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert err.details().startswith("frame 1: ")  # type: ignore[attr-defined]


def test_rate_limit_burst_gives_resource_exhausted_with_retry_after(served: Served) -> None:
    call = lambda: served.stub.ListModels(pb.ListModelsRequest(), metadata=served.auth("admin"))  # noqa: E731
    for _ in range(LIMITED_BURST):
        call()
    err = _error(call)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    trailing = _trailing(err)
    assert trailing["tapetum-error-code"] == "rate_limited"
    assert int(trailing["retry-after"]) >= 1
    assert LIMITED_METHOD in err.details()  # type: ignore[attr-defined]
    # Another key has its own budget.
    served.stub.ListModels(pb.ListModelsRequest(), metadata=served.auth("read"))


def test_not_ready_is_unavailable(yolox_path: Path, bus_jpg: bytes) -> None:
    settings = ServeSettings(model_path=yolox_path, require_auth=False)
    port = _free_port()
    server = create_grpc_server(settings, DetectionService(settings), None, None, port)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.DetectorStub(channel)
            health = stub.Health(pb.HealthRequest())
            assert health.status == pb.HealthResponse.STATUS_LOADING
            assert not health.model_loaded
            err = _error(
                lambda: stub.Detect(pb.DetectRequest(image=bus_jpg, content_type="image/jpeg"))
            )
            assert err.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            assert _trailing(err)["retry-after"] == "1"
    finally:
        server.stop(grace=0).wait()
