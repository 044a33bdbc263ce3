"""The drift signals: what each one observes, which test compares it, how it is fitted.

A *signal* is one quantity watched over a sliding window of a stream (``window_s``
seconds of the source's clock). Each kind of signal has its test:

========== ==================================================== ===========================
kind       statistic of a window against the reference           used for
========== ==================================================== ===========================
``shift``  ``|median(window) − median(ref)| / spread(ref)``, the  per-frame image statistics,
           modified z-score (Iglewicz & Hoaglin) with the        tracks per detection
           reference's MAD as spread (floored per signal)
``ks``     Kolmogorov–Smirnov D of the pooled values              confidence, box size,
                                                                 track lifetimes
``psi``    Population Stability Index over categories, or over    class mix, detections per
           the reference's decile bins (``psi_binned``)           frame
``mmd``    unbiased MMD² with an RBF kernel (median heuristic)    scene thumbnail, ReID
                                                                 embeddings
``rate``   ``|count − λ| / √(λ + 1)``, λ the reference rate ×     track births and deaths
           the window's span (a Poisson z)
``share``  ``|p − p_ref| / √(p_ref (1 − p_ref) / n)``, a          short tracks, re-births
           one-sample proportion z
========== ==================================================== ===========================

Why not KS for the image statistics: a fixed camera's brightness varies by about 1 % over
a clip, and consecutive frames are correlated, so a 4-second window of an *unchanged*
camera already has KS D of 0.84–0.99 against the whole clip (measured on the shared crowd
and campus videos) and KS cannot tell it from a 40 % darkening (D = 1). The location
shift in reference spreads separates them by an order of magnitude (unchanged ≤ 3,
darkened 45–60, blurred sharpness 16–250).

Why not Evidently or alibi-detect (both checked on this Python 3.11 environment with
``pip install --dry-run``): alibi-detect 0.13 pins ``numpy<2`` and would take numpy 2.4 back
to 1.26 (and numba, OpenCV, Pillow with it), which the rest of Tapetum does not run on;
its online detectors (CVM, MMD) are calibrated to a false-positive rate on i.i.d. streams,
which video frames are not. Evidently 0.7 installs about thirty packages (a web framework,
plotly, statsmodels, nltk, a telemetry client) and computes reports over pandas
DataFrames, a batch job per window; its column tests are the same KS/PSI/Wasserstein with
p-value defaults. Here each frame costs a few numpy calls on arrays the pipeline already
has (0.2-0.3 ms of CPU a frame on the 720p crowd video, image statistics included; one
check a second), with thresholds calibrated on the camera's own reference.

A :class:`SignalReference` is a signal's fitted reference (what ``score`` needs, as plain
numbers and arrays) — the profile stores it — and each reference is calibrated by the
profile builder (see :mod:`tapetum.monitor.drift_profile`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from tapetum._types import Float64Array
from tapetum.monitor.drift_stats import (
    bin_counts,
    ks_statistic,
    median_bandwidth,
    mmd2_rbf,
    mmd_self_term,
    psi,
    quantile_edges,
)

__all__ = [
    "SIGNALS",
    "SignalKind",
    "SignalReference",
    "SignalSpec",
    "fit_reference",
    "score_window",
]

Payload = npt.NDArray[Any]


class SignalKind(StrEnum):
    """How a signal's window is compared with its reference (see the module docstring)."""

    SHIFT = "shift"
    KS = "ks"
    PSI = "psi"
    PSI_BINNED = "psi_binned"
    MMD = "mmd"
    RATE = "rate"
    SHARE = "share"


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One watched signal.

    Attributes:
        name: the signal's name (a metric label value; a fixed, small set).
        family: ``image``, ``model``, ``appearance`` or ``tracking``.
        kind: the test.
        window_s: window length in seconds of the source's clock.
        floor: the lowest threshold of the statistic, whatever the calibration says
            (a practical minimum: a shift smaller than this is not worth an alert).
        min_count: values (rows, frames, trials) a window needs before it is scored.
        scale_floor: ``shift`` only: the smallest spread the reference may claim (a
            near-constant statistic must not make a rounding difference an alarm).
    """

    name: str
    family: str
    kind: SignalKind
    window_s: float
    floor: float
    min_count: int
    scale_floor: float = 0.0


_IMG_WINDOW_S = 4.0
_TRACK_WINDOW_S = 30.0

#: Every signal, in display order.
SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec("brightness", "image", SignalKind.SHIFT, _IMG_WINDOW_S, 4.0, 5, 1.0),
    SignalSpec("contrast", "image", SignalKind.SHIFT, _IMG_WINDOW_S, 4.0, 5, 1.0),
    SignalSpec("sharpness", "image", SignalKind.SHIFT, _IMG_WINDOW_S, 4.0, 5, 0.02),
    SignalSpec("colour_rg", "image", SignalKind.SHIFT, _IMG_WINDOW_S, 4.0, 5, 0.005),
    SignalSpec("colour_bg", "image", SignalKind.SHIFT, _IMG_WINDOW_S, 4.0, 5, 0.005),
    SignalSpec("scene", "image", SignalKind.MMD, _IMG_WINDOW_S, 0.05, 5),
    SignalSpec("detections", "model", SignalKind.PSI_BINNED, _IMG_WINDOW_S, 0.25, 20),
    SignalSpec("confidence", "model", SignalKind.KS, _IMG_WINDOW_S, 0.15, 50),
    SignalSpec("box_size", "model", SignalKind.KS, _IMG_WINDOW_S, 0.15, 50),
    SignalSpec("class_mix", "model", SignalKind.PSI, _TRACK_WINDOW_S, 0.25, 200),
    SignalSpec("appearance", "appearance", SignalKind.MMD, _IMG_WINDOW_S, 0.05, 30),
    SignalSpec("births", "tracking", SignalKind.RATE, _TRACK_WINDOW_S, 4.0, 1),
    SignalSpec("deaths", "tracking", SignalKind.RATE, _TRACK_WINDOW_S, 4.0, 1),
    SignalSpec("track_length", "tracking", SignalKind.KS, _TRACK_WINDOW_S, 0.25, 20),
    SignalSpec("short_tracks", "tracking", SignalKind.SHARE, _TRACK_WINDOW_S, 4.0, 20),
    SignalSpec("rebirths", "tracking", SignalKind.SHARE, _TRACK_WINDOW_S, 4.0, 20),
    SignalSpec(
        "tracks_per_detection", "tracking", SignalKind.SHIFT, _TRACK_WINDOW_S, 4.0, 20, 0.15
    ),
)

#: Rows of a vector sample kept in a reference (MMD), and of a window when scored.
MMD_REFERENCE_ROWS = 200
MMD_WINDOW_ROWS = 100
#: Values of a pooled scalar kept in a reference (KS).
KS_REFERENCE_VALUES = 4000


@dataclass(slots=True)
class SignalReference:
    """A signal's reference, fitted from observations, and its calibrated threshold.

    Attributes:
        spec: the signal.
        count: values (or rows, trials) the reference was fitted on.
        params: what :func:`score_window` needs (numbers and numpy arrays).
        threshold: statistic at which a window counts as drifted (None: not calibrated,
            the signal is not scored).
        null_max: the largest statistic of a reference block against the rest of the
            reference (what calibration saw without drift); None if never calibrated.
        note: why the signal is not scored, when it is not.
    """

    spec: SignalSpec
    count: int
    params: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    null_max: float | None = None
    note: str = ""


def _concat(payloads: Sequence[Payload], kind: SignalKind) -> Payload:
    if not payloads:
        if kind is SignalKind.MMD:
            return np.empty((0, 0), np.float32)
        return np.empty(0, np.float64)
    return np.concatenate(payloads)


def window_count(spec: SignalSpec, values: Payload) -> int:
    """How many values a concatenated window holds in ``spec``'s unit (trials for shares)."""
    if spec.kind is SignalKind.SHARE:
        return int(values.reshape(-1, 2)[:, 1].sum()) if values.size else 0
    if spec.kind is SignalKind.RATE:
        return max(int(values.size), 0)
    return int(values.shape[0])


