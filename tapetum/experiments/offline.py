"""Offline comparison on labelled data: detection mAP with image-bootstrap intervals, and
HOTA/IDF1 on MOTChallenge sequences.

Every image is decoded once and given to every arm. The point values are the project's
detector evaluation (:func:`tapetum.eval.detect.evaluate_predictions`, faster-coco-eval)
and tracking evaluation (:func:`tapetum.eval.track_metrics.evaluate_runs`, TrackEval).

The intervals resample *images* (paired: the same images for every arm). Re-running COCOeval
per resample would take a third of a second each; instead each arm's detections are matched
to the ground truth once, per image and category at the ten IoU thresholds, exactly as
COCOeval's ``evaluateImg`` does (score order, at most 100 per image, crowd regions absorb
without counting, the non-crowd match with the highest IoU first), and a resample only
re-weights the images in COCOeval's ``accumulate``: cumulative true and false positives
weighted by how often each image was drawn, recall against the weighted ground-truth count,
precision made monotone and read at the 101 recall points. With every weight 1 this *is*
COCOeval (the tests check it against faster-coco-eval to 1e-6).

MOT sequences are scored on the frames present in their ``img1`` folders (the ground truth
is cut to them): each arm's detector, persons only, then its tracker.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tapetum._types import BoolArray, Float64Array, IntArray
from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError, DatasetError, ExperimentSpecError
from tapetum.eval.datasets import DetectionDataset
from tapetum.experiments.arms import LoadedArm
from tapetum.experiments.spec import OfflineSpec
from tapetum.experiments.stats import Estimate, resample_weights
from tapetum.track.kernels.jit import njit

__all__ = [
    "IOU_THRESHOLDS",
    "CocoMatches",
    "OfflineArm",
    "OfflineResult",
    "coco_metrics",
    "evaluate_offline",
    "match_coco",
]

log = logging.getLogger(__name__)

#: COCO's IoU thresholds 0.50:0.05:0.95 and recall points 0:0.01:1.
IOU_THRESHOLDS: Float64Array = np.linspace(0.5, 0.95, 10)
RECALL_POINTS: Float64Array = np.linspace(0.0, 1.0, 101)
_MAX_DETS = 100
#: COCO's area range "all" ends at 1e5² square pixels.
_MAX_AREA = 1e10
_T50, _T75 = 0, 5

#: COCO-protocol thresholds (``offline.protocol: coco``).
COCO_CONF, COCO_NMS, COCO_MAX_DET = 0.001, 0.65, 100

#: Offline metrics with intervals, and those reported as points.
DETECTION_METRICS = ("map_50_95", "map_50", "recall_50", "recall_75")
TRACKING_METRICS = ("hota", "idf1")


# ---------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class CocoMatches:
    """One arm's detections matched to the ground truth, per category.

    Attributes:
        image_ids: (I,) evaluated image ids, ascending.
        categories: category ids scored.
        det_image: per category, (D,) image position (into ``image_ids``) of each scored
            detection, in COCO's accumulate order (score, descending, stable).
        det_tp: per category, (T, D) matched a non-crowd box at threshold t.
        det_fp: per category, (T, D) matched nothing at threshold t (a detection that only
            hit a crowd region is neither).
        gt_count: (K, I) non-crowd ground-truth boxes per category and image.
    """

    image_ids: IntArray
    categories: tuple[int, ...]
    det_image: list[IntArray]
    det_tp: list[BoolArray]
    det_fp: list[BoolArray]
    gt_count: Float64Array


def _iou_with_crowd(dt: Float64Array, gt: Float64Array, crowd: BoolArray) -> Float64Array:
    """(D, G) IoU of xywh boxes; against a crowd box the intersection over the detection's
    own area (COCO's ``iscrowd`` rule)."""
    dx2, dy2 = dt[:, 0] + dt[:, 2], dt[:, 1] + dt[:, 3]
    gx2, gy2 = gt[:, 0] + gt[:, 2], gt[:, 1] + gt[:, 3]
    iw = np.minimum(dx2[:, None], gx2) - np.maximum(dt[:, 0:1], gt[:, 0])
    ih = np.minimum(dy2[:, None], gy2) - np.maximum(dt[:, 1:2], gt[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_d = (dt[:, 2] * dt[:, 3])[:, None]
    union = np.where(crowd[None, :], area_d, area_d + gt[:, 2] * gt[:, 3] - inter)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def _match_image(
    dt: Float64Array, gt: Float64Array, crowd: BoolArray
) -> tuple[BoolArray, BoolArray]:
    """COCOeval's greedy matching of one image and category, all thresholds at once.

    ``dt`` (D, 4) in score order, ``gt`` (G, 4) with the non-crowd boxes first. Returns
    (T, D) matched-to-non-crowd and matched-to-crowd flags.
    """
    t_count, d_count = IOU_THRESHOLDS.shape[0], dt.shape[0]
    tp = np.zeros((t_count, d_count), np.bool_)
    # An unmatched detection of an area outside the range (area "all": a negative one,
    # from a box with x2 < x1) is ignored, not a false positive.
    area = dt[:, 2] * dt[:, 3]
    ignored = np.repeat(((area < 0) | (area > _MAX_AREA))[None, :], t_count, axis=0)
    if d_count == 0 or gt.shape[0] == 0:
        return tp, ignored
    ious = _iou_with_crowd(dt, gt, crowd)
    n_real = int((~crowd).sum())
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
    taken = np.zeros((t_count, n_real), np.bool_)
    rows = np.arange(t_count)
    for d in range(d_count):  # greedy by score: a detection takes the best box still free
        real = ious[d, :n_real]
        free = ~taken & (real[None, :] >= thresholds)
        hit = free.any(axis=1)
        if hit.any():
            scores = np.where(free, real[None, :], -1.0)
            # COCOeval keeps the last of equal IoUs (it replaces on >=).
            best = n_real - 1 - np.argmax(scores[:, ::-1], axis=1)
            taken[rows[hit], best[hit]] = True
            tp[:, d] = hit
        crowd_hit = (ious[d, n_real:][None, :] >= thresholds).any(axis=1)
        ignored[:, d] = ~hit & (crowd_hit | ignored[:, d])
    return tp, ignored


def match_coco(
    dataset: DetectionDataset,
    predictions: Mapping[int, Detections],
    class_names: Sequence[str],
) -> CocoMatches:
    """Match one arm's detections (image id → Detections in image pixels) to the ground
    truth of ``dataset`` (every image of it), as COCOeval does for area "all" and 100
    detections per image."""
    category_of_class = dataset.category_ids_for(tuple(class_names))
    categories = tuple(int(c) for c in np.unique(category_of_class) if c >= 0)
    cat_pos = {c: k for k, c in enumerate(categories)}
    image_ids = np.asarray(dataset.image_ids, np.int64)
    gts: dict[tuple[int, int], list[tuple[list[float], bool]]] = {}
    for ann in dataset.ground_truth["annotations"]:
        if ann["category_id"] in cat_pos:
            key = (int(ann["image_id"]), int(ann["category_id"]))
            gts.setdefault(key, []).append((ann["bbox"], bool(ann["iscrowd"])))
    k_count, i_count = len(categories), image_ids.shape[0]
    gt_count = np.zeros((k_count, i_count))
    parts: list[list[tuple[IntArray, Float64Array, BoolArray, BoolArray]]] = [
        [] for _ in categories
    ]
    for i, image_id in enumerate(image_ids.tolist()):
        dets = predictions.get(image_id, Detections.empty())
        cats = category_of_class[dets.class_id] if len(dets) else np.empty(0, np.int64)
        xyxy = dets.xyxy.astype(np.float64)
        xywh = np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]])
        present = {c for (img, c) in gts if img == image_id} | set(cats[cats >= 0].tolist())
        for cat in sorted(present):
            k = cat_pos[cat]
            boxes = gts.get((image_id, cat), [])
            crowd = np.asarray([c for _, c in boxes], np.bool_)
            order = np.argsort(crowd, kind="mergesort")  # non-crowd first
            gt = np.asarray([b for b, _ in boxes], np.float64).reshape(-1, 4)[order]
            crowd = crowd[order]
            gt_count[k, i] = float((~crowd).sum())
            mine = np.flatnonzero(cats == cat)
            mine = mine[np.argsort(-dets.confidence[mine], kind="mergesort")][:_MAX_DETS]
            tp, ignored = _match_image(xywh[mine], gt, crowd)
            parts[k].append(
                (
                    np.full(mine.shape[0], i, np.int64),
                    dets.confidence[mine].astype(np.float64),
                    tp,
                    ignored,
                )
            )
    det_image, det_tp, det_fp = [], [], []
    for k in range(k_count):
        if parts[k]:
            img = np.concatenate([p[0] for p in parts[k]])
            score = np.concatenate([p[1] for p in parts[k]])
            tp = np.concatenate([p[2] for p in parts[k]], axis=1)
            ign = np.concatenate([p[3] for p in parts[k]], axis=1)
        else:
            img, score = np.empty(0, np.int64), np.empty(0)
            tp = ign = np.zeros((IOU_THRESHOLDS.shape[0], 0), np.bool_)
        order = np.argsort(-score, kind="mergesort")
        det_image.append(img[order])
        det_tp.append(tp[:, order])
        det_fp.append(~tp[:, order] & ~ign[:, order])
    return CocoMatches(image_ids, categories, det_image, det_tp, det_fp, gt_count)


