"""The interval scheduler's policy and motion monitor, without threads or clocks: who
degrades first, what is protected, how it recovers, and the invariants of every tick."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapetum.core.detections import Detections
from tapetum.errors import ConfigError
from tapetum.pipeline.scheduler import (
    IntervalPolicy,
    Load,
    MotionMonitor,
    Priority,
    SchedulerConfig,
    StreamObservation,
    parse_priorities,
)

BUDGET = 100.0
SLOW, FAST = 0.005, 0.08  # prediction error per frame of interval, box heights


def seen(
    interval: int = 1,
    latency_ms: float = 50.0,
    *,
    rate: float | None = SLOW,
    entering: float = 0.0,
    priority: Priority = Priority.NORMAL,
    queue_ms: float = 0.0,
    fps: float = math.nan,
    detector_fps: float = math.nan,
) -> StreamObservation:
    return StreamObservation(
        interval, latency_ms, queue_ms, rate, entering, priority, fps, detector_fps
    )


def policy(**kwargs: float) -> IntervalPolicy:
    return IntervalPolicy(SchedulerConfig(latency_budget_ms=BUDGET, **kwargs))  # type: ignore[arg-type]


def test_behind_raises_the_slow_stream_and_keeps_the_fast_one_at_one() -> None:
    decision = policy().decide({"lobby": seen(1, 90.0), "road": seen(1, 85.0, rate=FAST)})
    assert decision.state is Load.BEHIND
    assert decision.intervals == {"lobby": 2, "road": 1}
    assert [(c.stream, c.reason) for c in decision.changes] == [("lobby", "raise_within_cap")]


def test_a_stale_queue_counts_as_behind_even_without_finished_frames() -> None:
    decision = policy().decide({"cam": seen(1, math.nan, queue_ms=120.0)})
    assert decision.state is Load.BEHIND
    assert decision.intervals == {"cam": 2}


def test_low_priority_degrades_before_normal_and_high() -> None:
    streams = {
        "vip": seen(1, 80.0, priority=Priority.HIGH),
        "hall": seen(1, 80.0),
        "yard": seen(1, 80.0, priority=Priority.LOW),
    }
    decision = policy().decide(streams)  # just behind: one stream gives up frames
    assert [c.stream for c in decision.changes] == ["yard"]


def test_entering_objects_pin_a_stream_to_one_until_nothing_else_is_left() -> None:
    p = policy(max_interval=3)
    streams = {"door": seen(1, 95.0, entering=0.5), "hall": seen(1, 95.0)}
    assert p.motion_cap(streams["door"]) == 1
    intervals = p.decide(streams).intervals
    assert intervals == {"door": 1, "hall": 2}
    # hall at the largest interval, still behind: the door stream goes over its cap
    # rather than frames being dropped
    streams = {"door": seen(1, 95.0, entering=0.5), "hall": seen(3, 95.0)}
    decision = p.decide(streams)
    assert [(c.stream, c.reason) for c in decision.changes] == [("door", "raise_over_cap")]
    assert not decision.saturated


def test_saturated_when_every_stream_is_at_the_largest_interval() -> None:
    decision = policy(max_interval=2).decide({"a": seen(2, 150.0), "b": seen(2, 150.0)})
    assert decision.changes == ()
    assert decision.saturated


def test_far_behind_raises_several_streams_at_once() -> None:
    streams = {f"cam{i}": seen(1, 200.0) for i in range(8)}
    assert len(policy().decide(streams).changes) == 8


def test_headroom_lowers_one_stream_after_calm_ticks_high_priority_first() -> None:
    p = policy(calm_ticks=3)
    streams = {
        "vip": seen(3, 20.0, priority=Priority.HIGH),
        "yard": seen(3, 20.0, priority=Priority.LOW),
    }
    calm = 0
    for _ in range(2):
        decision = p.decide(streams, calm)
        assert decision.state is Load.HEADROOM
        assert decision.changes == ()
        calm = decision.calm_ticks
    decision = p.decide(streams, calm)
    assert [(c.stream, c.new, c.reason) for c in decision.changes] == [("vip", 2, "lower_headroom")]
    assert decision.calm_ticks == 0


def test_a_stream_over_its_cap_comes_back_without_waiting_for_headroom() -> None:
    # Steady load (neither behind nor headroom): a stream whose objects sped up is lowered
    # at once; the detector frames it takes back are shed elsewhere when that tips the
    # load over.
    decision = policy().decide({"road": seen(4, 60.0, rate=FAST), "hall": seen(2, 60.0)})
    assert decision.state is Load.STEADY
    assert [(c.stream, c.new, c.reason) for c in decision.changes] == [
        ("road", 3, "lower_over_cap")
    ]


def test_with_a_busy_detector_enough_streams_give_way_at_once() -> None:
    # Eight 15 FPS streams keep the detector busy all the time (utilisation 1.0): shedding
    # to at most 80 % needs a fifth of the demand gone, i.e. 4 of 8 streams at k = 2
    # (demand 120 → 90 frames a second); just behind on latency, that is still one tick.
    streams = {f"cam{i}": seen(1, 80.0, fps=15.0) for i in range(8)}
    decision = policy().decide(streams, utilisation=1.0)
    assert len(decision.changes) == 4
    assert sorted(decision.intervals.values()) == [1, 1, 1, 1, 2, 2, 2, 2]


def test_no_lowering_into_an_overload_the_model_predicts() -> None:
    # Latency has headroom but the detector is 70 % busy with two streams at k = 2:
    # lowering one to 1 would take it to 93 % (over 80 %), so nothing changes.
    streams = {"a": seen(2, 20.0, fps=15.0), "b": seen(2, 20.0, fps=15.0)}
    p = policy(calm_ticks=1)
    assert p.decide(streams, utilisation=0.7).changes == ()
    lowered = p.decide(streams, utilisation=0.5).changes  # 67 %: fine
    assert [(c.new, c.reason) for c in lowered] == [(1, "lower_headroom")]


def test_behind_learns_a_ceiling_from_what_the_machine_delivered() -> None:
    # Eight 15 FPS streams at k = 1 ask for 120 detector frames a second; the machine
    # finished 48 (it fell behind). The ceiling becomes 0.85 × 48 = 40.8 and every stream
    # steps up at once (one step per tick: 60 a second, still over, so next tick again).
    streams = {f"cam{i}": seen(1, 300.0, fps=15.0, detector_fps=6.0) for i in range(8)}
    decision = policy().decide(streams, utilisation=0.6)
    assert decision.ceiling == pytest.approx(0.85 * 48.0)
    assert set(decision.intervals.values()) == {2}
    # next tick, still behind at k = 2 (finishing 40 of the 60 asked for): two steps in all
    streams = {f"cam{i}": seen(2, 150.0, fps=15.0, detector_fps=5.0) for i in range(8)}
    decision = policy().decide(streams, utilisation=0.6, ceiling=decision.ceiling)
    assert decision.ceiling == pytest.approx(0.85 * 40.0)
    assert set(decision.intervals.values()) == {3}


def test_no_lowering_over_the_learnt_ceiling_even_when_latency_looks_fine() -> None:
    # The detector's busy share alone misses a machine whose other work (decoding eight
    # cameras) is what fell behind: the ceiling remembers the overload.
    streams = {f"cam{i}": seen(3, 60.0, rate=FAST, fps=15.0) for i in range(8)}  # over cap
    p = policy()
    blocked = p.decide(streams, utilisation=0.3, ceiling=40.0)  # 40 now, 42.5 after
    assert blocked.state is Load.STEADY
    assert blocked.changes == ()
    assert blocked.ceiling == 40.0  # steady: neither learnt nor probed
    allowed = p.decide(streams, utilisation=0.3, ceiling=50.0)
    assert [(c.new, c.reason) for c in allowed.changes] == [(2, "lower_over_cap")]


def test_a_long_calm_lets_one_step_through_the_ceiling() -> None:
    # Both streams are over their motion cap (fast scene) and want k back down, but the
    # ceiling (30 a second, what the machine last took) holds them at 2 (15 now, 22.5
    # after a step). After probe_ticks calm ticks in a row one step is let through and
    # the ceiling rises to it.
    streams = {"a": seen(2, 20.0, rate=FAST, fps=15.0), "b": seen(2, 20.0, rate=FAST, fps=15.0)}
    p = policy(probe_ticks=3)
    calm, ceiling = 0, 20.0
    for _ in range(2):
        decision = p.decide(streams, calm, ceiling=ceiling)
        assert decision.state is Load.HEADROOM
        assert decision.changes == ()
        assert decision.ceiling == 20.0
        calm, ceiling = decision.calm_ticks, decision.ceiling
    decision = p.decide(streams, calm, ceiling=ceiling)
    assert [(c.new, c.reason) for c in decision.changes] == [(1, "lower_over_cap")]
    assert decision.ceiling == pytest.approx(22.5)
    assert decision.calm_ticks == 0  # the next probe waits for another calm spell


def test_motion_cap_follows_the_measured_prediction_error() -> None:
    p = policy(max_interval=6, motion_error=0.05)
    assert p.motion_cap(seen(rate=None)) == 6  # no tracks: nothing to lose
    assert p.motion_cap(seen(rate=0.0)) == 6
    assert p.motion_cap(seen(rate=0.02)) == 2
    assert p.motion_cap(seen(rate=0.05)) == 1
    assert p.motion_cap(seen(rate=0.5)) == 1


observations = st.builds(
    seen,
    interval=st.integers(1, 6),
    latency_ms=st.one_of(st.just(math.nan), st.floats(0, 400)),
    rate=st.one_of(st.none(), st.floats(0, 0.3)),
    entering=st.floats(0, 1),
    priority=st.sampled_from(Priority),
    queue_ms=st.floats(0, 400),
    fps=st.one_of(st.just(math.nan), st.floats(0, 60)),
    detector_fps=st.one_of(st.just(math.nan), st.floats(0, 60)),
)


@settings(max_examples=300, deadline=None)
@given(
    streams=st.dictionaries(st.sampled_from([f"cam{i}" for i in range(6)]), observations),
    calm=st.integers(0, 5),
    utilisation=st.one_of(st.none(), st.floats(0, 1)),
    ceiling=st.one_of(st.none(), st.floats(0.1, 200)),
)
def test_every_decision_is_bounded_gradual_and_points_the_right_way(
    streams: dict[str, StreamObservation],
    calm: int,
    utilisation: float | None,
    ceiling: float | None,
) -> None:
    p = policy(max_interval=4)
    decision = p.decide(streams, calm, utilisation, ceiling)
    assert set(decision.intervals) == set(streams)
    before = {s: min(max(1, o.interval), 4) for s, o in streams.items()}
    for sid, k in decision.intervals.items():
        assert 1 <= k <= 4
        assert abs(k - before[sid]) <= 1  # one step per tick
    moved = {c.stream for c in decision.changes}
    assert moved == {s for s in streams if decision.intervals[s] != before[s]}
    if decision.state is Load.BEHIND:
        assert all(decision.intervals[s] >= before[s] for s in streams)
        # a stream goes over its motion cap only once none is left below its own
        over = [c for c in decision.changes if c.reason == "raise_over_cap"]
        below = [s for s in streams if before[s] < p.motion_cap(streams[s])]
        assert not over or all(s in moved for s in below)
    else:
        assert all(decision.intervals[s] <= before[s] for s in streams)
        assert len(decision.changes) <= 1
    if ceiling is not None and decision.state is not Load.BEHIND:
        assert decision.ceiling is not None and decision.ceiling >= ceiling  # only probed
        if decision.ceiling > ceiling:  # a probe: exactly one step over the old ceiling
            assert len(decision.changes) == 1
    if decision.state is Load.BEHIND and ceiling is not None:
        assert decision.ceiling is not None and decision.ceiling <= ceiling  # only learnt


def test_config_and_priorities_are_checked() -> None:
    assert parse_priorities(["cam1=high", " lobby = LOW "]) == {
        "cam1": Priority.HIGH,
        "lobby": Priority.LOW,
    }
    with pytest.raises(ConfigError, match="'cam1' is not STREAM=PRIORITY"):
        parse_priorities(["cam1"])
    with pytest.raises(ConfigError, match="unknown priority 'urgent'"):
        parse_priorities(["cam1=urgent"])
    with pytest.raises(ConfigError, match="twice"):
        parse_priorities(["cam1=high", "cam1=low"])
    config = SchedulerConfig(priorities={"cam9": Priority.HIGH})
    with pytest.raises(ConfigError, match=r"unknown stream 'cam9'.*streams: cam0, cam1"):
        config.check_streams(["cam0", "cam1"])
    with pytest.raises(ConfigError, match="latency budget must be > 0 ms, got -5"):
        SchedulerConfig(latency_budget_ms=-5)
    with pytest.raises(ConfigError, match="max_interval"):
        SchedulerConfig(max_interval=0)


def _boxes(centres: list[tuple[float, float]], ids: list[int]) -> Detections:
    xyxy = np.array([[x - 10, y - 40, x + 10, y + 40] for x, y in centres], np.float32)
    n = len(ids)
    return Detections(
        xyxy, np.full(n, 0.9, np.float32), np.zeros(n, np.int64), np.array(ids, np.int64)
    )


def test_monitor_sees_no_error_in_straight_motion_and_some_in_a_turn() -> None:
    # Interval 3: detector on frames 0, 3, 6, 9; the frames between carry the straight-line
    # prediction. The turning object is found 24 px (0.3 box heights) off it on frame 9.
    straight, turning = MotionMonitor(), MotionMonitor()
    for t in range(10):
        detected = t % 3 == 0
        straight.observe(t, _boxes([(100 + 4 * t, 200)], [1]), detected, 640)
        y = 224 if t == 9 else 200
        turning.observe(t, _boxes([(100 + 4 * t, y)], [1]), detected, 640)
    assert straight.motion_rate == pytest.approx(0.0, abs=1e-6)
    # 0.3 box heights over a gap of 3 frames, averaged in with two error-free frames
    assert turning.motion_rate == pytest.approx(0.3 * 0.1, rel=0.01)


def test_monitor_counts_new_and_border_tracks_as_entering() -> None:
    monitor = MotionMonitor()
    monitor.observe(0, _boxes([(300, 200), (400, 200)], [1, 2]), True, 640)
    first = monitor.entering
    assert first > 0.25  # every track is new
    for t in range(1, 10):
        monitor.observe(t, _boxes([(300, 200), (400, 200)], [1, 2]), True, 640)
    assert monitor.entering < 0.05  # nobody new, nobody at the border
    monitor.observe(10, _boxes([(300, 200), (5, 200)], [1, 2]), True, 640)
    assert monitor.entering > 0.1  # one of two at the left edge


def _detections(centres: list[tuple[float, float]], scores: list[float]) -> Detections:
    found = _boxes(centres, list(range(len(centres))))
    return Detections(found.xyxy, np.array(scores, np.float32), found.class_id)


def test_objects_the_tracker_does_not_report_keep_the_stream_at_one() -> None:
    # A tracker that loses everything at a long interval (OC-SORT confirms a track only
    # after several observations in a row) reports nothing while the detector keeps
    # finding three people: that is not a calm scene.
    policy = IntervalPolicy(SchedulerConfig(latency_budget_ms=BUDGET))
    monitor = MotionMonitor()
    people = _detections([(100, 200), (300, 200), (500, 200)], [0.9, 0.8, 0.7])
    for t in range(0, 16, 4):
        monitor.observe(t, Detections.empty(), True, 640, people)
    assert monitor.motion_rate is None  # no motion measured: the tracker shows nothing
    stuck = StreamObservation(4, 50.0, 0.0, monitor.motion_rate, monitor.entering)
    assert policy.motion_cap(stuck) == 1
    decision = policy.decide({"cam": stuck})
    assert decision.intervals == {"cam": 3}
    assert [c.reason for c in decision.changes] == ["lower_over_cap"]


def test_claimed_detections_and_clutter_do_not_count_as_entering() -> None:
    monitor = MotionMonitor()
    tracks = _boxes([(100, 200), (300, 200)], [1, 2])
    # both people reported; a low-scoring detection nobody tracks (clutter)
    seen_now = _detections([(100, 200), (302, 201), (500, 200)], [0.9, 0.9, 0.3])
    for t in range(12):
        monitor.observe(t, tracks, True, 640, seen_now)
    assert monitor.entering < 0.01
    # a confident person the tracker has not confirmed yet: one of three
    arriving = _detections([(100, 200), (300, 200), (500, 200)], [0.9, 0.9, 0.9])
    monitor.observe(12, tracks, True, 640, arriving)
    assert monitor.entering == pytest.approx(0.3 * (1 / 3), abs=0.01)
