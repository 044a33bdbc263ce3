"""A folder of still images read as a video, one frame per file in name order.

Example::

    import threading
    from tapetum.sources import ImageFolderSource

    source = ImageFolderSource("frames/", fps=10.0, realtime=True)
    for frame in source.frames(threading.Event()):
        print(frame.index, frame.image.shape)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt

from tapetum.core.frame import Frame
from tapetum.errors import ConfigError, SourceError
from tapetum.sources.base import SourceBase, SourceStats
from tapetum.sources.video import sanitise_source_id

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
"""File suffixes (any case) taken from the folder; other files are ignored."""


class ImageFolderSource(SourceBase):
    """Images of one folder (jpg, png, bmp, webp), sorted by file name, decoded by OpenCV.

    Files OpenCV cannot decode are counted in ``stats.frames_corrupt`` and skipped; a
    frame's ``index`` is its file's position in the sorted listing, so skips leave gaps.
    The listing is taken once, when the source is created.

    Args:
        folder: the folder to read (not recursive).
        source_id: name of the source; defaults to the folder name.
        fps: nominal frame rate. With it, ``timestamp_s`` is the wall-clock time at which
            iteration started plus ``index / fps``; without it, the wall-clock time at which
            the image was decoded (seconds since the epoch in both cases).
        realtime: deliver images at ``fps`` (needs ``fps``).
        loop: start over from the first image after the last, until ``stop`` is set;
            indexes (and timestamps) keep counting up across the passes.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        source_id: str | None = None,
        fps: float | None = None,
        realtime: bool = False,
        loop: bool = False,
    ) -> None:
        self._folder = Path(folder)
        if not self._folder.is_dir():
            reason = "not a directory" if self._folder.exists() else "no such directory"
            raise SourceError(f"cannot open image folder {self._folder}: {reason}")
        if fps is not None and fps <= 0:
            raise ConfigError(f"fps of image folder {self._folder} must be > 0, got {fps}")
        if realtime and fps is None:
            raise ConfigError(
                f"realtime pacing of image folder {self._folder} needs fps (e.g. fps=25)"
            )
        self._paths = sorted(
            (
                entry
                for entry in self._folder.iterdir()
                if entry.suffix.lower() in IMAGE_SUFFIXES and entry.is_file()
            ),
            key=lambda entry: entry.name,
        )
        if not self._paths:
            suffixes = ", ".join(sorted(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES))
            raise SourceError(
                f"cannot open image folder {self._folder}: no images in it ({suffixes})"
            )
        self._source_id = source_id or sanitise_source_id(self._folder.resolve().name)
        self._fps = fps
        self._realtime = realtime
        self._loop = loop
        self._stats = SourceStats()
        self._live = False

    @property
    def paths(self) -> list[Path]:
        """The image files, in the order they are delivered."""
        return list(self._paths)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yield one BGR frame per readable image until the folder ends (every pass of it,
        with ``loop``; a pass with no readable image ends it) or ``stop`` is set."""
        start_epoch_s = time.time()
        start_monotonic_s = time.monotonic()
        first_index = 0
        while not stop.is_set():
            decoded_before = self._stats.frames_decoded
            yield from self._one_pass(stop, first_index, start_epoch_s, start_monotonic_s)
            first_index += len(self._paths)
            if not self._loop or self._stats.frames_decoded == decoded_before:
                return

    def _one_pass(
        self,
        stop: threading.Event,
        first_index: int,
        start_epoch_s: float,
        start_monotonic_s: float,
    ) -> Iterator[Frame]:
        import cv2

        for position, path in enumerate(self._paths):
            if stop.is_set():
                return
            index = first_index + position
            decoded = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if decoded is None:
                self._stats.frames_corrupt += 1
                logger.warning("%s: cannot decode image %s, skipped", self._source_id, path)
                continue
            # IMREAD_COLOR always decodes to 8-bit BGR, whatever the file's depth.
            image = cast(npt.NDArray[np.uint8], decoded)
            if self._fps is None:
                timestamp_s = time.time()
            else:
                offset_s = index / self._fps
                timestamp_s = start_epoch_s + offset_s
                if self._realtime:
                    due_in_s = start_monotonic_s + offset_s - time.monotonic()
                    if due_in_s > 0 and stop.wait(due_in_s):
                        return
            self._stats.frames_decoded += 1
            yield Frame(
                source_id=self._source_id,
                index=index,
                image=image,
                timestamp_s=timestamp_s,
                arrival_s=time.perf_counter(),
            )
