"""Multi-camera identity on synthetic appearance: people are clusters on the unit sphere
(a random prototype per person, each sighting the prototype plus Gaussian noise)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from tapetum.core.detections import NO_TRACK, Detections
from tapetum.errors import ConfigError
from tapetum.identity import (
    NO_GLOBAL_ID,
    CameraLink,
    CameraTopology,
    EmbeddingGallery,
    GalleryConfig,
    IdentityConfig,
    IdentityService,
    Sighting,
    TransitWindow,
    load_topology,
    topology_from_dict,
)

DIM = 64
NOISE = 0.04  # per component: a sighting has cosine ≈ 0.95 to its person's prototype


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def people() -> np.ndarray:
    """(10, DIM) person prototypes; different people are near-orthogonal (|cos| < 0.5)."""
    return unit(np.random.default_rng(0).normal(size=(10, DIM)))


def sighting(proto: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return unit(proto + rng.normal(scale=NOISE, size=proto.shape))


def frame(track_ids: list[int], embeddings: np.ndarray) -> Detections:
    """One frame: the i-th track stands at x = 60 i, 40x100 px (apart, so every crop is
    usable for appearance)."""
    n = len(track_ids)
    x = 60.0 * np.arange(n, dtype=np.float32)[:, None]
    boxes = np.array([[0, 0, 40, 100]], np.float32) + np.hstack([x, 0 * x, x, 0 * x])
    return Detections(boxes, np.ones(n), np.zeros(n), np.array(track_ids), embeddings)


def walk(
    svc: IdentityService,
    camera: str,
    track_id: int,
    embeddings: np.ndarray,
    *,
    t0: float,
    dt: float = 0.1,
) -> list[int]:
    """One local track seen in consecutive frames; returns its global id per frame."""
    return [
        int(svc.observe(camera, t0 + i * dt, frame([track_id], e[None]))[0])
        for i, e in enumerate(embeddings)
    ]


def many(proto: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([sighting(proto, rng) for _ in range(n)])


@pytest.fixture
def hall() -> CameraTopology:
    """a → b in 2-10 s, a ↔ c overlapping views (0-1 s), d linked to nothing."""
    return CameraTopology.build(
        ["a", "b", "c", "d"],
        [
            CameraLink("a", "b", 2.0, 10.0),
            CameraLink("a", "c", 0.0, 1.0),
            CameraLink("c", "a", 0.0, 1.0),
        ],
    )


def service(topo: CameraTopology, **kwargs: float | int) -> IdentityService:
    """A service showing every identity from its first frame (unless the test asks for
    confirmation): these tests follow the linking itself."""
    kwargs = {"confirm_s": 0.0, "confirm_frames": 1, **kwargs}
    cfg = IdentityConfig(gallery=GalleryConfig(dim=DIM, initial_capacity=4), **kwargs)  # type: ignore[arg-type]
    return IdentityService(topo, cfg)


# --- topology ---------------------------------------------------------------------------


def test_feasibility_windows_are_directed_and_inclusive(hall: CameraTopology) -> None:
    a, b, d = (hall.camera_index(c) for c in "abd")
    last_seen = np.array([8.0, 6.0, 0.0, -1.0, 9.0])  # gaps to t=10: 2, 4, 10, 11, 1
    assert hall.feasible("b", 10.0, np.full(5, a), last_seen).tolist() == [
        True,
        True,
        True,
        False,
        False,
    ]
    # b → a has no link; d is linked to nothing; no re-entry was configured
    assert not hall.feasible("a", 10.0, np.full(5, b), last_seen).any()
    assert not hall.feasible("d", 10.0, np.array([a, b, d, a, b]), last_seen).any()
    assert not hall.feasible("b", 10.0, np.full(5, b), last_seen).any()


def test_overlapping_views_accept_a_candidate_still_visible(hall: CameraTopology) -> None:
    a = hall.camera_index("a")
    # last seen after the new observation (frames of two cameras arrive out of order)
    assert hall.feasible("c", 5.0, [a, a, a], [5.04, 4.5, 3.0]).tolist() == [True, True, False]


def test_reentry_window_and_longest_transit() -> None:
    topo = CameraTopology.build(
        ["a", "b"], [CameraLink("a", "b", 1.0, 30.0)], TransitWindow(0.5, 5.0), bidirectional=True
    )
    a = topo.camera_index("a")
    assert topo.feasible("a", 10.0, [a, a, a], [9.8, 7.0, 4.0]).tolist() == [False, True, False]
    assert topo.feasible("a", 10.0, [1], [0.0]).tolist() == [True]  # b → a added by bidirectional
    assert topo.longest_transit_s == 30.0


def test_topology_config_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="unknown camera 'z'"):
        CameraTopology.build(["a"], [CameraLink("a", "z", 0, 1)])
    with pytest.raises(ConfigError, match="re-entry"):
        CameraLink("a", "a", 0, 1)
    with pytest.raises(ConfigError, match="min_s <= max_s"):
        TransitWindow(5.0, 1.0)
    with pytest.raises(ConfigError, match="unique"):
        CameraTopology.build(["a", "a"])
    with pytest.raises(ConfigError, match="not in the topology"):
        CameraTopology.build(["a"]).camera_index("b")
    with pytest.raises(ConfigError, match="invalid camera topology"):
        topology_from_dict({"cameras": ["a"], "links": [{"source": "a", "max_s": 1}]})


def test_topology_loads_from_yaml_and_json(tmp_path: Path) -> None:
    spec = {
        "cameras": ["lobby", "hall"],
        "reentry": {"min_s": 0.0, "max_s": 4.0},
        "links": [
            {"source": "lobby", "target": "hall", "min_s": 2, "max_s": 30, "bidirectional": True}
        ],
    }
    (tmp_path / "t.json").write_text(json.dumps(spec))
    (tmp_path / "t.yaml").write_text(
        "cameras: [lobby, hall]\nreentry: {min_s: 0.0, max_s: 4.0}\n"
        "links:\n  - {source: lobby, target: hall, min_s: 2, max_s: 30, bidirectional: true}\n"
    )
    for name in ("t.json", "t.yaml"):
        topo = load_topology(tmp_path / name)
        assert topo.cameras == ("lobby", "hall")
        np.testing.assert_array_equal(topo.min_gap_s, [[0.0, 2.0], [2.0, 0.0]])
        np.testing.assert_array_equal(topo.max_gap_s, [[4.0, 30.0], [30.0, 4.0]])
    with pytest.raises(ConfigError, match="cannot read"):
        load_topology(tmp_path / "missing.yaml")


# --- gallery ----------------------------------------------------------------------------


def test_gallery_add_update_remove_and_filtered_query(people: np.ndarray) -> None:
    g = EmbeddingGallery(GalleryConfig(dim=DIM, initial_capacity=2))
    keys = [("a", i) for i in range(5)]
    rows = g.upsert(keys, 0, people[:5], timestamp_s=1.0)  # grows past capacity 2
    assert len(g) == 5 and g.vectors.shape[0] >= 5
    res = g.query(people[[3]], k=2)
    assert g.key(int(res.rows[0, 0])) == ("a", 3)
    assert res.similarity[0, 0] == pytest.approx(1.0, abs=1e-5)
    allowed = g.mask()
    allowed[rows[[0, 1]]] = True
    res = g.query(people[[3]], k=3, allowed=allowed)  # person 3 filtered out; 2 of 3 found
    assert {g.key(int(r)) for r in res.rows[0, :2]} == {("a", 0), ("a", 1)}
    assert res.rows[0, 2] == -1 and res.similarity[0, 2] == -np.inf
    assert g.remove([("a", 3), ("zz", 9)]) == 1
    assert g.key(int(g.query(people[[3]], k=1).rows[0, 0])) != ("a", 3)
    # A running mean of the first crops: the second one moves the vector half way...
    g.update(rows[[0]], people[[1]], timestamp_s=2.0)
    expected = unit(0.5 * people[0] + 0.5 * people[1])
    np.testing.assert_allclose(g.vectors[rows[0]], expected, atol=1e-5)
    # ...and once 10 are in, each moves it 10% of the way (the EMA, momentum 0.9)
    for _ in range(8):
        g.update(rows[[0]], people[[1]], timestamp_s=2.0)
    before = g.vectors[rows[0]].copy()
    g.update(rows[[0]], people[[2]], timestamp_s=2.0)
    np.testing.assert_allclose(g.vectors[rows[0]], unit(0.9 * before + 0.1 * people[2]), atol=1e-5)
    assert g.last_s[rows[0]] == 2.0 and g.first_s[rows[0]] == 1.0
    # a zero embedding only moves the timestamp
    expected = g.vectors[rows[0]].copy()
    g.update(rows[[0]], np.zeros((1, DIM)), timestamp_s=3.0)
    np.testing.assert_allclose(g.vectors[rows[0]], expected, atol=1e-5)
    assert g.last_s[rows[0]] == 3.0


def test_gallery_ann_path_agrees_with_exact_scan() -> None:
    rng = np.random.default_rng(1)
    data = unit(rng.normal(size=(600, DIM)))
    queries = unit(data[:20] + rng.normal(scale=0.05, size=(20, DIM)))
    exact = EmbeddingGallery(GalleryConfig(dim=DIM))
    ann = EmbeddingGallery(GalleryConfig(dim=DIM, exact_below=0))
    for g in (exact, ann):
        g.upsert([("a", i) for i in range(600)], 0, data, timestamp_s=0.0)
        g.remove([("a", i) for i in range(0, 600, 7)])  # deleted entries never come back
    allowed = exact.mask()
    allowed[::2] = True  # half the gallery is feasible
    want = exact.query(queries, k=5, allowed=allowed)
    got = ann.query(queries, k=5, allowed=allowed)
    recall = np.mean([len(set(w) & set(h)) / 5 for w, h in zip(want.rows, got.rows, strict=True)])
    assert recall >= 0.95
    assert np.all(allowed[got.rows[got.rows >= 0]])
    assert not np.any(got.rows % 7 == 0)


# --- service: linking across cameras ----------------------------------------------------


def test_person_walking_a_to_b_inside_the_window_keeps_their_id(
    hall: CameraTopology, people: np.ndarray
) -> None:
    svc = service(hall)
    in_a = walk(svc, "a", 1, many(people[0], 10, 1), t0=0.0)  # seen 0.0-0.9 s
    assert set(in_a) == {1}
    in_b = walk(svc, "b", 5, many(people[0], 5, 2), t0=5.0)  # 4.1 s later
    assert set(in_b) == {1}
    assert svc.where_seen(1) == [
        Sighting("a", (1,), 0.0, pytest.approx(0.9)),  # type: ignore[arg-type]
        Sighting("b", (5,), 5.0, pytest.approx(5.4)),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize(
    ("camera", "t0", "why"),
    [
        ("b", 2.5, "too soon: 1.6 s < 2 s"),
        ("b", 12.0, "too late: 11.1 s > 10 s"),
        ("d", 5.0, "d is linked to nothing"),
        ("a", 5.0, "no re-entry window on a"),
    ],
)
def test_outside_the_window_or_unlinked_gets_a_new_id(
    hall: CameraTopology, people: np.ndarray, camera: str, t0: float, why: str
) -> None:
    svc = service(hall)
    walk(svc, "a", 1, many(people[0], 10, 1), t0=0.0)
    ids = walk(svc, camera, 5, many(people[0], 10, 2), t0=t0)
    assert set(ids) == {2}, why
    assert [s.camera_id for s in svc.where_seen(1)] == ["a"]


def test_different_person_in_the_window_gets_a_new_id(
    hall: CameraTopology, people: np.ndarray
) -> None:
    svc = service(hall)
    walk(svc, "a", 1, many(people[0], 10, 1), t0=0.0)
    assert set(walk(svc, "b", 5, many(people[1], 10, 2), t0=5.0)) == {2}


def test_one_frame_matches_one_to_one(hall: CameraTopology, people: np.ndarray) -> None:
    """Two people leave a; in one frame of b three tracks appear: both people and a
    look-alike of person 0. Each identity goes to one track, the better match."""
    svc = service(hall)
    rng = np.random.default_rng(3)
    for i in range(10):
        svc.observe(
            "a", i * 0.1, frame([1, 2], np.stack([sighting(people[k], rng) for k in (0, 1)]))
        )
    lookalike = unit(people[0] + 0.5 * people[2])  # cosine ≈ 0.89: above the threshold
    embs = np.stack([lookalike, sighting(people[1], rng), sighting(people[0], rng)])
    ids = svc.observe("b", 5.0, frame([7, 8, 9], embs)).tolist()
    assert ids[1:] == [2, 1]
    assert ids[0] not in (1, 2)


def test_identity_visible_on_a_camera_is_not_given_to_a_second_track_there(
    people: np.ndarray,
) -> None:
    """With re-entry allowed, a new track on camera a may take the id of a track of a that
    has left, never of one still visible there."""
    topo = CameraTopology.build(["a"], reentry=TransitWindow(0.0, 5.0))
    svc = service(topo)
    rng = np.random.default_rng(4)
    for i in range(5):
        svc.observe("a", i * 0.1, frame([1], sighting(people[0], rng)[None]))
    both = np.stack([sighting(people[0], rng), sighting(people[0], rng)])
    assert svc.observe("a", 0.5, frame([1, 2], both)).tolist() == [1, 2]
    # track 1 gone, track 2 too; a new track 3 of the same look re-enters: joins the older id
    assert svc.observe("a", 2.0, frame([3], sighting(people[0], rng)[None])).tolist() == [1]


def test_untracked_rows_and_bad_input(hall: CameraTopology, people: np.ndarray) -> None:
    svc = service(hall)
    ids = svc.observe("a", 0.0, frame([1, NO_TRACK], people[:2]))
    assert ids.tolist() == [1, NO_GLOBAL_ID]
    assert svc.observe("a", 0.1, Detections.empty()).shape == (0,)
    no_emb = frame([1], people[:1])
    no_emb.embeddings = None
    with pytest.raises(ValueError, match="needs embeddings"):
        svc.observe("a", 0.2, no_emb)
    with pytest.raises(ValueError, match="twice"):
        svc.observe("a", 0.2, frame([1, 1], people[:2]))
    with pytest.raises(ConfigError, match="not in the topology"):
        svc.observe("x", 0.2, frame([1], people[:1]))
    with pytest.raises(KeyError):
        svc.where_seen(99)
    assert svc.global_id_of("a", 1) == 1 and svc.global_id_of("a", 42) is None


# --- service: confirmation --------------------------------------------------------------


def test_an_identity_is_shown_once_a_track_lasts_and_a_glimpse_shows_none(
    hall: CameraTopology, people: np.ndarray
) -> None:
    svc = service(hall, confirm_s=0.5, confirm_frames=5)
    ids = walk(svc, "a", 1, many(people[0], 10, 1), t0=0.0)  # 0.0-0.9 s
    assert ids[:5] == [NO_GLOBAL_ID] * 5 and set(ids[5:]) == {1}
    # someone on d for three frames: held as id 2, never shown
    assert set(walk(svc, "d", 2, many(people[1], 3, 2), t0=1.0)) == {NO_GLOBAL_ID}
    assert svc.global_id_of("d", 2) == 2
    # person 0 reaches b: joins a shown identity, so shows it from the first frame
    assert set(walk(svc, "b", 5, many(people[0], 3, 3), t0=5.0)) == {1}


def test_a_fresh_id_merged_away_before_confirmation_is_never_shown(
    hall: CameraTopology, people: np.ndarray
) -> None:
    svc = service(hall, confirm_s=0.5, confirm_frames=5)
    walk(svc, "a", 1, many(people[0], 30, 1), t0=0.0)
    truncated = unit(people[0] + 1.2 * people[3])  # first crop: no match, fresh id 2
    ids = walk(svc, "c", 4, np.vstack([truncated[None], many(people[0], 10, 2)]), t0=2.9)
    assert svc.resolve(2) == 1
    assert 2 not in ids and ids[-1] == 1


def test_confirmation_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="confirm_s"):
        IdentityConfig(confirm_s=-1.0)
    with pytest.raises(ConfigError, match="confirm_frames"):
        IdentityConfig(confirm_frames=0)


# --- service: merge and split -----------------------------------------------------------


def test_track_missed_at_birth_merges_and_the_older_id_survives(
    hall: CameraTopology, people: np.ndarray
) -> None:
    """The first crop in c is half another person (truncated at the border): no match, new
    id 2. Good crops follow; the young track re-matches and id 2 merges into id 1."""
    svc = service(hall)
    walk(svc, "a", 1, many(people[0], 30, 1), t0=0.0, dt=0.1)  # a: 0.0-2.9 s, still visible
    truncated = unit(people[0] + 1.2 * people[3])
    ids = walk(svc, "c", 4, np.vstack([truncated[None], many(people[0], 10, 2)]), t0=2.9)
    assert ids[0] == 2 and ids[-1] == 1
    (event,) = svc.events
    assert (event.kind, event.global_id, event.absorbed_id) == ("merge", 1, 2)
    assert svc.resolve(2) == 1
    assert svc.where_seen(2) == svc.where_seen(1)
    assert [(s.camera_id, s.local_track_ids) for s in svc.where_seen(1)] == [
        ("a", (1,)),
        ("c", (4,)),
    ]


def test_merge_refuses_to_put_one_id_on_two_overlapping_tracks_of_a_camera(
    people: np.ndarray,
) -> None:
    """Two simultaneous tracks of camera a that look alike stay two people, however
    similar, because a person is never twice in one view."""
    topo = CameraTopology.build(["a"], reentry=TransitWindow(0.0, 5.0))
    svc = service(topo)
    rng = np.random.default_rng(5)
    for i in range(12):
        embs = np.stack([sighting(people[0], rng), sighting(people[0], rng)])
        ids = svc.observe("a", i * 0.1, frame([1, 2], embs))
        assert ids.tolist() == [1, 2]
    assert svc.events == []


def walk_beside_someone(
    svc: IdentityService, camera: str, track_id: int, embeddings: np.ndarray, *, t0: float
) -> list[int]:
    """Like :func:`walk`, with an untracked detection right beside the track (where a
    tracker can swap people); returns the track's global id per frame."""
    boxes = np.array([[0, 0, 40, 100], [35, 5, 75, 105]], np.float32)
    out = []
    for i, e in enumerate(embeddings):
        seen = Detections(
            boxes, np.ones(2), np.zeros(2), np.array([track_id, NO_TRACK]), np.stack([e, e])
        )
        out.append(int(svc.observe(camera, t0 + i * 0.1, seen)[0]))
    return out


