"""Detection intervals with the real model and the real crowd video: ``tapetum run
--detect-every`` and its errors, and graceful overload of paced camera streams under the
scheduler."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from tapetum.core.result import FrameResult
from tapetum.detect import DetectorConfig, RuntimeOptions, YoloxDetector
from tapetum.pipeline import Pipeline, PipelineConfig, SchedulerConfig
from tapetum.pipeline.runtime import model_latency_ms
from tapetum.sinks import CallbackSink
from tapetum.sources import VideoSource
from tapetum.sources.paced import PacedSource
from tests.helpers import CROWD_FRAMES

pytestmark = pytest.mark.integration


def tapetum(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_run_detect_every_3_predicts_two_frames_in_three(
    crowd_video: Path, yolox_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = tapetum(
        "run", crowd_video, "--model", yolox_path, "--out", out, "--no-video", "-q",
        "--detect-every", "3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "degraded crowd_720p: detector on 114 of 341 frames (33 %)" in proc.stdout
    records = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert [r["frame_index"] for r in records] == list(range(CROWD_FRAMES))
    for r in records:
        predicted = r["frame_index"] % 3 != 0
        assert r.get("predicted", False) is predicted
        assert all(t["predicted"] is predicted for t in r["tracks"])
    # the people tracked on a detector frame are still there, moved, on the next two
    by_frame = {r["frame_index"]: {t["track_id"]: t["xyxy"] for t in r["tracks"]} for r in records}
    assert by_frame[31].keys() == by_frame[30].keys()
    moved = [by_frame[31][i] != by_frame[30][i] for i in by_frame[30]]
    assert sum(moved) > len(moved) / 2
    stream = json.loads((out / "summary.json").read_text())["streams"][0]
    assert (stream["detector_frames"], stream["tracker_frames"]) == (114, 227)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--detect-every", "two"], "--detect-every must be a whole number of frames ≥ 1 or"),
        (["--priority", "crowd_720p=high"], "--priority needs --detect-every auto"),
        (
            ["--detect-every", "auto", "--priority", "cam9=high"],
            "--priority names an unknown stream 'cam9'; streams: crowd_720p",
        ),
        (
            ["--detect-every", "auto", "--priority", "crowd_720p=urgent"],
            "unknown priority 'urgent'",
        ),
        (
            ["--detect-every", "auto", "--latency-budget-ms", "0.01"],
            "--latency-budget-ms 0.01 is below the model's own latency",
        ),
    ],
)
def test_interval_option_errors_are_one_line_and_exit_2(
    crowd_video: Path, yolox_path: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    proc = tapetum("run", crowd_video, "--model", yolox_path, "--out", out, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0]
    assert not out.exists()  # refused before any output was opened


#: Paced cameras' frame rate, and the detector utilisation at which a load counts as
#: sustained (the scheduler's own target, ``SchedulerConfig.max_utilisation``).
CAMERA_FPS = 15.0
SUSTAINED_UTILISATION = SchedulerConfig().max_utilisation


def frames_per_second_now(detector: YoloxDetector, video: Path, seconds: float = 3.0) -> float:
    """Frames per second one stream gets through decoding, detection and tracking of every
    frame on this machine now (others' load included): one unpaced stream for a few
    seconds."""
    pipe = Pipeline(
        [VideoSource(video, decoder_threads=1)],
        detector,
        config=PipelineConfig(inference_workers=1, warmup=False),
    ).start()
    time.sleep(seconds)
    pipe.stop(drain=False)
    pipe.join()
    return pipe.stats().fps


@pytest.mark.slow
def test_scheduler_keeps_twice_the_sustainable_load_under_budget(
    crowd_video: Path, yolox_path: Path
) -> None:
    # What the scheduler controls, not how fast this shared machine is today. Measured
    # here first: how many frames a second one stream gets through now with every frame
    # detected (others' load included), and the model's own latency. The cameras are
    # twice as many as that sustains (8 on a quiet machine), paced at 15 FPS for 12 s;
    # the budget is the 100 ms SLO or 4 model latencies, whichever is larger. Intervals
    # up to 4 absorb twice the load, so once settled (the last 6 s):
    # - no frame is dropped while the scheduler still has moves (a full queue drops its
    #   oldest frame only when every stream is at the largest interval: a saturated tick);
    # - p99 stays under the budget, plus what others' load added to the model's calls in
    #   this run (their p99 over the model's own latency, twice: a frame may wait for the
    #   call in progress, then its own); on a quiet machine that is the budget itself;
    # - it runs out of moves (saturated) only when the model's calls alone, slowed by
    #   others' load, took longer than the budget leaves (then latency is not checked);
    # and always: every frame accounted for, the summary naming who was degraded.
    detector = YoloxDetector(yolox_path, DetectorConfig(conf_threshold=0.1), RuntimeOptions())
    latency_ms = model_latency_ms(detector)
    capacity_fps = frames_per_second_now(detector, crowd_video)
    sustained = SUSTAINED_UTILISATION * capacity_fps / CAMERA_FPS
    n_streams = min(8, max(2, round(2 * sustained)))
    budget_ms = max(100.0, 4 * latency_ms)
    scheduler = SchedulerConfig(latency_budget_ms=budget_ms)
    sources = [
        PacedSource(
            lambda: VideoSource(crowd_video, decoder_threads=1), CAMERA_FPS, f"cam{i}", 12.0
        )
        for i in range(n_streams)
    ]
    settled: list[float] = []
    at_settling: list[tuple[int, int]] = []  # saturated ticks and drops as the last 6 s begin

    def record(result: FrameResult) -> None:
        if result.frame.index >= 6 * CAMERA_FPS:
            if not at_settling:
                ticks = (pipe.scheduler_summary() or {})["ticks"]
                at_settling.append((ticks.get("saturated", 0), pipe.stats().frames_dropped))
            settled.append(result.timings_ms["end_to_end"])

    pipe = Pipeline(
        sources,
        detector,
        sinks=[CallbackSink(record)],
        config=PipelineConfig(inference_workers=1, scheduler=scheduler),
    )
    stats = pipe.run()
    assert settled and at_settling, "no frame after the first 6 s"
    summary = stats.as_dict()["scheduler"]
    call_p99_ms = stats.latency_ms["infer"].p99_ms  # the model's calls in this run
    contention_ms = max(0.0, call_p99_ms - latency_ms)
    p99_ms = float(np.percentile(settled, 99))
    saturated = summary["ticks"].get("saturated", 0) - at_settling[0][0]
    dropped = stats.frames_dropped - at_settling[0][1]
    context = (
        f"{capacity_fps:.1f} FPS at every frame, model {latency_ms:.1f} ms (+{contention_ms:.0f}"
        f" ms at p99 in the run): {n_streams} cameras, budget {budget_ms:.0f} ms; settled: "
        f"p99 {p99_ms:.0f} ms, {dropped} dropped, {saturated} saturated ticks; {summary}"
    )
    for s in stats.streams:  # every frame accounted for: no queue held frames back
        assert s.frames_read == s.frames_processed + s.frames_dropped + s.frames_failed
    assert stats.frames_failed == 0, context
    raised = sum(n for why, n in summary["interval_changes"].items() if why.startswith("raise"))
    assert raised > 0, context
    degraded = summary["degraded"]
    assert degraded, context  # the summary says who gave up detector frames
    assert all(d["detector_share"] < 1.0 for d in degraded), context
    if saturated:
        assert call_p99_ms > scheduler.behind_load * budget_ms, context
        warnings.warn(f"out of moves, latency not checked: {context}", stacklevel=1)
    else:
        assert dropped <= 0.01 * len(settled), context
        assert p99_ms < budget_ms + 2 * contention_ms, context
