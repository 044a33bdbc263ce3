"""A sink that stalls: a JSONL sink writing into a named pipe that a reader opened and
never reads (as a hung network share would block), beside a healthy JSONL sink, under a
pipeline reading a live loopback camera.

Detection and the healthy sink go on at the camera's rate; the stuck sink's results are
dropped from its queue (oldest first, as for every live run) and counted; at shutdown the
pipeline waits for it while it makes progress, then gives it up (its write under way
counted as failed, its queue as dropped) instead of hanging the exit. Every frame is
processed, dropped or failed, every result per sink written, dropped or failed."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from tapetum.detect import OnnxDetector
from tapetum.pipeline import Pipeline, PipelineConfig
from tapetum.sinks import JsonlSink
from tapetum.sources import VideoSource
from tests.integration.faults.camera import Camera
from tests.integration.faults.conftest import CLIP_S, jsonl_records, wait_for
from tests.integration.serve_harness import free_port

pytestmark = pytest.mark.integration

STUCK, HEALTHY = "0-JsonlSink", "1-JsonlSink"


def test_a_stuck_sink_is_dropped_and_counted_and_never_holds_up_detection_or_the_exit(
    camera_clip: Path, detector: OnnxDetector, tmp_path: Path
) -> None:
    pipe_path = tmp_path / "stuck.jsonl"
    os.mkfifo(pipe_path)
    reader = os.open(pipe_path, os.O_RDONLY | os.O_NONBLOCK)  # opened, never read
    camera = Camera(camera_clip, "tcp", free_port(), CLIP_S)
    camera.start()
    stuck = JsonlSink(pipe_path)
    try:
        tracks = tmp_path / "tracks.jsonl"
        pipe = Pipeline(
            [VideoSource(camera.url)],
            detector,
            sinks=[stuck, JsonlSink(tracks)],
            config=PipelineConfig(inference_workers=1, sink_stall_timeout_s=1.0),
        )
        pipe.start()
        try:
            wait_for(lambda: pipe.stats().sink_dropped[STUCK] > 0, 60, "the stuck sink to drop")
            processed = pipe.stats().frames_processed
            wait_for(
                lambda: pipe.stats().frames_processed >= processed + 25, 60, "detection to go on"
            )
        finally:
            pipe.stop(drain=True)
            finished = pipe.join(60)
        assert finished, "a stuck sink held up the exit"
    finally:
        camera.kill()
        os.close(reader)  # the stuck write now fails (EPIPE) and its thread ends
        with contextlib.suppress(Exception):
            stuck.close()

    run = pipe.stats()
    (stream,) = run.streams
    assert stream.frames_read == (
        stream.frames_processed + stream.frames_dropped + stream.frames_failed
    )
    assert stream.frames_failed == 0
    for name in (STUCK, HEALTHY):
        total = run.sink_written[name] + run.sink_dropped[name] + run.sink_errors[name]
        assert total == stream.frames_processed, name
    assert run.sink_errors[STUCK] == 1  # the write it was stuck in
    assert "stuck in a write for over 1 s" in run.sink_failures[STUCK]
    assert HEALTHY not in run.sink_failures
    assert run.sink_written[HEALTHY] == stream.frames_processed
    assert len(jsonl_records(tracks)) == stream.frames_processed
