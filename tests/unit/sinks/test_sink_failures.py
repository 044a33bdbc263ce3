"""Sinks that cannot write: a full device (``/dev/full``) and a file-size limit
(``RLIMIT_FSIZE`` in a child process, SIGXFSZ ignored) leave whole JSONL lines and count
what was lost; a sink worker counts every result as written, dropped or failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.errors import SinkError
from tapetum.pipeline.queues import DropPolicy
from tapetum.pipeline.sink_worker import SinkWorker
from tapetum.sinks import CallbackSink, JsonlSink


def _result(index: int, tracks: int = 3) -> FrameResult:
    xyxy = np.tile(np.array([[10, 20, 60, 120]], np.float32), (tracks, 1))
    dets = Detections(xyxy, np.full(tracks, 0.9, np.float32), np.zeros(tracks, np.int64))
    dets.tracker_id = np.arange(tracks, dtype=np.int64)
    image = np.zeros((8, 8, 3), np.uint8)
    return FrameResult(Frame("cam", index, image, index / 25, 0.0), dets, ("person",))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_a_full_device_raises_a_sink_error_and_counts_the_lost_line() -> None:
    sink = JsonlSink("/dev/full")
    for index in range(3):
        with pytest.raises(SinkError, match=r"No space left on device; 1 line\(s\) lost"):
            sink.write(_result(index))
    sink.close()
    assert (sink.written, sink.lost) == (0, 3)


def test_lines_reach_the_file_whole_as_they_are_written(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "t.jsonl")
    sink.write(_result(0))
    sink.write(_result(1))
    # Not closed yet: a killed process would leave these two lines.
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame_index"] for line in lines] == [0, 1]
    sink.close()
    assert (sink.written, sink.lost) == (2, 0)


CHILD = """
import json, resource, signal, sys
import numpy as np
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.errors import SinkError
from tapetum.sinks import JsonlSink

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sink = JsonlSink(sys.argv[1], flush_every=int(sys.argv[3]))
xyxy = np.tile(np.array([[10, 20, 60, 120]], np.float32), (40, 1))
failures = []
for index in range(200):
    dets = Detections(xyxy, np.full(40, 0.9, np.float32), np.zeros(40, np.int64))
    dets.tracker_id = np.arange(40, dtype=np.int64)
    image = np.zeros((8, 8, 3), np.uint8)
    try:
        sink.write(FrameResult(Frame("cam", index, image, 0.0, 0.0), dets, ("person",)))
    except SinkError as exc:
        failures.append(str(exc))
try:
    sink.close()
except SinkError as exc:
    failures.append(str(exc))
print(json.dumps({"written": sink.written, "lost": sink.lost, "failures": failures}))
"""


@pytest.mark.parametrize("flush_every", [1, 7])
def test_a_file_size_limit_cuts_the_file_back_to_its_last_whole_line(
    tmp_path: Path, flush_every: int
) -> None:
    path = tmp_path / "t.jsonl"
    limit = 50_000  # ~20 lines of 40 tracks: the limit falls inside a line
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(path), str(limit), str(flush_every)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    report = json.loads(proc.stdout)

    data = path.read_bytes()
    assert data.endswith(b"\n") and len(data) <= limit
    lines = [json.loads(line) for line in data.splitlines()]
    indexes = [r["frame_index"] for r in lines]
    assert len(indexes) == report["written"] and indexes == sorted(set(indexes))
    assert report["written"] + report["lost"] == 200
    assert report["written"] > 0 and report["lost"] > 0
    assert "File too large" in report["failures"][0]
    assert len(report["failures"]) == -(-report["lost"] // flush_every)


def test_a_worker_counts_every_result_as_written_dropped_or_failed() -> None:
    def refuse_odd(result: FrameResult) -> None:
        if result.frame.index % 2:
            raise OSError(28, os.strerror(28))

    worker = SinkWorker(CallbackSink(refuse_odd), 4, DropPolicy.BLOCK, "0-CallbackSink")
    worker.start()
    for index in range(10):
        worker.submit(_result(index))
    worker.close()
    assert (worker.written, worker.errors, worker.dropped) == (5, 5, 0)
    assert worker.first_error == "[Errno 28] No space left on device"
    assert worker.close_error is None