def test_drifting_track_is_split_off(hall: CameraTopology, people: np.ndarray) -> None:
    """Track 5 on b starts looking like person 0 (joins id 1) but, walking beside someone,
    turns out to be person 1: after ``split_patience`` drifted updates it gets a new id;
    id 1 keeps only a's track (young, it moves whole)."""
    svc = service(hall, split_patience=3)
    walk(svc, "a", 1, many(people[0], 10, 1), t0=0.0)
    looks = np.vstack([many(people[0], 3, 2), many(people[1], 8, 3)])
    ids = walk_beside_someone(svc, "b", 5, looks, t0=5.0)
    assert ids[:3] == [1, 1, 1]
    # the short-memory EMA needs a step to turn, then three drifted updates split it
    switch = ids.index(2)
    assert switch <= 3 + 1 + 3 and set(ids[switch:]) == {2}
    (event,) = svc.events
    assert (event.kind, event.global_id, event.absorbed_id, event.track) == (
        "split",
        2,
        1,
        ("b", 5),
    )
    assert [s.camera_id for s in svc.where_seen(1)] == ["a"]
    assert [s.camera_id for s in svc.where_seen(2)] == ["b"]


def test_a_lone_track_whose_look_changes_is_not_split(
    hall: CameraTopology, people: np.ndarray
) -> None:
    """No one near it: the tracker cannot have swapped people (light or pose changed)."""
    svc = service(hall, split_patience=3)
    walk(svc, "a", 1, many(people[0], 10, 1), t0=0.0)
    ids = walk(svc, "b", 5, np.vstack([many(people[0], 3, 2), many(people[1], 8, 3)]), t0=5.0)
    assert set(ids) == {1} and svc.events == []


