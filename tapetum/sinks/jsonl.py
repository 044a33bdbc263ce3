"""JSON Lines output: one line per processed frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from tapetum.core.result import FrameResult
from tapetum.errors import SinkError


class JsonlSink:
    """Writes ``FrameResult.to_record()`` as one JSON object per line.

    Line format::

        {"source_id": "crowd", "frame_index": 12, "timestamp_s": 0.24,
         "tracks": [{"track_id": 3, "class_id": 0, "class_name": "person",
                     "confidence": 0.81, "xyxy": [x1, y1, x2, y2]}]}
    """

    def __init__(self, path: str | Path, flush_every: int = 50) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: IO[str] = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._flush_every = max(1, flush_every)
        self.written = 0

    def write(self, result: FrameResult) -> None:
        self._fh.write(json.dumps(result.to_record(), separators=(",", ":")) + "\n")
        self.written += 1
        if self.written % self._flush_every == 0:
            self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
