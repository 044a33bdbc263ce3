"""Findings 3 and 4 of issue 11: request bodies are capped per route before they are read,
before authentication too, and a chunked upload is cut off at the limit.

Before: a 200 MiB JSON body without a key raised the server's RSS by ~270 MB before the
401, and a 300 MiB chunked multipart upload to ``/v1/detect`` was read in full before the
413. Each test sends at most a few tens of MiB and stops as soon as the server answers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")

from tapetum.serve.app import ServeSettings, create_app
from tapetum.serve.auth import KeyStore, Scope
from tests.integration.security.conftest import rss_bytes, send_until_answered
from tests.integration.serve_harness import LoopbackServer, wait_ready

pytestmark = pytest.mark.integration

MAX_UPLOAD_BYTES = 1024 * 1024
CHUNK = b"x" * (64 * 1024)


@dataclass
class Served:
    server: LoopbackServer
    infer_key: str


@pytest.fixture(scope="module")
def served(yolox_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")
    _, infer_key = store.create("inferrer", [Scope.INFER])
    settings = ServeSettings(model_path=yolox_path, max_upload_bytes=MAX_UPLOAD_BYTES)
    server = LoopbackServer(create_app(settings, key_store=store)).start()
    with httpx.Client(base_url=server.url) as client:
        wait_ready(client)
    try:
        yield Served(server, infer_key)
    finally:
        server.stop()
        store.close()


def _endless() -> Iterator[bytes]:
    while True:
        yield CHUNK


def _chunked(chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        yield b"%x\r\n%s\r\n" % (len(chunk), chunk)


def test_oversized_json_body_without_a_key_is_refused_before_it_is_read(
    served: Served,
) -> None:
    declared = 200 * 1024 * 1024
    head = (
        b"POST /v1/streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % declared
    )
    before = rss_bytes()
    status, sent = send_until_answered(served.server.port, head, _endless(), max_send=16 << 20)
    assert status == 413, f"no 413 after {sent} bytes"
    assert sent < 8 << 20, f"the client could send {sent} bytes before the 413"
    assert rss_bytes() - before < 20 << 20


def test_chunked_json_body_without_a_key_is_cut_off_at_the_json_limit(served: Served) -> None:
    head = (
        b"POST /v1/streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    status, sent = send_until_answered(
        served.server.port, head, _chunked(_endless()), max_send=16 << 20
    )
    assert status == 413, f"no 413 after {sent} bytes"
    assert sent < 8 << 20


def test_chunked_multipart_upload_is_aborted_past_the_upload_limit(served: Served) -> None:
    boundary = b"tapetumboundary"

    def body() -> Iterator[bytes]:  # a 300 MiB "image", never materialised
        yield (
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        )
        for _ in range(300 * 16):
            yield CHUNK

    head = (
        b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: Bearer " + served.infer_key.encode() + b"\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n\r\n"
    )
    before = rss_bytes()
    status, sent = send_until_answered(
        served.server.port, head, _chunked(body()), max_send=48 << 20
    )
    assert status == 413, f"no 413 after {sent} bytes"
    assert sent < 32 << 20, f"{sent} bytes went out before the 413"
    assert rss_bytes() - before < 30 << 20


def test_small_bodies_and_uploads_within_the_limit_still_work(served: Served) -> None:
    with httpx.Client(base_url=served.server.url, timeout=20) as client:
        # Within the JSON cap: reaches auth (401), not the body limit.
        assert client.post("/v1/streams", json={"uri": "x"}).status_code == 401
        # Declared within the upload cap but not an image: the detect route answers.
        resp = client.post(
            "/v1/detect",
            content=b"x" * 1000,
            headers={"Authorization": f"Bearer {served.infer_key}", "Content-Type": "image/jpeg"},
        )
        assert resp.status_code == 422, resp.text  # read, decoded, refused
        too_big = client.post(
            "/v1/detect",
            content=b"x" * (MAX_UPLOAD_BYTES + 200_000),
            headers={"Content-Type": "image/jpeg"},
        )
        assert too_big.status_code == 413
        assert too_big.json()["code"] == "payload_too_large"
        assert too_big.headers["x-content-type-options"] == "nosniff"
