"""Identities on overlapping cameras, re-linking inside the service, bounded memory and
the topology's new fields, on synthetic people.

Two cameras look at one ground plane (metres). Each maps ground to image by its own
affine map (a homography); people walk straight lines at about 1.2 m/s. Appearance is
made deliberately ambiguous across cameras (people look alike, each camera adds its
own noise), so only position can tell who is who.
"""

from __future__ import annotations

import numpy as np
import pytest

from tapetum.core.detections import Detections
from tapetum.errors import ConfigError
from tapetum.identity import (
    CameraLink,
    CameraTopology,
    GalleryConfig,
    IdentityConfig,
    IdentityService,
    topology_from_dict,
)
from tapetum.identity.overlap import CoOccurrenceCalibrator, Moment, OverlapConfig
from tapetum.identity.topology import CameraSpec, apply_homography
from tapetum.track.relink import RelinkConfig

FPS = 25.0
DIM = 32
HEIGHT_PX = 80.0

# ground (x, y) metres -> image (u, v) pixels, as 3x3 matrices
GROUND_TO_A = np.array([[50.0, 0.0, 20.0], [0.0, 30.0, 100.0], [0.0, 0.0, 1.0]])
GROUND_TO_B = np.array([[-40.0, 8.0, 400.0], [5.0, 25.0, 120.0], [0.0, 0.0, 1.0]])


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def lookalikes(n: int, seed: int = 0) -> np.ndarray:
    """(n, DIM) prototypes with cosine ≈ 0.8 between different people."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=DIM)
    return unit(2.0 * common + rng.normal(size=(n, DIM)))


def boxes_for(ground: np.ndarray, ground_to_image: np.ndarray) -> np.ndarray:
    """(N, 4) boxes whose foot point (bottom centre) is the ground point's image."""
    foot = apply_homography(ground_to_image, ground)
    return np.stack([foot[:, 0] - 15, foot[:, 1] - HEIGHT_PX, foot[:, 0] + 15, foot[:, 1]], axis=1)


def frame(ids: list[int], boxes: np.ndarray, emb: np.ndarray) -> Detections:
    n = len(ids)
    return Detections(boxes, np.ones(n), np.zeros(n), np.array(ids), emb)


def paths(t: float) -> np.ndarray:
    """Ground positions at time t of four people crossing the shared ground."""
    return np.array(
        [
            [0.0 + 1.2 * t, 1.0],
            [6.0 - 1.0 * t, 2.0 + 0.3 * t],
            [1.0 + 0.5 * t, 4.0 - 0.8 * t],
            [5.0 - 0.4 * t, 0.5 + 0.9 * t],
        ]
    )


def run_two_cameras(
    svc: IdentityService, seconds: float, *, static_in_b: bool = False, seed: int = 1
) -> tuple[list[list[int]], list[list[int]]]:
    """Both cameras see the four people; returns per frame the global ids on a and b."""
    rng = np.random.default_rng(seed)
    protos = lookalikes(4)
    out_a, out_b = [], []
    for f in range(int(seconds * FPS)):
        t = f / FPS
        ground = paths(t)
        emb_a = unit(protos + rng.normal(scale=0.15, size=protos.shape))
        emb_b = unit(protos + rng.normal(scale=0.15, size=protos.shape))
        out_a.append(
            svc.observe("a", t, frame([1, 2, 3, 4], boxes_for(ground, GROUND_TO_A), emb_a)).tolist()
        )
        boxes_b = boxes_for(ground, GROUND_TO_B)
        ids_b, emb_b_all = [11, 12, 13, 14], emb_b
        if static_in_b:  # a false detection that never moves, with a look of its own
            boxes_b = np.vstack([boxes_b, [[20, 20, 50, 100]]])
            ids_b = [*ids_b, 99]
            emb_b_all = np.vstack([emb_b, unit(rng.normal(size=(1, DIM)))])
        out_b.append(svc.observe("b", t, frame(ids_b, boxes_b, emb_b_all)).tolist())
    return out_a, out_b


def overlapping(*, homographies: bool) -> CameraTopology:
    specs = [
        CameraSpec("a", np.linalg.inv(GROUND_TO_A) if homographies else None),
        CameraSpec("b", np.linalg.inv(GROUND_TO_B) if homographies else None),
    ]
    return CameraTopology.build(
        specs, [CameraLink("a", "b", 0.0, 5.0, overlap=True, max_distance=0.5)], bidirectional=True
    )


def service(topo: CameraTopology, **kwargs: object) -> IdentityService:
    """A service showing every identity from its first frame (unless the test asks for
    confirmation): these tests follow the linking itself."""
    kwargs = {"confirm_s": 0.0, "confirm_frames": 1, **kwargs}
    cfg = IdentityConfig(gallery=GalleryConfig(dim=DIM, initial_capacity=8), **kwargs)  # type: ignore[arg-type]
    return IdentityService(topo, cfg)


def test_given_homographies_link_each_person_across_views_by_position() -> None:
    svc = service(overlapping(homographies=True))
    out_a, out_b = run_two_cameras(svc, 4.0)
    # from the first moment both cameras show one id per person, the same on both
    assert out_a[-1] == out_b[-1][:4]
    assert len(set(out_a[-1])) == 4
    shared = [len(set(a) & set(b)) for a, b in zip(out_a, out_b, strict=True)]
    assert np.mean(shared) >= 3.9


def test_without_overlap_matching_lookalikes_stay_apart_or_get_mixed() -> None:
    """The same scene with position matching off: appearance alone cannot pair the
    views (cross-view cosine of one person ≈ that of two people)."""
    svc = service(overlapping(homographies=True), overlap=None)
    out_a, out_b = run_two_cameras(svc, 4.0)
    correct = sum(a == b[:4] for a, b in zip(out_a, out_b, strict=True))
    assert correct < 0.5 * len(out_a)


