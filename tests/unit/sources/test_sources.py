"""Fast tests of source dispatch, open errors, ids and image folders (no shared assets)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from tapetum.errors import ConfigError, SourceError
from tapetum.sources import (
    ImageFolderSource,
    Source,
    VideoSource,
    default_source_id,
    open_source,
)
from tapetum.sources.video import redact_url


def _write_tiny_video(path: Path, n_frames: int = 6, width: int = 64, height: int = 48) -> None:
    """MPEG-4 clip whose frame i is a flat grey of level 40 * i."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            image = np.full((height, width, 3), 40 * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode(None))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_video_file_dispatches_to_video_source_and_decodes_bgr(tmp_path: Path) -> None:
    path = tmp_path / "gate-3.mp4"
    _write_tiny_video(path)

    source = open_source(str(path))

    assert isinstance(source, VideoSource)
    assert isinstance(source, Source)
    assert source.source_id == "gate-3"
    assert not source.is_live
    assert source.fps == pytest.approx(10.0)
    frames = list(source.frames(threading.Event()))
    assert [f.index for f in frames] == list(range(6))
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [int(np.median(f.image)) for f in frames] == pytest.approx(
        [40 * i for i in range(6)],
        abs=8,  # lossy codec, limited-range YUV
    )
    assert np.all(np.diff([f.timestamp_s for f in frames]) == pytest.approx(0.1))
    assert source.stats.frames_decoded == 6


def test_stop_ends_a_file_between_frames(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_tiny_video(path)
    stop = threading.Event()
    source = VideoSource(path)

    seen = []
    for frame in source.frames(stop):
        seen.append(frame.index)
        stop.set()

    assert seen == [0]


def test_missing_file_is_a_source_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=r"nope\.mp4.*no such file"):
        open_source(str(missing))
    with pytest.raises(SourceError, match=r"nope\.mp4.*no such file"):
        VideoSource(missing)


def test_text_file_pretending_to_be_video_is_a_source_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n" * 100)
    with pytest.raises(SourceError, match=r"fake\.mp4: not a video"):
        open_source(str(fake))


def test_file_without_video_stream_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(SourceError, match=r"tone\.wav: no video stream \(streams found: audio\)"):
        open_source(str(path))


def test_unreachable_url_is_a_source_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/cam.ts"
    with pytest.raises(SourceError, match=rf"{url}: Connection refused"):
        open_source(url)


def test_unsupported_scheme_is_a_source_error() -> None:
    with pytest.raises(SourceError, match=r"unsupported URL scheme 'gopher'"):
        open_source("gopher://example.org/video")


def test_empty_folder_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match=rf"{tmp_path}: no images in it"):
        open_source(str(tmp_path))


def test_image_folder_skips_and_counts_an_unreadable_image(tmp_path: Path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    levels = {"a.png": 10, "b.jpg": 90, "d.bmp": 200}
    for name, level in levels.items():
        cv2.imwrite(str(folder / name), np.full((20, 30, 3), level, dtype=np.uint8))
    (folder / "c.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    (folder / "notes.txt").write_text("ignored")

    source = open_source(str(folder), fps=10.0)
    frames = list(source.frames(threading.Event()))

    assert isinstance(source, ImageFolderSource)
    assert source.source_id == "shots"
    assert [f.index for f in frames] == [0, 1, 3]  # c.jpg (index 2) skipped
    assert [int(f.image.mean()) for f in frames] == pytest.approx([10, 90, 200], abs=2)
    assert all(f.image.shape == (20, 30, 3) for f in frames)
    assert source.stats.frames_corrupt == 1
    assert source.stats.frames_decoded == 3
    assert frames[2].timestamp_s - frames[0].timestamp_s == pytest.approx(0.3)


def test_image_folder_realtime_needs_fps(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ConfigError, match="needs fps"):
        open_source(str(tmp_path), realtime=True)


def test_explicit_source_id_wins(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), dtype=np.uint8))
    assert open_source(str(tmp_path), source_id="dock").source_id == "dock"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "rtsp://admin:secret@10.0.0.7:554/Streaming/Channels/101",
            "10.0.0.7_554_Streaming_Channels_101",
        ),
        ("https://cams.example.org/live/gate.m3u8", "cams.example.org_live_gate.m3u8"),
        ("/data/videos/gate 3 (north).mp4", "gate_3_north"),
        ("clips/crowd_720p.avi", "crowd_720p"),
    ],
)
def test_default_source_id(uri: str, expected: str) -> None:
    assert default_source_id(uri) == expected


def test_redact_url_hides_the_password_only() -> None:
    assert redact_url("rtsp://admin:secret@10.0.0.7/stream") == "rtsp://admin:***@10.0.0.7/stream"
    assert redact_url("rtsp://10.0.0.7/stream") == "rtsp://10.0.0.7/stream"