def _even_rows(x: Payload, n: int) -> Payload:
    """At most ``n`` rows of ``x``, evenly spaced (a sample that spans the whole time)."""
    if x.shape[0] <= n:
        return x
    return x[np.linspace(0, x.shape[0] - 1, n).round().astype(np.int64)]


def fit_reference(spec: SignalSpec, payloads: Sequence[Payload], span_s: float) -> SignalReference:
    """Fit ``spec``'s reference to observations (``span_s``: seconds they cover)."""
    values = _concat(payloads, spec.kind)
    count = window_count(spec, values)
    params: dict[str, Any] = {}
    kind = spec.kind
    if kind is SignalKind.SHIFT:
        v = values.astype(np.float64)
        med = float(np.median(v)) if v.size else 0.0
        mad = float(1.4826 * np.median(np.abs(v - med))) if v.size else 0.0
        params = {"median": med, "scale": max(mad, spec.scale_floor, 1e-12)}
    elif kind is SignalKind.KS:
        ordered = np.sort(values.astype(np.float64))
        params = {"sorted": _even_rows(ordered, KS_REFERENCE_VALUES)}
    elif kind is SignalKind.PSI:
        ids = values.astype(np.int64)
        cats, counts = np.unique(ids, return_counts=True)
        params = {"categories": cats, "counts": counts.astype(np.float64)}
    elif kind is SignalKind.PSI_BINNED:
        edges = quantile_edges(values, 10)
        params = {"edges": edges, "counts": bin_counts(values, edges)}
    elif kind is SignalKind.MMD:
        # at the precision the profile file keeps (float16), so a loaded reference
        # scores exactly as the one just fitted
        sample = _even_rows(values, MMD_REFERENCE_ROWS).astype(np.float16).astype(np.float64)
        bandwidth = median_bandwidth(sample)
        params = {
            "sample": sample,
            "bandwidth": bandwidth,
            "self_term": mmd_self_term(sample, bandwidth),
        }
    elif kind is SignalKind.RATE:
        params = {"rate_per_s": float(values.sum()) / span_s if span_s > 0 else 0.0}
    elif kind is SignalKind.SHARE:
        pairs = values.reshape(-1, 2).sum(axis=0) if values.size else np.zeros(2)
        params = {"p": float(pairs[0] / pairs[1]) if pairs[1] > 0 else 0.0}
    return SignalReference(spec, count, params)


