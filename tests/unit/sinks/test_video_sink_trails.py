"""The annotated video's trails hold the last ``trail_length`` frames of points, whatever
the number of tracks that have come and gone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.core.result import FrameResult
from tapetum.sinks.video import AnnotatedVideoSink


def test_trail_points_stay_bounded_as_tracks_come_and_go(tmp_path: Path) -> None:
    sink = AnnotatedVideoSink(tmp_path / "cam.mp4", fps=25.0, trail_length=10)
    image = np.zeros((96, 128, 3), np.uint8)
    most = 0
    for f in range(400):  # 3 tracks on screen, a new id every 5 frames: 80 ids in all
        ids = np.arange(f // 5, f // 5 + 3, dtype=np.int64)
        x = (f % 5) * 4.0 + np.arange(3) * 40.0
        xyxy = np.stack([x, np.full(3, 10.0), x + 20.0, np.full(3, 50.0)], 1).astype(np.float32)
        dets = Detections(xyxy, np.full(3, 0.9, np.float32), np.zeros(3, np.int64))
        dets.tracker_id = ids
        sink.write(FrameResult(Frame("cam", f, image, f / 25.0, 0.0), dets, ("person",), {}))
        most = max(most, sink.state_sizes()["trail_points"])
    sink.close()

    assert sink.written == 400
    assert most == 10 * 3  # ten frames of three points
