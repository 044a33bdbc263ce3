"""A server-side stream leaves no reference cycle behind once it ends and is deleted.

A cycle among a stream's objects keeps its pipeline (latency rings, tracker, decoder) in
memory until Python's full garbage collection, which in a server that holds a model and
its caches runs rarely: the server's memory rose about 2 MB per stream
(``bench/soak.py --mode serve``). The real YOLOX-nano model on a 1 s clip of the crowd
video, through :class:`~tapetum.serve.streams.StreamManager` as the REST routes use it.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapetum.detect import load_detector
from tapetum.serve.source_policy import SourcePolicy
from tapetum.serve.streams import StreamManager, StreamOptions
from tests.helpers import remux_to_mpegts

pytestmark = pytest.mark.integration


@pytest.fixture
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off (and its saved garbage clear) for the test."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def _run_to_end(manager: StreamManager, uri: str) -> weakref.ref[object]:
    """Start a stream, read its results to the end, delete it; a weak reference to its
    pipeline."""
    info = manager.start(uri, StreamOptions(realtime=False))
    sub = manager.subscribe(info.stream_id)
    lines = 0
    while (got := sub.get(timeout_s=30.0)) is not None:
        lines += len(got)
    manager.unsubscribe(info.stream_id, sub)
    assert lines > 0
    pipeline = weakref.ref(manager._managed(info.stream_id).pipeline)
    manager.stop(info.stream_id)  # what DELETE /v1/streams/{id} does
    return pipeline


def test_a_deleted_stream_is_freed_by_reference_counting(
    yolox_path: Path, crowd_video: Path, tmp_path: Path, collector_paused: None
) -> None:
    clip = remux_to_mpegts(crowd_video, tmp_path / "clip.ts", max_s=1.0)
    detector = load_detector(yolox_path)
    manager = StreamManager(
        lambda: detector, max_streams=2, source_policy=SourcePolicy(media_roots=(tmp_path,))
    )
    try:
        pipeline = _run_to_end(manager, str(clip))
        assert pipeline() is None, "the stream's pipeline outlived it: a reference cycle"
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = sorted(
            {
                f"{type(o).__module__}.{type(o).__qualname__}"
                for o in gc.garbage
                if type(o).__module__.startswith("tapetum")
            }
        )
        assert ours == [], f"objects of a finished stream left on reference cycles: {ours}"
    finally:
        manager.stop_all(drain=False)