# --------------------------------------------------------------------------- accumulate


def coco_metrics(
    matches: CocoMatches, weights: Float64Array | None = None
) -> dict[str, Float64Array]:
    """mAP@[.5:.95], mAP@.5, recall@.5 and recall@.75 under image ``weights`` (B, I)
    (None: every image once, COCOeval's numbers); each (B,) (NaN where no category of the
    resample has ground truth)."""
    w = np.ones((1, matches.image_ids.shape[0])) if weights is None else weights
    w = np.ascontiguousarray(w, np.float64)
    b_count, t_count = w.shape[0], IOU_THRESHOLDS.shape[0]
    k_count = len(matches.categories)
    ap, ap50, rec50, rec75 = (np.full((b_count, k_count), np.nan) for _ in range(4))
    precision = np.empty((b_count, t_count))
    recall = np.empty((b_count, t_count))
    for k in range(k_count):
        npig = w @ matches.gt_count[k]  # (B,) weighted ground truth of the category
        _accumulate(
            w,
            matches.det_image[k],
            matches.det_tp[k],
            matches.det_fp[k],
            npig,
            RECALL_POINTS,
            np.spacing(1.0),
            precision,
            recall,
        )
        valid = npig > 0  # COCOeval leaves a category without ground truth out (-1)
        ap[valid, k] = precision[valid].mean(axis=1)
        ap50[valid, k] = precision[valid, _T50]
        rec50[valid, k] = recall[valid, _T50]
        rec75[valid, k] = recall[valid, _T75]
    with warnings.catch_warnings():  # a resample may hold no class with ground truth
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "map_50_95": np.nanmean(ap, axis=1),
            "map_50": np.nanmean(ap50, axis=1),
            "recall_50": np.nanmean(rec50, axis=1),
            "recall_75": np.nanmean(rec75, axis=1),
        }


