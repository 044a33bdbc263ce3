"""Finding 8 (Medium): credentials in stream URIs leaked.

Before the fix the user name and query-string tokens of a stream URI appeared in stream
listings, in the server log and in ``/metrics`` as the breaker label (only the password
was masked). Now every place a URI is shown strips user info, query and fragment, breakers
are labelled by a keyed hash, and the full URI goes only to its owner or an admin in the
answers about that one stream. REST and gRPC alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("grpc")

from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tests.helpers import remux_to_mpegts
from tests.integration.security.stack import CountingHttpServer, Stack, rpc_error, serve_stack
from tests.integration.serve_harness import assert_error

pytestmark = pytest.mark.integration

SECRETS = ("camuser", "s3cretpw", "t0ps3cret")


@pytest.fixture(scope="module")
def camera(
    crowd_video: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CountingHttpServer]:
    clip = remux_to_mpegts(crowd_video, tmp_path_factory.mktemp("clip") / "c.ts", max_s=3.0)
    server = CountingHttpServer(clip.read_bytes())
    yield server
    server.close()


@pytest.fixture(scope="module")
def stack(yolox_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The camera is on loopback: the operator allows it.
    with serve_stack(
        yolox_path,
        tmp_path_factory.mktemp("keys"),
        allowed_sources=("127.0.0.0/8",),
        stream_breaker_failures=2,
    ) as served:
        yield served


@pytest.fixture(autouse=True)
def _no_streams_left(stack: Stack) -> Iterator[None]:
    yield
    stack.stop_all()


def _secret_uri(camera: CountingHttpServer, port: int | None = None) -> str:
    port = camera.port if port is None else port
    return f"http://camuser:s3cretpw@127.0.0.1:{port}/live.ts?token=t0ps3cret#frag"


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked: {text[:500]}"


def test_rest_listings_metrics_and_logs_show_no_credentials(
    stack: Stack, camera: CountingHttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    uri = _secret_uri(camera)
    started = stack.start("alice", uri, realtime=True)
    assert started.status_code == 201, started.text
    info = started.json()
    sid = info["stream_id"]
    assert info["uri"] == f"http://127.0.0.1:{camera.port}/live.ts"
    assert info["full_uri"] == uri, "the owner gets back what it sent"

    for name in ("alice", "admin"):
        listed = stack.client.get("/v1/streams", headers=stack.auth(name))
        _no_secret(listed.text)
        (mine,) = [s for s in listed.json() if s["stream_id"] == sid]
        assert mine["uri"] == info["uri"] and mine["full_uri"] is None
    for name in ("alice", "admin"):
        one = stack.client.get(f"/v1/streams/{sid}", headers=stack.auth(name)).json()
        assert one["full_uri"] == uri, f"{name} may see the full URI of one stream"
    metrics = stack.client.get("/metrics", headers=stack.auth("reader")).text
    _no_secret(metrics)
    assert f'name="{stack.streams.breaker_name(uri)}"' in metrics
    assert "127.0.0.1" not in stack.streams.breaker_name(uri)
    stopped = stack.client.delete(f"/v1/streams/{sid}", headers=stack.auth("alice"))
    assert stopped.json()["full_uri"] == uri
    _no_secret(caplog.text)
    assert sid in caplog.text, "the log does record the stream"


def test_rest_failing_sources_leak_nothing_in_answers_or_logs(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dead = "http://camuser:s3cretpw@127.0.0.1:1/live.ts?token=t0ps3cret"
    for _ in range(2):
        failed = stack.start("alice", dead)
        assert_error(failed, 400, "bad_source")
        _no_secret(failed.text)
    refused = stack.start("alice", dead)  # the breaker is open now
    assert_error(refused, 503, "source_circuit_open")
    _no_secret(refused.text)
    assert stack.streams.breaker_name(dead) in refused.json()["detail"]
    _no_secret(stack.client.get("/metrics", headers=stack.auth("reader")).text)
    _no_secret(caplog.text)
    assert "127.0.0.1:1" in caplog.text, "the log keeps the host that failed"


def test_grpc_listings_show_no_credentials_and_one_stream_the_full_uri(
    stack: Stack, camera: CountingHttpServer
) -> None:
    uri = _secret_uri(camera)
    info = stack.grpc_start("alice", uri, realtime=True)
    assert info.uri == f"http://127.0.0.1:{camera.port}/live.ts"
    assert info.full_uri == uri
    listed = stack.stub.ListStreams(pb.ListStreamsRequest(), metadata=stack.meta("admin"))
    _no_secret(str(listed))
    (mine,) = [s for s in listed.streams if s.stream_id == info.stream_id]
    assert not mine.HasField("full_uri")
    got = stack.stub.GetStream(pb.StreamRef(id=info.stream_id), metadata=stack.meta("alice"))
    assert got.full_uri == uri
    # Another key cannot get at it at all.
    err = rpc_error(
        lambda: stack.stub.GetStream(pb.StreamRef(id=info.stream_id), metadata=stack.meta("bob"))
    )
    _no_secret(err.details())  # type: ignore[attr-defined]
