"""Detection accuracy (COCO mAP) and speed of a detector on a labelled image set.

Scoring is COCO's bounding-box protocol as implemented by ``faster-coco-eval`` (a C++ port of
pycocotools' ``COCOeval``; the integration tests check it matches pycocotools to 1e-4):
detections are matched greedily by descending score to the unmatched ground truth box of
the same class with the highest IoU, crowd regions absorb detections without counting, and
at most 100 detections per image and class are considered (``maxDets``). Precision is
interpolated at 101 recall points.

mAP needs every detection down to a very low score: give the detector a confidence threshold
of about 0.001 and keep up to 100 boxes per image (what ``tapetum eval detect`` does by
default). A threshold tuned for deployment (0.25-0.5) cuts the precision/recall curve short
and under-reports mAP.

Example:
    >>> from tapetum.detect import DetectorConfig, YoloxDetector
    >>> from tapetum.eval.datasets import load_dataset
    >>> from tapetum.eval.detect import evaluate_detector
    >>> config = DetectorConfig(conf_threshold=0.001, nms_iou=0.65, max_detections=100)
    >>> det = YoloxDetector("yolox_nano.onnx", config)  # doctest: +SKIP
    >>> report = evaluate_detector(det, load_dataset("coco128", split="val2017"))  # doctest: +SKIP
    >>> round(report.map_50_95, 3), round(report.map_50, 3)  # doctest: +SKIP
    (0.338, 0.497)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tapetum._types import Float64Array
from tapetum.core.detections import Detections
from tapetum.errors import ConfigError, DatasetError
from tapetum.eval.datasets import DetectionDataset

logger = logging.getLogger(__name__)


#: ``progress(images_done, images_total)``, called after every batch.
ProgressCallback = Callable[[int, int], None]

#: Confidence threshold and detections per image for mAP (the COCO protocol).
MAP_CONF_THRESHOLD = 0.001
MAP_MAX_DETECTIONS = 100

# A detector's threshold above this cuts the PR curve short enough to lower mAP visibly.
_HIGH_CONF_FOR_MAP = 0.05

#: Names of the 12 COCO summary statistics, in pycocotools' ``COCOeval.stats`` order.
COCO_STAT_NAMES = (
    "map_50_95",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "ar_1",
    "ar_10",
    "ar_100",
    "ar_small",
    "ar_medium",
    "ar_large",
)


class BatchDetector(Protocol):
    """What the evaluator runs: ``detector(list of BGR uint8 (H, W, 3) images)`` returns one
    :class:`Detections` per image, boxes in pixels of that image, ``class_id`` indexing
    ``class_names``. ``YoloxDetector`` and the detectors of ``tapetum.detect`` are such."""

    @property
    def class_names(self) -> Sequence[str]: ...

    def __call__(self, images: Sequence[npt.NDArray[np.uint8]], /) -> list[Detections]: ...


@dataclass(frozen=True, slots=True, eq=False)
class DetectionReport:
    """COCO box metrics of one detector on one dataset, plus its speed.

    Every metric is in [0, 1] or NaN where undefined (no ground truth in that area range or
    class). AP/AR "small/medium/large" use COCO's area ranges (< 32², 32²-96², > 96² square
    pixels of the ground-truth area).

    Attributes:
        map_50_95: AP averaged over IoU 0.50:0.05:0.95 and over classes (COCO "AP").
        map_50, map_75: AP at IoU 0.5 / 0.75.
        map_small, map_medium, map_large: AP@[.5:.95] by object size.
        ar_1, ar_10, ar_100: recall averaged over IoU 0.5:0.95 and classes, with at most 1,
            10, 100 detections per image and class.
        ar_small, ar_medium, ar_large: AR@100 by object size.
        recall_50, recall_75: recall at IoU 0.5 / 0.75 with at most 100 detections per image
            and class, any score: of the non-crowd ground-truth boxes of a class, the
            fraction matched by a detection with IoU ≥ the threshold (COCO's greedy
            matching), averaged over the classes that have ground truth.
        per_class_ap: class name → AP@[.5:.95], for classes with ground truth.
        per_class_ap_50: class name → AP@0.5, same classes.
        recall_thresholds: (101,) the recall points 0, 0.01, …, 1 of the PR curves.
        precision_50, precision_75: (101,) interpolated precision at those recall points at
            IoU 0.5 / 0.75, averaged over classes (0 beyond the recall reached).
        class_precision_50, class_precision_75: class name → (101,) the same per class.
        images: images evaluated.
        images_skipped: images left out because they could not be decoded.
        ground_truth_objects: non-crowd ground-truth boxes in the evaluated images (of the
            classes scored).
        detections: detections scored (of classes the dataset has).
        wall_s: seconds for the whole evaluation (reading, detection and scoring).
        images_per_s: ``images / wall_s``; None for precomputed predictions.
        latency_p50_ms, latency_p99_ms: the detector call's time per image (a batch's time
            divided by its size: with ``batch_size=1`` the true latency); None for
            precomputed predictions.
        evaluator: the scoring library and version.
    """

    map_50_95: float
    map_50: float
    map_75: float
    map_small: float
    map_medium: float
    map_large: float
    ar_1: float
    ar_10: float
    ar_100: float
    ar_small: float
    ar_medium: float
    ar_large: float
    recall_50: float
    recall_75: float
    per_class_ap: Mapping[str, float]
    per_class_ap_50: Mapping[str, float]
    recall_thresholds: Float64Array
    precision_50: Float64Array
    precision_75: Float64Array
    class_precision_50: Mapping[str, Float64Array]
    class_precision_75: Mapping[str, Float64Array]
    images: int
    images_skipped: int
    ground_truth_objects: int
    detections: int
    wall_s: float
    images_per_s: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    evaluator: str = "faster-coco-eval"

    @property
    def coco_stats(self) -> tuple[float, ...]:
        """The 12 summary numbers in pycocotools' ``COCOeval.stats`` order (NaN, not -1,
        where undefined)."""
        return tuple(float(getattr(self, name)) for name in COCO_STAT_NAMES)

    def to_dict(self, *, curves: bool = True) -> dict[str, Any]:
        """JSON-ready: metrics at the top level, ``per_class`` (name → ``ap_50_95``,
        ``ap_50``), ``pr_curves`` (``recall``, ``precision_50``, ``precision_75``; left out
        with ``curves=False``). NaN becomes None."""
        out: dict[str, Any] = {name: _json_float(getattr(self, name)) for name in COCO_STAT_NAMES}
        out |= {
            "recall_50": _json_float(self.recall_50),
            "recall_75": _json_float(self.recall_75),
            "images": self.images,
            "images_skipped": self.images_skipped,
            "ground_truth_objects": self.ground_truth_objects,
            "detections": self.detections,
            "wall_s": round(self.wall_s, 3),
            "images_per_s": _json_float(self.images_per_s),
            "latency_p50_ms": _json_float(self.latency_p50_ms),
            "latency_p99_ms": _json_float(self.latency_p99_ms),
            "evaluator": self.evaluator,
            "per_class": {
                name: {
                    "ap_50_95": _json_float(ap),
                    "ap_50": _json_float(self.per_class_ap_50[name]),
                }
                for name, ap in self.per_class_ap.items()
            },
        }
        if curves:
            out["pr_curves"] = {
                "recall": [round(float(v), 4) for v in self.recall_thresholds],
                "precision_50": [round(float(v), 6) for v in self.precision_50],
                "precision_75": [round(float(v), 6) for v in self.precision_75],
            }
        return out


def evaluate_detector(
    detector: BatchDetector,
    dataset: DetectionDataset,
    *,
    batch_size: int = 1,
    progress: ProgressCallback | None = None,
) -> DetectionReport:
    """Run ``detector`` over every image of ``dataset`` and score it.

    Images are read with OpenCV (BGR) in ``dataset.image_ids`` order and passed
    ``batch_size`` at a time. An image that cannot be decoded is logged and left out of the
    scores (counted in ``images_skipped``). Give the detector a low confidence threshold
    (:data:`MAP_CONF_THRESHOLD`); a warning is logged if its ``config.conf_threshold`` is
    above 0.05.

    Raises:
        DatasetError: the detector lacks classes that the dataset has objects of (see
            :meth:`DetectionDataset.category_ids_for`), no image could be read, or an image's
            size differs from the annotations'.
        ConfigError: ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    import cv2

    start = time.perf_counter()
    category_of_class = dataset.category_ids_for(tuple(detector.class_names))
    _warn_if_threshold_high(detector)
    sizes = dataset.image_sizes
    ids = dataset.image_ids
    results: list[dict[str, Any]] = []
    evaluated: list[int] = []
    latency_ms: list[float] = []
    skipped = len(dataset.skipped_images)
    for first in range(0, len(ids), batch_size):
        batch_ids: list[int] = []
        batch: list[npt.NDArray[np.uint8]] = []
        for image_id in ids[first : first + batch_size]:
            path = dataset.image_paths[image_id]
            image: npt.NDArray[np.uint8] | None = cv2.imread(str(path), cv2.IMREAD_COLOR)  # type: ignore[assignment]
            if image is None:
                logger.warning("%s: cannot decode image, skipped", path)
                skipped += 1
                continue
            if image.shape[:2] != sizes[image_id]:
                h, w = sizes[image_id]
                raise DatasetError(
                    f"{path} is {image.shape[1]}x{image.shape[0]} pixels but the annotations "
                    f"say {w}x{h}: wrong image folder?"
                )
            batch_ids.append(image_id)
            batch.append(image)
        if batch:
            t0 = time.perf_counter()
            found = detector(batch)
            per_image_ms = (time.perf_counter() - t0) * 1000.0 / len(batch)
            if len(found) != len(batch):
                raise ValueError(
                    f"the detector returned {len(found)} results for {len(batch)} images"
                )
            latency_ms.extend([per_image_ms] * len(batch))
            for image_id, detections in zip(batch_ids, found, strict=True):
                results.extend(_to_coco_results(image_id, detections, category_of_class))
            evaluated.extend(batch_ids)
        if progress is not None:
            progress(min(first + batch_size, len(ids)), len(ids))
    if not evaluated:
        raise DatasetError(f"{dataset.name}: none of the {len(ids)} images could be read")
    scored_categories = [int(c) for c in np.unique(category_of_class) if c >= 0]
    report = _score(dataset, results, evaluated, scored_categories, skipped)
    wall_s = time.perf_counter() - start
    latencies = np.asarray(latency_ms)
    return replace(
        report,
        wall_s=wall_s,
        images_per_s=len(evaluated) / wall_s,
        latency_p50_ms=float(np.percentile(latencies, 50)),
        latency_p99_ms=float(np.percentile(latencies, 99)),
    )