@njit
def _accumulate(  # noqa: PLR0917 - a compiled kernel takes its arrays positionally
    weights: Float64Array,
    det_image: IntArray,
    tp: BoolArray,
    fp: BoolArray,
    npig: Float64Array,
    points: Float64Array,
    eps: float,
    precision: Float64Array,
    recall: Float64Array,
) -> None:
    """COCOeval's ``accumulate`` for one category under each row of image weights.

    For resample b and threshold t: cumulative weighted true and false positives over the
    detections in score order, recall against ``npig[b]``, precision made monotone from
    the right, read at each recall point (the first detection reaching it; 0 past the
    last). Writes the mean over the recall points to ``precision[b, t]`` and the final
    recall to ``recall[b, t]``.
    """
    b_count, t_count, d_count, r_count = weights.shape[0], tp.shape[0], tp.shape[1], points.shape[0]
    rc = np.empty(d_count)
    pr = np.empty(d_count)
    for b in range(b_count):
        n = npig[b]
        for t in range(t_count):
            tp_sum = 0.0
            fp_sum = 0.0
            for d in range(d_count):
                w = weights[b, det_image[d]]
                if tp[t, d]:
                    tp_sum += w
                elif fp[t, d]:
                    fp_sum += w
                rc[d] = tp_sum / n if n > 0 else 0.0
                pr[d] = tp_sum / (fp_sum + tp_sum + eps)
            recall[b, t] = rc[d_count - 1] if d_count else 0.0
            for d in range(d_count - 2, -1, -1):
                pr[d] = max(pr[d], pr[d + 1])
            total = 0.0
            d = 0
            for r in range(r_count):
                while d < d_count and rc[d] < points[r]:
                    d += 1
                if d < d_count:
                    total += pr[d]
            precision[b, t] = total / r_count


# --------------------------------------------------------------------------- the run


@dataclass(slots=True)
class OfflineArm:
    """One arm's offline scores.

    Attributes:
        metrics: metric name → estimate (detection metrics with image-bootstrap replicates,
            tracking metrics as points).
        per_class_ap: class name → AP@[.5:.95] (faster-coco-eval).
        detection: the detection report as JSON (``DetectionReport.to_dict``).
        tracking: per-sequence and combined TrackEval scores as JSON.
        seconds_per_image: the arm's detector time per image.
    """

    metrics: dict[str, Estimate] = field(default_factory=dict)
    per_class_ap: dict[str, float] = field(default_factory=dict)
    detection: dict[str, Any] | None = None
    tracking: dict[str, Any] | None = None
    seconds_per_image: float | None = None


