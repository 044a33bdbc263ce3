"""Server-side streams end to end: uvicorn on loopback, the real YOLOX-nano model, MPEG-TS
clips of the crowd video, live results over Server-Sent Events, and per-URI breakers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi import FastAPI

from tapetum.serve.app import ServeSettings, create_app
from tapetum.serve.auth import KeyStore, Scope
from tests.helpers import CROWD_FPS, remux_to_mpegts
from tests.integration.serve_harness import LoopbackServer, assert_error, wait_ready

pytestmark = pytest.mark.integration

MAX_STREAMS = 2
BREAKER_FAILURES = 2


@dataclass
class Served:
    server: LoopbackServer
    app: FastAPI
    client: httpx.Client
    keys: dict[str, str]
    clip_3s: Path
    clip_1s: Path
    not_a_video: Path

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    def start(self, uri: Path | str, **options: Any) -> httpx.Response:
        body = {"uri": str(uri), **options}
        return self.client.post("/v1/streams", json=body, headers=self.auth("infer"))


@pytest.fixture(scope="module")
def served(
    yolox_path: Path, crowd_video: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("streams")
    store = KeyStore(tmp / "keys.db")
    keys = {
        "read": store.create("reader", [Scope.READ])[1],
        "infer": store.create("inferrer", [Scope.INFER, Scope.READ])[1],  # owns its streams
    }
    settings = ServeSettings(
        model_path=yolox_path,
        rate_per_second=None,
        max_streams=MAX_STREAMS,
        stream_breaker_failures=BREAKER_FAILURES,
        stream_breaker_reset_s=30.0,
        sse_heartbeat_s=0.3,
        media_roots=(tmp,),  # the clips; API callers may open nothing else
    )
    app = create_app(settings, key_store=store)
    server = LoopbackServer(app).start()
    client = httpx.Client(base_url=server.url, timeout=20)
    not_a_video = tmp / "not_a_video.ts"
    not_a_video.write_bytes(b"definitely not MPEG-TS " * 500)
    try:
        wait_ready(client)
        yield Served(
            server,
            app,
            client,
            keys,
            clip_3s=remux_to_mpegts(crowd_video, tmp / "crowd_3s.ts", max_s=3.0),
            clip_1s=remux_to_mpegts(crowd_video, tmp / "crowd_1s.ts", max_s=1.0),
            not_a_video=not_a_video,
        )
    finally:
        client.close()
        server.stop()
        store.close()


def _sse(served: Served, stream_id: str, max_events: int) -> tuple[list[dict[str, Any]], bool, int]:
    """(data events, whether an ``end`` event came, heartbeat comments) of one connection,
    read until ``max_events`` data events or the end."""
    events: list[dict[str, Any]] = []
    ended, heartbeats, event = False, 0, "message"
    with served.client.stream(
        "GET", f"/v1/streams/{stream_id}/results", headers=served.auth("infer")
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith(": heartbeat"):
                heartbeats += 1
            elif line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                if event == "end":
                    ended = True
                    break
                events.append(json.loads(line.removeprefix("data: ")))
                if len(events) >= max_events:
                    break
    return events, ended, heartbeats


def test_stream_lifecycle_live_results_stats_and_delete(served: Served) -> None:
    resp = served.start(served.clip_3s, realtime=True, conf=0.3)
    assert resp.status_code == 201, resp.text
    info = resp.json()
    sid = info["stream_id"]
    assert info["state"] == "running" and info["options"]["conf"] == 0.3

    events, ended, _ = _sse(served, sid, max_events=10)
    assert not ended and len(events) == 10
    indices = [e["frame_index"] for e in events]
    assert indices == sorted(indices), "results arrive in frame order"
    assert all(e["source_id"] == sid for e in events)
    tracks = [t for e in events for t in e["tracks"]]
    assert sum(t["class_name"] == "person" for t in tracks) >= 10, "the crowd is tracked"
    assert all(t["confidence"] >= 0.3 and t["track_id"] >= 1 for t in tracks)
    assert all(e["end_to_end_ms"] > 0 for e in events)

    listed = served.client.get("/v1/streams", headers=served.auth("infer")).json()
    assert sid in {s["stream_id"] for s in listed}
    stats = served.client.get(f"/v1/streams/{sid}", headers=served.auth("infer")).json()["stats"]
    assert stats["frames_processed"] >= 10 and stats["frames_read"] >= stats["frames_processed"]
    assert 0 < stats["fps"] < 2 * CROWD_FPS, "realtime paces a file at its native rate"
    assert 0 < stats["p50_end_to_end_ms"] <= stats["p99_end_to_end_ms"]

    stopped = served.client.delete(f"/v1/streams/{sid}", headers=served.auth("infer"))
    assert stopped.status_code == 200, stopped.text
    final = stopped.json()
    assert final["state"] == "stopped"
    assert final["stats"]["frames_processed"] < 3 * CROWD_FPS, "stopped before the clip's end"
    assert_error(
        served.client.get(f"/v1/streams/{sid}", headers=served.auth("infer")), 404, "unknown_stream"
    )
    assert_error(
        served.client.delete(f"/v1/streams/{sid}", headers=served.auth("infer")),
        404,
        "unknown_stream",
    )


def test_results_end_when_the_stream_ends(served: Served) -> None:
    resp = served.start(served.clip_1s, realtime=True)
    assert resp.status_code == 201, resp.text
    sid = resp.json()["stream_id"]
    t0 = time.monotonic()
    events, ended, heartbeats = _sse(served, sid, max_events=1000)
    assert ended, "the event stream must end with the stream"
    assert time.monotonic() - t0 < 5
    info = served.client.get(f"/v1/streams/{sid}", headers=served.auth("infer")).json()
    assert info["state"] == "finished"
    assert 0 < len(events) <= info["stats"]["frames_processed"] == int(CROWD_FPS)
    assert heartbeats == 0, "no heartbeat while results flow"


def test_a_detection_interval_marks_the_frames_the_detector_skipped(served: Served) -> None:
    resp = served.start(served.clip_1s, realtime=True, detect_every=3)
    assert resp.status_code == 201, resp.text
    assert resp.json()["options"]["detect_every"] == 3
    sid = resp.json()["stream_id"]
    events, ended, _ = _sse(served, sid, max_events=1000)
    assert ended and events
    for event in events:
        skipped = event["frame_index"] % 3 != 0  # the detector on frames 0, 3, 6, …
        assert event.get("predicted", False) is skipped, event["frame_index"]
        assert all(t["predicted"] is skipped for t in event["tracks"])
    carried = [t for e in events if e.get("predicted") for t in e["tracks"]]
    assert len(carried) >= 10, "the crowd's tracks are carried through the skipped frames"
    stats = served.client.get(f"/v1/streams/{sid}", headers=served.auth("infer")).json()["stats"]
    n = stats["frames_processed"]
    assert n == int(CROWD_FPS)
    assert (stats["detector_frames"], stats["tracker_frames"]) == (-(-n // 3), n - -(-n // 3))
    assert stats["interval"] == 3


def test_interval_options_are_checked(served: Served) -> None:
    both = served.start(served.clip_1s, detect_every=2, scheduler={})
    assert_error(both, 422, "invalid_request")
    assert "detect_every (2) or a scheduler, not both" in both.json()["detail"]
    assert_error(served.start(served.clip_1s, detect_every=0), 422, "invalid_request")
    assert_error(
        served.start(served.clip_1s, scheduler={"max_interval": 0}), 422, "invalid_request"
    )
    tight = served.start(served.clip_1s, scheduler={"latency_budget_ms": 0.01})
    assert_error(tight, 422, "invalid_request")
    assert "latency budget 0.01 ms is below the model's own latency" in tight.json()["detail"]
    adaptive = served.start(served.clip_1s, scheduler={"latency_budget_ms": 5000})
    assert adaptive.status_code == 201, adaptive.text
    assert adaptive.json()["options"]["scheduler"] == {
        "latency_budget_ms": 5000.0,
        "max_interval": 4,
    }
    served.client.delete(
        f"/v1/streams/{adaptive.json()['stream_id']}", headers=served.auth("infer")
    )


def test_bad_uris_are_400_with_the_reason(served: Served, tmp_path: Path) -> None:
    missing = served.start(served.clip_1s.parent / "nope.mp4")
    assert_error(missing, 400, "bad_source")
    assert "cannot be opened" in missing.json()["detail"]
    outside = served.start(tmp_path / "nope.mp4")  # outside the media roots
    assert_error(outside, 400, "bad_source")
    assert "not allowed" in outside.json()["detail"]
    scheme = served.start("ftp://cams.example/1.ts")
    assert_error(scheme, 400, "bad_source")
    assert "not allowed" in scheme.json()["detail"]
    assert_error(served.start(""), 422, "invalid_request")
    assert_error(served.start(served.clip_1s, conf=0.01), 422, "invalid_request")
    assert_error(served.start(served.clip_1s, tracker="nope"), 422, "invalid_request")
    # A read-only key cannot start streams; unknown ids are 404 on every route.
    lacking = served.client.post(
        "/v1/streams", json={"uri": str(served.clip_1s)}, headers=served.auth("read")
    )
    assert_error(lacking, 403, "insufficient_scope")
    for path in ("/v1/streams/zzz", "/v1/streams/zzz/results"):
        assert_error(served.client.get(path, headers=served.auth("read")), 404, "unknown_stream")


def test_max_streams_gives_429(served: Served) -> None:
    started = []
    try:
        for _ in range(MAX_STREAMS):
            resp = served.start(served.clip_3s, realtime=True)
            assert resp.status_code == 201, resp.text
            started.append(resp.json()["stream_id"])
        over = served.start(served.clip_3s, realtime=True)
        assert_error(over, 429, "too_many_streams")
        assert f"at most {MAX_STREAMS} streams" in over.json()["detail"]
        assert int(over.headers["Retry-After"]) >= 1
    finally:
        for sid in started:
            served.client.delete(f"/v1/streams/{sid}", headers=served.auth("infer"))
    # A slot is free again.
    again = served.start(served.clip_1s)
    assert again.status_code == 201, again.text
    served.client.delete(f"/v1/streams/{again.json()['stream_id']}", headers=served.auth("infer"))


def test_failing_uri_opens_its_breaker_then_fails_fast(served: Served) -> None:
    for _ in range(BREAKER_FAILURES):
        failed = served.start(served.not_a_video)
        assert_error(failed, 400, "bad_source")
    t0 = time.perf_counter()
    refused = served.start(served.not_a_video)
    elapsed_s = time.perf_counter() - t0
    assert_error(refused, 503, "source_circuit_open")
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert "cannot be opened" in refused.json()["detail"]
    assert elapsed_s < 0.5, "an open breaker must not probe the source again"
    # Other URIs are not affected.
    ok = served.start(served.clip_1s)
    assert ok.status_code == 201, ok.text
    served.client.delete(f"/v1/streams/{ok.json()['stream_id']}", headers=served.auth("infer"))

    metrics = served.client.get("/metrics", headers=served.auth("read")).text
    # Breakers are labelled by a keyed hash of the URI, never the URI itself.
    label = served.app.state.tapetum.streams.breaker_name
    name = label(str(served.not_a_video))
    assert str(served.not_a_video) not in metrics
    assert f'tapetum_breaker_state{{name="{name}"}} 2.0' in metrics
    assert f'tapetum_breaker_transitions_total{{name="{name}",to="open"}} 1.0' in metrics
    assert f'tapetum_breaker_state{{name="{label(str(served.clip_1s))}"}} 0.0' in metrics
    assert "tapetum_streams_running" in metrics


def test_shutdown_stops_running_streams(yolox_path: Path, served: Served) -> None:
    settings = ServeSettings(
        model_path=yolox_path,
        require_auth=False,
        rate_per_second=None,
        media_roots=(served.clip_3s.parent,),
    )
    app = create_app(settings)
    server = LoopbackServer(app).start()
    with httpx.Client(base_url=server.url, timeout=20) as client:
        wait_ready(client)
        resp = client.post("/v1/streams", json={"uri": str(served.clip_3s), "realtime": True})
        assert resp.status_code == 201, resp.text
    manager = app.state.tapetum.streams
    pipeline = manager._streams[resp.json()["stream_id"]].pipeline
    t0 = time.monotonic()
    server.stop()
    assert pipeline.finished and time.monotonic() - t0 < 3
    assert len(manager) == 0
