"""Count tracked objects that cross a line, and those inside a polygon zone.

A ``tapetum.Pipeline`` decodes, detects and tracks; a ``CallbackSink`` hands every result
to ``CrossingCounter``, which converts the detections to ``supervision.Detections`` and
lets supervision's ``LineZone`` and ``PolygonZone`` do the geometry per track id.

    python examples/line_zone_counter/line_zone_counter.py \
        ../shared/assets/video/crowd_720p.avi --model ../shared/assets/models/yolox_nano.onnx
"""

from __future__ import annotations

import argparse
import sys
import threading

import numpy as np
import numpy.typing as npt
import supervision as sv

import tapetum
from tapetum.errors import TapetumError


def points(text: str) -> npt.NDArray[np.int64]:
    """``"x1,y1,x2,y2,..."`` in pixels → (K, 2) int64."""
    values = [int(float(v)) for v in text.split(",")]
    if len(values) % 2:
        raise argparse.ArgumentTypeError(f"expected pairs of x,y pixels, got {text!r}")
    return np.asarray(values, np.int64).reshape(-1, 2)


class CrossingCounter:
    """Counts one class's tracks across ``line`` and inside ``zone``.

    Called from the pipeline's sink thread, one frame at a time in order; the main thread
    reads the counts only after the pipeline has finished.
    """

    def __init__(
        self,
        line: npt.NDArray[np.int64],
        zone: npt.NDArray[np.int64],
        class_id: int,
        max_frames: int = 0,
    ) -> None:
        start, end = (sv.Point(int(x), int(y)) for x, y in line)
        # One anchor (the box centre): a track crosses when its centre changes side.
        self.line = sv.LineZone(start, end, triggering_anchors=[sv.Position.CENTER])
        self.zone = sv.PolygonZone(zone, triggering_anchors=[sv.Position.CENTER])
        self.class_id = class_id
        self.max_frames = max_frames
        self.done = threading.Event()  # set once max_frames frames are counted
        self.frames = 0
        self.peak_in_zone = 0
        self.track_ids: set[int] = set()

    def __call__(self, result: tapetum.FrameResult) -> None:
        if self.done.is_set():
            return
        det = result.detections
        wanted = det[det.class_id == self.class_id]
        sv_det = wanted.to_supervision()
        self.line.trigger(sv_det)
        in_zone = int(self.zone.trigger(sv_det).sum())
        self.peak_in_zone = max(self.peak_in_zone, in_zone)
        self.track_ids.update(wanted.tracker_id[wanted.is_tracked].tolist())
        self.frames += 1
        if self.frames == self.max_frames:
            self.done.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="video file, stream URL or image folder")
    parser.add_argument("--model", required=True, help="ONNX detector (e.g. yolox_nano.onnx)")
    parser.add_argument(
        "--line",
        type=points,
        default="0,360,1280,360",
        help="x1,y1,x2,y2 in pixels (default: across the middle of 1280x720)",
    )
    parser.add_argument(
        "--zone",
        type=points,
        default="320,180,960,180,960,540,320,540",
        help="polygon x1,y1,x2,y2,x3,y3,... in pixels (default: the central quarter)",
    )
    parser.add_argument("--class-id", type=int, default=0, help="class to count (0: person)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: all)")
    args = parser.parse_args()
    if len(args.line) != 2 or len(args.zone) < 3:
        parser.error("--line takes 2 x,y points, --zone at least 3")

    counter = CrossingCounter(args.line, args.zone, args.class_id, args.max_frames)
    try:
        pipe = tapetum.Pipeline(
            [tapetum.open_source(args.source)],
            tapetum.load_detector(args.model),
            sinks=[tapetum.CallbackSink(counter)],
        )
    except TapetumError as exc:  # a missing file, not a video, not an ONNX model...
        sys.exit(f"error: {exc}")
    pipe.start()
    while not pipe.join(0.1):
        if counter.done.is_set():
            pipe.stop(drain=False)  # the frames still queued are dropped, not counted
            pipe.join()
    line = counter.line
    print(f"frames: {counter.frames}  tracks: {len(counter.track_ids)}")
    print(f"line crossings: in {line.in_count}  out {line.out_count}")
    print(f"zone: peak {counter.peak_in_zone} at once")


if __name__ == "__main__":
    main()
