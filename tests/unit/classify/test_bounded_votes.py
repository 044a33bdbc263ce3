"""Classification votes of a long stream stay bounded: tracks that ended are forgotten."""

from __future__ import annotations

import numpy as np

from tapetum.classify.voting import TrackLabels


def test_votes_of_ended_tracks_are_forgotten_after_max_age() -> None:
    labels = TrackLabels(num_labels=3, max_age_frames=50)
    probs = np.array([[0.1, 0.7, 0.2]], np.float32)
    most = 0
    for frame in range(5000):  # a new track every 10 frames, each seen for 30 frames
        on_screen = np.arange(max(0, frame // 10 - 2), frame // 10 + 1, dtype=np.int64)
        labels.touch(on_screen, frame)
        due = on_screen[labels.due(on_screen, np.full(on_screen.size, 100.0), frame, 10, 1.5)]
        for tid in due.tolist():
            labels.add(np.array([tid]), probs, np.array([100.0]), frame)
        most = max(most, len(labels))

    assert int(on_screen.max()) >= 499  # 500 tracks came and went
    # on screen (3) and those unseen for at most 50 frames (5 more), never all 500
    assert 3 <= most <= 3 + 50 // 10 + 1


def test_a_pathological_stream_keeps_at_most_max_tracks() -> None:
    labels = TrackLabels(num_labels=2, max_age_frames=10_000, max_tracks=64)
    probs = np.array([[0.5, 0.5]], np.float32)
    for frame in range(1000):  # a new id every frame, none ever seen again
        ids = np.array([frame], np.int64)
        labels.add(ids, probs, np.array([1.0]), frame)
        labels.touch(ids, frame)

    assert len(labels) == 64
    assert labels.ids.min() == 1000 - 64  # the most recent ones
