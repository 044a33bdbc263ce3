"""Evaluation: MOTChallenge I/O, simulated detections and multi-object-tracking metrics.

Heavy dependencies (``trackeval``, which pulls in scipy) are imported only when
:func:`evaluate_runs` is called; install them with ``pip install tapetum[eval]``.

Example:
    >>> from functools import partial
    >>> from tapetum.eval import evaluate_runs, load_sequence, run_tracker
    >>> from tapetum.track import make_tracker
    >>> seq = load_sequence("MOT15/train/TUD-Campus")  # doctest: +SKIP
    >>> run = run_tracker(partial(make_tracker, "bytetrack"), seq)  # doctest: +SKIP
    >>> evaluate_runs([(seq, run.tracks)]).combined.hota  # doctest: +SKIP
"""

from tapetum.eval.mot import (
    DetectionRows,
    GroundTruth,
    MotSequence,
    SequenceInfo,
    find_sequences,
    load_sequence,
    normalize_detection_scores,
    read_detections,
    read_ground_truth,
    read_seqinfo,
    read_tracks,
    write_tracks,
)
from tapetum.eval.noise import DetectionNoise, SimulatedDetections, simulate_detections
from tapetum.eval.track_metrics import (
    TrackerFactory,
    TrackerRun,
    TrackingReport,
    TrackingScores,
    evaluate_runs,
    run_tracker,
)

__all__ = [
    "DetectionNoise",
    "DetectionRows",
    "GroundTruth",
    "MotSequence",
    "SequenceInfo",
    "SimulatedDetections",
    "TrackerFactory",
    "TrackerRun",
    "TrackingReport",
    "TrackingScores",
    "evaluate_runs",
    "find_sequences",
    "load_sequence",
    "normalize_detection_scores",
    "read_detections",
    "read_ground_truth",
    "read_seqinfo",
    "read_tracks",
    "run_tracker",
    "simulate_detections",
    "write_tracks",
]
