"""Run a tracker over MOTChallenge sequences and score it with TrackEval.

The metric math is TrackEval's (``trackeval`` on PyPI, the MOTChallenge organisers'
reference code; HOTA, CLEAR MOT and identity metrics), including its MOTChallenge rules:

* only pedestrians (class 1) are evaluated; rows with ``consider == 0`` are ignored;
* tracker boxes matched (IoU >= 0.5) to a distractor class (person on vehicle, static
  person, distractor, reflection; MOT20 also non-MOT vehicle) are removed before scoring;
* MOT15 has no classes, so neither step applies there.

Tapetum only moves data: ground truth and tracks are written as MOTChallenge text files into
a temporary folder and TrackEval's own ``MotChallenge2DBox`` reader parses them, so the
preprocessing is exactly the reference's. ``trackeval`` 1.3.0 runs under numpy 2.x.

Example:
    >>> from functools import partial
    >>> from tapetum.eval import evaluate_runs, load_sequence, run_tracker
    >>> from tapetum.track import make_tracker
    >>> seq = load_sequence("MOT15/train/TUD-Campus")  # doctest: +SKIP
    >>> run = run_tracker(partial(make_tracker, "bytetrack"), seq)  # doctest: +SKIP
    >>> report = evaluate_runs([(seq, run.tracks)])  # doctest: +SKIP
    >>> round(report.combined.mota, 3)  # doctest: +SKIP
    0.401
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tapetum._optional import import_optional
from tapetum._types import Float64Array
from tapetum.core.detections import Detections
from tapetum.errors import ConfigError
from tapetum.eval.mot import Benchmark, GroundTruth, MotSequence, write_tracks
from tapetum.track.base import Tracker

#: Builds a fresh tracker for a stream at the given frame rate (frames per second), e.g.
#: ``functools.partial(make_tracker, "bytetrack")``.
TrackerFactory = Callable[[float], Tracker]


@dataclass(frozen=True, slots=True)
class TrackerRun:
    """A tracker's output on one sequence.

    Attributes:
        sequence: sequence name.
        tracks: one Detections per frame (index 0 is frame 1), ``tracker_id`` set.
        frame_times_ms: (T,) float64, wall time of each ``tracker.update`` call in
            milliseconds.
    """

    sequence: str
    tracks: list[Detections]
    frame_times_ms: Float64Array

    def latency_ms(self, percentile: float) -> float:
        """A percentile (0-100) of the per-frame tracker time, milliseconds."""
        if self.frame_times_ms.size == 0:
            return 0.0
        return float(np.percentile(self.frame_times_ms, percentile))


def run_tracker(
    tracker_factory: TrackerFactory,
    sequence: MotSequence,
    detections: Sequence[Detections] | None = None,
) -> TrackerRun:
    """Feed a sequence's detections, frame by frame, through a fresh tracker.

    Args:
        tracker_factory: builds the tracker, given the sequence frame rate in fps.
        sequence: the sequence (its length and frame rate are used).
        detections: one Detections per frame (index 0 is frame 1); None uses the
            sequence's public detections (``det/det.txt``).

    Returns:
        The tracks and the per-frame tracker time (the ``update`` call only, no I/O).

    Raises:
        ConfigError: no detections were given and the sequence has none, or their number of
            frames differs from the sequence length.
    """
    frames = sequence.public_detections() if detections is None else list(detections)
    if len(frames) != sequence.info.length_frames:
        raise ConfigError(
            f"{sequence.name}: {len(frames)} frames of detections, sequence has "
            f"{sequence.info.length_frames}"
        )
    tracker = tracker_factory(sequence.info.frame_rate_fps)
    tracks: list[Detections] = []
    times_ms = np.empty(len(frames), np.float64)
    for t, dets in enumerate(frames):
        start_ns = time.perf_counter_ns()
        out = tracker.update(dets)
        times_ms[t] = (time.perf_counter_ns() - start_ns) / 1e6
        tracks.append(out)
    return TrackerRun(sequence=sequence.name, tracks=tracks, frame_times_ms=times_ms)


@dataclass(frozen=True, slots=True)
class TrackingScores:
    """TrackEval's headline metrics for one sequence or a combination of sequences.

    HOTA, DetA and AssA are averaged over TrackEval's 19 IoU thresholds (0.05 ... 0.95);
    MOTA and IDF1 use IoU >= 0.5. Ratios are fractions (1.0 is perfect), not percent.

    Attributes:
        hota: higher-order tracking accuracy, ``sqrt(DetA * AssA)``.
        deta: detection accuracy.
        assa: association accuracy.
        mota: multi-object tracking accuracy, ``1 - (FN + FP + IDSW) / gt_dets``.
        idf1: identity F1 score.
        id_switches: identity switches (IDSW).
        false_positives: tracker boxes matching no ground truth (IoU >= 0.5).
        misses: ground-truth boxes matched by no tracker box (FN).
        gt_dets: evaluated ground-truth boxes.
        tracker_dets: tracker boxes left after distractor removal.
        gt_ids: evaluated ground-truth identities.
        tracker_ids: tracker identities.
    """

    hota: float
    deta: float
    assa: float
    mota: float
    idf1: float
    id_switches: int
    false_positives: int
    misses: int
    gt_dets: int
    tracker_dets: int
    gt_ids: int
    tracker_ids: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain ``{name: value}`` for JSON."""
        return asdict(self)

    @classmethod
    def _from_trackeval(cls, res: dict[str, dict[str, Any]]) -> TrackingScores:
        hota, clear, ident, count = res["HOTA"], res["CLEAR"], res["Identity"], res["Count"]
        return cls(
            hota=float(np.mean(hota["HOTA"])),
            deta=float(np.mean(hota["DetA"])),
            assa=float(np.mean(hota["AssA"])),
            mota=float(clear["MOTA"]),
            idf1=float(ident["IDF1"]),
            id_switches=int(clear["IDSW"]),
            false_positives=int(clear["CLR_FP"]),
            misses=int(clear["CLR_FN"]),
            gt_dets=int(count["GT_Dets"]),
            tracker_dets=int(count["Dets"]),
            gt_ids=int(count["GT_IDs"]),
            tracker_ids=int(count["IDs"]),
        )


