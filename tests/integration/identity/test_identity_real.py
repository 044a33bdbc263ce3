"""Cross-camera identity on real footage: two overlapping crops of the crowd video as two
cameras, scored against full-frame pseudo ground truth. The set-up and the measured
figures are described in :mod:`tapetum.eval.identity`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapetum.eval.identity import (
    TwoCameraRecording,
    default_two_camera_topology,
    link_scores,
    record_two_camera_crops,
    replay,
)
from tapetum.identity import IdentityConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def recording(assets: Path, crowd_video: Path, yolox_path: Path) -> TwoCameraRecording:
    return record_two_camera_crops(
        crowd_video, yolox_path, assets / "models" / "osnet_x0_25_msmt17.onnx"
    )


def test_ground_truth_covers_the_tracks(recording: TwoCameraRecording) -> None:
    assert len(recording.lengths) >= 30
    assert len(recording.truth) >= 0.9 * len(recording.lengths)


def test_cross_camera_links_precision_and_recall(recording: TwoCameraRecording) -> None:
    service = replay(recording, default_two_camera_topology(), IdentityConfig(match_threshold=0.92))
    s = link_scores(recording, service)
    tp, fp, fn = s.true_links, s.false_links, s.missed_links
    print(f"cross-camera links: tp={tp} fp={fp} fn={fn} P={s.precision:.2f} R={s.recall:.2f}")
    assert tp + fn >= 8, "too few people cross the overlap for the scores to mean anything"
    assert s.precision >= 0.85
    assert s.recall >= 0.7
    # people who cross the overlap share an id, so there are fewer ids than local tracks
    assert service.num_identities <= len(recording.lengths) - tp


def test_topology_gate_blocks_links_on_real_footage(recording: TwoCameraRecording) -> None:
    """Same appearance, but a topology that says B is 5-10 s walk from A: a person can't
    be on both at once, so no pair of overlapping-view tracks may be linked."""
    far = default_two_camera_topology(5.0, 10.0)
    service = replay(recording, far, IdentityConfig(match_threshold=0.92))
    s = link_scores(recording, service)
    assert s.true_links + s.false_links == 0