def evaluate_predictions(
    dataset: DetectionDataset,
    predictions: Mapping[int, Detections] | Sequence[Mapping[str, Any]],
    *,
    class_names: Sequence[str] | None = None,
) -> DetectionReport:
    """Score precomputed detections against ``dataset`` (every image of it).

    Args:
        dataset: the ground truth.
        predictions: either image id → :class:`Detections` (images left out have no
            detections; needs ``class_names``, matched to the categories by name), or COCO
            results: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` dicts
            using the dataset's image and category ids.
        class_names: the names ``Detections.class_id`` indexes.

    Raises:
        DatasetError: unknown image or category ids, or unmatched class names.
        ConfigError: ``Detections`` given without ``class_names``.
    """
    start = time.perf_counter()
    known_images = set(dataset.image_paths)
    if isinstance(predictions, Mapping):
        if class_names is None:
            raise ConfigError("evaluate_predictions: Detections need class_names")
        category_of_class = dataset.category_ids_for(class_names)
        unknown = set(predictions) - known_images
        if unknown:
            raise DatasetError(
                f"{dataset.name}: predictions for unknown image ids {sorted(unknown)[:5]}"
            )
        results: list[dict[str, Any]] = []
        for image_id in sorted(predictions):
            results.extend(_to_coco_results(image_id, predictions[image_id], category_of_class))
        categories = [int(c) for c in np.unique(category_of_class) if c >= 0]
    else:
        results = [
            _checked_result(r, i, known_images, dataset.categories)
            for i, r in enumerate(predictions)
        ]
        categories = list(dataset.categories)
    report = _score(
        dataset, results, list(dataset.image_ids), categories, len(dataset.skipped_images)
    )
    return replace(report, wall_s=time.perf_counter() - start)


