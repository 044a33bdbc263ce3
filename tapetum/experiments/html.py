"""The HTML report: one self-contained page (inline SVG plots from matplotlib, inline CSS,
no external request of any kind), readable offline and attachable to a ticket.

Sections: the decision per variant with the rules and guardrails behind it; online
metrics (control and variants, intervals, effects); offline metrics; plots of the
confidence histograms per class, the latency CDFs, the per-class agreement with the
control, and the offline mAP with intervals.
"""

from __future__ import annotations

import html
import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from tapetum._types import Float64Array
from tapetum.experiments.metrics import METRICS, Scope

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tapetum.experiments.report import ExperimentReport

__all__ = ["render_html"]

#: matplotlib's SVG metadata entries, all left out (no dates: reports diff cleanly).
_SVG_METADATA = ("Creator", "Date", "Format", "Type")
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
_VERDICT_COLORS = {"promote": "#1a7f37", "hold": "#9a6700", "rollback": "#cf222e"}
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1180px;color:#1f2328;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;
margin-top:2em}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}th{background:#f6f8fa}
td.l,th.l{text-align:left}.verdict{display:inline-block;padding:2px 12px;border-radius:12px;
color:#fff;font-weight:600;text-transform:uppercase;letter-spacing:.04em}
.muted{color:#57606a}.pass{color:#1a7f37}.fail{color:#cf222e}.at_risk,.inconclusive,
.no_data{color:#9a6700}figure{margin:1em 0}figure svg{max-width:100%;height:auto}
figcaption{color:#57606a;font-size:13px}code{background:#f6f8fa;padding:1px 4px}
"""


def render_html(report: ExperimentReport, data: dict[str, Any]) -> str:
    """The page for ``report`` (``data`` is its ``to_dict()``)."""
    spec = report.spec
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>A/B {html.escape(spec.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>A/B experiment <code>{html.escape(spec.name)}</code></h1>",
        _run_line(report, data),
        _decisions(report),
        _online_table(report),
        _offline_table(report),
        _tracking_table(report),
        "<h2>Plots</h2>",
        *_plots(report),
        _footer(data),
        "<script>document.documentElement.dataset.plots = "
        "String(document.querySelectorAll('figure svg').length);</script>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


# ------------------------------------------------------------------------------ text


def _e(value: object) -> str:
    return html.escape(str(value))


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def _ci(lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f' <span class="muted">[{_fmt(lo)}, {_fmt(hi)}]</span>'


def _run_line(report: ExperimentReport, data: dict[str, Any]) -> str:
    spec = report.spec
    arms = ", ".join(f"<b>{_e(a.name)}</b>: {_e(_model_name(data, a.name))}" for a in spec.arms)
    mode = spec.mode.value + (
        f" by {spec.split_by.value} ("
        + ", ".join(f"{s.arm} {100 * s.share:.0f}%" for s in spec.shares)
        + ")"
        if spec.shares
        else ""
    )
    run = data.get("run", {})
    pipe = run.get("pipeline") or {}
    frames = pipe.get("frames_processed")
    units = data.get("units") or {}
    return (
        f"<p>Mode <b>{_e(mode)}</b>. Arms: {arms}.<br>"
        f'<span class="muted">{_e(frames if frames is not None else "no")} frames online, '
        f"{_e(units.get('units', 0))} units of {spec.window_s:g} s over "
        f"{_e(units.get('streams', 0))} stream(s); intervals {100 * spec.confidence:g}% "
        f"bootstrap ({spec.resamples} resamples, "
        f"{'paired' if report.paired else 'independent'} arms).</span></p>"
    )


def _model_name(data: dict[str, Any], arm: str) -> str:
    model = (data.get("arms", {}).get(arm) or {}).get("model") or {}
    if model.get("name"):
        via = f" @{model['alias']}" if model.get("alias") else ""
        return f"{model['name']}/{model['version']}{via}"
    return str(model.get("file") or "?")


def _decisions(report: ExperimentReport) -> str:
    out = ["<h2>Decision</h2>"]
    for name, decision in report.decisions.items():
        color = _VERDICT_COLORS[decision.verdict.value]
        out.append(
            f'<h3>{_e(name)} <span class="verdict" data-verdict="{decision.verdict.value}" '
            f'style="background:{color}">{decision.verdict.value}</span></h3>'
            f"<p>{_e(decision.summary)}</p>"
        )
        if decision.checks:
            out.append(
                '<table><tr><th class="l">check</th><th class="l">what</th><th>estimate</th>'
                '<th>interval</th><th class="l">outcome</th></tr>'
            )
            for c in decision.checks:
                lo, hi = c.interval
                interval = f"[{_fmt(lo)}, {_fmt(hi)}]" if math.isfinite(lo) else "–"
                out.append(
                    f'<tr><td class="l">{_e(c.kind)}</td><td class="l">{_e(c.description)}</td>'
                    f"<td>{_fmt(c.estimate)}</td><td>{interval}</td>"
                    f'<td class="l {c.outcome.value}">{_e(c.outcome.value)}</td></tr>'
                )
            out.append("</table>")
    return "\n".join(out)


def _metric_rows(report: ExperimentReport, scope: Scope) -> list[str]:
    spec = report.spec
    source = report.online if scope is Scope.ONLINE else report.offline
    rows = []
    for metric, meta in METRICS.items():
        if meta.scope is not scope or not any(metric in source.get(a.name, {}) for a in spec.arms):
            continue
        cells = [f'<td class="l" title="{_e(meta.description)}">{_e(metric)}</td>']
        for arm in spec.arms:
            est = source.get(arm.name, {}).get(metric)
            if est is None:
                cells.append("<td>–</td>")
                continue
            lo, hi = est.interval(spec.confidence)
            cells.append(f"<td>{_fmt(est.value)}{_ci(lo, hi)}</td>")
        for v in spec.variants:
            eff = report.effects.get(v.name, {}).get(metric)
            cells.append(
                f"<td>{_fmt(eff.diff)}{_ci(*eff.diff_ci)}</td>" if eff is not None else "<td>–</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return rows


def _metric_table(report: ExperimentReport, scope: Scope, title: str) -> str:
    rows = _metric_rows(report, scope)
    if not rows:
        return ""
    spec = report.spec
    head = ['<th class="l">metric</th>', *(f"<th>{_e(a.name)}</th>" for a in spec.arms)]
    head += [f"<th>{_e(v.name)} − control</th>" for v in spec.variants]
    return f"<h2>{_e(title)}</h2><table><tr>{''.join(head)}</tr>" + "".join(rows) + "</table>"


def _online_table(report: ExperimentReport) -> str:
    return _metric_table(report, Scope.ONLINE, "Online metrics")


def _offline_table(report: ExperimentReport) -> str:
    info = report.offline_info or {}
    title = "Offline metrics"
    if info.get("dataset"):
        title += f" ({info['dataset']}, {info.get('images')} images, {info.get('protocol')})"
    return _metric_table(report, Scope.OFFLINE, title)


def _tracking_table(report: ExperimentReport) -> str:
    info = report.offline_info or {}
    arms = info.get("arms", {})
    if not any((a or {}).get("tracking") for a in arms.values()):
        return ""
    rows = []
    for name, arm in arms.items():
        tracking = (arm or {}).get("tracking") or {}
        for seq, s in [
            *tracking.get("sequences", {}).items(),
            ("combined", tracking.get("combined", {})),
        ]:
            rows.append(
                f'<tr><td class="l">{_e(name)}</td><td class="l">{_e(seq)}</td>'
                + "".join(f"<td>{_fmt(s.get(k))}</td>" for k in ("hota", "idf1", "mota"))
                + f"<td>{_e(s.get('id_switches', '–'))}</td></tr>"
            )
    return (
        "<h2>Tracking (MOTChallenge, TrackEval)</h2><table><tr><th class='l'>arm</th>"
        "<th class='l'>sequence</th><th>HOTA</th><th>IDF1</th><th>MOTA</th><th>IDSW</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _footer(data: dict[str, Any]) -> str:
    run = data.get("run", {})
    machine = run.get("machine") or {}
    return (
        f'<p class="muted">Generated {_e(data.get("generated"))} by Tapetum '
        f"{_e(run.get('tapetum') or '')}; run {_e(run.get('started') or '–')} → "
        f"{_e(run.get('finished') or '–')}; load average at the end "
        f"{_e(machine.get('load_average'))}.</p>"
    )


# ----------------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Figure, salt: str) -> str:
    import matplotlib

    buf = io.StringIO()
    # A salt per figure keeps the SVG ids (clip paths, markers) unique within the page.
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata=dict.fromkeys(_SVG_METADATA))
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _figure_block(fig: Figure, salt: str, caption: str, plot: str) -> str:
    return (
        f'<figure data-plot="{_e(plot)}">{_svg(fig, salt)}'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _plots(report: ExperimentReport) -> list[str]:
    out = []
    if report.arms:
        out.append(_confidence_plot(report))
        out.append(_latency_plot(report))
    if report.class_agreement:
        out.append(_agreement_plot(report))
    if report.offline:
        out.append(_map_plot(report))
    return [p for p in out if p]


def _arm_color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def _confidence_plot(report: ExperimentReport, most: int = 6) -> str:
    from tapetum.experiments.report import CONFIDENCE_BINS

    arms = [report.arms[a.name] for a in report.spec.arms if a.name in report.arms]
    reference = arms[0]
    counts = np.bincount(reference.box_class, minlength=len(reference.class_names))
    if not counts.any():
        counts = sum(
            (np.bincount(a.box_class, minlength=len(a.class_names)) for a in arms),
            np.zeros(len(reference.class_names), np.int64),
        )
    top = [int(c) for c in np.argsort(-counts, kind="stable")[:most] if counts[c] > 0]
    if not top:
        return ""
    cols = min(3, len(top))
    rows = -(-len(top) // cols)
    fig = _figure(3.6 * cols, 2.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    edges = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)
    for ax, cls in zip(axes.flat, top, strict=False):
        for i, arm in enumerate(arms):
            conf = arm.box_confidence[arm.box_class == cls]
            hist, _ = np.histogram(conf, edges)
            density = hist / hist.sum() if hist.sum() else hist.astype(np.float64)
            ax.stairs(density, edges, label=f"{arm.name} ({conf.shape[0]})", color=_arm_color(i))
        ax.set_title(reference.class_names[cls], fontsize=10)
        ax.set_xlabel("confidence", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(top) :]:
        ax.set_visible(False)
    return _figure_block(
        fig,
        "confidence",
        "Confidence of the emitted boxes per class (share of the arm's boxes of the class; "
        "box counts in the legend).",
        "confidence",
    )


def _latency_plot(report: ExperimentReport) -> str:
    from tapetum.experiments.report import CDF_POINTS

    fig = _figure(7.0, 3.2)
    ax = fig.subplots()
    drawn = False
    for i, a in enumerate(report.spec.arms):
        arm = report.arms.get(a.name)
        if arm is None:
            continue
        latency = np.sort(arm.latency_ms[~arm.failed].astype(np.float64))
        latency = latency[np.isfinite(latency) & (latency > 0)]
        if latency.size == 0:
            continue
        pick = np.unique(
            np.linspace(0, latency.size - 1, min(CDF_POINTS, latency.size)).astype(int)
        )
        ax.step(
            latency[pick],
            (pick + 1) / latency.size,
            where="post",
            color=_arm_color(i),
            label=a.name,
        )
        drawn = True
    if not drawn:
        return ""
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("fraction of frames")
    ax.axhline(0.99, color="#888", lw=0.6, ls=":")
    ax.grid(alpha=0.3)
    ax.legend()
    return _figure_block(fig, "latency", "Latency CDF per arm (dotted line: p99).", "latency")


def _agreement_plot(report: ExperimentReport, most: int = 10) -> str:
    variants = [v for v in report.spec.variants if v.name in report.class_agreement]
    fig = _figure(max(6.0, 0.9 * most), 2.8 * len(variants))
    axes = fig.subplots(len(variants), 1, squeeze=False)[:, 0]
    for ax, v in zip(axes, variants, strict=True):
        per = report.class_agreement[v.name]
        classes = sorted(per, key=lambda c: -per[c]["boxes_control"][0])[:most]
        x = np.arange(len(classes))
        for j, metric in enumerate(("precision", "recall", "f1")):
            vals = np.asarray([per[c][metric] for c in classes], np.float64).reshape(-1, 3)
            err = _errors(vals)
            ax.bar(
                x + (j - 1) * 0.27,
                vals[:, 0],
                0.27,
                yerr=err,
                capsize=2,
                label=metric,
                color=_COLORS[j],
                error_kw={"lw": 0.8},
            )
        ax.set_xticks(x, classes, fontsize=8, rotation=20)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{v.name} vs control (IoU 0.5)", fontsize=10)
        ax.legend(fontsize=7, ncol=3)
    return _figure_block(
        fig,
        "agreement",
        "Agreement of each variant's boxes with the control's per class, with intervals "
        "(classes with the most control boxes).",
        "agreement",
    )


def _map_plot(report: ExperimentReport) -> str:
    metrics = [
        m
        for m in ("map_50_95", "map_50", "recall_50", "recall_75", "hota", "idf1")
        if any(m in report.offline.get(a.name, {}) for a in report.spec.arms)
    ]
    if not metrics:
        return ""
    arms = [a.name for a in report.spec.arms if a.name in report.offline]
    fig = _figure(max(6.0, 1.3 * len(metrics)), 3.2)
    ax = fig.subplots()
    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(arms))
    for i, name in enumerate(arms):
        vals = []
        for m in metrics:
            est = report.offline[name].get(m)
            if est is None:
                vals.append((math.nan, math.nan, math.nan))
            else:
                vals.append((est.value, *est.interval(report.spec.confidence)))
        arr = np.asarray(vals, np.float64)
        ax.bar(
            x + (i - (len(arms) - 1) / 2) * width,
            arr[:, 0],
            width,
            yerr=_errors(arr),
            capsize=3,
            label=name,
            color=_arm_color(i),
            error_kw={"lw": 0.8},
        )
    ax.set_xticks(x, metrics, fontsize=8)
    ax.set_ylim(0, 1.0)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _figure_block(
        fig,
        "offline",
        "Offline metrics per arm with image-bootstrap intervals (tracking metrics without).",
        "map",
    )


def _errors(values: Float64Array) -> Float64Array:
    """(2, N) distances from each value to its interval ends (0 where unknown)."""
    v, lo, hi = values[:, 0], values[:, 1], values[:, 2]
    err = np.vstack([v - lo, hi - v])
    err[~np.isfinite(err)] = 0.0
    clipped: Float64Array = np.clip(err, 0.0, None)
    return clipped
