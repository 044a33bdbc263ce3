"""Finding 2 (High): SSRF and local-file probing through stream start.

Before the fix ``POST /v1/streams`` (and gRPC ``StartStream``) opened any host over
http(s)/rtsp(s)/rtmp/tcp/udp and any local path: the server fetched an internal HTTP URL,
``tcp://`` answered a refused port in milliseconds and a filtered one after the timeout,
and the error told whether a path exists, is a folder or is not a video. Now local paths
open only inside the media roots, loopback/private/link-local/metadata hosts only when
allow-listed, and every refusal and open failure reads the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("grpc")

import grpc

from tapetum.errors import SourceError
from tapetum.sources import video
from tests.helpers import remux_to_mpegts
from tests.integration.security.stack import (
    CountingHttpServer,
    Stack,
    error_code,
    rpc_error,
    serve_stack,
)
from tests.integration.serve_harness import assert_error

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def media(crowd_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    remux_to_mpegts(crowd_video, root / "crowd_1s.ts", max_s=1.0)
    (root / "not_a_video.ts").write_bytes(b"definitely not MPEG-TS " * 500)
    return root


@pytest.fixture(scope="module")
def outside(media: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder beside the media root holding a real video, a folder and a text file, and
    a symbolic link from inside the root to that video."""
    folder = tmp_path_factory.mktemp("outside")
    (folder / "secret.ts").write_bytes((media / "crowd_1s.ts").read_bytes())
    (folder / "a_folder").mkdir()
    (folder / "notes.txt").write_text("not a video")
    (media / "escape.ts").symlink_to(folder / "secret.ts")
    return folder


@pytest.fixture(scope="module")
def http_server(media: Path) -> Iterator[CountingHttpServer]:
    server = CountingHttpServer((media / "crowd_1s.ts").read_bytes())
    yield server
    server.close()


@pytest.fixture(scope="module")
def stack(
    yolox_path: Path, media: Path, outside: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with serve_stack(yolox_path, tmp_path_factory.mktemp("keys"), media_roots=(media,)) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_streams_left(stack: Stack) -> Iterator[None]:
    yield
    stack.stop_all()


def _detail(resp: Any, uri: str | Path) -> str:
    """The error's detail with the URI the client sent taken out."""
    assert_error(resp, 400, "bad_source")
    return str(resp.json()["detail"]).replace(str(uri), "<uri>")


# ---------------------------------------------------------------------------- local paths


def test_rest_paths_outside_the_media_roots_are_refused_alike(
    stack: Stack, media: Path, outside: Path
) -> None:
    uris = [
        outside / "secret.ts",  # a real video
        outside / "a_folder",  # a folder
        outside / "notes.txt",  # not a video
        outside / "missing.ts",  # nothing
        "/etc/passwd",
        media / "escape.ts",  # a link out of the root
        media / ".." / outside.name / "secret.ts",
    ]
    details = {_detail(stack.start("alice", uri), uri) for uri in uris}
    assert len(details) == 1, f"a refusal must not tell one path from another: {details}"
    (detail,) = details
    assert "not allowed" in detail


def test_rest_inside_the_root_a_missing_file_and_a_non_video_fail_alike_without_paths(
    stack: Stack, media: Path
) -> None:
    for name in ("missing.ts", "not_a_video.ts"):
        resp = stack.start("alice", media / name)
        detail = _detail(resp, media / name)
        assert detail == "the source cannot be opened (the server log has the reason)"
        assert str(media) not in detail


def test_rest_a_video_inside_the_root_streams_by_absolute_or_relative_path(
    stack: Stack, media: Path
) -> None:
    for uri in (media / "crowd_1s.ts", "crowd_1s.ts"):
        resp = stack.start("alice", uri)
        assert resp.status_code == 201, resp.text
        stack.stop_all()


# --------------------------------------------------------------------------- network URIs


def test_rest_internal_http_is_never_fetched(stack: Stack, http_server: CountingHttpServer) -> None:
    before = http_server.requests
    for uri in (http_server.url, f"http://localhost:{http_server.port}/live.ts"):
        assert "not allowed" in _detail(stack.start("alice", uri), uri)
    assert http_server.requests == before, "the server must not fetch the internal URL"


def test_rest_tcp_port_probes_get_one_quick_answer(
    stack: Stack, http_server: CountingHttpServer
) -> None:
    details = set()
    before = http_server.requests
    t0 = time.perf_counter()
    for uri in (
        f"tcp://127.0.0.1:{http_server.port}",  # open
        "tcp://127.0.0.1:1",  # closed
        "tcp://10.255.255.1:80",  # filtered (no answer)
        "udp://127.0.0.1:5000",
    ):
        details.add(_detail(stack.start("alice", uri), uri))
    assert time.perf_counter() - t0 < 2.0, "refused before any connection is tried"
    assert len(details) == 1, details
    assert http_server.requests == before


@pytest.mark.parametrize(
    "uri",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "rtsp://[::1]:8554/live",
        "rtmp://192.168.1.10/live/cam",
        "http://0.0.0.0:8000/",
    ],
)
def test_rest_metadata_loopback_and_private_hosts_are_refused(stack: Stack, uri: str) -> None:
    assert "not allowed" in _detail(stack.start("alice", uri), uri)


