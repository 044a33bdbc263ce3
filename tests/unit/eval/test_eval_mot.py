"""MOTChallenge text I/O and detection-score normalisation, on small files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tapetum.core.detections import Detections
from tapetum.errors import ConfigError
from tapetum.eval import (
    find_sequences,
    load_sequence,
    normalize_detection_scores,
    read_ground_truth,
    read_tracks,
    write_tracks,
)


def test_write_then_read_tracks_round_trips(tmp_path: Path) -> None:
    frames = [
        Detections([[10, 20, 40, 80], [0, 0, 5, 5]], [0.9, 0.4], [0, 0], tracker_id=[3, 7]),
        Detections.empty(),
        Detections([[1.5, 2.25, 3.5, 9.75]], [1.0], [0], tracker_id=[3]),
    ]
    path = tmp_path / "out" / "seq.txt"
    assert write_tracks(path, frames) == 3
    assert path.read_text().splitlines()[0] == "1,3,10.000,20.000,30.000,60.000,0.9000,-1,-1,-1"
    back = read_tracks(path, length_frames=3)
    assert [len(d) for d in back] == [2, 0, 1]
    for a, b in zip(frames, back, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
        np.testing.assert_array_equal(a.tracker_id, b.tracker_id)


def test_write_tracks_rejects_untracked_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tracker_id"):
        write_tracks(tmp_path / "x.txt", [Detections([[0, 0, 1, 1]], [0.5], [0])])


def test_ground_truth_layouts(tmp_path: Path) -> None:
    mot15 = tmp_path / "a.txt"
    mot15.write_text("2,1,10,20,30,40,1,-1,-1,-1\n1,2,1,2,3,4,1,5.2,3.1,0\n")
    gt = read_ground_truth(mot15)
    assert gt.benchmark == "MOT15"
    np.testing.assert_array_equal(gt.frame, [1, 2])  # sorted by frame
    np.testing.assert_array_equal(gt.class_id, [1, 1])  # world X is not a class
    mot17 = tmp_path / "b.txt"
    mot17.write_text("1,1,10,20,30,40,1,1,0.5\n1,2,1,2,3,4,0,7,1\n1,3,1,2,3,4,1,8,1\n")
    gt = read_ground_truth(mot17)
    assert gt.benchmark == "MOT17"
    np.testing.assert_array_equal(gt.evaluated, [True, False, False])
    np.testing.assert_allclose(gt.visibility, [0.5, 1.0, 1.0])


def test_sequence_folder_checks(tmp_path: Path) -> None:
    seq = tmp_path / "S1"
    (seq / "gt").mkdir(parents=True)
    (seq / "seqinfo.ini").write_text(
        "[Sequence]\nname=S1\nframeRate=25\nseqLength=2\nimWidth=64\nimHeight=48\n"
    )
    (seq / "gt" / "gt.txt").write_text("3,1,1,1,5,5,1,-1,-1,-1\n")
    assert find_sequences(tmp_path) == [seq]
    assert find_sequences(seq) == [seq]
    with pytest.raises(ConfigError, match=r"outside 1\.\.2"):
        load_sequence(seq)
    with pytest.raises(ConfigError, match="no MOTChallenge sequences"):
        find_sequences(seq / "gt")


def test_raw_scores_become_ranks_in_unit_interval() -> None:
    raw = np.array([117.9, -0.7, 37.2, 37.2, 5.0])
    norm = normalize_detection_scores(raw)
    assert norm.dtype == np.float32
    assert (norm > 0).all() and (norm < 1).all()
    np.testing.assert_array_equal(np.argsort(norm, kind="stable"), [1, 4, 2, 3, 0])
    assert norm[2] == norm[3]  # ties stay tied
    np.testing.assert_allclose(norm, [0.9, 0.1, 0.6, 0.6, 0.3])


def test_scores_already_in_unit_interval_are_kept() -> None:
    scores = np.array([0.1, 0.95, 0.5])
    np.testing.assert_allclose(normalize_detection_scores(scores), scores, rtol=1e-6)