@dataclass(frozen=True, slots=True)
class TrackingReport:
    """Scores per sequence (in the order given) and over all of them.

    ``combined`` is TrackEval's ``COMBINED_SEQ``: counts summed over sequences, then the
    ratios computed (so long sequences weigh more), as the MOTChallenge leaderboard does.
    """

    sequences: dict[str, TrackingScores]
    combined: TrackingScores


def evaluate_runs(
    runs: Sequence[tuple[MotSequence, Sequence[Detections]]],
) -> TrackingReport:
    """Score tracker output against ground truth with TrackEval (HOTA, CLEAR, Identity).

    Args:
        runs: ``(sequence, tracks)`` pairs; ``tracks`` is one Detections per frame (index
            0 is frame 1) with ``tracker_id`` set, e.g. ``TrackerRun.tracks``. Sequence
            names must be unique; each sequence needs ground truth.

    Returns:
        Per-sequence and combined scores.

    Raises:
        ConfigError: a sequence has no ground truth, names repeat, or ``runs`` is empty.
    """
    trackeval = import_optional("trackeval", "eval", "tracking evaluation")
    from trackeval.eval import eval_sequence  # type: ignore[import-untyped]

    if not runs:
        raise ConfigError("nothing to evaluate: no sequences given")
    names = [seq.name for seq, _ in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"sequence names must be unique, got {names}")
    metrics = [
        trackeval.metrics.HOTA({"PRINT_CONFIG": False}),
        trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
        trackeval.metrics.Identity({"PRINT_CONFIG": False}),
        trackeval.metrics.Count({"PRINT_CONFIG": False}),
    ]
    metric_names = [m.get_name() for m in metrics]
    by_benchmark: dict[Benchmark, list[tuple[MotSequence, Sequence[Detections]]]] = {}
    for seq, tracks in runs:
        if seq.gt is None:
            raise ConfigError(f"sequence {seq.name} has no ground truth (gt/gt.txt)")
        by_benchmark.setdefault(seq.gt.benchmark, []).append((seq, tracks))

    per_seq: dict[str, dict[str, dict[str, Any]]] = {}
    # TrackEval prints progress and config; keep the library quiet inside ours.
    with (
        tempfile.TemporaryDirectory(prefix="tapetum-eval-") as tmp,
        contextlib.redirect_stdout(io.StringIO()),
    ):
        root = Path(tmp)
        for benchmark, group in by_benchmark.items():
            gt_dir, trk_dir = root / benchmark / "gt", root / benchmark / "trackers"
            for seq, tracks in group:
                assert seq.gt is not None
                _write_ground_truth(gt_dir / seq.name / "gt" / "gt.txt", seq.gt)
                write_tracks(trk_dir / "tapetum" / "data" / f"{seq.name}.txt", tracks)
            dataset = trackeval.datasets.MotChallenge2DBox(
                {
                    "GT_FOLDER": str(gt_dir),
                    "TRACKERS_FOLDER": str(trk_dir),
                    "TRACKERS_TO_EVAL": ["tapetum"],
                    "BENCHMARK": benchmark,
                    "SKIP_SPLIT_FOL": True,
                    "SEQ_INFO": {s.name: s.info.length_frames for s, _ in group},
                    "PRINT_CONFIG": False,
                }
            )
            for seq, _ in group:
                try:
                    res = eval_sequence(
                        seq.name, dataset, "tapetum", ["pedestrian"], metrics, metric_names
                    )
                except trackeval.utils.TrackEvalException as exc:
                    raise ValueError(f"{seq.name}: TrackEval rejected the data: {exc}") from exc
                per_seq[seq.name] = res["pedestrian"]

    combined = {
        name: metric.combine_sequences({s: per_seq[s][name] for s in names})
        for metric, name in zip(metrics, metric_names, strict=True)
    }
    return TrackingReport(
        sequences={s: TrackingScores._from_trackeval(per_seq[s]) for s in names},
        combined=TrackingScores._from_trackeval(combined),
    )


def _write_ground_truth(path: Path, gt: GroundTruth) -> None:
    """Write ground truth in its benchmark's MOTChallenge layout, for TrackEval to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(gt)
    if gt.benchmark == "MOT15":  # frame,id,x,y,w,h,consider,-1,-1,-1 (world coords dropped)
        tail = np.full((n, 3), -1.0)
        tail_fmt = ["%d", "%d", "%d"]
    else:  # frame,id,x,y,w,h,consider,class,visibility
        tail = np.stack([gt.class_id, gt.visibility.astype(np.float64)], axis=1)
        tail_fmt = ["%d", "%.6g"]
    table = np.concatenate(
        [
            np.stack([gt.frame, gt.track_id], axis=1).astype(np.float64),
            gt.tlwh,
            gt.consider.astype(np.float64)[:, None],
            tail,
        ],
        axis=1,
    )
    fmt = ["%d", "%d", "%.10g", "%.10g", "%.10g", "%.10g", "%d", *tail_fmt]
    np.savetxt(path, table, fmt=fmt, delimiter=",")
