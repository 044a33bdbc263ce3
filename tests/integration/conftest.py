"""Fixtures shared by integration tests: a 3-second MPEG-TS clip of the crowd video and a
loopback HTTP server that drops it once (see ``tests.helpers.FlakyHttpStream``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import FlakyHttpStream, remux_to_mpegts


@pytest.fixture
def live_clip(crowd_video: Path, tmp_path: Path) -> Path:
    return remux_to_mpegts(crowd_video, tmp_path / "live.ts", max_s=3.0)


@pytest.fixture
def flaky_stream(live_clip: Path) -> Iterator[FlakyHttpStream]:
    server = FlakyHttpStream(live_clip.read_bytes(), cut_fraction=0.4)
    yield server
    server.close()
