"""Fine-tune EfficientNet-Lite0 on labelled crops, score it, export it (``tapetum train
classify``).

Sized for a CPU. Crops are cut as the exported model will see them (the pretrained
export's contract: letterbox, 10 % margin), then the frozen front of the network runs
**once** over every crop and its mirror image and its activations are cached; training
touches only the back:

1. **Linear probe** (the baseline): the whole network frozen, a linear head on its pooled
   1280-d features, class-balanced cross-entropy.
2. **Fine-tune** (LP-FT): the last ``unfreeze_stages`` block stages and the head
   convolution are trained from the cached activations, starting from the probe's head
   (linear probing first keeps the pretrained features from being torn up by a random
   head). Batch-norm statistics stay frozen: batches are small and few.

Both are scored on the validation crops (top-1, per-class recall, confusion matrix); the
better one by top-1 is exported (the probe on a tie), with the class names and crop
contract in its metadata.

Example:
    >>> from tapetum.classify.datasets import load_crop_set
    >>> classes = ["person", "car", "truck", "bus", "bicycle", "motorcycle"]
    >>> train = load_crop_set("coco128", split="train2017", classes=classes)  # doctest: +SKIP
    >>> val = load_crop_set("coco128", split="val2017", classes=classes)      # doctest: +SKIP
    >>> result = train_classifier(train, val, "cls.onnx")                      # doctest: +SKIP
    >>> result.finetuned.top1, result.linear_probe.top1                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tapetum._optional import import_optional
from tapetum._types import Float32Array, IntArray
from tapetum.classify.crops import crop_batch
from tapetum.classify.datasets import CropSet, read_image
from tapetum.classify.spec import ClassifierSpec, input_size
from tapetum.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

__all__ = [
    "ClassifyEvaluation",
    "ClassifyTrainConfig",
    "ClassifyTrainResult",
    "detector_baseline",
    "evaluate_classifier",
    "evaluate_predictions",
    "plot_confusion",
    "train_classifier",
]

TRAIN_EXTRA = "export"
_PURPOSE = "tapetum train classify"
#: Block stages of EfficientNet-Lite0 (timm's ``model.blocks``).
_STAGES = 7


@dataclass(frozen=True, slots=True)
class ClassifyTrainConfig:
    """How to train.

    Attributes:
        mode: ``finetune`` (probe, then the last stages) or ``probe`` (the linear head
            only).
        imgsz: input size of the model trained and exported: a side (square) or
            ``(height, width)``, multiples of 32 (see :func:`~tapetum.classify.spec.input_size`).
        unfreeze_stages: block stages trained by ``finetune`` (1-7, counted from the end);
            the head convolution is always trained with them.
        probe_epochs / finetune_epochs: passes over the training crops (and mirrors).
        probe_lr / finetune_lr: AdamW learning rates (cosine decay to 0).
        weight_decay: AdamW weight decay.
        batch_size: crops per step.
        max_per_class: keep at most this many training crops per class (None: all); a
            dominant class (person, in COCO) otherwise swamps the rest.
        threads: torch CPU threads.
        seed: crop sampling, initialisation and shuffling.
    """

    mode: Literal["finetune", "probe"] = "finetune"
    imgsz: int | tuple[int, int] = 224
    unfreeze_stages: int = 2
    probe_epochs: int = 100
    finetune_epochs: int = 8
    probe_lr: float = 3e-3
    finetune_lr: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    max_per_class: int | None = 200
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("finetune", "probe"):
            raise ConfigError(f"mode must be finetune or probe, got {self.mode!r}")
        object.__setattr__(self, "imgsz", _square_or_hw(input_size(self.imgsz)))
        if not 1 <= self.unfreeze_stages <= _STAGES:
            raise ConfigError(f"unfreeze_stages must be 1-{_STAGES}, got {self.unfreeze_stages}")
        if min(self.probe_epochs, self.batch_size, self.threads) < 1 or self.finetune_epochs < 0:
            raise ConfigError("epochs, batch_size and threads must be ≥ 1")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise ConfigError(f"max_per_class must be ≥ 1, got {self.max_per_class}")


@dataclass(frozen=True, slots=True)
class ClassifyEvaluation:
    """Scores of one classifier on labelled crops.

    Attributes:
        class_names: the classes (confusion matrix rows and columns, in order).
        confusion: (C, C + 1) int64, rows true class, columns predicted class; the last
            column counts crops given none of the classes (a detector that missed the box
            or called it something else).
        top1: fraction of crops whose prediction is their class.
        per_class_recall: class → fraction of its crops predicted right (NaN: no crops).
    """

    class_names: tuple[str, ...]
    confusion: IntArray
    top1: float
    per_class_recall: dict[str, float]

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def mean_recall(self) -> float:
        """Mean of the per-class recalls (classes with crops): top-1 with every class
        weighted equally, which a dominant class cannot carry."""
        values = [v for v in self.per_class_recall.values() if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "top1": round(self.top1, 4),
            "mean_recall": round(self.mean_recall, 4),
            "n": self.n,
            "per_class_recall": {
                k: (round(v, 4) if np.isfinite(v) else None)
                for k, v in self.per_class_recall.items()
            },
            "confusion": self.confusion.tolist(),
            "class_names": list(self.class_names),
        }


def _square_or_hw(hw: tuple[int, int]) -> int | tuple[int, int]:
    """A square size as one int (as before), else ``(height, width)``."""
    return hw[0] if hw[0] == hw[1] else hw


@dataclass(frozen=True, slots=True)
class ClassifyTrainResult:
    """What :func:`train_classifier` did.

    Attributes:
        model_path: the exported ONNX file.
        exported: which model was exported (``finetune`` or ``probe``).
        linear_probe: the frozen network + linear head on the validation crops.
        finetuned: the fine-tuned network on them (None in ``probe`` mode).
        train_counts / val_counts: crops per class.
        seconds: wall time of the whole run.
    """

    model_path: Path
    exported: str
    linear_probe: ClassifyEvaluation
    finetuned: ClassifyEvaluation | None
    train_counts: dict[str, int]
    val_counts: dict[str, int]
    seconds: float

    @property
    def best(self) -> ClassifyEvaluation:
        return (
            self.finetuned if self.exported == "finetune" and self.finetuned else self.linear_probe
        )


def evaluate_predictions(
    labels: IntArray, predicted: IntArray, class_names: tuple[str, ...]
) -> ClassifyEvaluation:
    """Score ``predicted`` (N,) against ``labels`` (N,); -1 predictions mean "none"."""
    c = len(class_names)
    column = np.where(predicted >= 0, predicted, c)
    confusion = np.zeros((c, c + 1), np.int64)
    np.add.at(confusion, (labels, column), 1)
    support = confusion.sum(axis=1)
    hits = confusion[np.arange(c), np.arange(c)]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = hits / support
    top1 = float(hits.sum() / max(1, int(support.sum())))
    return ClassifyEvaluation(
        class_names,
        confusion,
        top1,
        {n: float(r) for n, r in zip(class_names, recall.tolist(), strict=True)},
    )


def evaluate_classifier(model: str | Path, crops: CropSet) -> ClassifyEvaluation:
    """Score an ONNX classifier file on labelled ``crops`` (cut by the file's own crop
    contract). Its classes must be ``crops.class_names`` in the same order (a classifier
    this module exported from a training set with those classes).

    Raises:
        ConfigError: the file's classes are not ``crops``' classes.
    """
    from tapetum.classify.runtime import OnnxClassifier

    classifier = OnnxClassifier(model)
    if tuple(classifier.class_names) != tuple(crops.class_names):
        raise ConfigError(
            f"{model}: classes {list(classifier.class_names)} are not the crops' classes "
            f"{list(crops.class_names)}"
        )
    tensors, labels = _crop_tensors(crops, classifier.spec)
    predicted = np.concatenate(
        [classifier.predict(tensors[i : i + 64]).argmax(axis=1) for i in range(0, len(crops), 64)]
    )
    return evaluate_predictions(labels, predicted.astype(np.int64), crops.class_names)


def detector_baseline(
    detector: Callable[[list[Any]], list[Any]],
    detector_classes: tuple[str, ...],
    crops: CropSet,
    iou_threshold: float = 0.5,
) -> ClassifyEvaluation:
    """The detector's own class for each labelled crop: the class of its best-overlapping
    detection (IoU ≥ ``iou_threshold``) in the crop's image; no such detection, or a class
    outside ``crops.class_names``, predicts none (counted wrong)."""
    from tapetum.core.boxes import box_iou

    lookup = {n.lower(): i for i, n in enumerate(crops.class_names)}
    to_crop_class = np.array([lookup.get(n.lower(), -1) for n in detector_classes], np.int64)
    predicted = np.full(len(crops), -1, np.int64)
    for path, rows in crops.by_image():
        found = detector([read_image(path)])[0]
        if len(found) == 0:
            continue
        iou = box_iou(crops.xyxy[rows], found.xyxy)
        best = iou.argmax(axis=1)
        ok = iou[np.arange(rows.size), best] >= iou_threshold
        predicted[rows[ok]] = to_crop_class[found.class_id[best[ok]]]
    return evaluate_predictions(crops.labels, predicted, crops.class_names)


def plot_confusion(evaluation: ClassifyEvaluation, path: str | Path, title: str = "") -> Path:
    """Write the confusion matrix as a PNG (rows true, columns predicted, row-normalised
    colours, counts written in the cells)."""
    import_optional("matplotlib", "eval", "plotting a confusion matrix")
    from matplotlib.figure import Figure

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = evaluation.class_names
    counts = evaluation.confusion
    if not counts[:, -1].any():
        counts = counts[:, :-1]
    cols = [*names, "none"][: counts.shape[1]]
    share = counts / np.maximum(1, counts.sum(axis=1, keepdims=True))
    size = 1.2 + 0.75 * len(cols)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(counts):
        ax.text(
            j, i, str(v), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black"
        )
    ax.set_title(title or f"top-1 {evaluation.top1:.3f} on {evaluation.n} crops")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.savefig(out, dpi=110)
    return out


# ------------------------------------------------------------------------------ training


def _crop_tensors(crops: CropSet, spec: ClassifierSpec) -> tuple[Float32Array, IntArray]:
    """Every crop of ``crops`` as model input (N, 3, H, W) in row order, and the labels."""
    out = np.empty((len(crops), 3, *spec.input_hw), np.float32)
    for path, rows in crops.by_image():
        image = read_image(path)
        boxes = crops.xyxy[rows].copy()
        whole = np.isnan(boxes).any(axis=1)
        boxes[whole] = [0, 0, image.shape[1], image.shape[0]]
        batch = crop_batch(image, boxes, spec)
        if not batch.valid.all():
            bad = rows[~batch.valid].tolist()
            raise DatasetError(f"{path}: crop rows {bad} are outside the image or empty")
        out[rows] = batch.tensor
    return out, crops.labels


class _Split:
    """The model cut where training starts: a frozen front and a trainable back."""

    def __init__(self, model: Any, unfreeze_stages: int) -> None:
        import torch

        self.model = model
        cut = _STAGES - unfreeze_stages
        self.front = torch.nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:cut])
        self.back = torch.nn.Sequential(*model.blocks[cut:], model.conv_head, model.bn2)
        for p in model.parameters():
            p.requires_grad_(False)

    def pooled(self, activations: Any) -> Any:
        return self.model.global_pool(self.back(activations))


def _front_activations(split: _Split, tensors: Float32Array, mirror: bool, bs: int) -> Any:
    """The frozen front's output for every crop (and its mirror image, appended)."""
    import torch

    parts = []
    with torch.no_grad():
        for flip in (False, True) if mirror else (False,):
            for i in range(0, tensors.shape[0], bs):
                x = torch.from_numpy(tensors[i : i + bs])
                parts.append(split.front(x.flip(-1) if flip else x))
    return torch.cat(parts)


