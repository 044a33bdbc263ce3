"""Watch a camera for drift, with metrics and the live page, in a few lines of Python.

1. Build the camera's reference profile from a first pass over the video
   (``ProfileRecorder``, a pipeline sink).
2. Play the video again as the "live" camera, darkened by 40 % from ``--darken-from`` on,
   with a ``PipelineMonitor`` and a ``DriftMonitor`` among the pipeline's sinks and
   ``/metrics`` + ``/dashboard`` served on a free port (``MetricsServer``).
3. Print each drift event as the monitor raises it, then a few of the metrics.

    python examples/monitoring/watch_drift.py ../shared/assets/video/crowd_720p.avi \
        --model ../shared/assets/models/yolox_nano.onnx
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterator

import numpy as np

import tapetum
from tapetum.core.frame import Frame
from tapetum.errors import TapetumError
from tapetum.monitor import (
    CollectorGroup,
    DriftEvent,
    DriftMonitor,
    MetricsServer,
    PipelineMonitor,
    ProfileRecorder,
    new_registry,
)
from tapetum.sources.base import Source, SourceStats


class Darkened:
    """Another source's frames, 40 % darker from frame ``start`` on (a camera's light
    going out): the Source protocol, delegating everything but the pictures."""

    def __init__(self, inner: Source, start: int) -> None:
        self.inner = inner
        self.start = start
        self.source_id = inner.source_id
        self.is_live = inner.is_live
        self.fps = inner.fps

    @property
    def stats(self) -> SourceStats:
        return self.inner.stats

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        for f in self.inner.frames(stop):
            if f.index < self.start:
                yield f
            else:
                dark = (f.image * 0.6).astype(np.uint8)
                yield Frame(f.source_id, f.index, dark, f.timestamp_s, f.arrival_s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--model", required=True)
    ap.add_argument("--darken-from", type=int, default=150, help="first darkened frame")
    args = ap.parse_args()
    fps = 25.0  # the video clock the profile and the monitor share
    try:
        detector = tapetum.load_detector(args.model)
        recorder = ProfileRecorder(fps=fps)
        tapetum.Pipeline([tapetum.open_source(args.video)], detector, sinks=[recorder]).run()
        profile = recorder.build("camera")
        print(f"profile: {len(profile.scored())} signals calibrated on {profile.frames} frames")

        def on_event(event: DriftEvent) -> None:  # runs in the drift sink's thread
            print(f"{event.state}: {event.signal} at frame {event.frame_index} "
                  f"(score {event.score:.1f})", flush=True)  # fmt: skip

        metrics = PipelineMonitor(model_info={"model": "yolox_nano"}, fps=fps)
        drift = DriftMonitor(profile, fps=fps, on_event=[on_event])
        camera = Darkened(tapetum.open_source(args.video), args.darken_from)
        pipe = tapetum.Pipeline([camera], detector, sinks=[metrics, drift])
        registry = new_registry()
        registry.register(CollectorGroup([metrics.attach(pipe), drift]))
        server = MetricsServer(registry, port=0).start()
        print(f"metrics: {server.url}/metrics  dashboard: {server.url}/dashboard", flush=True)
        pipe.run()
    except TapetumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = {"source": camera.source_id}
    processed = registry.get_sample_value("tapetum_stream_frames_processed_total", source)
    print(f"frames processed: {processed:.0f}")
    print(f"drifting at the end: {bool(registry.get_sample_value('tapetum_drift_active', source))}")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
