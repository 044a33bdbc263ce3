"""A drain that cannot finish (a sink stuck in a write under a file run, which waits for
its sinks) turns into a stop that drops what is queued, so ``tapetum run`` still exits on
SIGTERM, with every frame and result counted."""

from __future__ import annotations

import threading

import pytest
from rich.progress import Progress

from tapetum.cli import app as cli_app
from tapetum.core.result import FrameResult
from tapetum.pipeline import Pipeline, PipelineConfig
from tapetum.sinks import CallbackSink
from tests.unit.pipeline.test_pipeline_unit import FakeDetector, FakeSource, assert_accounted


def test_a_drain_that_moves_nothing_drops_what_is_queued_and_the_run_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli_app, "_DRAIN_STALL_S", 0.3)
    release = threading.Event()
    entered = threading.Event()

    def stuck(result: FrameResult) -> None:  # a write that never returns (until released)
        entered.set()
        release.wait()

    pipe = Pipeline(
        [FakeSource("cam", 1, n_frames=10_000)],
        FakeDetector(),
        sinks=[CallbackSink(stuck)],
        config=PipelineConfig(sink_queue_size=2, warmup=False, sink_stall_timeout_s=0.3),
    )
    pipe.start()
    try:
        assert entered.wait(10)
        with Progress(disable=True) as progress:
            task = progress.add_task("tracking", line="")
            cli_app._progress_loop(pipe, progress, task, lambda: 1)  # one SIGTERM, at once
        assert pipe.finished
    finally:
        release.set()

    stats = pipe.stats()
    assert_accounted(stats)
    (stream,) = stats.streams
    assert 0 < stream.frames_processed < 10_000
    name = "0-CallbackSink"
    assert stats.sink_written[name] + stats.sink_dropped[name] + stats.sink_errors[name] == (
        stream.frames_processed
    )
    assert stats.sink_errors[name] == 1
    assert "stuck in a write" in stats.sink_failures[name]


def test_stop_signals_are_counted_until_the_block_ends_then_restored() -> None:
    """``tapetum run`` counts SIGTERM and Ctrl-C until the command ends: a second SIGTERM
    that lands after the drain (while the summary is written) must not kill the run."""
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with cli_app._StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.stops == ["SIGTERM", "SIGINT"]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
