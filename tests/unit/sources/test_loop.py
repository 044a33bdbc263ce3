"""A looped image folder: passes follow one another until stopped."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from tapetum.sources import ImageFolderSource


def _folder(tmp_path: Path, n: int) -> Path:
    for i in range(n):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.full((8, 8, 3), i, np.uint8))
    return tmp_path


def test_a_looped_folder_starts_over_and_counts_on(tmp_path: Path) -> None:
    source = ImageFolderSource(_folder(tmp_path, 4), fps=10.0, loop=True)
    stop = threading.Event()
    frames = []
    for frame in source.frames(stop):
        frames.append(frame)
        if len(frames) == 10:
            stop.set()

    assert [f.index for f in frames] == list(range(10))
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert np.all(np.diff([f.timestamp_s for f in frames]) > 0)


def test_a_looped_folder_of_unreadable_images_ends(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"not a png")
    source = ImageFolderSource(tmp_path, loop=True)

    assert list(source.frames(threading.Event())) == []
    assert source.stats.frames_corrupt == 1
