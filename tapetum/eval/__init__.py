"""Evaluation: MOTChallenge I/O, simulated detections and multi-object-tracking metrics;
labelled image sets and COCO detection metrics.

Heavy dependencies (``trackeval``, which pulls in scipy; ``faster-coco-eval``; matplotlib)
are imported only when :func:`evaluate_runs`, :func:`evaluate_detector` /
:func:`evaluate_predictions` or :func:`tapetum.eval.plots.plot_pr_curves` are called;
install them with ``pip install tapetum[eval]``.

Example:
    >>> from functools import partial
    >>> from tapetum.eval import evaluate_runs, load_sequence, run_tracker
    >>> from tapetum.track import make_tracker
    >>> seq = load_sequence("MOT15/train/TUD-Campus")  # doctest: +SKIP
    >>> run = run_tracker(partial(make_tracker, "bytetrack"), seq)  # doctest: +SKIP
    >>> evaluate_runs([(seq, run.tracks)]).combined.hota  # doctest: +SKIP

Detection:
    >>> from tapetum.detect import DetectorConfig, YoloxDetector
    >>> from tapetum.eval import evaluate_detector, load_dataset
    >>> config = DetectorConfig(conf_threshold=0.001, nms_iou=0.65, max_detections=100)
    >>> det = YoloxDetector("yolox_nano.onnx", config)  # doctest: +SKIP
    >>> evaluate_detector(det, load_dataset("coco128", split="val2017")).map_50_95  # doctest: +SKIP
"""

from tapetum.eval.datasets import DetectionDataset, load_dataset
from tapetum.eval.detect import (
    BatchDetector,
    DetectionReport,
    evaluate_detector,
    evaluate_predictions,
)
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
    "BatchDetector",
    "DetectionDataset",
    "DetectionNoise",
    "DetectionReport",
    "DetectionRows",
    "GroundTruth",
    "MotSequence",
    "SequenceInfo",
    "SimulatedDetections",
    "TrackerFactory",
    "TrackerRun",
    "TrackingReport",
    "TrackingScores",
    "evaluate_detector",
    "evaluate_predictions",
    "evaluate_runs",
    "find_sequences",
    "load_dataset",
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