def test_an_established_track_that_switches_people_is_cut_and_its_past_stays(
    hall: CameraTopology, people: np.ndarray
) -> None:
    """Track 5 on b is person 0 for 3 s, then its tracker follows person 1: only the
    segment from the switch on leaves id 1."""
    svc = service(hall, split_patience=3)
    walk(svc, "a", 1, many(people[0], 10, 1), t0=0.0)
    looks = np.vstack([many(people[0], 30, 2), many(people[1], 10, 3)])
    ids = walk_beside_someone(svc, "b", 5, looks, t0=5.0)
    assert set(ids[:30]) == {1} and ids[-1] == 2
    (event,) = svc.events
    assert (event.kind, event.global_id, event.absorbed_id) == ("split", 2, 1)
    (in_a, b) = svc.where_seen(1)
    assert in_a.camera_id == "a"
    assert (b.camera_id, b.local_track_ids, b.first_s) == ("b", (5,), 5.0)
    assert 7.9 < b.last_s < 5.0 + 0.1 * len(looks)
    (cut,) = svc.where_seen(2)
    assert cut.local_track_ids == (5,) and cut.first_s > b.last_s


def test_steady_noise_never_splits(hall: CameraTopology, people: np.ndarray) -> None:
    svc = service(hall, split_patience=3)
    walk(svc, "a", 1, many(people[0], 10, 1), t0=0.0)
    assert set(walk(svc, "b", 5, many(people[0], 40, 2), t0=5.0)) == {1}
    assert svc.events == []