def test_rest_a_malformed_uri_is_a_400_not_a_500(stack: Stack) -> None:
    for uri in ("http://[::1/x", "rtsp://cam:99999/1", "http:///nohost"):
        assert_error(stack.start("alice", uri), 400, "bad_source")


def test_allow_listed_loopback_and_no_media_roots(
    yolox_path: Path,
    media: Path,
    http_server: CountingHttpServer,
    tmp_path: Path,
) -> None:
    with serve_stack(yolox_path, tmp_path, allowed_sources=("127.0.0.0/8",)) as allowing:
        resp = allowing.start("alice", http_server.url)
        assert resp.status_code == 201, resp.text
        assert http_server.requests >= 1
        # No media roots configured: no local path at all, not even a real video.
        local = media / "crowd_1s.ts"
        assert "not allowed" in _detail(allowing.start("alice", local), local)
        allowing.stop_all()


# ----------------------------------------------------------------------------------- gRPC


def test_grpc_refusals_are_invalid_argument_and_alike(
    stack: Stack, media: Path, outside: Path, http_server: CountingHttpServer
) -> None:
    details = set()
    before = http_server.requests
    for uri in (
        str(outside / "secret.ts"),
        str(outside / "a_folder"),
        str(outside / "missing.ts"),
        str(media / "escape.ts"),
        http_server.url,
        "tcp://127.0.0.1:1",
        "http://169.254.169.254/latest/meta-data/",
    ):
        err = rpc_error(lambda uri=uri: stack.grpc_start("alice", uri))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, uri  # type: ignore[attr-defined]
        assert error_code(err) == "bad_source"
        details.add(err.details().replace(uri, "<uri>"))  # type: ignore[attr-defined]
    assert len(details) == 1, details
    assert http_server.requests == before
    malformed = rpc_error(lambda: stack.grpc_start("alice", "http://[::1/x"))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    for name in ("missing.ts", "not_a_video.ts"):
        err = rpc_error(lambda name=name: stack.grpc_start("alice", media / name))
        assert err.details() == "the source cannot be opened (the server log has the reason)"  # type: ignore[attr-defined]
    assert stack.grpc_start("alice", "crowd_1s.ts").stream_id


# ------------------------------------------------------------------- FFmpeg's protocols


def test_every_open_passes_a_protocol_whitelist_to_ffmpeg(
    monkeypatch: pytest.MonkeyPatch, media: Path
) -> None:
    seen: dict[str, str] = {}

    def fake_open(uri: str, *args: Any, options: dict[str, str], **kwargs: Any) -> Any:
        seen[uri] = options.get("protocol_whitelist", "")
        raise av.error.InvalidDataError(1094995529, "refused by the test", uri)

    monkeypatch.setattr(video.av, "open", fake_open)
    uris = {
        str(media / "crowd_1s.ts"): "file",
        "rtsp://198.51.100.7/1": "rtsp,rtsps,rtp,srtp,udp,tcp,tls",
        "https://198.51.100.7/live.m3u8": "http,https,tcp,tls,crypto",
        "rtmp://198.51.100.7/live": "rtmp,rtmps,tcp,tls",
        "tcp://198.51.100.7:9000": "tcp",
    }
    for uri in uris:
        with pytest.raises(SourceError):
            video.VideoSource(uri, reconnect_max_attempts=0)
    assert seen == uris