def _checked_result(
    result: Mapping[str, Any], index: int, images: set[int], categories: Mapping[int, str]
) -> dict[str, Any]:
    try:
        image_id = int(result["image_id"])
        category_id = int(result["category_id"])
        x, y, w, h = (float(v) for v in result["bbox"])
        score = float(result["score"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(
            f"predictions[{index}]: needs image_id, category_id, bbox [x, y, w, h] and score "
            f"({exc!r})"
        ) from None
    if image_id not in images:
        raise DatasetError(f"predictions[{index}]: image_id {image_id} is not in the dataset")
    if category_id not in categories:
        raise DatasetError(f"predictions[{index}]: category_id {category_id} is not in the dataset")
    return {"image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h], "score": score}


def _to_coco_results(
    image_id: int, detections: Detections, category_of_class: npt.NDArray[np.int64]
) -> list[dict[str, Any]]:
    """One image's detections as COCO result dicts (``bbox`` = ``x, y, w, h``), dropping
    classes the dataset does not have."""
    if not len(detections):
        return []
    class_id = detections.class_id
    if class_id.min() < 0 or class_id.max() >= len(category_of_class):
        raise ValueError(
            f"detector class ids must be in 0..{len(category_of_class) - 1}, "
            f"got {int(class_id.min())}..{int(class_id.max())}"
        )
    category = category_of_class[class_id]
    keep = category >= 0
    xyxy = detections.xyxy[keep].astype(np.float64)
    xywh = np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]]).tolist()
    scores = detections.confidence[keep].astype(np.float64).tolist()
    return [
        {"image_id": image_id, "category_id": c, "bbox": box, "score": s}
        for c, box, s in zip(category[keep].tolist(), xywh, scores, strict=True)
    ]


