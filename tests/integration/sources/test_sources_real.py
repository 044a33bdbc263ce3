"""Sources against the real crowd video: full decode, pacing, damaged files, a flaky live
HTTP stream served from loopback. Derived files are written to tmp_path only."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tapetum.core.frame import Frame
from tapetum.errors import SourceError
from tapetum.sources import VideoSource, open_source
from tests.helpers import (
    CROWD_FPS,
    CROWD_FRAMES,
    FlakyHttpStream,
    damage_middle,
    remux_to_mpegts,
)

pytestmark = pytest.mark.integration


def _decode_all(source: VideoSource) -> list[Frame]:
    """Every frame of ``source``, each image shrunk to its first pixel after checking it is
    (H, W, 3) uint8 (a whole 720p video held in memory would take ~1 GB)."""
    frames = []
    for frame in source.frames(threading.Event()):
        assert frame.image.shape == (source.height, source.width, 3)
        assert frame.image.dtype == np.uint8
        frames.append(dataclasses.replace(frame, image=frame.image[:1, :1].copy()))
    return frames


@pytest.fixture(scope="module")
def crowd_ts(crowd_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return remux_to_mpegts(crowd_video, tmp_path_factory.mktemp("ts") / "crowd.ts")


def test_crowd_video_decodes_every_frame(crowd_video: Path) -> None:
    source = VideoSource(crowd_video)
    frames = _decode_all(source)

    assert source.fps == pytest.approx(CROWD_FPS)
    assert len(frames) == CROWD_FRAMES
    assert [f.index for f in frames] == list(range(CROWD_FRAMES))
    assert (source.width, source.height) == (1280, 720)
    timestamps = np.array([f.timestamp_s for f in frames])
    steps = np.diff(timestamps)
    # The AVI stores decode-order pts that a B-frame decoder hands back shuffled; timestamps
    # must still rise by one frame interval per frame.
    assert np.all(steps > 0)
    assert np.median(steps) == pytest.approx(1 / CROWD_FPS)
    assert timestamps[-1] - timestamps[0] == pytest.approx((CROWD_FRAMES - 1) / CROWD_FPS, abs=0.1)
    assert np.all(np.diff([f.arrival_s for f in frames]) >= 0)
    assert source.stats.frames_decoded == CROWD_FRAMES
    assert source.stats.frames_corrupt == 0


def test_realtime_paces_a_file_at_its_native_rate(crowd_video: Path, tmp_path: Path) -> None:
    clip = remux_to_mpegts(crowd_video, tmp_path / "clip.ts", max_s=2.0)
    source = VideoSource(clip, realtime=True)

    started = time.monotonic()
    frames = _decode_all(source)
    elapsed_s = time.monotonic() - started

    clip_s = frames[-1].timestamp_s - frames[0].timestamp_s
    assert len(frames) == 50
    assert 0.9 * clip_s <= elapsed_s <= clip_s + 1.5
    arrivals = np.array([f.arrival_s for f in frames])
    assert arrivals[-1] - arrivals[0] == pytest.approx(clip_s, abs=0.25)


def test_garbage_in_the_middle_is_counted_and_survived(crowd_ts: Path, tmp_path: Path) -> None:
    # Recipe: remux to MPEG-TS (stream copy), then overwrite 64 KiB at the middle with seeded
    # random bytes. The TS demuxer resyncs on its 188-byte packets and hands the decoder the
    # damaged PES; H.264 conceals it and flags that picture corrupt. (In the AVI itself the
    # demuxer silently drops the damaged chunks, so nothing is reported there.)
    damaged = damage_middle(crowd_ts, tmp_path / "garbage.ts")

    source = VideoSource(damaged)
    frames = _decode_all(source)  # ends normally: no exception mid-stream

    assert source.stats.frames_corrupt > 0
    assert len(frames) > 0.9 * CROWD_FRAMES
    indexes = [f.index for f in frames]
    gaps = [b for a, b in itertools.pairwise(indexes) if b != a + 1]
    assert gaps, "the skipped corrupt frame leaves a gap in the indexes"
    after_damage = [f for f in frames if f.index > gaps[0]]
    assert len(after_damage) > 100  # decoding carried on after the damage
    assert frames[-1].timestamp_s > 13.0


def test_truncated_file_ends_normally(crowd_video: Path, tmp_path: Path) -> None:
    data = crowd_video.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[: int(len(data) * 0.6)])

    source = VideoSource(truncated)
    frames = _decode_all(source)

    assert 0.45 * CROWD_FRAMES < len(frames) < 0.7 * CROWD_FRAMES
    assert np.all(np.diff([f.timestamp_s for f in frames]) > 0)


def test_live_stream_reconnects_after_a_drop_then_gives_up(
    flaky_stream: FlakyHttpStream, live_clip: Path, tmp_path: Path
) -> None:
    payload = live_clip.read_bytes()
    first_part = tmp_path / "first_part.ts"
    first_part.write_bytes(payload[: int(len(payload) * 0.4)])
    frames_before_cut = len(_decode_all(VideoSource(first_part)))
    frames_in_clip = len(_decode_all(VideoSource(live_clip)))

    source = open_source(
        flaky_stream.url,
        reconnect_initial_delay_s=0.05,
        reconnect_max_delay_s=0.2,
        reconnect_max_attempts=3,
        read_timeout_s=2.0,
    )
    started = time.monotonic()
    frames: list[Frame] = []
    with pytest.raises(SourceError, match="gave up after 3 failed reconnect attempts"):
        frames.extend(source.frames(threading.Event()))
    elapsed_s = time.monotonic() - started

    assert source.is_live
    assert source.stats.reconnects >= 1
    assert len(frames) > frames_before_cut  # frames after the cut were decoded
    assert len(frames) >= frames_in_clip
    # indexes continue across the reconnect; the picture cut in half by the drop is
    # flagged corrupt and skipped, leaving a gap of its own
    indexes = [f.index for f in frames]
    assert indexes == sorted(set(indexes))
    assert indexes[-1] + 1 == len(frames) + source.stats.frames_corrupt
    assert np.all(np.diff([f.timestamp_s for f in frames]) > 0)
    # cut + 3 failed reopens (404) are all counted; then it gives up, quickly, saying so.
    assert source.stats.errors >= 4
    assert flaky_stream.requests == 5
    assert elapsed_s < 5.0


def test_stop_interrupts_the_reconnect_backoff(flaky_stream: FlakyHttpStream) -> None:
    source = VideoSource(
        flaky_stream.url, reconnect_initial_delay_s=30.0, reconnect_max_delay_s=30.0
    )
    stop = threading.Event()
    stopped_at: list[float] = []

    def stop_during_backoff() -> None:
        deadline = time.monotonic() + 10.0
        while source.stats.errors == 0 and time.monotonic() < deadline:  # until the drop
            time.sleep(0.01)
        time.sleep(0.2)  # now inside the 30 s wait before the first reconnect
        stopped_at.append(time.monotonic())
        stop.set()

    stopper = threading.Thread(target=stop_during_backoff)
    stopper.start()
    frames = list(source.frames(stop))
    ended_at = time.monotonic()
    stopper.join()

    assert frames
    assert source.stats.errors == 1
    assert source.stats.reconnects == 0
    assert ended_at - stopped_at[0] < 1.0
