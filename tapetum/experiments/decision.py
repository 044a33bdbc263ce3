"""From effects with intervals to ``promote``, ``hold`` or ``rollback``.

Each rule compares the variant with the control on one metric. With ``improvement`` the
effect signed so that positive is better (``variant - control``, or its negative for a
metric that should decrease; relative to the control's value with ``relative``) and
``[lo, hi]`` its interval, and ``m`` the rule's minimum effect:

=================  ======================  =====================
require            pass                    fail
=================  ======================  =====================
``better``         ``lo ≥ m``              ``hi < 0``
``not_worse``      ``lo ≥ -m``             ``hi < -m``
=================  ======================  =====================

anything between is inconclusive. Each guardrail bounds the variant's own value (``max``,
``min``) or its ratio to the control's (``max_ratio``, ``min_ratio``): *breached* when the
whole interval is past the bound, *at risk* when the estimate is past it but the interval
still reaches back.

The verdict: **rollback** if a guardrail is breached or a rule fails; **promote** if every
rule passes, no guardrail is at risk and there is at least one rule or guardrail;
**hold** otherwise (not enough evidence either way, or a metric without data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tapetum.experiments.metrics import Goal
from tapetum.experiments.spec import DecisionRule, Guardrail, Requirement
from tapetum.experiments.stats import Effect

__all__ = ["Check", "Decision", "Outcome", "Verdict", "decide"]


class Verdict(StrEnum):
    """What to do with a variant."""

    PROMOTE = "promote"
    HOLD = "hold"
    ROLLBACK = "rollback"


class Outcome(StrEnum):
    """The result of one rule or guardrail."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    NO_DATA = "no_data"
    #: a guardrail whose estimate is past its bound, the interval not yet entirely.
    AT_RISK = "at_risk"


@dataclass(frozen=True, slots=True)
class Check:
    """One rule or guardrail applied to one variant.

    Attributes:
        kind: ``rule`` or ``guardrail``.
        metric: the metric.
        description: the rule or guardrail in words.
        outcome: pass, fail, inconclusive, no data or at risk.
        estimate: what was compared (the signed improvement for a rule, the variant's
            value or ratio for a guardrail) and ``interval`` its interval.
        reason: one line for people.
    """

    kind: str
    metric: str
    description: str
    outcome: Outcome
    estimate: float
    interval: tuple[float, float]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "description": self.description,
            "outcome": self.outcome.value,
            "estimate": _num(self.estimate),
            "interval": [_num(v) for v in self.interval],
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one variant and the checks behind it."""

    variant: str
    verdict: Verdict
    checks: tuple[Check, ...]
    summary: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "checks": [c.as_dict() for c in self.checks],
        }


def decide(
    variant: str,
    effects: Mapping[str, Effect],
    rules: Sequence[DecisionRule],
    guardrails: Sequence[Guardrail],
) -> Decision:
    """Apply the rules and guardrails to a variant's effects (metric name → effect)."""
    checks = [_rule(r, effects.get(r.metric)) for r in rules]
    for g in guardrails:
        checks.extend(_guardrail(g, effects.get(g.metric)))
    outcomes = [c.outcome for c in checks]
    failing = [c for c in checks if c.outcome is Outcome.FAIL]
    if failing:
        verdict = Verdict.ROLLBACK
        summary = "; ".join(c.reason for c in failing)
    elif checks and all(o is Outcome.PASS for o in outcomes):
        verdict = Verdict.PROMOTE
        summary = "every rule passes and every guardrail holds"
    else:
        verdict = Verdict.HOLD
        open_checks = [c for c in checks if c.outcome is not Outcome.PASS]
        summary = (
            "; ".join(c.reason for c in open_checks)
            if open_checks
            else "no rule or guardrail to decide on"
        )
    return Decision(variant, verdict, tuple(checks), summary)


def _rule(rule: DecisionRule, effect: Effect | None) -> Check:
    text = rule.describe()
    if effect is None or not math.isfinite(effect.diff):
        return Check(
            "rule", rule.metric, text, Outcome.NO_DATA, math.nan, _NAN2, f"{rule.metric}: no data"
        )
    sign = 1.0 if rule.goal is Goal.INCREASE else -1.0
    point = sign * (effect.relative if rule.relative else effect.diff)
    lo_raw, hi_raw = effect.relative_ci if rule.relative else effect.diff_ci
    lo, hi = sorted((sign * lo_raw, sign * hi_raw))
    m = rule.min_effect
    shown = _fmt_effect(point, lo, hi, rule.relative)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return Check(
            "rule",
            rule.metric,
            text,
            Outcome.INCONCLUSIVE,
            point,
            (lo, hi),
            f"{rule.metric}: {shown}, no interval (too few units)",
        )
    if rule.require is Requirement.BETTER:
        passed, failed = lo >= m, hi < 0
    else:
        passed, failed = lo >= -m, hi < -m
    if passed:
        outcome, why = Outcome.PASS, f"{rule.metric}: {shown} meets '{text}'"
    elif failed:
        outcome, why = Outcome.FAIL, f"{rule.metric}: {shown} fails '{text}'"
    else:
        outcome, why = Outcome.INCONCLUSIVE, f"{rule.metric}: {shown} is inconclusive for '{text}'"
    return Check("rule", rule.metric, text, outcome, point, (lo, hi), why)


def _guardrail(g: Guardrail, effect: Effect | None) -> list[Check]:
    out: list[Check] = []
    bounds = [
        ("max", g.max, False, True),
        ("min", g.min, False, False),
        ("max_ratio", g.max_ratio, True, True),
        ("min_ratio", g.min_ratio, True, False),
    ]
    for label, bound, ratio, upper in bounds:
        if bound is None:
            continue
        what = Guardrail(g.metric, **{label: bound}).describe()
        if effect is None:
            out.append(
                Check(
                    "guardrail",
                    g.metric,
                    what,
                    Outcome.NO_DATA,
                    math.nan,
                    _NAN2,
                    f"{what}: no data",
                )
            )
            continue
        value = effect.ratio if ratio else effect.variant
        lo, hi = effect.ratio_ci if ratio else effect.variant_ci
        if not math.isfinite(value):
            out.append(
                Check(
                    "guardrail",
                    g.metric,
                    what,
                    Outcome.NO_DATA,
                    value,
                    (lo, hi),
                    f"{what}: no data",
                )
            )
            continue
        past = value > bound if upper else value < bound
        known = math.isfinite(lo) and math.isfinite(hi)
        wholly_past = known and (lo > bound if upper else hi < bound)
        shown = f"{value:.4g}" + (f" [{lo:.4g}, {hi:.4g}]" if known else "")
        if wholly_past:
            outcome, why = Outcome.FAIL, f"guardrail {what} breached: {shown}"
        elif past:
            outcome, why = Outcome.AT_RISK, f"guardrail {what} at risk: {shown}"
        else:
            outcome, why = Outcome.PASS, f"guardrail {what} holds: {shown}"
        out.append(Check("guardrail", g.metric, what, outcome, value, (lo, hi), why))
    return out


def _fmt_effect(point: float, lo: float, hi: float, relative: bool) -> str:
    if relative:
        return f"{100 * point:+.2f}% [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    return f"{point:+.4g} [{lo:+.4g}, {hi:+.4g}]"


def _num(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


_NAN2 = (math.nan, math.nan)
