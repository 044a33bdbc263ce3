"""Finding 6 of issue 11 (and the Low item on gRPC buffering): long gRPC calls cannot take
every handler thread, and an unauthenticated call is refused before its message is read.

Before: 16 open ``StreamResults`` calls from one ``read`` key made ``Health`` time out, and
a message up to ~160 MiB was buffered before the key was checked."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("grpc")

import grpc

from tapetum.serve.auth import KeyStore, Scope
from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc
from tapetum.serve.settings import ServeSettings
from tests.integration.security.conftest import grpc_server, rss_bytes

pytestmark = pytest.mark.integration


def _idle_frames(stop: threading.Event) -> Iterator[pb.DetectRequest]:
    """A DetectStream that sends nothing until told to end: it holds a handler thread."""
    stop.wait(30)
    return
    yield  # pragma: no cover - makes this a generator


def test_open_streaming_calls_leave_health_answering(yolox_path: Path, tmp_path: Path) -> None:
    with KeyStore(tmp_path / "keys.db") as store:
        keys = [store.create(f"k{i}", [Scope.INFER, Scope.READ])[1] for i in range(4)]
        settings = ServeSettings(model_path=yolox_path, max_streaming_calls_per_key=4)
        server, port, service = grpc_server(settings, store, max_workers=16)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.DetectorStub(channel)  # type: ignore[no-untyped-call]
        stop = threading.Event()
        calls = []
        try:
            # 16 calls from one key: 4 are admitted, 12 refused at once.
            for _ in range(16):
                calls.append(
                    stub.DetectStream(_idle_frames(stop), metadata=(("x-api-key", keys[0]),))
                )
            time.sleep(0.5)
            refused = sum(
                1
                for call in calls
                if call.done() and call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            assert refused == 12
            # Other keys fill the server's streaming share (16 threads - 4 reserved = 12).
            for key in keys[1:]:
                for _ in range(4):
                    calls.append(
                        stub.DetectStream(_idle_frames(stop), metadata=(("x-api-key", key),))
                    )
            time.sleep(0.5)
            start = time.monotonic()
            health = stub.Health(pb.HealthRequest(), timeout=2)
            assert health.model_loaded
            assert time.monotonic() - start < 1.0
            models = stub.ListModels(
                pb.ListModelsRequest(), metadata=(("x-api-key", keys[1]),), timeout=2
            )
            assert len(models.models) == 1
        finally:
            stop.set()
            for call in calls:
                call.cancel()
            channel.close()
            server.stop(0).wait()
            service.close()


_BIG_CALL = """
import grpc, sys
from tapetum.serve.grpc._gen import tapetum_pb2 as pb, tapetum_pb2_grpc as pb_grpc
channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.max_send_message_length", 1 << 30)])
stub = pb_grpc.DetectorStub(channel)
images = [pb.ImageData(data=b"x" * (10 << 20), content_type="image/jpeg") for _ in range(12)]
try:
    stub.DetectBatch(pb.BatchDetectRequest(images=images), timeout=20)
except grpc.RpcError as exc:
    print(exc.code().name)
"""


def test_unauthenticated_large_message_is_refused_before_it_is_buffered(
    yolox_path: Path, tmp_path: Path
) -> None:
    with KeyStore(tmp_path / "keys.db") as store:
        settings = ServeSettings(model_path=yolox_path)
        server, port, service = grpc_server(settings, store)
        try:
            before = rss_bytes()
            # The 120 MiB client runs in its own process: only the server's memory is here.
            result = subprocess.run(
                [sys.executable, "-c", _BIG_CALL, f"127.0.0.1:{port}"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert result.stdout.strip() == "UNAUTHENTICATED", result.stderr
            assert rss_bytes() - before < 40 << 20
        finally:
            server.stop(0).wait()
            service.close()


def test_each_method_has_its_own_message_limit(yolox_path: Path, tmp_path: Path) -> None:
    with KeyStore(tmp_path / "keys.db") as store:
        _, key = store.create("reader", [Scope.READ])
        settings = ServeSettings(model_path=yolox_path)
        server, port, service = grpc_server(settings, store)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.DetectorStub(channel)  # type: ignore[no-untyped-call]
        try:
            with pytest.raises(grpc.RpcError) as refused:
                # A model name of 1 MiB: far over the 64 KiB of a non-image method.
                stub.DescribeModel(
                    pb.DescribeModelRequest(name="m" * (1 << 20)),
                    metadata=(("x-api-key", key),),
                )
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
            trailing = dict(refused.value.trailing_metadata())  # type: ignore[attr-defined]
            assert trailing["tapetum-error-code"] == "message_too_large"
        finally:
            channel.close()
            server.stop(0).wait()
            service.close()
