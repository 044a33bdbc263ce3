"""Tracking sessions belong to their owner: same id, different owners, different trackers;
an owner over its share loses its own oldest session, never another owner's."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tapetum.serve.sessions import SessionTrackers
from tapetum.track.base import Tracker


class _Tracker:
    """A stand-in tracker: sessions only store and hand back what the factory made."""

    def update(self, detections: object) -> object:
        return detections


def _sessions(max_sessions: int, max_per_owner: int | None = None) -> SessionTrackers:
    def factory() -> Tracker:
        return _Tracker()  # type: ignore[return-value]

    return SessionTrackers(factory, max_sessions, idle_s=1e9, max_per_owner=max_per_owner)


def test_the_same_session_id_of_two_owners_is_two_trackers() -> None:
    sessions = _sessions(8)
    alice, bob = sessions.get("cam-1", "alice"), sessions.get("cam-1", "bob")
    assert alice is not bob
    assert sessions.get("cam-1", "alice") is alice and sessions.get("cam-1", "bob") is bob
    assert len(sessions) == 2


def test_an_owner_over_its_share_loses_its_own_oldest_session_only() -> None:
    sessions = _sessions(max_sessions=4, max_per_owner=2)
    bob = sessions.get("b", "bob")
    first = sessions.get("a0", "alice")
    for i in range(1, 10):
        sessions.get(f"a{i}", "alice")
    assert sessions.owned_by("alice") == 2 and sessions.owned_by("bob") == 1
    assert sessions.get("b", "bob") is bob, "bob's session survived alice's flood"
    assert sessions.get("a9", "alice") is not first
    assert sessions.evicted == 8


def test_recent_use_protects_a_session_from_its_owners_eviction() -> None:
    sessions = _sessions(max_sessions=8, max_per_owner=2)
    keep = sessions.get("keep", "alice")
    sessions.get("other", "alice")
    sessions.get("keep", "alice")  # now the most recently used
    sessions.get("new", "alice")  # evicts "other", alice's least recently used
    assert sessions.get("keep", "alice") is keep
    assert sessions.owned_by("alice") == 2


@settings(max_examples=200, deadline=None)
@given(
    max_sessions=st.integers(1, 6),
    max_per_owner=st.integers(1, 6),
    calls=st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("xyzw")), max_size=60),
)
def test_bounds_hold_for_any_sequence_of_calls(
    max_sessions: int, max_per_owner: int, calls: list[tuple[str, str]]
) -> None:
    sessions = _sessions(max_sessions, max_per_owner)
    for owner, session_id in calls:
        sessions.get(session_id, owner)
        assert len(sessions) <= max_sessions
        counts = {o: sessions.owned_by(o) for o in "abc"}
        assert all(c <= max_per_owner for c in counts.values())
        assert sum(counts.values()) == len(sessions)
        assert counts[owner] >= 1, "the session just used is kept"
