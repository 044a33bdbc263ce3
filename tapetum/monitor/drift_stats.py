"""Two-sample drift statistics, vectorised: KS, PSI, MMD.

Each function compares a *reference* sample with a *current* one and returns a distance
that is 0 for identical distributions and grows with the shift:

* :func:`ks_statistic` — Kolmogorov–Smirnov D, the largest gap between the two empirical
  CDFs (0…1). For continuous scalars: brightness, sharpness, confidence, box size.
* :func:`psi` — Population Stability Index, ``Σ (q − p) ln(q / p)`` over bins (0…∞; the
  credit-scoring rule of thumb reads < 0.1 stable, > 0.25 shifted). For categories (the
  class mix) and for counts binned at the reference's quantiles.
* :func:`mmd2_rbf` — squared Maximum Mean Discrepancy with a Gaussian kernel (Gretton et
  al., JMLR 2012), unbiased estimate (may dip just below 0 when nothing changed). For
  vectors: the tiny scene thumbnail, re-identification embeddings.

p-values are deliberately not used: consecutive video frames are strongly correlated, so
a window of 75 frames is nowhere near 75 independent draws and any p-value would claim
drift within minutes of a static camera. Thresholds are instead calibrated on the
reference itself (see :mod:`tapetum.monitor.drift_profile`).

Example:
    >>> import numpy as np
    >>> ref = np.linspace(0.0, 1.0, 101)
    >>> round(ks_statistic(np.sort(ref), ref + 0.5), 2)
    0.5
    >>> edges = quantile_edges(ref, 4)
    >>> round(psi(bin_counts(ref, edges), bin_counts(ref, edges)), 6)
    0.0
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tapetum._types import Float64Array

__all__ = [
    "bin_counts",
    "ks_statistic",
    "median_bandwidth",
    "mmd2_rbf",
    "mmd_self_term",
    "psi",
    "quantile_edges",
]

#: Count added to every bin before PSI compares shares (additive smoothing): an empty bin
#: on one side must not make the index infinite, nor one stray value in a bin the
#: reference never filled make it huge.
PSI_SMOOTHING = 0.5


def ks_statistic(reference_sorted: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Two-sample Kolmogorov–Smirnov D between ``reference_sorted`` (sorted ascending) and
    ``current`` (any order); 0.0 when either is empty.

    Evaluates both empirical CDFs at every point of the pooled sample, so ties count as in
    ``scipy.stats.ks_2samp`` (the unit tests check the two agree).
    """
    ref = np.asarray(reference_sorted, np.float64)
    cur = np.sort(np.asarray(current, np.float64))
    if ref.size == 0 or cur.size == 0:
        return 0.0
    points = np.concatenate([ref, cur])
    cdf_ref = np.searchsorted(ref, points, side="right") / ref.size
    cdf_cur = np.searchsorted(cur, points, side="right") / cur.size
    return float(np.max(np.abs(cdf_ref - cdf_cur)))


def quantile_edges(reference: npt.ArrayLike, bins: int = 10) -> Float64Array:
    """Inner bin edges at the reference's quantiles (``bins − 1`` of them, duplicates
    removed, so a feature with few distinct values gets fewer, wider bins)."""
    ref = np.asarray(reference, np.float64)
    if ref.size == 0:
        return np.empty(0, np.float64)
    inner = np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    edges: Float64Array = np.unique(inner)
    return edges


def bin_counts(values: npt.ArrayLike, edges: Float64Array) -> Float64Array:
    """Counts of ``values`` in the ``len(edges) + 1`` bins that ``edges`` bound (the
    outer bins are open-ended, so a value beyond the reference's range still counts).
    A value equal to an edge goes to the bin above it."""
    idx = np.searchsorted(edges, np.asarray(values, np.float64), side="right")
    counts: Float64Array = np.bincount(idx, minlength=edges.size + 1).astype(np.float64)
    return counts


def psi(
    reference_counts: npt.ArrayLike,
    current_counts: npt.ArrayLike,
    smoothing: float = PSI_SMOOTHING,
) -> float:
    """Population Stability Index of two histograms of counts over the same bins; 0.0 when
    either side is empty. ``smoothing`` is added to every bin's count first."""
    p = np.asarray(reference_counts, np.float64)
    q = np.asarray(current_counts, np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    p = p + smoothing
    q = q + smoothing
    p = np.maximum(p / p.sum(), 1e-12)
    q = np.maximum(q / q.sum(), 1e-12)
    return float(np.sum((q - p) * np.log(q / p)))


def _sq_dists(a: Float64Array, b: Float64Array) -> Float64Array:
    d: Float64Array = (
        np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * (a @ b.T)
    )
    return np.maximum(d, 0.0)


def median_bandwidth(sample: npt.ArrayLike, max_rows: int = 500) -> float:
    """The median heuristic for the RBF kernel width: the median pairwise Euclidean
    distance between rows of ``sample`` (the first ``max_rows``); 1.0 when degenerate."""
    x = np.asarray(sample, np.float64)[:max_rows]
    if x.shape[0] < 2:
        return 1.0
    d = _sq_dists(x, x)
    upper = d[np.triu_indices(x.shape[0], k=1)]
    med = float(np.sqrt(np.median(upper)))
    return med if med > 1e-12 else 1.0


def mmd_self_term(x: npt.ArrayLike, bandwidth: float) -> float:
    """The mean kernel value between distinct rows of ``x``: the part of MMD² that
    depends on one sample only (a reference computes it once)."""
    a = np.asarray(x, np.float64)
    n = a.shape[0]
    if n < 2:
        return 0.0
    k = np.exp(-_sq_dists(a, a) / (2.0 * bandwidth * bandwidth))
    # Unbiased: the diagonal (each point with itself, always 1) is left out.
    return float((k.sum() - np.trace(k)) / (n * (n - 1)))


def mmd2_rbf(
    x: npt.ArrayLike, y: npt.ArrayLike, bandwidth: float, x_term: float | None = None
) -> float:
    """Unbiased MMD² between the rows of ``x`` (n, D) and ``y`` (m, D) under the kernel
    ``exp(−|a − b|² / (2 · bandwidth²))``; 0.0 when either has fewer than two rows.
    ``x_term``: :func:`mmd_self_term` of ``x``, if already known."""
    a = np.asarray(x, np.float64)
    b = np.asarray(y, np.float64)
    if a.shape[0] < 2 or b.shape[0] < 2:
        return 0.0
    xx = mmd_self_term(a, bandwidth) if x_term is None else x_term
    yy = mmd_self_term(b, bandwidth)
    kxy = np.exp(-_sq_dists(a, b) / (2.0 * bandwidth * bandwidth))
    return float(xx + yy - 2.0 * kxy.mean())
