"""Labelled crops for training and scoring classifiers.

A :class:`CropSet` is a list of (image file, box, class) rows held as parallel arrays. It is
read from any of these, told apart by :func:`load_crop_set`:

* **a folder per class**: ``DATA/<class>/*.jpg``, each image one crop (the whole image);
  with ``split`` the classes are under ``DATA/<split>/``;
* **a detection dataset** (COCO json or YOLO layout, read by
  :func:`tapetum.eval.datasets.load_dataset`): one crop per non-crowd box;
* **MOTChallenge sequences** (a sequence folder or a split holding several): one crop per
  ground-truth box on the frames whose images are present (``img1/000001.jpg``), classes
  named as MOTChallenge numbers them (``pedestrian``, ``car``, ...).

Example:
    >>> train = load_crop_set("coco128", split="train2017",
    ...                       classes=["person", "car", "bus"])           # doctest: +SKIP
    >>> train.counts()                                                    # doctest: +SKIP
    {'person': 254, 'car': 46, 'bus': 7}
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tapetum._types import BoolArray, Float32Array, IntArray, UInt8Array
from tapetum.errors import DatasetError

log = logging.getLogger(__name__)

__all__ = ["MOT_CLASS_NAMES", "CropSet", "load_crop_set"]

_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

#: MOTChallenge class ids (MOT16/17/20 ``gt.txt`` column 8) → names.
MOT_CLASS_NAMES = {
    1: "pedestrian",
    2: "person on vehicle",
    3: "car",
    4: "bicycle",
    5: "motorbike",
    6: "non motorized vehicle",
    7: "static person",
}


@dataclass(frozen=True, slots=True, eq=False)
class CropSet:
    """Labelled crops (N rows) over a set of images.

    Attributes:
        name: what to call it in reports.
        class_names: the classes, in label order.
        image_paths: the images the crops come from.
        image_index: (N,) int64, row → index into ``image_paths``.
        xyxy: (N, 4) float32 box in image pixels; NaN rows mean the whole image.
        labels: (N,) int64 index into ``class_names``.
    """

    name: str
    class_names: tuple[str, ...]
    image_paths: tuple[Path, ...]
    image_index: IntArray
    xyxy: Float32Array
    labels: IntArray

    def __len__(self) -> int:
        return int(self.labels.size)

    def counts(self) -> dict[str, int]:
        """Crops per class."""
        per = np.bincount(self.labels, minlength=len(self.class_names))
        return {n: int(c) for n, c in zip(self.class_names, per.tolist(), strict=True)}

    def subset(self, keep: BoolArray | IntArray) -> CropSet:
        """The rows selected by a mask or index array (images and classes kept)."""
        return CropSet(
            self.name,
            self.class_names,
            self.image_paths,
            self.image_index[keep],
            self.xyxy[keep],
            self.labels[keep],
        )

    def capped(self, max_per_class: int, seed: int = 0) -> CropSet:
        """At most ``max_per_class`` crops of each class, drawn at random (seeded)."""
        rng = np.random.default_rng(seed)
        keep = np.concatenate(
            [
                rng.permutation(np.flatnonzero(self.labels == c))[:max_per_class]
                for c in range(len(self.class_names))
            ]
        )
        return self.subset(np.sort(keep))

    def by_image(self) -> Iterator[tuple[Path, IntArray]]:
        """Each image once with the rows cut from it (images read once each)."""
        order = np.argsort(self.image_index, kind="stable")
        bounds = np.flatnonzero(np.diff(self.image_index[order])) + 1
        for rows in np.split(order, bounds):
            if rows.size:
                yield self.image_paths[int(self.image_index[rows[0]])], rows


def read_image(path: Path) -> UInt8Array:
    """BGR pixels of ``path``; an unreadable file is a DatasetError naming it."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path}")
    return np.asarray(image, np.uint8)


def load_crop_set(
    data: str | Path,
    *,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    min_size_px: float = 8.0,
) -> CropSet:
    """Read labelled crops from ``data`` (see the module docstring for the layouts).

    Args:
        data: a folder per class, a detection dataset (COCO json, YOLO folder or
            data.yaml), or MOTChallenge sequence(s).
        split: the split of a dataset folder (``train2017``), or a sub-folder of a
            folder-per-class set.
        classes: keep only these classes, in this order (names, case-insensitive); None
            keeps every class that has crops.
        min_size_px: boxes with a side under this are left out.

    Raises:
        DatasetError: nothing usable at ``data``, a class asked for that is not there, or
            no crops left.
    """
    path = Path(data)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir() and _is_class_folders(path / split if split else path):
        crops = _from_class_folders(path / split if split else path)
    elif path.is_dir() and _is_mot(path):
        crops = _from_mot(path, min_size_px)
    else:
        from tapetum.eval.datasets import load_dataset

        crops = _from_detection_dataset(load_dataset(path, split=split), min_size_px)
    if classes is not None:
        crops = _select_classes(crops, classes)
    if len(crops) == 0:
        raise DatasetError(f"{crops.name}: no crops (classes {', '.join(crops.class_names)})")
    return crops


