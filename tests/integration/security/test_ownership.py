"""Finding 1 (High): streams and tracking sessions belong to the key that made them.

Before the fix a ``read`` key listed another key's stream (with its URI) and followed its
results, another ``infer`` key stopped it, two keys sending the same ``session_id`` shared
one tracker, and the global stream and session limits let one key take every slot or evict
everyone's sessions. REST and gRPC alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("grpc")

import grpc

from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tests.helpers import remux_to_mpegts
from tests.integration.security.stack import Stack, error_code, rpc_error, serve_stack
from tests.integration.serve_harness import assert_error

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def media(crowd_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    remux_to_mpegts(crowd_video, root / "crowd_3s.ts", max_s=3.0)
    return root


@pytest.fixture(scope="module")
def stack(
    yolox_path: Path, media: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with serve_stack(
        yolox_path,
        tmp_path_factory.mktemp("keys"),
        media_roots=(media,),
        max_streams=3,
        max_streams_per_key=1,
        max_subscriptions_per_key=1,
        max_sessions=8,
        max_sessions_per_key=2,
    ) as served:
        yield served


@pytest.fixture
def clip(media: Path) -> Path:
    return media / "crowd_3s.ts"


@pytest.fixture(scope="module")
def bus_jpg(assets: Path) -> bytes:
    return (assets / "images" / "bus.jpg").read_bytes()


@pytest.fixture(autouse=True)
def _no_streams_left(stack: Stack) -> Iterator[None]:
    yield
    stack.stop_all()


def _ids(resp_json: list[dict[str, object]]) -> set[object]:
    return {s["stream_id"] for s in resp_json}


# ---------------------------------------------------------------------------------- REST


def test_rest_another_key_neither_sees_follows_nor_stops_a_stream(stack: Stack, clip: Path) -> None:
    started = stack.start("alice", clip, realtime=True)
    assert started.status_code == 201, started.text
    sid = started.json()["stream_id"]
    assert started.json()["owner"] == stack.key_ids["alice"]

    for other in ("bob", "reader"):
        listed = stack.client.get("/v1/streams", headers=stack.auth(other))
        assert listed.status_code == 200 and sid not in _ids(listed.json())
        for path in (f"/v1/streams/{sid}", f"/v1/streams/{sid}/results"):
            assert_error(stack.client.get(path, headers=stack.auth(other)), 404, "unknown_stream")
    stopped = stack.client.delete(f"/v1/streams/{sid}", headers=stack.auth("bob"))
    assert_error(stopped, 404, "unknown_stream")
    # The same answer as for an id that never existed: nothing to probe.
    never = stack.client.get("/v1/streams/000000000000", headers=stack.auth("bob"))
    assert (
        never.json()["detail"].replace("000000000000", sid)
        == stack.client.get(f"/v1/streams/{sid}", headers=stack.auth("bob")).json()["detail"]
    )

    mine = stack.client.get(f"/v1/streams/{sid}", headers=stack.auth("alice"))
    assert mine.status_code == 200 and mine.json()["state"] == "running"
    assert sid in _ids(stack.client.get("/v1/streams", headers=stack.auth("alice")).json())


def test_rest_admin_sees_and_stops_everyones_streams(stack: Stack, clip: Path) -> None:
    sid = stack.start("alice", clip, realtime=True).json()["stream_id"]
    listed = stack.client.get("/v1/streams", headers=stack.auth("admin")).json()
    (info,) = [s for s in listed if s["stream_id"] == sid]
    assert info["owner"] == stack.key_ids["alice"]
    stopped = stack.client.delete(f"/v1/streams/{sid}", headers=stack.auth("admin"))
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"


def test_rest_one_key_cannot_take_every_stream_slot(stack: Stack, clip: Path) -> None:
    assert stack.start("alice", clip, realtime=True).status_code == 201
    over = stack.start("alice", clip, realtime=True)
    assert_error(over, 429, "too_many_streams")
    assert "this key" in over.json()["detail"]
    assert int(over.headers["Retry-After"]) >= 1
    # Another key still gets a slot.
    assert stack.start("bob", clip, realtime=True).status_code == 201


def test_rest_live_subscriptions_are_capped_per_key(stack: Stack, clip: Path) -> None:
    sid = stack.start("alice", clip, realtime=True).json()["stream_id"]
    url = f"/v1/streams/{sid}/results"
    with stack.client.stream("GET", url, headers=stack.auth("alice")) as first:
        assert first.status_code == 200
        lines = first.iter_lines()  # kept: a dropped iterator closes the response
        assert next(lines) == ": connected"  # the subscription is held
        second = stack.client.get(url, headers=stack.auth("alice"))
        assert_error(second, 429, "too_many_subscriptions")
        # The cap is per key: an admin may still follow the stream.
        with stack.client.stream("GET", url, headers=stack.auth("admin")) as admin:
            assert admin.status_code == 200
    # Closing the first frees the key's slot.
    with stack.client.stream("GET", url, headers=stack.auth("alice")) as again:
        assert again.status_code == 200


def _session_gauge(stack: Stack) -> float:
    text = stack.client.get("/metrics", headers=stack.auth("admin")).text
    match = re.search(r"^tapetum_tracking_sessions (\S+)$", text, re.MULTILINE)
    assert match is not None
    return float(match.group(1))


def test_rest_same_session_id_of_two_keys_is_two_trackers_and_a_flood_evicts_only_its_own(
    stack: Stack, bus_jpg: bytes
) -> None:
    def detect(name: str, session: str) -> None:
        resp = stack.client.post(
            "/v1/detect",
            params={"session_id": session},
            content=bus_jpg,
            headers={**stack.auth(name), "Content-Type": "image/jpeg"},
        )
        assert resp.status_code == 200, resp.text

    before = _session_gauge(stack)
    detect("alice", "cam-1")
    detect("bob", "cam-1")
    assert _session_gauge(stack) == before + 2, "one session each, not one shared tracker"
    # Alice opens more sessions than the server holds in all: she keeps her newest two
    # (her oldest go first), Bob keeps his.
    for i in range(10):
        detect("alice", f"flood-{i}")
    assert _session_gauge(stack) == before + 3, "alice's two newest sessions and bob's one"


# ---------------------------------------------------------------------------------- gRPC


def test_grpc_another_key_neither_sees_follows_nor_stops_a_stream(stack: Stack, clip: Path) -> None:
    info = stack.grpc_start("alice", clip, realtime=True)
    assert info.owner == stack.key_ids["alice"]
    ref = pb.StreamRef(id=info.stream_id)
    for other in ("bob", "reader"):
        listed = stack.stub.ListStreams(pb.ListStreamsRequest(), metadata=stack.meta(other))
        assert info.stream_id not in {s.stream_id for s in listed.streams}
        for call in (stack.stub.GetStream, stack.stub.StreamResults):
            err = rpc_error(lambda call=call, other=other: call(ref, metadata=stack.meta(other)))
            assert err.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
            assert error_code(err) == "unknown_stream"
    err = rpc_error(lambda: stack.stub.StopStream(ref, metadata=stack.meta("bob")))
    assert err.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert (
        stack.stub.GetStream(ref, metadata=stack.meta("alice")).state == pb.StreamInfo.STATE_RUNNING
    )
    # An admin sees it and may stop it; the REST view is the same stream.
    listed = stack.stub.ListStreams(pb.ListStreamsRequest(), metadata=stack.meta("admin"))
    assert info.stream_id in {s.stream_id for s in listed.streams}
    assert stack.stub.StopStream(ref, metadata=stack.meta("admin")).state == (
        pb.StreamInfo.STATE_STOPPED
    )


def test_grpc_stream_and_subscription_quotas_per_key(stack: Stack, clip: Path) -> None:
    info = stack.grpc_start("alice", clip, realtime=True)
    err = rpc_error(lambda: stack.grpc_start("alice", clip, realtime=True))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert error_code(err) == "too_many_streams"
    ref = pb.StreamRef(id=info.stream_id)
    first = stack.stub.StreamResults(ref, metadata=stack.meta("alice"))
    next(first)  # a frame arrived: the subscription is held
    err = rpc_error(lambda: stack.stub.StreamResults(ref, metadata=stack.meta("alice")))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert error_code(err) == "too_many_subscriptions"
    first.cancel()  # type: ignore[attr-defined]


def test_grpc_same_session_id_of_two_keys_is_two_sessions(stack: Stack, bus_jpg: bytes) -> None:
    before = _session_gauge(stack)
    request = pb.DetectRequest(image=bus_jpg, content_type="image/jpeg", session_id="grpc-cam")
    for name in ("carol", "dave"):
        resp = stack.stub.Detect(request, metadata=stack.meta(name))
        assert resp.session_id == "grpc-cam"
    assert _session_gauge(stack) == before + 2