@dataclass(slots=True)
class OfflineResult:
    """Every arm's offline scores (paired resamples: the same images for every arm)."""

    arms: dict[str, OfflineArm]
    dataset: str | None
    images: int
    sequences: list[str]
    protocol: str
    resamples: int

    def to_dict(self, confidence: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "images": self.images,
            "sequences": self.sequences,
            "protocol": self.protocol,
            "resamples": self.resamples,
            "arms": {},
        }
        for name, arm in self.arms.items():
            out["arms"][name] = {
                "metrics": {
                    m: {"value": _num(e.value), "ci": [_num(v) for v in e.interval(confidence)]}
                    for m, e in arm.metrics.items()
                },
                "per_class_ap": {c: _num(v) for c, v in arm.per_class_ap.items()},
                "tracking": arm.tracking,
                "ms_per_image": _num(1e3 * arm.seconds_per_image)
                if arm.seconds_per_image is not None
                else None,
            }
        return out

    def save(self, folder: Path, confidence: float) -> None:
        """``offline.json`` (values, intervals) and ``offline.npz`` (the replicates)."""
        import json

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "offline.json").write_text(json.dumps(self.to_dict(confidence), indent=2) + "\n")
        samples: dict[str, Any] = {
            f"{name}/{metric}": e.samples
            for name, arm in self.arms.items()
            for metric, e in arm.metrics.items()
            if e.samples is not None
        }
        with (folder / "offline.npz").open("wb") as fh:
            np.savez_compressed(fh, **samples)


