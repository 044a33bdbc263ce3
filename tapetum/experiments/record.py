"""What each arm emitted, recorded as columns: one row per frame, one per box, one per
(frame, class) of agreement with the control.

Recording appends a handful of scalars and three small arrays per frame (thread-safe);
the arrays are concatenated once, when the run ends, and saved as one compressed
``.npz`` per arm in the run folder. Everything the report computes (windows, latency
histograms, track lengths, agreement) is derived from these columns.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ExperimentError

__all__ = ["DATA_FORMAT", "ArmData", "ArmRecorder"]

#: Version of the run-folder layout; a report refuses data of another version.
DATA_FORMAT = 1

_FRAME_COLUMNS = ("stream", "frame_index", "timestamp_s", "done_s", "latency_ms", "compute_ms")


@dataclass(frozen=True, slots=True)
class ArmData:
    """One arm's record (see the module docstring).

    Attributes:
        name: the arm.
        class_names: names for ``class_id``.
        streams: stream (source) ids; ``stream`` columns index this.
        stream: (F,) int32, stream of each frame row.
        frame_index: (F,) int64, the frame's index in its source.
        timestamp_s: (F,) float64, the frame's time on its source's clock (windows).
        done_s: (F,) float64, ``perf_counter`` seconds when the arm's result was ready.
        latency_ms: (F,) float32, frame arrival → result ready.
        compute_ms: (F,) float32, the arm's own work on the frame (inference of its batch,
            decoding, tracking).
        n_boxes: (F,) int32, boxes emitted.
        failed: (F,) bool, the arm failed on the frame (no boxes).
        box_frame: (D,) int32, frame row of each emitted box.
        box_class: (D,) int32, its class id.
        box_confidence: (D,) float32.
        box_track: (D,) int64, its track id (-1: none).
        agree_frame: (A,) int32, frame row (of this arm) of each agreement row.
        agree_class: (A,) int32, class of the row.
        agree_tp: (A,) int32, this arm's boxes of the class matched to a control box.
        agree_n_variant: (A,) int32, this arm's boxes of the class in the frame.
        agree_n_control: (A,) int32, the control's boxes of the class in the frame.
        failed_by_stream: failures known only per stream (the pipeline's count for the
            control), stream id → frames.
    """

    name: str
    class_names: tuple[str, ...]
    streams: tuple[str, ...]
    stream: npt.NDArray[np.int32]
    frame_index: IntArray
    timestamp_s: Float64Array
    done_s: Float64Array
    latency_ms: Float32Array
    compute_ms: Float32Array
    n_boxes: npt.NDArray[np.int32]
    failed: BoolArray
    box_frame: npt.NDArray[np.int32]
    box_class: npt.NDArray[np.int32]
    box_confidence: Float32Array
    box_track: IntArray
    agree_frame: npt.NDArray[np.int32]
    agree_class: npt.NDArray[np.int32]
    agree_tp: npt.NDArray[np.int32]
    agree_n_variant: npt.NDArray[np.int32]
    agree_n_control: npt.NDArray[np.int32]
    failed_by_stream: dict[str, int]

    @property
    def frames(self) -> int:
        return int(self.stream.shape[0])

    @property
    def has_agreement(self) -> bool:
        return bool(self.agree_frame.shape[0])

    def save(self, path: Path) -> None:
        """Write as one compressed ``.npz`` (names and counters as a JSON header)."""
        header = {
            "format": DATA_FORMAT,
            "name": self.name,
            "class_names": list(self.class_names),
            "streams": list(self.streams),
            "failed_by_stream": self.failed_by_stream,
        }
        arrays = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez_compressed(fh, header=np.asarray(json.dumps(header)), **arrays)

    @classmethod
    def load(cls, path: Path) -> ArmData:
        """Read what :meth:`save` wrote.

        Raises:
            ExperimentError: missing, unreadable, or of another format version.
        """
        try:
            with np.load(path, allow_pickle=False) as npz:
                header = json.loads(str(npz["header"]))
                arrays = {k: npz[k] for k in npz.files if k != "header"}
        except (OSError, ValueError, KeyError) as exc:
            raise ExperimentError(f"cannot read arm data {path.name}: {exc}") from None
        if header.get("format") != DATA_FORMAT:
            raise ExperimentError(
                f"{path.name}: experiment data format {header.get('format')!r}, this Tapetum "
                f"reads {DATA_FORMAT}"
            )
        try:
            return cls(
                name=str(header["name"]),
                class_names=tuple(header["class_names"]),
                streams=tuple(header["streams"]),
                failed_by_stream={str(k): int(v) for k, v in header["failed_by_stream"].items()},
                **arrays,
            )
        except TypeError as exc:
            raise ExperimentError(f"{path.name}: incomplete arm data ({exc})") from None


class ArmRecorder:
    """Appends one arm's frames, boxes and agreement rows from any thread.

    Args:
        name: the arm.
        class_names: its detector's class names.
    """

    def __init__(self, name: str, class_names: tuple[str, ...]) -> None:
        self.name = name
        self.class_names = class_names
        self._lock = threading.Lock()
        self._streams: dict[str, int] = {}
        self._frames: dict[str, list[float]] = {c: [] for c in _FRAME_COLUMNS}
        self._n_boxes: list[int] = []
        self._failed: list[bool] = []
        self._boxes: list[tuple[int, IntArray, Float32Array, IntArray]] = []
        self._agree: list[tuple[int, IntArray, IntArray, IntArray, IntArray]] = []
        self._failed_by_stream: dict[str, int] = {}

    @property
    def frames(self) -> int:
        return len(self._n_boxes)

    def add(
        self,
        frame: Frame,
        *,
        done_s: float,
        latency_ms: float,
        compute_ms: float,
        detections: Detections | None,
    ) -> int:
        """Record one frame (``detections`` None: the arm failed on it); returns its row."""
        source_id, frame_index, timestamp_s = frame.source_id, frame.index, frame.timestamp_s
        with self._lock:
            stream = self._streams.setdefault(source_id, len(self._streams))
            row = len(self._n_boxes)
            for column, value in zip(
                _FRAME_COLUMNS,
                (stream, frame_index, timestamp_s, done_s, latency_ms, compute_ms),
                strict=True,
            ):
                self._frames[column].append(value)
            self._failed.append(detections is None)
            n = len(detections) if detections is not None else 0
            self._n_boxes.append(n)
            if detections is not None and n:
                self._boxes.append(
                    (row, detections.class_id, detections.confidence, detections.tracker_id)
                )
        return row

    def add_agreement(
        self, row: int, class_id: IntArray, tp: IntArray, n_variant: IntArray, n_control: IntArray
    ) -> None:
        """Record a frame's agreement counts per class (see :func:`.agreement.box_agreement`)."""
        if class_id.shape[0]:
            with self._lock:
                self._agree.append((row, class_id, tp, n_variant, n_control))

    def add_stream_failures(self, source_id: str, frames: int) -> None:
        """Failures counted per stream only (the pipeline's, for the control)."""
        if frames:
            with self._lock:
                self._streams.setdefault(source_id, len(self._streams))
                self._failed_by_stream[source_id] = (
                    self._failed_by_stream.get(source_id, 0) + frames
                )

    def data(self) -> ArmData:
        """Everything recorded so far, as arrays."""
        with self._lock:
            f = self._frames
            boxes, agree = list(self._boxes), list(self._agree)
            streams = tuple(sorted(self._streams, key=self._streams.__getitem__))
            n_boxes = np.asarray(self._n_boxes, np.int32)
            failed = np.asarray(self._failed, np.bool_)
            frame_cols = {c: np.asarray(v) for c, v in f.items()}
            failed_by_stream = dict(self._failed_by_stream)
        counts = [b[1].shape[0] for b in boxes]
        return ArmData(
            name=self.name,
            class_names=self.class_names,
            streams=streams,
            stream=frame_cols["stream"].astype(np.int32),
            frame_index=frame_cols["frame_index"].astype(np.int64),
            timestamp_s=frame_cols["timestamp_s"].astype(np.float64),
            done_s=frame_cols["done_s"].astype(np.float64),
            latency_ms=frame_cols["latency_ms"].astype(np.float32),
            compute_ms=frame_cols["compute_ms"].astype(np.float32),
            n_boxes=n_boxes,
            failed=failed,
            box_frame=np.repeat(np.asarray([b[0] for b in boxes], np.int32), counts),
            box_class=_cat([b[1] for b in boxes], np.int32),
            box_confidence=_cat([b[2] for b in boxes], np.float32),
            box_track=_cat([b[3] for b in boxes], np.int64),
            agree_frame=np.repeat(
                np.asarray([a[0] for a in agree], np.int32), [a[1].shape[0] for a in agree]
            ),
            agree_class=_cat([a[1] for a in agree], np.int32),
            agree_tp=_cat([a[2] for a in agree], np.int32),
            agree_n_variant=_cat([a[3] for a in agree], np.int32),
            agree_n_control=_cat([a[4] for a in agree], np.int32),
            failed_by_stream=failed_by_stream,
        )


def _cat(parts: list[npt.NDArray[Any]], dtype: type[Any]) -> npt.NDArray[Any]:
    if not parts:
        return np.empty(0, dtype)
    return np.concatenate(parts).astype(dtype, copy=False)
