"""The camera dies and comes back: a loopback camera process (MPEG-TS over TCP or UDP) is
killed with SIGKILL and restarted while a pipeline reads it, 5 times in the default run
and 100 times in the slow one. The source reconnects every time, frame indexes and
timestamps keep rising across the restarts, and every frame read is counted as
processed, dropped or failed (and every result reaches the JSONL, whole)."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from tapetum.core.result import FrameResult
from tapetum.detect import OnnxDetector
from tapetum.pipeline import Pipeline, PipelineConfig
from tapetum.sinks import CallbackSink, JsonlSink
from tapetum.sources import VideoSource
from tests.integration.faults.camera import Camera
from tests.integration.faults.conftest import CLIP_S, jsonl_records, wait_for
from tests.integration.serve_harness import free_port

pytestmark = pytest.mark.integration

#: Frames each connection must deliver before its camera is killed.
FRAMES_PER_CONNECTION = 8
#: FFmpeg protocol options of the reader (bytes; UDP's fifo in 188-byte packets, overrun
#: drops packets, counted as corrupt frames, rather than failing the read).
READER_BUFFERS = {
    "tcp": {"recv_buffer_size": "65536"},
    "udp": {"buffer_size": "65536", "fifo_size": "1500", "overrun_nonfatal": "1"},
}


def _restart_camera_under_a_pipeline(
    kind: str, restarts: int, clip: Path, detector: OnnxDetector, out: Path
) -> None:
    camera = Camera(clip, kind, free_port(), CLIP_S)
    camera.start()
    try:
        source = VideoSource(
            camera.url,
            reconnect_initial_delay_s=0.1,
            reconnect_max_delay_s=1.0,
            reconnect_max_attempts=20,
            open_timeout_s=5.0,
            read_timeout_s=1.0,  # how long a silent UDP camera takes to count as gone
            # Small buffers: a reader that falls behind on a busy machine then has about a
            # second of backlog to read through before it meets the end of a dead camera.
            ffmpeg_options=READER_BUFFERS[kind],
        )
        seen: list[tuple[int, float]] = []
        lock = threading.Lock()

        def keep(result: FrameResult) -> None:
            with lock:
                seen.append((result.frame.index, result.frame.timestamp_s))

        tracks = out / "tracks.jsonl"
        pipe = Pipeline(
            [source],
            detector,
            sinks=[CallbackSink(keep), JsonlSink(tracks)],
            config=PipelineConfig(inference_workers=1),
        )
        stats = source.stats
        pipe.start()
        try:
            for i in range(1, restarts + 1):
                decoded = stats.frames_decoded
                wait_for(
                    lambda d=decoded: stats.frames_decoded >= d + FRAMES_PER_CONNECTION,
                    60,
                    f"frames from connection {i}",
                )
                errors = stats.errors
                camera.kill()
                # The reader notices the loss (EOF over TCP, silence past the read timeout
                # over UDP) before the camera is back, so every kill is one reconnect.
                wait_for(lambda e=errors: stats.errors > e, 60, f"the reader to notice kill {i}")
                camera.start()
                wait_for(lambda i=i: stats.reconnects == i, 60, f"reconnect {i}")
            decoded = stats.frames_decoded
            wait_for(
                lambda: stats.frames_decoded >= decoded + FRAMES_PER_CONNECTION,
                30,
                "frames after the last restart",
            )
        finally:
            pipe.stop(drain=True)
            finished = pipe.join(60)
        assert finished, "the pipeline did not stop"
    finally:
        camera.kill()

    run = pipe.stats()
    (stream,) = run.streams
    assert stream.error is None  # never given up
    assert stats.reconnects == restarts == camera.starts - 1
    assert stream.frames_read == stats.frames_decoded
    assert stream.frames_read == stream.frames_processed + stream.frames_dropped + (
        stream.frames_failed
    )
    assert stream.frames_failed == 0
    assert stream.frames_read >= FRAMES_PER_CONNECTION * (restarts + 1)
    # One clock across connections: indexes and timestamps only rise.
    indexes = [index for index, _ in seen]
    timestamps = [t for _, t in seen]
    assert indexes == sorted(set(indexes))
    assert all(b > a for a, b in itertools.pairwise(timestamps))
    # Every processed frame is a result each sink wrote, dropped or failed; the JSONL on
    # disk holds exactly the written ones, each line whole.
    assert len(seen) == run.sink_written["0-CallbackSink"]
    for name, written in run.sink_written.items():
        assert written + run.sink_dropped[name] + run.sink_errors[name] == stream.frames_processed
    records = jsonl_records(tracks)
    assert len(records) == run.sink_written["1-JsonlSink"]
    assert [r["frame_index"] for r in records] == sorted(r["frame_index"] for r in records)


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_a_camera_killed_and_restarted_5_times_is_followed_and_every_frame_counted(
    kind: str, camera_clip: Path, detector: OnnxDetector, tmp_path: Path
) -> None:
    _restart_camera_under_a_pipeline(kind, 5, camera_clip, detector, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_a_camera_killed_and_restarted_100_times_is_followed_and_every_frame_counted(
    kind: str, camera_clip: Path, detector: OnnxDetector, tmp_path: Path
) -> None:
    _restart_camera_under_a_pipeline(kind, 100, camera_clip, detector, tmp_path)
