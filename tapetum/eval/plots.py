"""Pictures of a :class:`~tapetum.eval.detect.DetectionReport` (matplotlib, imported lazily).

Drawn on a bare ``Figure`` with the Agg canvas, never through ``pyplot``: no global backend
is switched and no GUI is needed.

Example:
    >>> from tapetum.eval.plots import plot_pr_curves
    >>> plot_pr_curves(report, "pr.png")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tapetum._optional import import_optional

if TYPE_CHECKING:
    from tapetum.eval.detect import DetectionReport


def plot_pr_curves(report: DetectionReport, path: str | Path, *, top_k: int = 5) -> Path:
    """Write a PNG with three panels: the precision/recall curves at IoU 0.5 and at IoU
    0.75 (the class mean in black, the ``top_k`` best and worst classes by AP thin), and a
    bar chart of the ``top_k`` best and worst classes' AP@[.5:.95].

    Returns:
        The path written (parent folders are created).
    """
    import_optional("matplotlib", "eval", "plotting precision/recall curves")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ranked = sorted(report.per_class_ap, key=lambda n: report.per_class_ap[n], reverse=True)
    best = ranked[:top_k]
    worst = [n for n in ranked[-top_k:] if n not in best]

    fig = Figure(figsize=(16, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    panels = (
        ("IoU 0.5", report.map_50, report.precision_50, report.class_precision_50),
        ("IoU 0.75", report.map_75, report.precision_75, report.class_precision_75),
    )
    recall = report.recall_thresholds
    for ax, (title, ap, mean_curve, per_class) in zip(axes[:2], panels, strict=True):
        for names, style in ((best, "-"), (worst, ":")):
            for name in names:
                ax.plot(recall, per_class[name], style, linewidth=1.0, label=name)
        ax.plot(recall, mean_curve, "k-", linewidth=2.5, label=f"all classes (AP {ap:.3f})")
        ax.set(
            title=f"Precision/recall at {title}",
            xlabel="recall",
            ylabel="precision (interpolated)",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    bars = [*best, *worst]
    values = [report.per_class_ap[n] for n in bars]
    colours = ["tab:green"] * len(best) + ["tab:red"] * len(worst)
    ax = axes[2]
    ax.barh(range(len(bars)), values, color=colours)
    ax.set_yticks(range(len(bars)), bars, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(report.map_50_95, color="k", linestyle="--", linewidth=1)
    ax.set(
        title=f"Best and worst {top_k} classes (mAP {report.map_50_95:.3f}, dashed)",
        xlabel="AP@[.5:.95]",
        xlim=(0, 1),
    )
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        f"{report.images} images, {report.ground_truth_objects} objects, "
        f"{report.detections} detections ({report.evaluator})"
    )
    fig.savefig(out, dpi=110)
    return out
