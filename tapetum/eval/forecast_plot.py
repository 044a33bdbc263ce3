"""A picture of forecasts: a few tracks' paths, forecasts and uncertainty ellipses drawn over
a real frame of a MOTChallenge sequence (matplotlib, imported when called).

The forecasters follow the ground-truth tracks from the first frame to the drawn one, as in
:mod:`tapetum.eval.forecast`; each selected track shows its past path (white), its true
future (dashed white), and per forecaster the forecast path with 1- and 2-sigma ellipses at
every requested horizon.

Example:
    >>> from tapetum.eval import load_sequence
    >>> from tapetum.eval.forecast import default_forecasters
    >>> from tapetum.eval.forecast_plot import plot_forecasts
    >>> seq = load_sequence("MOT17/train/MOT17-04-FRCNN")  # doctest: +SKIP
    >>> plot_forecasts(seq, default_forecasters(), "forecasts.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tapetum.errors import DatasetError
from tapetum.eval.forecast import ForecasterFactory
from tapetum.eval.mot import MotSequence
from tapetum.track.forecast import forecast_ellipses

__all__ = ["frames_with_images", "plot_forecasts"]

_COLOURS = ("#ffb000", "#00c8ff", "#ff4fd8", "#7cff4f")


def frames_with_images(seq: MotSequence) -> list[int]:
    """1-based frame numbers whose image is in the sequence's ``img1`` folder."""
    if seq.path is None:
        return []
    return sorted(int(p.stem) for p in (seq.path / "img1").glob("*.jpg") if p.stem.isdigit())


def plot_forecasts(
    seq: MotSequence,
    forecasters: Mapping[str, ForecasterFactory],
    out: str | Path,
    *,
    frame: int | None = None,
    horizons_s: tuple[float, ...] = (1.0, 2.0),
    max_tracks: int = 5,
    history_s: float = 1.0,
) -> Path:
    """Draw forecasts made at ``frame`` over that frame's image and save a PNG.

    Args:
        seq: a sequence with ground truth and at least one frame image in ``img1``.
        forecasters: name → factory; each follows the ground truth up to ``frame``.
        out: the PNG to write.
        frame: 1-based frame to draw (default: the last one with an image).
        horizons_s: where ellipses are drawn, seconds ahead.
        max_tracks: tracks drawn: the largest boxes with ground truth over the whole horizon
            (ellipses of far, small people are too small to see).
        history_s: length of the past path drawn, seconds.

    Returns:
        ``out`` as a Path.

    Raises:
        DatasetError: no ground truth, no frame image, or no track to draw at ``frame``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    gt = seq.gt
    images = frames_with_images(seq)
    if gt is None or not images:
        raise DatasetError(f"{seq.name}: a forecast plot needs ground truth and img1 frames")
    frame = frame if frame is not None else images[-1]
    if frame not in images:
        raise DatasetError(f"{seq.name}: no image for frame {frame} (have {images})")
    fps = seq.info.frame_rate_fps
    keep = gt.evaluated
    frames, ids, tlwh = gt.frame[keep], gt.track_id[keep], gt.tlwh[keep]
    centers = tlwh[:, :2] + 0.5 * tlwh[:, 2:]
    heights = tlwh[:, 3]
    steps = np.arange(1, round(max(horizons_s) * fps) + 1)

    now = frames == frame
    future_ok = np.array(
        [np.isin(frame + steps, frames[ids == i]).all() for i in ids[now]], dtype=bool
    )
    candidates = np.flatnonzero(now)[future_ok]
    if candidates.size == 0:
        raise DatasetError(f"{seq.name}: no track at frame {frame} has a full future to draw")
    chosen = candidates[np.argsort(-heights[candidates])[:max_tracks]]
    chosen_ids = ids[chosen]

    forecasts = {}
    for name, factory in forecasters.items():
        forecaster = factory()
        for f in range(1, frame + 1):
            rows = frames == f
            if rows.any():
                forecaster.update(ids[rows], centers[rows], (f - 1) / fps, heights[rows])
        dense = forecaster.predict(chosen_ids, steps / fps)
        marks = forecaster.predict(chosen_ids, np.asarray(horizons_s))
        forecasts[name] = (dense, marks)

    assert seq.path is not None  # frames_with_images found images under it
    image = plt.imread(str(seq.path / "img1" / f"{frame:06d}.jpg"))
    fig, ax = plt.subplots(figsize=(12, 12 * seq.info.height_px / seq.info.width_px), dpi=110)
    ax.imshow(image)
    ax.set_axis_off()
    history_frames = round(history_s * fps)
    for row, track in zip(chosen, chosen_ids.tolist(), strict=True):
        mine = ids == track
        past = mine & (frames <= frame) & (frames > frame - history_frames)
        future = mine & (frames > frame) & (frames <= frame + steps[-1])
        order_p, order_f = np.argsort(frames[past]), np.argsort(frames[future])
        ax.plot(*centers[past][order_p].T, color="white", lw=1.5)
        ax.plot(*centers[future][order_f].T, color="white", lw=1.2, ls="--")
        ax.plot(*centers[row], "o", color="white", ms=3)
    for colour, (name, (dense, marks)) in zip(_COLOURS, forecasts.items(), strict=False):
        for n_sigma, style in ((1.0, ":"), (2.0, "-")):
            ell = forecast_ellipses(marks, n_sigma)
            for i in range(len(marks)):
                for h in range(len(horizons_s)):
                    if not marks.valid[i]:
                        continue
                    ax.add_patch(
                        Ellipse(
                            tuple(marks.mean_px[i, h]),
                            2 * ell.semi_major_px[i, h],
                            2 * ell.semi_minor_px[i, h],
                            angle=ell.angle_deg[i, h],
                            fill=False,
                            ec=colour,
                            lw=1.2,
                            ls=style,
                        )
                    )
        for i in range(len(dense)):
            if dense.valid[i]:
                start = centers[chosen[i]][None]
                ax.plot(*np.concatenate((start, dense.mean_px[i])).T, color=colour, lw=1.5)
        ax.plot([], [], color=colour, lw=2, label=name)
    ax.plot([], [], color="white", ls="--", label="truth")
    ax.legend(loc="upper right", framealpha=0.6)
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    horizons = ", ".join(f"{h:g}" for h in horizons_s)
    ax.set_title(
        f"{seq.name} frame {frame} ({(frame - 1) / fps:.2f} s of history): forecasts at "
        f"+{horizons} s, 1-sigma (dotted) and 2-sigma (solid) ellipses",
        fontsize=10,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out