def score_window(ref: SignalReference, payloads: Sequence[Payload], span_s: float) -> float | None:
    """The test statistic of a window against ``ref`` (None: too few values to score).

    ``span_s``: seconds the window covers (rates are counts per span)."""
    spec = ref.spec
    values = _concat(payloads, spec.kind)
    if window_count(spec, values) < spec.min_count:
        return None
    p = ref.params
    kind = spec.kind
    if kind is SignalKind.SHIFT:
        return abs(float(np.median(values)) - float(p["median"])) / float(p["scale"])
    if kind is SignalKind.KS:
        return ks_statistic(p["sorted"], values)
    if kind is SignalKind.PSI:
        return _psi_categorical(p["categories"], p["counts"], values.astype(np.int64))
    if kind is SignalKind.PSI_BINNED:
        return psi(p["counts"], bin_counts(values, p["edges"]))
    if kind is SignalKind.MMD:
        if p["sample"].shape[0] < 2 or values.shape[1] != p["sample"].shape[1]:
            return None
        window = _even_rows(values.astype(np.float64), MMD_WINDOW_ROWS)
        return mmd2_rbf(p["sample"], window, float(p["bandwidth"]), float(p["self_term"]))
    if kind is SignalKind.RATE:
        lam = float(p["rate_per_s"]) * span_s
        return abs(float(values.sum()) - lam) / float(np.sqrt(lam + 1.0))
    # SHARE
    succ, trials = values.reshape(-1, 2).sum(axis=0)
    p_ref = float(p["p"])
    var = max(p_ref * (1.0 - p_ref), 0.01) / float(trials)
    return abs(float(succ / trials) - p_ref) / float(np.sqrt(var))


def _psi_categorical(ref_cats: Payload, ref_counts: Float64Array, ids: Payload) -> float:
    cats, counts = np.unique(ids, return_counts=True)
    union = np.union1d(ref_cats, cats)
    p = np.zeros(union.size)
    q = np.zeros(union.size)
    p[np.searchsorted(union, ref_cats)] = ref_counts
    q[np.searchsorted(union, cats)] = counts
    return psi(p, q)
