"""Server-side streams over gRPC: StartStream … StreamResults on MPEG-TS clips of the crowd
video, with the REST app's own StreamManager shared with the gRPC server (as ``tapetum
serve`` wires them), so a stream started on one API is seen and stopped on the other."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("grpc")
pytest.importorskip("fastapi")

import grpc

from tapetum.serve import mapping
from tapetum.serve.app import ServeSettings, create_app
from tapetum.serve.auth import KeyStore, Scope
from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc
from tapetum.serve.grpc.server import create_grpc_server
from tapetum.serve.service import DetectionService
from tapetum.serve.streams import StreamManager
from tests.helpers import CROWD_FPS, remux_to_mpegts

pytestmark = pytest.mark.integration

MAX_STREAMS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    stub: pb_grpc.DetectorStub
    keys: dict[str, str]
    streams: StreamManager
    clip_3s: Path
    clip_1s: Path
    media: Path

    def auth(self, name: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.keys[name]}"),)

    def start(self, uri: Path | str, **options: Any) -> pb.StreamInfo:
        request = pb.StartStreamRequest(uri=str(uri), **options)
        info: pb.StreamInfo = self.stub.StartStream(request, metadata=self.auth("infer"))
        return info


@pytest.fixture(scope="module")
def served(
    yolox_path: Path, crowd_video: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("grpc-streams")
    store = KeyStore(tmp / "keys.db")
    keys = {
        "read": store.create("reader", [Scope.READ])[1],
        "infer": store.create("inferrer", [Scope.INFER, Scope.READ])[1],  # owns its streams
    }
    settings = ServeSettings(
        model_path=yolox_path,
        rate_per_second=None,
        max_streams=MAX_STREAMS,
        media_roots=(tmp,),  # the clips; API callers may open nothing else
    )
    service = DetectionService(settings)
    app = create_app(settings, key_store=store, service=service)
    streams: StreamManager = app.state.tapetum.streams  # the REST app's manager, shared
    service.start()
    assert service.wait_ready(120.0), service.load_error
    port = _free_port()
    server = create_grpc_server(settings, service, store, None, port, streams=streams)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(
            pb_grpc.DetectorStub(channel),
            keys,
            streams,
            clip_3s=remux_to_mpegts(crowd_video, tmp / "crowd_3s.ts", max_s=3.0),
            clip_1s=remux_to_mpegts(crowd_video, tmp / "crowd_1s.ts", max_s=1.0),
            media=tmp,
        )
    finally:
        channel.close()
        server.stop(grace=2).wait()
        streams.stop_all()
        store.close()


def _error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    return info.value


def _trailing(err: grpc.RpcError) -> dict[str, str]:
    return dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]


def test_stream_lifecycle_results_stats_and_stop(served: Served) -> None:
    info = served.start(served.clip_3s, realtime=True, conf=0.3)
    sid = info.stream_id
    assert info.state == pb.StreamInfo.STATE_RUNNING
    assert info.options.conf == 0.3 and info.options.tracker == "bytetrack"
    assert mapping.stream_info_from_proto(info).stream_id == sid

    call = served.stub.StreamResults(pb.StreamRef(id=sid), metadata=served.auth("infer"))
    results = []
    for result in call:
        results.append(result)
        if len(results) == 10:
            break
    call.cancel()
    assert len(results) == 10
    indices = [r.frame_index for r in results]
    assert indices == sorted(indices), "results arrive in frame order"
    assert all(r.source_id == sid for r in results)
    assert all(r.end_to_end_ms > 0 for r in results)
    stamps = [r.timestamp_s for r in results]
    assert stamps == sorted(stamps) and stamps[0] >= 0
    dets = [d for r in results for d in r.detections]
    assert sum(d.class_name == "person" for d in dets) >= 10, "the crowd is tracked"
    assert all(d.HasField("track_id") and d.track_id >= 1 for d in dets)
    assert all(d.confidence >= 0.3 and d.box.x2 > d.box.x1 for d in dets)

    listed = served.stub.ListStreams(pb.ListStreamsRequest(), metadata=served.auth("infer"))
    assert sid in {s.stream_id for s in listed.streams}
    got = served.stub.GetStream(pb.StreamRef(id=sid), metadata=served.auth("infer"))
    stats = got.stats
    assert stats.frames_processed >= 10 and stats.frames_read >= stats.frames_processed
    assert 0 < stats.fps < 2 * CROWD_FPS, "realtime paces a file at its native rate"
    assert 0 < stats.p50_end_to_end_ms <= stats.p99_end_to_end_ms
    # The cancelled call let go of its subscription.
    deadline = time.monotonic() + 3
    while got.stats.subscribers and time.monotonic() < deadline:
        time.sleep(0.1)
        got = served.stub.GetStream(pb.StreamRef(id=sid), metadata=served.auth("infer"))
    assert got.stats.subscribers == 0, "a cancelled StreamResults must unsubscribe"
    # The REST side sees the same stream.
    assert served.streams.get(sid).stream_id == sid

    final = served.stub.StopStream(pb.StreamRef(id=sid), metadata=served.auth("infer"))
    assert final.state == pb.StreamInfo.STATE_STOPPED
    assert final.stats.frames_processed < 3 * CROWD_FPS, "stopped before the clip's end"
    for rpc in (served.stub.GetStream, served.stub.StopStream):
        scope = "read" if rpc is served.stub.GetStream else "infer"
        err = _error(
            lambda rpc=rpc, scope=scope: rpc(pb.StreamRef(id=sid), metadata=served.auth(scope))
        )
        assert err.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        assert _trailing(err)["tapetum-error-code"] == "unknown_stream"


def test_results_end_when_the_stream_ends(served: Served) -> None:
    sid = served.start(served.clip_1s, realtime=True).stream_id
    t0 = time.monotonic()
    results = list(served.stub.StreamResults(pb.StreamRef(id=sid), metadata=served.auth("infer")))
    assert time.monotonic() - t0 < 5, "the call must end with the stream"
    info = served.stub.GetStream(pb.StreamRef(id=sid), metadata=served.auth("infer"))
    assert info.state == pb.StreamInfo.STATE_FINISHED
    assert 0 < len(results) <= info.stats.frames_processed == int(CROWD_FPS)


def test_a_detection_interval_marks_predicted_results(served: Served) -> None:
    info = served.start(served.clip_1s, realtime=True, detect_every=2)
    assert info.options.detect_every == 2 and not info.options.HasField("scheduler")
    sid = info.stream_id
    results = list(served.stub.StreamResults(pb.StreamRef(id=sid), metadata=served.auth("infer")))
    assert results
    assert [r.predicted for r in results] == [r.frame_index % 2 == 1 for r in results]
    assert sum(len(r.detections) for r in results if r.predicted) >= 10, "tracks carried"
    stats = served.stub.GetStream(pb.StreamRef(id=sid), metadata=served.auth("infer")).stats
    assert stats.frames_processed == int(CROWD_FPS)
    assert stats.tracker_frames == stats.frames_processed // 2
    assert stats.detector_frames + stats.tracker_frames == stats.frames_processed
    assert stats.interval == 2


def test_stop_ends_a_following_results_call(served: Served) -> None:
    sid = served.start(served.clip_3s, realtime=True).stream_id
    call = served.stub.StreamResults(pb.StreamRef(id=sid), metadata=served.auth("infer"))
    next(call)
    served.stub.StopStream(pb.StreamRef(id=sid), metadata=served.auth("infer"))
    t0 = time.monotonic()
    rest = list(call)  # ends normally, no error
    assert time.monotonic() - t0 < 3
    assert len(rest) < 3 * CROWD_FPS


def test_bad_requests_are_invalid_argument_with_the_reason(served: Served, tmp_path: Path) -> None:
    cases = [
        ({"uri": str(served.media / "nope.mp4")}, "bad_source", "cannot be opened"),
        ({"uri": str(tmp_path / "nope.mp4")}, "bad_source", "not allowed"),
        ({"uri": "ftp://cams.example/1.ts"}, "bad_source", "not allowed"),
        ({"uri": ""}, "invalid_request", "uri"),
        ({"uri": str(served.clip_1s), "conf": 0.01}, "invalid_request", "conf"),
        ({"uri": str(served.clip_1s), "tracker": "nope"}, "invalid_request", "nope"),
        (
            {"uri": str(served.clip_1s), "detect_every": 2, "scheduler": pb.StreamScheduler()},
            "invalid_request",
            "not both",
        ),
        (
            {
                "uri": str(served.clip_1s),
                "scheduler": pb.StreamScheduler(latency_budget_ms=0.01),
            },
            "invalid_request",
            "below the model's own latency",
        ),
    ]
    for fields, error_code, reason in cases:
        err = _error(
            lambda fields=fields: served.stub.StartStream(
                pb.StartStreamRequest(**fields), metadata=served.auth("infer")
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, fields  # type: ignore[attr-defined]
        assert _trailing(err)["tapetum-error-code"] == error_code
        assert reason in err.details(), err.details()  # type: ignore[attr-defined]
    denied = _error(
        lambda: served.stub.StartStream(
            pb.StartStreamRequest(uri=str(served.clip_1s)), metadata=served.auth("read")
        )
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]


def test_max_streams_is_resource_exhausted_with_retry_after(served: Served) -> None:
    started = []
    try:
        for _ in range(MAX_STREAMS):
            started.append(served.start(served.clip_3s, realtime=True).stream_id)
        err = _error(lambda: served.start(served.clip_3s, realtime=True))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        trailing = _trailing(err)
        assert trailing["tapetum-error-code"] == "too_many_streams"
        assert int(trailing["retry-after"]) >= 1
    finally:
        for sid in started:
            served.stub.StopStream(pb.StreamRef(id=sid), metadata=served.auth("infer"))


def test_open_breaker_is_unavailable_with_retry_after(served: Served) -> None:
    bad = served.media / "not_a_video.ts"
    bad.write_bytes(b"definitely not MPEG-TS " * 500)
    failures = ServeSettings(model_path=Path("m.onnx")).stream_breaker_failures
    for _ in range(failures):
        err = _error(lambda: served.start(bad))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    err = _error(lambda: served.start(bad))
    assert err.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    trailing = _trailing(err)
    assert trailing["tapetum-error-code"] == "source_circuit_open"
    assert 1 <= int(trailing["retry-after"]) <= 30