def _class_weights(labels: IntArray, c: int) -> Any:
    import torch

    counts = np.bincount(labels, minlength=c).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / c, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _fit(  # noqa: PLR0917 - one private call site
    params: list[Any],
    loss_of: Callable[[Any], Any],
    n: int,
    epochs: int,
    lr: float,
    cfg: ClassifyTrainConfig,
    generator: Any,
) -> None:
    """AdamW over ``epochs`` shuffled passes of ``n`` samples, cosine learning rate."""
    import torch

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    steps = epochs * -(-n // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, cfg.batch_size):
            loss = loss_of(order[i : i + cfg.batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


def train_classifier(
    train: CropSet,
    val: CropSet,
    out: str | Path,
    config: ClassifyTrainConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> ClassifyTrainResult:
    """Fine-tune the pretrained EfficientNet-Lite0 on ``train``, score on ``val``, export
    to ``out`` (see the module docstring).

    Raises:
        MissingDependencyError: torch/timm/the weights package are not installed.
        DatasetError: the splits' classes differ, a class has no training crop, or a crop
            cannot be cut.
    """
    started = time.perf_counter()
    cfg = config or ClassifyTrainConfig()
    torch = import_optional("torch", TRAIN_EXTRA, _PURPOSE)
    from tapetum.classify.export import (
        DEFAULT_FIT,
        DEFAULT_MARGIN,
        export_classifier_module,
        load_efficientnet_lite0,
    )

    say = progress or (lambda text: log.info("%s", text))
    if train.class_names != val.class_names:
        raise DatasetError(
            f"train and validation classes differ: {train.class_names} vs {val.class_names}"
        )
    names = train.class_names
    c = len(names)
    if c < 2:
        raise DatasetError("a classifier needs at least two classes")
    if cfg.max_per_class is not None:
        train = train.capped(cfg.max_per_class, cfg.seed)
    empty = [n for n, k in train.counts().items() if k == 0]
    if empty:
        raise DatasetError(f"no training crops of {', '.join(empty)}")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    spec = ClassifierSpec.imagenet(cfg.imgsz, fit=DEFAULT_FIT, margin=DEFAULT_MARGIN)

    say(f"cutting {len(train)} training and {len(val)} validation crops")
    x_train, y_train_np = _crop_tensors(train, spec)
    x_val, y_val_np = _crop_tensors(val, spec)
    model, _ = load_efficientnet_lite0()
    split = _Split(model.eval(), cfg.unfreeze_stages)
    say("running the frozen network once over every crop and its mirror image")
    a_train = _front_activations(split, x_train, mirror=True, bs=cfg.batch_size)
    a_val = _front_activations(split, x_val, mirror=False, bs=cfg.batch_size)
    del x_train, x_val
    y_train = torch.from_numpy(np.concatenate((y_train_np, y_train_np)))
    weights = _class_weights(y_train_np, c)
    with torch.no_grad():
        f_train = torch.cat([split.pooled(a_train[i : i + 64]) for i in range(0, len(a_train), 64)])
        f_val = torch.cat([split.pooled(a_val[i : i + 64]) for i in range(0, len(a_val), 64)])

    say(f"linear probe: {cfg.probe_epochs} epochs on {f_train.shape[1]}-d features")
    head = torch.nn.Linear(f_train.shape[1], c)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    _fit(
        list(head.parameters()),
        lambda idx: loss_fn(head(f_train[idx]), y_train[idx]),
        len(y_train),
        cfg.probe_epochs,
        cfg.probe_lr,
        cfg,
        generator,
    )
    with torch.no_grad():
        probe_pred = head(f_val).argmax(1).numpy()
    probe = evaluate_predictions(y_val_np, probe_pred, names)
    say(f"linear probe top-1 {probe.top1:.3f}")
    model.classifier = head
    back_state = {k: v.clone() for k, v in split.back.state_dict().items()}
    probe_head_state = {k: v.clone() for k, v in head.state_dict().items()}

    finetuned: ClassifyEvaluation | None = None
    if cfg.mode == "finetune" and cfg.finetune_epochs > 0:
        say(f"fine-tuning the last {cfg.unfreeze_stages} stages: {cfg.finetune_epochs} epochs")
        trainable = [*split.back.parameters(), *head.parameters()]
        for p in trainable:
            p.requires_grad_(True)
        split.back.eval()  # frozen batch-norm statistics (dropout-free back)

        def loss_of(idx: Any) -> Any:
            return loss_fn(head(split.pooled(a_train[idx])), y_train[idx])

        _fit(trainable, loss_of, len(y_train), cfg.finetune_epochs, cfg.finetune_lr, cfg, generator)
        with torch.no_grad():
            pred = torch.cat(
                [head(split.pooled(a_val[i : i + 64])).argmax(1) for i in range(0, len(a_val), 64)]
            ).numpy()
        finetuned = evaluate_predictions(y_val_np, pred, names)
        say(f"fine-tuned top-1 {finetuned.top1:.3f}")
        for p in model.parameters():
            p.requires_grad_(False)

    # The better of the two on the validation crops is exported (top-1; the probe on a
    # tie): on a few hundred crops fine-tuning does not always pay.
    exported = "probe"
    if finetuned is not None and finetuned.top1 > probe.top1:
        exported = "finetune"
    elif finetuned is not None:
        say(f"fine-tuning did not beat the linear probe ({finetuned.top1:.3f} ≤ {probe.top1:.3f})")
        with torch.no_grad():  # put the probe's back and head into the exported model
            split.back.load_state_dict(back_state)
            head.load_state_dict(probe_head_state)
    result = export_classifier_module(
        model.eval(),
        out,
        spec,
        names,
        arch="efficientnet_lite0",
        source=f"tapetum train classify ({exported}) on {train.name}",
    )
    return ClassifyTrainResult(
        result.path,
        exported,
        probe,
        finetuned,
        train.counts(),
        val.counts(),
        time.perf_counter() - started,
    )
