"""JSON Lines output: one line per processed frame, every line on disk whole."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from tapetum.core.result import FrameResult
from tapetum.errors import SinkError


class JsonlSink:
    """Writes ``FrameResult.to_record()`` as one JSON object per line.

    Line format::

        {"source_id": "crowd", "frame_index": 12, "timestamp_s": 0.24,
         "tracks": [{"track_id": 3, "class_id": 0, "class_name": "person",
                     "confidence": 0.81, "xyxy": [x1, y1, x2, y2]}]}

    Lines go to the operating system every ``flush_every`` results (default: each at
    once), so a stopped or killed process leaves what it wrote. A write that fails (disk
    full, a file-size limit) is cut back to the last whole line, so every line on disk
    parses; the lost lines are counted in :attr:`lost` and the write raises ``SinkError``
    (the pipeline counts it and carries on; a later write is tried again, e.g. once space
    is freed).

    Attributes:
        written: lines on disk, whole.
        lost: lines that failed to reach the disk.
    """

    def __init__(self, path: str | Path, flush_every: int = 1) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
            self._fd: int | None = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._flush_every = max(1, flush_every)
        self._pending: list[bytes] = []
        self._size = 0  # bytes on disk, all of them whole lines
        self.written = 0
        self.lost = 0

    def write(self, result: FrameResult) -> None:
        line = json.dumps(result.to_record(), separators=(",", ":")) + "\n"
        self._pending.append(line.encode("utf-8"))
        if len(self._pending) >= self._flush_every:
            self._flush()

    def _flush(self) -> None:
        if not self._pending or self._fd is None:
            return
        data = b"".join(self._pending)
        lines = len(self._pending)
        self._pending.clear()
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self.lost += lines
            # A partial write leaves half a line: cut the file back to its last whole line
            # (allowed even on a full disk or at a size limit, it frees space).
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise SinkError(
                f"cannot write {self.path}: {exc.strerror or exc}; {lines} line(s) lost "
                f"({self.lost} so far), the file keeps {self.written} whole lines"
            ) from None
        self._size += len(data)
        self.written += lines

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            self._flush()
        finally:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written; a short write at a size limit or a
    full disk is followed by the error that explains it."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - POSIX write returns > 0 or raises
            raise OSError("write made no progress")
        view = view[n:]