# --- service: history -------------------------------------------------------------------


def test_where_seen_groups_visits_in_time_order(people: np.ndarray) -> None:
    topo = CameraTopology.build(
        ["a", "b"], [CameraLink("a", "b", 1.0, 60.0)], TransitWindow(0.0, 3.0), bidirectional=True
    )
    svc = service(topo)
    walk(svc, "a", 1, many(people[0], 5, 1), t0=0.0)  # a 0.0-0.4
    walk(svc, "a", 2, many(people[0], 5, 2), t0=1.0)  # a again 1.0-1.4 (tracker lost them)
    walk(svc, "b", 1, many(people[0], 5, 3), t0=10.0)  # b 10.0-10.4
    walk(svc, "a", 3, many(people[0], 5, 4), t0=30.0)  # back to a 30.0-30.4
    seen = svc.where_seen(1)
    assert [(s.camera_id, s.local_track_ids) for s in seen] == [
        ("a", (1, 2)),
        ("b", (1,)),
        ("a", (3,)),
    ]
    assert seen[0].first_s == 0.0 and seen[0].last_s == pytest.approx(1.4)
    assert seen[2].last_s == pytest.approx(30.4)


def test_history_outlives_the_gallery(hall: CameraTopology, people: np.ndarray) -> None:
    """Appearance of tracks no link can reach any more is dropped; where_seen still
    answers and the gallery stays bounded."""
    svc = service(hall)
    for k in range(8):
        walk(svc, "d", k + 1, many(people[k], 3, k), t0=20.0 * k)
    assert len(svc.gallery) <= 2
    assert [s.local_track_ids for s in svc.where_seen(1)] == [(1,)]


def test_reader_thread_sees_consistent_answers(hall: CameraTopology, people: np.ndarray) -> None:
    svc = service(hall)
    rng = np.random.default_rng(6)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                for gid in range(1, 4):
                    for s in svc.where_seen(gid):
                        assert s.first_s <= s.last_s
            except KeyError:
                pass  # not issued yet
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(100):
        embs = np.stack([sighting(people[k], rng) for k in range(3)])
        svc.observe("a", i * 0.05, frame([1, 2, 3], embs))
    stop.set()
    thread.join()
    assert errors == []
    assert svc.num_identities == 3
