"""What the pipeline emits for every processed frame."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame


@dataclass(frozen=True, slots=True)
class FrameResult:
    """One processed frame.

    Attributes:
        frame: the decoded frame (image included, for sinks that draw).
        detections: tracked objects (``tracker_id`` set) in source pixels.
        class_names: names for ``detections.class_id``.
        timings_ms: per-stage latency of this frame (``preprocess``, ``batch_wait``,
            ``infer``, ``postprocess``, ``track``, ``end_to_end``; ``predict`` and
            ``end_to_end`` on a predicted frame) in milliseconds.
        predicted: the detector skipped this frame (a detection interval): the boxes are
            the tracker's motion predictions, and the JSONL record says
            ``"predicted": true``. Each track also carries a ``predicted`` flag
            (``detections.data``) on streams with an interval.
    """

    frame: Frame
    detections: Detections
    class_names: tuple[str, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)
    predicted: bool = False

    @property
    def source_id(self) -> str:
        return self.frame.source_id

    def to_record(self) -> dict[str, object]:
        """A JSON-ready dict: one line of the JSONL output.

        Extra per-track columns in ``detections.data`` (forecasts, global ids…) are written
        under their own names, one value (or list, for multi-dimensional columns) per track.
        """
        det = self.detections
        names = self.class_names
        extras = {key: np.asarray(col).tolist() for key, col in det.data.items()}
        tracks: list[dict[str, object]] = []
        for i, (tid, cid, conf, box) in enumerate(
            zip(
                det.tracker_id.tolist(),
                det.class_id.tolist(),
                det.confidence.tolist(),
                det.xyxy.tolist(),
                strict=True,
            )
        ):
            track: dict[str, object] = {
                "track_id": tid,
                "class_id": cid,
                "class_name": names[cid] if 0 <= cid < len(names) else str(cid),
                "confidence": round(conf, 4),
                "xyxy": [round(v, 2) for v in box],
            }
            for key, values in extras.items():
                track[key] = _rounded(values[i])
            tracks.append(track)
        record: dict[str, object] = {
            "source_id": self.frame.source_id,
            "frame_index": self.frame.index,
            "timestamp_s": round(self.frame.timestamp_s, 6),
            "tracks": tracks,
        }
        if self.predicted:  # absent on detector frames: records without intervals unchanged
            record["predicted"] = True
        return record


def _rounded(value: object) -> object:
    """Floats to 3 decimals (pixels and seconds need no more), NaN to null, recursively."""
    if isinstance(value, float):
        return round(value, 3) if math.isfinite(value) else None  # JSON has no NaN
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
