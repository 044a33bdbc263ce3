"""Bootstrap estimates and the decision rules: intervals that cover, paired differences,
and the verdict table (promote / hold / rollback) for rules and guardrails."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tapetum.experiments import Effect, Estimate, Verdict, compare, decide
from tapetum.experiments.decision import Outcome
from tapetum.experiments.metrics import Goal
from tapetum.experiments.spec import DecisionRule, Guardrail, Requirement
from tapetum.experiments.stats import (
    LATENCY_EDGES_MS,
    histogram_percentile,
    latency_histograms,
    ratio_estimate,
    resample_weights,
)


def test_ratio_interval_covers_the_truth_at_about_its_confidence() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    trials = 200
    for _ in range(trials):
        frames = rng.integers(20, 40, 30).astype(np.float64)
        boxes = rng.poisson(5.0 * frames).astype(np.float64)  # 5 boxes per frame on average
        est = ratio_estimate(boxes, frames, resample_weights(30, 400, rng))
        lo, hi = est.interval(0.9)
        covered += lo <= 5.0 <= hi
    assert 0.8 <= covered / trials <= 0.97


def test_histogram_percentile_tracks_the_exact_percentile() -> None:
    rng = np.random.default_rng(2)
    latency = rng.lognormal(3.0, 0.5, 5000)
    unit = rng.integers(0, 50, latency.size)
    hist = latency_histograms(unit, latency, 50)
    exact = float(np.percentile(latency, 99))
    est = histogram_percentile(hist, 99, resample_weights(50, 300, rng), exact)
    assert est.samples is not None
    assert abs(np.median(est.samples) / exact - 1) < 0.06  # one bin is ~3.6 % wide
    assert LATENCY_EDGES_MS[0] < latency.min() and latency.max() < LATENCY_EDGES_MS[-1]


def test_paired_difference_is_tighter_than_either_arm() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(10, 3, 40)  # windows differ a lot; the variant adds 0.5 to each
    frames = np.ones(40)
    w = resample_weights(40, 1000, rng)
    control = ratio_estimate(base, frames, w)
    variant = ratio_estimate(base + 0.5 + rng.normal(0, 0.1, 40), frames, w)
    effect = compare(control, variant, 0.95)
    lo, hi = effect.diff_ci
    assert 0.3 < lo < 0.5 < hi < 0.7
    c_lo, c_hi = effect.control_ci
    assert (hi - lo) < (c_hi - c_lo) / 5


def _effect(control: float, variant: float, half_width: float) -> Estimate:
    return Estimate(variant, np.linspace(variant - half_width, variant + half_width, 101))


def _eff(c: float, v: float, c_hw: float = 0.0, v_hw: float = 0.0) -> Effect:
    return compare(
        Estimate(c, np.linspace(c - c_hw, c + c_hw, 101)),
        Estimate(v, np.linspace(v - v_hw, v + v_hw, 101)),
        0.95,
    )


@pytest.mark.parametrize(
    ("require", "control", "variant", "half", "outcome"),
    [
        (Requirement.NOT_WORSE, 0.80, 0.79, 0.005, Outcome.PASS),  # lost 0.01 < margin 0.02
        (Requirement.NOT_WORSE, 0.80, 0.70, 0.005, Outcome.FAIL),  # lost 0.10, surely
        (Requirement.NOT_WORSE, 0.80, 0.785, 0.03, Outcome.INCONCLUSIVE),
        (Requirement.BETTER, 0.80, 0.85, 0.005, Outcome.PASS),  # gained 0.05 ≥ 0.02
        (Requirement.BETTER, 0.80, 0.81, 0.005, Outcome.INCONCLUSIVE),  # real but too small
        (Requirement.BETTER, 0.80, 0.75, 0.005, Outcome.FAIL),
    ],
)
def test_rule_outcomes(
    require: Requirement, control: float, variant: float, half: float, outcome: Outcome
) -> None:
    rule = DecisionRule("map_50_95", Goal.INCREASE, require, 0.02)
    effect = compare(
        Estimate(control, np.full(101, control)), _effect(control, variant, half), 0.95
    )
    decision = decide("v", {"map_50_95": effect}, [rule], [])
    assert decision.checks[0].outcome is outcome


def test_a_lower_is_better_metric_counts_a_drop_as_a_gain() -> None:
    rule = DecisionRule("latency_p99_ms", Goal.DECREASE, Requirement.BETTER, 5.0)
    effect = _eff(100.0, 80.0, 1.0, 1.0)
    assert decide("v", {"latency_p99_ms": effect}, [rule], []).verdict is Verdict.PROMOTE


def test_relative_rules_use_the_relative_effect() -> None:
    rule = DecisionRule("detections_per_frame", Goal.INCREASE, Requirement.NOT_WORSE, 0.1, True)
    ok = _eff(10.0, 9.5, 0.1, 0.1)  # -5 %
    bad = _eff(10.0, 6.0, 0.1, 0.1)  # -40 %
    assert decide("v", {"detections_per_frame": ok}, [rule], []).verdict is Verdict.PROMOTE
    assert decide("v", {"detections_per_frame": bad}, [rule], []).verdict is Verdict.ROLLBACK


def test_a_breached_guardrail_rolls_back_even_when_every_rule_passes() -> None:
    rules = [DecisionRule("map_50_95", Goal.INCREASE, Requirement.BETTER, 0.01)]
    guard = [Guardrail("latency_p99_ms", max_ratio=1.5), Guardrail("error_rate", max=0.01)]
    effects = {
        "map_50_95": _eff(0.30, 0.36, 0.005, 0.005),  # clearly better
        "latency_p99_ms": _eff(100.0, 240.0, 5.0, 10.0),  # 2.4x slower
        "error_rate": _eff(0.0, 0.0),
    }
    decision = decide("v", effects, rules, guard)
    assert decision.verdict is Verdict.ROLLBACK
    by = {(c.kind, c.metric): c.outcome for c in decision.checks}
    assert by[("rule", "map_50_95")] is Outcome.PASS
    assert by[("guardrail", "latency_p99_ms")] is Outcome.FAIL
    assert by[("guardrail", "error_rate")] is Outcome.PASS
    assert "latency_p99_ms ≤ 1.5 × control breached" in decision.summary


def test_a_guardrail_at_risk_holds_instead_of_promoting() -> None:
    guard = [Guardrail("latency_p99_ms", max=100.0)]
    effects = {"latency_p99_ms": _eff(90.0, 103.0, 1.0, 10.0)}  # estimate over, interval not
    decision = decide("v", effects, [], guard)
    assert decision.checks[0].outcome is Outcome.AT_RISK
    assert decision.verdict is Verdict.HOLD


def test_no_data_for_a_rule_holds_and_says_so() -> None:
    rule = DecisionRule("map_50_95", Goal.INCREASE, Requirement.NOT_WORSE, 0.01)
    decision = decide("v", {}, [rule], [])
    assert decision.verdict is Verdict.HOLD
    assert decision.checks[0].outcome is Outcome.NO_DATA
    assert "map_50_95: no data" in decision.summary


def test_nothing_to_decide_on_holds() -> None:
    assert decide("v", {}, [], []).verdict is Verdict.HOLD


def test_estimate_without_samples_has_no_interval() -> None:
    lo, hi = Estimate(1.0).interval(0.95)
    assert math.isnan(lo) and math.isnan(hi)
