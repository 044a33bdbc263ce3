"""Fixtures of the fault-injection tests: the detector they share, a clip a loopback camera
serves, and ways to read back what a run left on disk."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import pytest

from tapetum.detect import DetectorConfig, OnnxDetector, RuntimeOptions, load_detector

#: Seconds of the crowd video a loopback camera serves (looped).
CLIP_S = 4.0


@pytest.fixture(scope="package")
def detector(yolox_path: Path) -> OnnxDetector:
    """YOLOX-nano on one thread: the fault tests share two cores with everything else."""
    return load_detector(
        yolox_path,
        config=DetectorConfig(conf_threshold=0.1),
        runtime=RuntimeOptions(intra_op_threads=1, workers=1),
    )


@pytest.fixture(scope="package")
def camera_clip(crowd_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first CLIP_S seconds of the crowd video as an IP camera sends them: 640x360
    H.264 with a keyframe every second, in MPEG-TS (a reader joining mid-stream waits at
    most a second for a picture it can decode)."""
    path = tmp_path_factory.mktemp("camera") / "cam.ts"
    with av.open(str(crowd_video)) as src, av.open(str(path), "w", format="mpegts") as dst:
        stream = dst.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "25", "bf": "0"}
        for i, frame in enumerate(src.decode(video=0)):
            if i >= CLIP_S * 25:
                break
            small = frame.reformat(width=640, height=360, format="yuv420p")
            small.pts, small.time_base = i, Fraction(1, 25)
            for packet in stream.encode(small):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return path


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(0.02)


def jsonl_records(path: Path) -> list[dict[str, object]]:
    """Every line of a JSONL file, parsed: a line cut short fails the test."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends with half a line: {data[-80:]!r}"
    return [json.loads(line) for line in data.splitlines()]


def readable_frames(path: Path) -> int:
    """Frames PyAV decodes from a video file, from its start to its end."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


#: The registered model of the registry fixtures.
MODEL_NAME = "faults-detector"


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored_artifact(artifacts: Path, sha256: str) -> Path:
    """The file of a registered version inside a local store's artifact folder."""
    found = [p for p in artifacts.rglob("*.onnx") if p.is_file() and sha256_of(p) == sha256]
    assert len(found) == 1, f"{len(found)} stored copies of {sha256[:12]} under {artifacts}"
    return found[0]
