"""A REST app and a gRPC server on loopback sharing one detection service, one key store
and one stream manager (as ``tapetum serve`` wires them), for the security tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tapetum.serve.app import ServeSettings, create_app
from tapetum.serve.auth import KeyStore, Scope
from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc
from tapetum.serve.grpc.server import create_grpc_server
from tapetum.serve.service import DetectionService
from tapetum.serve.streams import StreamManager
from tests.integration.serve_harness import LoopbackServer, wait_ready

#: The keys every stack has: operators (``infer`` + ``read``), a reader and an admin.
KEY_SCOPES = {
    "alice": [Scope.INFER, Scope.READ],
    "bob": [Scope.INFER, Scope.READ],
    "carol": [Scope.INFER, Scope.READ],
    "dave": [Scope.INFER, Scope.READ],
    "reader": [Scope.READ],
    "admin": [Scope.ADMIN],
}


@dataclass
class Stack:
    """One served app: REST ``client``, gRPC ``stub``, raw keys and key ids by name."""

    app: Any
    client: httpx.Client
    stub: pb_grpc.DetectorStub
    streams: StreamManager
    service: DetectionService
    keys: dict[str, str]
    key_ids: dict[str, str]

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    def meta(self, name: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.keys[name]}"),)

    def start(self, name: str, uri: str | Path, **options: Any) -> httpx.Response:
        body = {"uri": str(uri), **options}
        return self.client.post("/v1/streams", json=body, headers=self.auth(name))

    def grpc_start(self, name: str, uri: str | Path, **options: Any) -> pb.StreamInfo:
        request = pb.StartStreamRequest(uri=str(uri), **options)
        info: pb.StreamInfo = self.stub.StartStream(request, metadata=self.meta(name))
        return info

    def stop_all(self) -> None:
        self.streams.stop_all(drain=False, timeout_s=5.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_stack(model_path: Path, tmp: Path, **settings: Any) -> Iterator[Stack]:
    """Serve ``model_path`` with these settings (no rate limit unless given) on loopback."""
    store = KeyStore(tmp / "keys.db")
    keys, key_ids = {}, {}
    for name, scopes in KEY_SCOPES.items():
        record, raw = store.create(name, scopes)
        keys[name], key_ids[name] = raw, record.key_id
    config = ServeSettings(model_path=model_path, **{"rate_per_second": None, **settings})
    service = DetectionService(config)
    app = create_app(config, key_store=store, service=service)
    streams: StreamManager = app.state.tapetum.streams
    server = LoopbackServer(app).start()
    port = _free_port()
    grpc_server = create_grpc_server(config, service, store, None, port, streams=streams)
    grpc_server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    client = httpx.Client(base_url=server.url, timeout=20)
    try:
        wait_ready(client, 120.0)
        yield Stack(app, client, pb_grpc.DetectorStub(channel), streams, service, keys, key_ids)
    finally:
        client.close()
        channel.close()
        grpc_server.stop(grace=1).wait()
        server.stop()
        service.close()
        store.close()


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    """The error a gRPC call ends with (a server-streaming call is read to its end)."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    return info.value


def error_code(err: grpc.RpcError) -> str:
    """The REST error code a gRPC error carries in its trailing metadata."""
    return str(dict(err.trailing_metadata() or ())["tapetum-error-code"])  # type: ignore[attr-defined]


class CountingHttpServer:
    """Loopback HTTP server of one MPEG-TS payload that counts the requests it gets."""

    def __init__(self, payload: bytes) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/live.ts"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