def test_mapping_is_learned_from_co_occurrence_without_homographies() -> None:
    svc = service(overlapping(homographies=False))
    out_a, out_b = run_two_cameras(svc, 6.0, static_in_b=True)
    (cal,) = svc.calibration().values()
    assert cal["calibrated"] and cal["learned"]
    assert out_a[-1] == out_b[-1][:4]
    assert out_b[-1][4] not in out_a[-1]  # the static false detection links to no one


def test_calibrator_rejects_a_single_walker() -> None:
    """One person's straight path cannot pin down a homography: no fit is accepted."""
    cal = CoOccurrenceCalibrator(OverlapConfig(min_samples=20, refit_every=20))
    for f in range(200):
        t = f / FPS
        g = np.array([[1.2 * t, 1.0]])
        fa = apply_homography(GROUND_TO_A, g)
        fb = apply_homography(GROUND_TO_B, g)
        v = np.array([[60.0, 0.0]])
        cal.add(
            Moment(t, np.array([1]), fa, np.array([HEIGHT_PX]), v),
            Moment(t, np.array([2]), fb, np.array([HEIGHT_PX]), v),
        )
    assert cal.fit() is None


def test_service_relinks_a_dropped_track_and_can_be_told_not_to() -> None:
    topo = CameraTopology.build(["a"])
    rng = np.random.default_rng(3)
    proto = lookalikes(1)[0]

    def seen(svc: IdentityService, track: int, frames: range) -> set[int]:
        out = set()
        for f in frames:
            t = f / FPS
            box = np.array([[100 + 30 * t, 50, 140 + 30 * t, 150]])
            emb = unit(proto + rng.normal(scale=0.05, size=DIM))[None]
            out |= set(svc.observe("a", t, frame([track], box, emb)).tolist())
        return out

    on, off = service(topo), service(topo, relink=None)
    for svc in (on, off):
        seen(svc, 1, range(0, 50))
    assert seen(on, 2, range(70, 90)) == {1}  # 0.8 s later, where it was heading
    assert seen(off, 2, range(70, 90)) == {2}
    assert on.relinks() == 1
    assert [s.local_track_ids for s in on.where_seen(1)] == [(1, 2)]


def test_memory_is_bounded_by_history_s() -> None:
    topo = CameraTopology.build(["a"])
    svc = service(topo, history_s=5.0, relink=RelinkConfig(forget_after_s=3.0))
    rng = np.random.default_rng(4)
    for k in range(200):  # a new person each second, seen for a fifth of a second
        emb = unit(rng.normal(size=(1, DIM)))
        for f in range(5):
            t = k + f / FPS
            box = np.array([[10.0 * (k % 20), 50, 10.0 * (k % 20) + 40, 150]])
            svc.observe("a", t, frame([k + 1], box, emb))
    assert svc.tracks_kept <= 7
    assert len(svc.gallery) <= 7
    assert svc.where_seen(1) == []  # forgotten
    assert svc.where_seen(200)[0].local_track_ids == (200,)


# --- topology: the new fields and their errors ------------------------------------------


def test_topology_reads_homography_mask_and_overlap() -> None:
    topo = topology_from_dict(
        {
            "cameras": [
                {"id": "a", "homography": np.linalg.inv(GROUND_TO_A).tolist()},
                {"id": "b", "frame_size": [360, 288], "mask": [[140, 238, 360, 288]]},
            ],
            "links": [{"source": "a", "target": "b", "min_s": 0, "max_s": 5, "overlap": True}],
        }
    )
    assert topo.overlapping_pairs() == [(0, 1)]
    assert topo.spec("a").homography is not None
    np.testing.assert_allclose(topo.spec("a").to_ground([[20.0, 100.0]]), [[0.0, 0.0]], atol=1e-9)
    mask = topo.spec("b").mask
    assert mask is not None
    assert mask.covered_fraction(np.array([[200, 250, 240, 288]]), (288, 360))[0] == 1.0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {
                "cameras": ["a", "b"],
                "links": [{"source": "a", "target": "c", "min_s": 0, "max_s": 1}],
            },
            r"links\[0\]\.target: unknown camera 'c'",
        ),
        (
            {"cameras": [{"id": "a", "homography": [[1, 0], [0, 1]]}]},
            r"cameras\[0\]\.homography: must be a 3x3 matrix",
        ),
        (
            {"cameras": ["x", {"id": "a", "homography": [[1, 2, 3], [2, 4, 6], [0, 0, 1]]}]},
            r"cameras\[1\]\.homography: not invertible",
        ),
        (
            {"cameras": [{"id": "a", "frame_size": [360, 288], "mask": [[300, 250, 400, 300]]}]},
            r"cameras\[0\]\.mask\[0\].*outside the 360x288 frame",
        ),
        (
            {"cameras": [{"id": "a", "mask": [[[0, 0], [-10, 5], [5, 5]]]}]},
            r"cameras\[0\]\.mask\[0\].*outside",
        ),
        (
            {"cameras": [{"id": "a", "homograpy": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}]},
            r"cameras\[0\]\.homograpy: Extra inputs are not permitted",
        ),
        (
            {
                "cameras": ["a", "b"],
                "links": [{"source": "a", "target": "b", "min_s": 1, "max_s": 5, "overlap": True}],
            },
            r"links\[0\]: .*overlapping views need min_s 0",
        ),
    ],
)
def test_bad_topology_names_the_field(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        topology_from_dict(config)