def _num(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


ProgressFn = Callable[[str, int, int], None]


def evaluate_offline(
    arms: Sequence[LoadedArm],
    spec: OfflineSpec,
    *,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> OfflineResult:
    """Score every arm on the labelled images and MOT sequences of ``spec``.

    Raises:
        ExperimentSpecError: the data cannot be read, or a detector lacks classes the
            dataset has objects of.
    """
    result = OfflineResult({a.name: OfflineArm() for a in arms}, None, 0, [], spec.protocol, 0)
    detectors = {a.name: _offline_detector(a, spec.protocol) for a in arms}
    if spec.data is not None:
        _evaluate_images(arms, detectors, spec, result, seed=seed, progress=progress)
    if spec.mot is not None:
        _evaluate_tracking(arms, detectors, spec.mot, result, progress)
    return result


def _offline_detector(arm: LoadedArm, protocol: str) -> Any:
    """The arm's detector at its own thresholds (``deployed``), or a copy sharing its
    session at the COCO protocol's (``coco``)."""
    if protocol != "coco":
        return arm.detector
    import copy

    from tapetum.detect import DetectorConfig

    clone = copy.copy(arm.detector)
    clone.config = DetectorConfig(
        conf_threshold=COCO_CONF,
        nms_iou=COCO_NMS,
        max_detections=COCO_MAX_DET,
        class_ids=arm.detector.config.class_ids,
    )
    return clone


def _evaluate_images(
    arms: Sequence[LoadedArm],
    detectors: Mapping[str, Any],
    spec: OfflineSpec,
    result: OfflineResult,
    *,
    seed: int,
    progress: ProgressFn | None,
) -> None:
    import cv2

    from tapetum.eval.datasets import load_dataset
    from tapetum.eval.detect import evaluate_predictions

    assert spec.data is not None
    try:
        dataset = load_dataset(spec.data, images=spec.images, split=spec.split)
        if spec.max_images is not None:
            dataset = dataset.subset(dataset.image_ids[: spec.max_images])
        for arm in arms:
            dataset.category_ids_for(arm.class_names)
    except DatasetError as exc:
        raise ExperimentSpecError(f"offline data: {exc}") from None
    predictions: dict[str, dict[int, Detections]] = {a.name: {} for a in arms}
    seconds = dict.fromkeys(predictions, 0.0)
    ids = dataset.image_ids
    for n, image_id in enumerate(ids):
        image = cv2.imread(str(dataset.image_paths[image_id]), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("%s: cannot decode, skipped", dataset.image_paths[image_id])
            continue
        for arm in arms:  # one decode, every arm
            t0 = time.perf_counter()
            predictions[arm.name][image_id] = detectors[arm.name]([image])[0]
            seconds[arm.name] += time.perf_counter() - t0
        if progress is not None:
            progress("images", n + 1, len(ids))
    rng = np.random.default_rng(seed)
    weights = resample_weights(len(ids), spec.resamples, rng) if spec.resamples else None
    for arm in arms:
        report = evaluate_predictions(dataset, predictions[arm.name], class_names=arm.class_names)
        matches = match_coco(dataset, predictions[arm.name], arm.class_names)
        replicas = coco_metrics(matches, weights) if weights is not None else {}
        point = {m: getattr(report, m) for m in DETECTION_METRICS}
        mine = coco_metrics(matches)
        drift = max(
            abs(float(mine[m][0]) - point[m]) for m in DETECTION_METRICS if math.isfinite(point[m])
        )
        if drift > 1e-3:
            log.warning(
                "offline %s: bootstrap matcher differs from COCOeval by %.4f", arm.name, drift
            )
        out = result.arms[arm.name]
        for m in DETECTION_METRICS:
            out.metrics[m] = Estimate(float(point[m]), replicas.get(m))
        out.per_class_ap = dict(report.per_class_ap)
        out.detection = report.to_dict(curves=False)
        out.seconds_per_image = seconds[arm.name] / max(1, len(predictions[arm.name]))
    result.dataset = dataset.name
    result.images = len(ids)
    result.resamples = spec.resamples


def _evaluate_tracking(
    arms: Sequence[LoadedArm],
    detectors: Mapping[str, Any],
    mot: Path,
    result: OfflineResult,
    progress: ProgressFn | None,
) -> None:
    from tapetum.eval.mot import find_sequences, load_sequence
    from tapetum.eval.track_metrics import evaluate_runs

    try:
        cut = [_cut_to_frames(load_sequence(p)) for p in find_sequences(mot)]
    except ConfigError as exc:  # the MOT readers' errors
        raise ExperimentSpecError(f"offline mot: {exc}") from None
    sequences = [s for s in cut if s is not None]
    if not sequences:
        raise ExperimentSpecError(
            f"offline mot: no sequence under {mot} has ground truth and img1 frames"
        )
    person = {a.name: _person_class(a) for a in arms}
    runs: dict[str, list[tuple[Any, list[Detections]]]] = {a.name: [] for a in arms}
    for n, (seq, frames) in enumerate(sequences):
        trackers = {a.name: a.make_tracker(seq.info.frame_rate_fps) for a in arms}
        outputs: dict[str, list[Detections]] = {a.name: [] for a in arms}
        for t, path in enumerate(frames):
            import cv2

            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise ExperimentSpecError(f"offline mot: cannot decode {path}")
            pixels = np.asarray(image, np.uint8)
            frame = Frame(seq.name, t, pixels, t / seq.info.frame_rate_fps, time.perf_counter())
            for arm in arms:
                dets = detectors[arm.name]([image])[0]
                dets = dets[dets.class_id == person[arm.name]]
                outputs[arm.name].append(trackers[arm.name].update(dets, frame))
        for arm in arms:
            runs[arm.name].append((seq, outputs[arm.name]))
        if progress is not None:
            progress("sequences", n + 1, len(sequences))
    for arm in arms:
        report = evaluate_runs(runs[arm.name])
        out = result.arms[arm.name]
        out.metrics["hota"] = Estimate(report.combined.hota)
        out.metrics["idf1"] = Estimate(report.combined.idf1)
        out.tracking = {
            "combined": report.combined.as_dict(),
            "sequences": {k: v.as_dict() for k, v in report.sequences.items()},
        }
    result.sequences = [seq.name for seq, _ in sequences]


def _person_class(arm: LoadedArm) -> int:
    names = [n.lower() for n in arm.class_names]
    for wanted in ("person", "pedestrian"):
        if wanted in names:
            return names.index(wanted)
    raise ExperimentSpecError(
        f"offline mot: arm {arm.name!r} has no person class to track pedestrians with"
    )


def _cut_to_frames(seq: Any) -> tuple[Any, list[Path]] | None:
    """The sequence cut to the frames its ``img1`` folder holds (1, 2, … without a gap),
    ground truth included; None without ground truth or frames."""
    if seq.gt is None or seq.path is None:
        return None
    frames: list[Path] = []
    for t in range(1, seq.info.length_frames + 1):
        path = seq.path / "img1" / f"{t:06d}.jpg"
        if not path.is_file():
            break
        frames.append(path)
    if not frames:
        return None
    n = len(frames)
    keep = seq.gt.frame <= n
    gt = dataclasses.replace(
        seq.gt,
        **{
            f.name: getattr(seq.gt, f.name)[keep]
            for f in dataclasses.fields(seq.gt)
            if isinstance(getattr(seq.gt, f.name), np.ndarray)
        },
    )
    info = dataclasses.replace(seq.info, length_frames=n)
    return dataclasses.replace(seq, info=info, gt=gt, detections=None), frames
