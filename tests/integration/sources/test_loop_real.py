"""A looped video file: the crowd video read twice and more as one stream."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from tapetum.sources import open_source
from tests.helpers import CROWD_FPS, CROWD_FRAMES

pytestmark = pytest.mark.integration


def test_a_looped_file_starts_over_with_indexes_and_timestamps_running_on(
    crowd_video: Path,
) -> None:
    source = open_source(str(crowd_video), loop=True)
    stop = threading.Event()
    indexes, times = [], []
    for frame in source.frames(stop):
        indexes.append(frame.index)
        times.append(frame.timestamp_s)
        if len(indexes) == 2 * CROWD_FRAMES + 10:
            stop.set()

    assert indexes == list(range(2 * CROWD_FRAMES + 10))
    steps = np.diff(times)
    assert np.all(steps > 0)
    assert np.median(steps) == pytest.approx(1 / CROWD_FPS)
    assert steps.max() < 2.5 / CROWD_FPS  # the seams are one frame apart, not a jump back
    assert source.stats.frames_decoded == 2 * CROWD_FRAMES + 10


def test_without_loop_a_file_ends(crowd_video: Path) -> None:
    source = open_source(str(crowd_video))
    assert sum(1 for _ in source.frames(threading.Event())) == CROWD_FRAMES