def _is_class_folders(root: Path) -> bool:
    if not root.is_dir() or any(
        p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES for p in root.iterdir()
    ):
        return False
    subs = [p for p in root.iterdir() if p.is_dir()]
    reserved = {"images", "labels", "annotations", "gt", "img1", "det"}
    return (
        bool(subs)
        and not any(p.name in reserved for p in subs)
        and all(any(f.suffix.lower() in _IMAGE_SUFFIXES for f in p.iterdir()) for p in subs)
    )


def _from_class_folders(root: Path) -> CropSet:
    names = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        files = sorted(f for f in (root / name).iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    n = len(paths)
    return CropSet(
        root.name,
        names,
        tuple(paths),
        np.arange(n, dtype=np.int64),
        np.full((n, 4), np.nan, np.float32),
        np.asarray(labels, np.int64),
    )


def _is_mot(path: Path) -> bool:
    from tapetum.eval.mot import find_sequences

    try:
        return bool(find_sequences(path))
    except Exception:
        return False


def _from_mot(path: Path, min_size_px: float) -> CropSet:
    from tapetum.eval.mot import find_sequences, load_sequence, tlwh_to_xyxy

    images: list[Path] = []
    index: list[IntArray] = []
    boxes: list[Float32Array] = []
    ids: list[IntArray] = []
    for folder in find_sequences(path):
        seq = load_sequence(folder)
        if seq.gt is None or seq.path is None:
            continue
        gt = seq.gt
        for frame in np.unique(gt.frame).tolist():
            image = seq.path / "img1" / f"{frame:06d}.jpg"
            if not image.is_file():
                continue
            rows = (gt.frame == frame) & gt.consider & np.isin(gt.class_id, list(MOT_CLASS_NAMES))
            rows &= (gt.tlwh[:, 2:] >= min_size_px).all(axis=1)
            if not rows.any():
                continue
            images.append(image)
            index.append(np.full(int(rows.sum()), len(images) - 1, np.int64))
            boxes.append(tlwh_to_xyxy(gt.tlwh[rows]).astype(np.float32))
            ids.append(gt.class_id[rows])
    if not images:
        raise DatasetError(f"{path}: no ground-truth boxes on frames whose images are present")
    class_ids = np.concatenate(ids)
    present = sorted(set(class_ids.tolist()))
    lookup = np.full(max(present) + 1, -1, np.int64)
    lookup[present] = np.arange(len(present))
    return CropSet(
        path.name,
        tuple(MOT_CLASS_NAMES[c] for c in present),
        tuple(images),
        np.concatenate(index),
        np.concatenate(boxes),
        lookup[class_ids],
    )


def _from_detection_dataset(ds: object, min_size_px: float) -> CropSet:
    from tapetum.eval.datasets import DetectionDataset

    assert isinstance(ds, DetectionDataset)
    cats = ds.categories
    cat_ids = sorted(cats)
    position = {c: i for i, c in enumerate(cat_ids)}
    image_ids = list(ds.image_ids)
    where = {iid: i for i, iid in enumerate(image_ids)}
    anns = [
        a
        for a in ds.ground_truth["annotations"]
        if not a["iscrowd"] and a["image_id"] in where and min(a["bbox"][2:]) >= min_size_px
    ]
    tlwh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    xyxy = np.concatenate((tlwh[:, :2], tlwh[:, :2] + tlwh[:, 2:]), axis=1)
    return CropSet(
        ds.name,
        tuple(cats[c] for c in cat_ids),
        tuple(ds.image_paths[i] for i in image_ids),
        np.array([where[a["image_id"]] for a in anns], np.int64),
        xyxy,
        np.array([position[a["category_id"]] for a in anns], np.int64),
    )


def _select_classes(crops: CropSet, classes: Sequence[str]) -> CropSet:
    """Keep ``classes`` (relabelled 0..C-1 in the order given)."""
    lookup = {n.strip().lower(): i for i, n in enumerate(crops.class_names)}
    missing = [c for c in classes if c.strip().lower() not in lookup]
    if missing:
        raise DatasetError(
            f"{crops.name} has no class {', '.join(repr(m) for m in missing)}; it has "
            f"{', '.join(crops.class_names[:12])}{', …' if len(crops.class_names) > 12 else ''}"
        )
    old = np.array([lookup[c.strip().lower()] for c in classes], np.int64)
    remap = np.full(len(crops.class_names), -1, np.int64)
    remap[old] = np.arange(old.size)
    new_labels = remap[crops.labels]
    keep = new_labels >= 0
    return CropSet(
        crops.name,
        tuple(crops.class_names[i] for i in old),
        crops.image_paths,
        crops.image_index[keep],
        crops.xyxy[keep],
        new_labels[keep],
    )
