"""Identities on real cameras: the EPFL campus4 pair (two synchronised, overlapping
views, about four people; shared assets ``video/epfl_campus4/``), the cross-stream ReID
batch on the real model, and ``tapetum eval identity`` / ``tapetum run --topology`` bad
input as a user meets it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tapetum.eval.identity import CameraRecording, record_cameras, replay_cameras
from tapetum.eval.identity_measures import identity_measures, resolve_traces, traces_from_records
from tapetum.identity import IdentityConfig, load_topology

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TOPOLOGY = ROOT / "examples" / "identity" / "campus4.yaml"
FRAMES = 1000  # 40 s per camera: both views see people from 6 s on, the mapping is learned by ~17 s


@pytest.fixture(scope="module")
def campus4(assets: Path, yolox_path: Path) -> CameraRecording:
    topology = load_topology(TOPOLOGY)
    video = assets / "video" / "epfl_campus4"
    return record_cameras(
        [video / "campus4-c0.mp4", video / "campus4-c1.mp4"],
        yolox_path,
        assets / "models" / "osnet_x0_25_msmt17.onnx",
        frames=FRAMES,
        masks={c: topology.spec(c).mask for c in topology.cameras},
        threads=2,
    )


@pytest.mark.slow
def test_overlapping_views_share_identities_on_campus4(campus4: CameraRecording) -> None:
    """With overlap matching, people seen by both cameras at once carry one id; without
    it (appearance alone across the views) they mostly do not."""
    topology = load_topology(TOPOLOGY)
    results = {}
    for name, config in (("on", IdentityConfig()), ("off", IdentityConfig(overlap=None))):
        service, records, _ = replay_cameras(campus4, topology, config)
        traces = traces_from_records(records)
        issued = {int(g) for tr in traces.values() for g in tr.global_id}
        merged = resolve_traces(traces, {g: service.resolve(g) for g in issued})
        results[name] = (
            identity_measures(traces, topology, people=4),
            identity_measures(merged, topology, people=4),
            service,
        )
    live, merged, service = results["on"]
    (calibration,) = service.calibration().values()
    assert calibration["calibrated"] and calibration["learned"]
    on_live = live.pairs[0].share_by_position
    off_live = results["off"][0].pairs[0].share_by_position
    assert on_live is not None and off_live is not None
    print(
        f"same id by position: on {on_live:.3f} (merged {merged.pairs[0].share_by_position}),"
        f" off {off_live:.3f}; identities live {live.identities}, merged {merged.identities}"
    )
    assert on_live >= 0.7
    assert on_live >= off_live + 0.25
    assert merged.identities <= 2 * 4  # the target: at most two per person
    assert service.relinks() >= 1


def test_cross_stream_embedder_batches_two_streams_and_agrees(assets: Path) -> None:
    from tapetum.track.reid import CrossStreamEmbedder, ReidEmbedder

    model = ReidEmbedder(assets / "models" / "osnet_x0_25_msmt17.onnx", threads=1)
    shared = CrossStreamEmbedder(model, streams=2, max_wait_ms=200.0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (288, 360, 3), np.uint8) for _ in range(2)]
    boxes = [np.array([[10, 20, 60, 140], [100, 30, 150, 150]]), np.array([[200, 40, 250, 160]])]
    results: list[np.ndarray | None] = [None, None]
    barrier = threading.Barrier(2)

    def stream(i: int) -> None:
        barrier.wait()
        results[i] = shared.embed(images[i], boxes[i])

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert shared.calls == 1 and shared.crops == 3  # one model call for both streams
    for i in range(2):
        alone = model.embed(images[i], boxes[i])
        np.testing.assert_allclose(results[i], alone, atol=1e-4)


def tapetum(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_eval_identity_measures_a_tracks_file(tmp_path: Path) -> None:
    """Two cameras, one person seen by both for 2 s, sharing a global id half the time."""
    lines = []
    for f in range(50):
        t = round(f * 0.04, 3)
        for cam, x in (("campus4-c0", 100 + f), ("campus4-c1", 200 - f)):
            gid = 1 if cam == "campus4-c0" or f >= 25 else 2
            box = [x, 50, x + 40, 150]
            track = {"track_id": 1, "global_id": gid, "xyxy": box}
            lines.append(json.dumps({"source_id": cam, "timestamp_s": t, "tracks": [track]}))
    tracks = tmp_path / "tracks.jsonl"
    tracks.write_text("\n".join(lines) + "\n")
    (tmp_path / "identities.json").write_text(json.dumps({"resolved": {"1": 1, "2": 1}}))
    out = tmp_path / "m.json"
    proc = tapetum(
        "eval", "identity", "--tracks", tracks, "--topology", TOPOLOGY, "--people", "1", "-o", out
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())["tracks"]
    live, merged = result["live"], result["after_merges"]
    assert live["identities"] == 2 and merged["identities"] == 1
    assert live["identity_changes"] == 1
    assert live["pairs"][0]["share_by_count"] == 0.5
    assert merged["pairs"][0]["share_by_count"] == 1.0


@pytest.mark.parametrize(
    ("topology", "message"),
    [
        (
            "cameras: [a, b]\nlinks: [{source: a, target: z, min_s: 0, max_s: 5}]\n",
            r"links\[0\]\.target: unknown camera 'z'",
        ),
        (
            "cameras: [{id: a, homography: [[1, 0], [0, 1]]}]\n",
            r"cameras\[0\]\.homography: must be a 3x3 matrix",
        ),
        (
            "cameras: [{id: a, homography: [[1, 2, 3], [2, 4, 6], [1, 1, 1]]}]\n",
            r"cameras\[0\]\.homography: not invertible",
        ),
        (
            "cameras: [{id: a, frame_size: [360, 288], mask: [[300, 250, 380, 290]]}]\n",
            r"cameras\[0\]\.mask\[0\]: .* outside the 360x288 frame",
        ),
    ],
)
def test_bad_topology_is_one_error_line_naming_the_field(
    tmp_path: Path, topology: str, message: str
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(topology)
    tracks = tmp_path / "tracks.jsonl"
    tracks.write_text(
        '{"source_id": "a", "timestamp_s": 0, "tracks": [{"track_id": 1, '
        '"global_id": 1, "xyxy": [0, 0, 1, 1]}]}\n'
    )
    proc = tapetum("eval", "identity", "--tracks", tracks, "--topology", path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert re.search(message, lines[0]), lines[0]


def test_run_refuses_sources_the_topology_does_not_name(
    crowd_video: Path, yolox_path: Path, assets: Path, tmp_path: Path
) -> None:
    proc = tapetum(
        "run",
        crowd_video,
        "--model",
        yolox_path,
        "--reid",
        assets / "models" / "osnet_x0_25_msmt17.onnx",
        "--topology",
        TOPOLOGY,
        "--out",
        tmp_path / "out",
    )
    assert proc.returncode == 2
    assert "are not cameras of the topology" in proc.stderr