def _score(
    dataset: DetectionDataset,
    results: list[dict[str, Any]],
    image_ids: list[int],
    category_ids: list[int],
    images_skipped: int,
) -> DetectionReport:
    """COCOeval (faster-coco-eval) over ``image_ids`` × ``category_ids``."""
    from tapetum._optional import import_optional

    fce = import_optional("faster_coco_eval", "eval", "detection mAP")
    evaluated = set(image_ids)
    scored = set(category_ids)
    gt = dataset.ground_truth
    # Fresh dicts: COCO indexes them and COCOeval writes flags into them.
    ground_truth = {
        "images": [dict(im) for im in gt["images"] if im["id"] in evaluated],
        "annotations": [
            dict(a)
            for a in gt["annotations"]
            if a["image_id"] in evaluated and a["category_id"] in scored
        ],
        "categories": [dict(c) for c in gt["categories"] if c["id"] in scored],
    }
    detections = [dict(r) for r in results if r["category_id"] in scored]
    coco_gt = fce.COCO(ground_truth)
    coco_dt = coco_gt.loadRes(detections)
    evaluation = fce.COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=_silent)
    evaluation.params.imgIds = sorted(evaluated)
    evaluation.params.catIds = sorted(scored)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    stats = [_nan_if_undefined(float(v)) for v in evaluation.stats[:12]]

    params = evaluation.params
    t50 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.5))[0])
    t75 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.75))[0])
    area_all, max_dets = 0, len(params.maxDets) - 1  # "all" areas, 100 detections
    # precision: (T iou, R recall points, K classes, A areas, M maxDets); -1 = no ground truth
    precision = np.asarray(evaluation.eval["precision"], dtype=np.float64)[
        :, :, :, area_all, max_dets
    ]
    recall = np.asarray(evaluation.eval["recall"], dtype=np.float64)[:, :, area_all, max_dets]
    names = dataset.categories
    has_gt: npt.NDArray[np.bool_] = np.any(precision > -1, axis=(0, 1))
    class_names = [names[int(c)] for c in params.catIds]
    per_class_ap: dict[str, float] = {}
    per_class_ap_50: dict[str, float] = {}
    class_precision_50: dict[str, Float64Array] = {}
    class_precision_75: dict[str, Float64Array] = {}
    for k, name in enumerate(class_names):
        if not has_gt[k]:
            continue
        curves = precision[:, :, k]
        per_class_ap[name] = float(curves[curves > -1].mean())
        per_class_ap_50[name] = float(curves[t50][curves[t50] > -1].mean())
        class_precision_50[name] = precision[t50, :, k].copy()
        class_precision_75[name] = precision[t75, :, k].copy()
    nan_curve = np.full(len(params.recThrs), np.nan)

    def mean_curve(t: int) -> Float64Array:
        return precision[t][:, has_gt].mean(axis=1) if has_gt.any() else nan_curve

    def mean_recall(t: int) -> float:
        return float(recall[t][has_gt].mean()) if has_gt.any() else math.nan

    return DetectionReport(
        **dict(zip(COCO_STAT_NAMES, stats, strict=True)),
        recall_50=mean_recall(t50),
        recall_75=mean_recall(t75),
        per_class_ap=per_class_ap,
        per_class_ap_50=per_class_ap_50,
        recall_thresholds=np.asarray(params.recThrs, dtype=np.float64),
        precision_50=mean_curve(t50),
        precision_75=mean_curve(t75),
        class_precision_50=class_precision_50,
        class_precision_75=class_precision_75,
        images=len(evaluated),
        images_skipped=images_skipped,
        ground_truth_objects=sum(1 for a in ground_truth["annotations"] if not a["iscrowd"]),
        detections=len(detections),
        wall_s=0.0,
        evaluator=f"faster-coco-eval {fce.__version__}",
    )


def _warn_if_threshold_high(detector: BatchDetector) -> None:
    threshold = getattr(getattr(detector, "config", None), "conf_threshold", None)
    if isinstance(threshold, float) and threshold > _HIGH_CONF_FOR_MAP:
        logger.warning(
            "detector confidence threshold %.3g is high for mAP: the precision/recall curve "
            "is cut short; use %.3g (COCO protocol)",
            threshold,
            MAP_CONF_THRESHOLD,
        )


def _silent(*_args: object) -> None:
    """Swallow faster-coco-eval's progress messages."""


def _nan_if_undefined(value: float) -> float:
    return math.nan if value < 0 else value


def _json_float(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(float(value), 6)
