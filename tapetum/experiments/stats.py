"""Bootstrap confidence intervals over units, and effects of a variant against the control.

The units are what varies independently: (stream, time window) pairs online, images on a
labelled set; frames within a window are not independent (the same people, the same
light), so they are never resampled one by one. A resample draws the units with
replacement (multinomial counts, one (B, U) weight matrix for all metrics), and every
metric is a function of per-unit sums, so a whole bootstrap is a few matrix products:

* a ratio metric (boxes per frame, agreement precision…) is ``(W @ num) / (W @ den)``;
* a latency percentile is read off ``W @ H``, H the units' latency histograms on
  log-spaced bins (3 % wide), so no frame is touched twice.

Comparisons are paired when both arms saw the same units (shadow, per-frame canary: one W
for both) and independent otherwise (per-stream canary: one W per arm). An interval is the
percentile interval of the replicates.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> w = resample_weights(4, 1000, rng)
    >>> est = ratio_estimate(np.array([1., 2, 3, 4]), np.array([1., 1, 1, 1]), w)
    >>> est.value, est.interval(0.9)[0] < 2.5 < est.interval(0.9)[1]
    (2.5, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tapetum._types import Float64Array, IntArray

__all__ = [
    "LATENCY_EDGES_MS",
    "Effect",
    "Estimate",
    "compare",
    "histogram_percentile",
    "latency_histograms",
    "ratio_estimate",
    "resample_weights",
]

#: Latency histogram bin edges, 0.01 ms to 1000 s, 512 log-spaced bins (each ~3.6 % wide).
LATENCY_EDGES_MS: Float64Array = np.geomspace(1e-2, 1e6, 513)
_LATENCY_MIDS_MS: Float64Array = np.sqrt(LATENCY_EDGES_MS[:-1] * LATENCY_EDGES_MS[1:])


@dataclass(frozen=True, slots=True)
class Estimate:
    """A metric's value and its bootstrap replicates.

    Attributes:
        value: the estimate on all the data (NaN: undefined, e.g. no boxes).
        samples: (B,) replicates on resampled units; None where no interval is possible
            (a single unit, or a metric reported without one).
    """

    value: float
    samples: Float64Array | None = None

    def interval(self, confidence: float) -> tuple[float, float]:
        """Two-sided percentile interval; NaNs without replicates."""
        return _interval(self.samples, confidence, self.value)

    @classmethod
    def constant(cls, value: float, resamples: int) -> Estimate:
        """A metric that is ``value`` in every resample (the control's self-agreement)."""
        return cls(value, np.full(resamples, value))


@dataclass(frozen=True, slots=True)
class Effect:
    """A variant against the control on one metric.

    Attributes:
        control, variant: the two values.
        diff: ``variant - control``; ``diff_ci`` its interval.
        relative: ``diff / |control|``; ``relative_ci`` its interval.
        ratio: ``variant / control``; ``ratio_ci`` its interval.
        control_ci, variant_ci: each arm's own interval.
    """

    control: float
    variant: float
    diff: float
    diff_ci: tuple[float, float]
    relative: float
    relative_ci: tuple[float, float]
    ratio: float
    ratio_ci: tuple[float, float]
    control_ci: tuple[float, float]
    variant_ci: tuple[float, float]

    def as_dict(self) -> dict[str, float | list[float | None] | None]:
        return {
            "control": _num(self.control),
            "variant": _num(self.variant),
            "control_ci": [_num(v) for v in self.control_ci],
            "variant_ci": [_num(v) for v in self.variant_ci],
            "diff": _num(self.diff),
            "diff_ci": [_num(v) for v in self.diff_ci],
            "relative": _num(self.relative),
            "relative_ci": [_num(v) for v in self.relative_ci],
            "ratio": _num(self.ratio),
            "ratio_ci": [_num(v) for v in self.ratio_ci],
        }


def resample_weights(units: int, resamples: int, rng: np.random.Generator) -> Float64Array:
    """(B, U) multinomial counts: how often each unit is drawn in each resample."""
    if units == 0:
        return np.zeros((resamples, 0))
    counts = rng.multinomial(units, np.full(units, 1.0 / units), size=resamples)
    return counts.astype(np.float64)


def ratio_estimate(num: Float64Array, den: Float64Array, weights: Float64Array | None) -> Estimate:
    """``Σnum / Σden`` over the units, and its replicates under ``weights`` (B, U)."""
    total = float(den.sum())
    value = float(num.sum()) / total if total > 0 else math.nan
    if weights is None or weights.shape[1] < 2:
        return Estimate(value)
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = (weights @ num) / (weights @ den)
    samples[~np.isfinite(samples)] = np.nan
    return Estimate(value, samples)


def histogram_percentile(
    hist: Float64Array, q: float, weights: Float64Array | None, value: float
) -> Estimate:
    """A percentile (``q`` in 0-100) of the pooled values of resampled units, from the
    units' (U, K) histograms on :data:`LATENCY_EDGES_MS`; ``value`` is the exact one."""
    if weights is None or weights.shape[1] < 2:
        return Estimate(value)
    pooled = np.cumsum(weights @ hist, axis=1)
    target = pooled[:, -1] * (q / 100.0)
    index = np.minimum((pooled < target[:, None]).sum(axis=1), hist.shape[1] - 1)
    samples = _LATENCY_MIDS_MS[index]
    samples[pooled[:, -1] == 0] = np.nan
    return Estimate(value, samples)


def latency_histograms(unit: IntArray, latency_ms: Float64Array, units: int) -> Float64Array:
    """(U, K) counts of each unit's latencies on :data:`LATENCY_EDGES_MS`."""
    k = LATENCY_EDGES_MS.shape[0] - 1
    bins = np.clip(np.searchsorted(LATENCY_EDGES_MS, latency_ms, side="right") - 1, 0, k - 1)
    flat = np.bincount(unit * k + bins, minlength=units * k)
    return flat.reshape(units, k).astype(np.float64)


def compare(control: Estimate, variant: Estimate, confidence: float) -> Effect:
    """The variant's effect against the control, with intervals from the replicates
    (paired when both were computed under the same weights)."""
    c, v = control.value, variant.value
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = (v - c) / abs(c) if c else math.nan
        ratio = v / c if c else math.nan
    diff_ci = rel_ci = ratio_ci = (math.nan, math.nan)
    if control.samples is not None and variant.samples is not None:
        cs, vs = control.samples, variant.samples
        with np.errstate(invalid="ignore", divide="ignore"):
            d = vs - cs
            rel = np.where(cs != 0, d / np.abs(cs), np.nan)
            rat = np.where(cs != 0, vs / cs, np.nan)
        diff_ci = _interval(d, confidence, v - c)
        rel_ci = _interval(rel, confidence, relative)
        ratio_ci = _interval(rat, confidence, ratio)
    return Effect(
        control=c,
        variant=v,
        diff=v - c,
        diff_ci=diff_ci,
        relative=relative,
        relative_ci=rel_ci,
        ratio=ratio,
        ratio_ci=ratio_ci,
        control_ci=control.interval(confidence),
        variant_ci=variant.interval(confidence),
    )


def _interval(samples: Float64Array | None, confidence: float, point: float) -> tuple[float, float]:
    """Percentile interval, widened to hold ``point`` (binned replicates may sit a bin
    off an exact estimate)."""
    if samples is None:
        return (math.nan, math.nan)
    finite = samples[np.isfinite(samples)]
    if finite.size < 2:
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (float(x) for x in np.quantile(finite, [alpha, 1.0 - alpha]))
    if math.isfinite(point):
        lo, hi = min(lo, point), max(hi, point)
    return (lo, hi)


def _num(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None
