"""Labelled image sets for detection evaluation, held as COCO-format ground truth.

Two layouts are read, and :func:`load_dataset` tells them apart from the path it is given:

* **COCO**: an ``instances_<split>.json`` (``images``, ``annotations`` with ``bbox`` =
  ``x, y, w, h`` in pixels, ``categories`` with any ids, e.g. COCO's 1..90) and a folder with
  the images. The folder is found next to the json (``<root>/images/<split>`` or
  ``<root>/<split>`` for ``<root>/annotations/instances_<split>.json``) or given.
* **YOLO**: an images folder and a parallel ``labels`` folder (``…/images/val`` →
  ``…/labels/val``) with one ``<image stem>.txt`` per image, one object per line:
  ``class cx cy w h``, the box centre and size normalised to [0, 1] by the image width and
  height, ``class`` a 0-based index into the class names. An image without a label file has
  no objects. Class names come from ``classes.txt`` (one per line) or a ``data.yaml``
  (``names:`` list or ``{id: name}`` map) found in the dataset root; a ``data.yaml`` can
  also be given directly (``path:`` plus ``train:``/``val:``/``test:`` image folders).

YOLO labels are converted to pixels with each image's decoded size, so a YOLO dataset reads
every image once when loaded (about 3 ms per COCO image on one core); an image OpenCV cannot
decode is logged, counted in ``skipped_images`` and left out.

Example:
    >>> from tapetum.eval.datasets import load_dataset
    >>> val = load_dataset("coco128", split="val2017")  # YOLO layout  # doctest: +SKIP
    >>> train = load_dataset("coco128/annotations/instances_train2017.json")  # doctest: +SKIP
    >>> len(val), val.categories[0], train.categories[1]  # doctest: +SKIP
    (128, 'person', 'person')
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tapetum._types import Float64Array, IntArray
from tapetum.errors import DatasetError

logger = logging.getLogger(__name__)


#: File suffixes (lower case) read as images.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

#: Files holding YOLO class names, looked for in this order in the dataset root.
CLASS_NAME_FILES = ("classes.txt", "data.yaml", "dataset.yaml")

# Normalised coordinates may overshoot [0, 1] by rounding (the coco128 labels reach
# 1.0000005); anything beyond this is a pixel coordinate written by mistake.
_NORMALISED_TOLERANCE = 1e-3
_MAX_LISTED = 5


@dataclass(frozen=True, slots=True, eq=False)
class DetectionDataset:
    """A labelled image set: COCO-format ground truth plus where each image is.

    Attributes:
        name: what to call it in reports (``coco128/val2017``).
        layout: the format it was read from.
        ground_truth: COCO dict with ``images`` (``id``, ``file_name``, ``width``,
            ``height``), ``annotations`` (``id`` 1..N, ``image_id``, ``category_id``,
            ``bbox`` ``[x, y, w, h]`` pixels, ``area`` square pixels, ``iscrowd`` 0/1) and
            ``categories`` (``id``, ``name``). Treat as read-only.
        image_paths: image id → image file.
        skipped_images: images left out because they could not be decoded.
    """

    name: str
    layout: Literal["coco", "yolo"]
    ground_truth: Mapping[str, Any]
    image_paths: Mapping[int, Path]
    skipped_images: tuple[Path, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def image_ids(self) -> tuple[int, ...]:
        """Image ids in ascending order (the order images are evaluated in)."""
        return tuple(sorted(self.image_paths))

    @property
    def categories(self) -> dict[int, str]:
        """Category id → name."""
        return {int(c["id"]): str(c["name"]) for c in self.ground_truth["categories"]}

    @property
    def image_sizes(self) -> dict[int, tuple[int, int]]:
        """Image id → ``(height, width)`` in pixels, as the annotations state it."""
        return {
            int(im["id"]): (int(im["height"]), int(im["width"]))
            for im in self.ground_truth["images"]
        }

    def object_counts(self) -> dict[int, int]:
        """Category id → number of non-crowd ground-truth boxes."""
        counts = dict.fromkeys(self.categories, 0)
        for ann in self.ground_truth["annotations"]:
            if not ann["iscrowd"]:
                counts[ann["category_id"]] += 1
        return counts

    def subset(self, image_ids: Iterable[int]) -> DetectionDataset:
        """The same dataset restricted to ``image_ids`` (e.g. the first N for a quick run).

        Raises:
            DatasetError: an id is not in this dataset.
        """
        keep = set(image_ids)
        unknown = keep - set(self.image_paths)
        if unknown:
            raise DatasetError(f"{self.name}: no images with ids {_listing(sorted(unknown))}")
        gt = self.ground_truth
        return DetectionDataset(
            name=self.name,
            layout=self.layout,
            ground_truth={
                **gt,
                "images": [im for im in gt["images"] if im["id"] in keep],
                "annotations": [a for a in gt["annotations"] if a["image_id"] in keep],
            },
            image_paths={i: p for i, p in self.image_paths.items() if i in keep},
            skipped_images=self.skipped_images,
        )

    def category_ids_for(self, class_names: Sequence[str]) -> IntArray:
        """Map a detector's class names onto this dataset's categories, by name.

        Names match case-insensitively, with ``_`` and ``-`` read as spaces. Every category
        that has ground-truth objects must be one of ``class_names``; detector classes the
        dataset does not have are ignored (their detections are not scored).

        Returns:
            (C,) int64 for C = ``len(class_names)``: the category id of each detector class,
            -1 where the dataset has no such category.

        Raises:
            DatasetError: categories with objects that the detector does not know (all are
                listed), or two categories whose names collide.
        """
        by_name: dict[str, int] = {}
        for cat_id, name in self.categories.items():
            key = _name_key(name)
            if key in by_name:
                raise DatasetError(
                    f"{self.name}: categories {by_name[key]} and {cat_id} are both named {name!r}"
                )
            by_name[key] = cat_id
        known = {_name_key(n) for n in class_names}
        counts = self.object_counts()
        missing = [
            f"{name} ({counts[cat_id]} objects)"
            for cat_id, name in self.categories.items()
            if counts[cat_id] and _name_key(name) not in known
        ]
        if missing:
            raise DatasetError(
                f"the model has no class named like {len(missing)} of the dataset's categories: "
                f"{', '.join(missing)}. Model classes: {_listing(class_names, 12)}"
            )
        return np.array([by_name.get(_name_key(n), -1) for n in class_names], dtype=np.int64)


def load_dataset(
    data: str | Path, *, images: str | Path | None = None, split: str | None = None
) -> DetectionDataset:
    """Load a labelled set, telling the layout from ``data``.

    Args:
        data: one of

            * a COCO ``.json`` (images found next to it, or in ``images``);
            * a YOLO ``data.yaml`` (``split`` picks ``train``/``val``/``test``, default
              ``val``);
            * a folder: with ``split``, ``<data>/images/<split>`` + ``labels/<split>``
              (YOLO; preferred when both layouts are there) or
              ``<data>/annotations/instances_<split>.json`` (COCO); without ``split``, a
              ``data.yaml`` in it, or a YOLO images folder.
        images: the image folder of a COCO json.
        split: split name (``val2017``) of a dataset folder or data.yaml.

    Raises:
        DatasetError: nothing usable at ``data``, or malformed annotations / labels.
    """
    path = Path(data)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix == ".json":
            if split is not None:
                raise DatasetError(
                    "split selects a split of a dataset folder or data.yaml; a COCO json "
                    "is one split already (give its images folder as images)"
                )
            return load_coco_dataset(path, images)
        if images is not None:
            raise DatasetError("images is only for a COCO json (data = instances_*.json)")
        if suffix in {".yaml", ".yml"}:
            return load_yolo_yaml(path, split)
        raise DatasetError(f"{path}: expected a COCO .json, a YOLO data.yaml or a dataset folder")
    if images is not None:
        raise DatasetError("images is only for a COCO json (data = instances_*.json)")
    if split is not None:
        yolo_images = path / "images" / split
        coco_json = path / "annotations" / f"instances_{split}.json"
        if yolo_images.is_dir() and (path / "labels" / split).is_dir():
            return load_yolo_dataset(yolo_images, name=f"{path.name}/{split}")
        if coco_json.is_file():
            return load_coco_dataset(coco_json)
        if yolo_images.is_dir():  # no labels: let the YOLO reader say so
            return load_yolo_dataset(yolo_images, name=f"{path.name}/{split}")
        yaml_file = _first_existing(path, ("data.yaml", "dataset.yaml"))
        if yaml_file is not None:
            return load_yolo_yaml(yaml_file, split)
        raise DatasetError(
            f"{path}: no split {split!r}: neither images/{split}/ (YOLO) nor "
            f"annotations/instances_{split}.json (COCO); splits found: "
            f"{_listing(_splits_in(path)) or 'none'}"
        )
    yaml_file = _first_existing(path, ("data.yaml", "dataset.yaml"))
    if yaml_file is not None:
        return load_yolo_yaml(yaml_file, None)
    if _has_images(path):
        return load_yolo_dataset(path)
    if (path / "images").is_dir() and _has_images(path / "images"):
        return load_yolo_dataset(path / "images", name=path.name)
    splits = _splits_in(path)
    if splits:
        raise DatasetError(
            f"{path}: holds several splits; choose one as split ({_listing(splits)})"
        )
    raise DatasetError(
        f"{path}: not a dataset: no images in it, no images/<split> folders, no data.yaml and "
        "no annotations/instances_<split>.json"
    )


# --------------------------------------------------------------------------- COCO json


def load_coco_dataset(
    annotations: str | Path, images: str | Path | None = None
) -> DetectionDataset:
    """Read a COCO instances json; its images live in ``images`` or are found next to it.

    Annotation ids are renumbered 1..N (COCO evaluation treats id 0 as "unmatched"), a
    missing ``area`` becomes ``w * h``, a missing ``iscrowd`` 0; segmentations are dropped.

    Raises:
        DatasetError: unreadable or malformed json (names the file, line or entry), the
            image folder not found, or listed images missing from it.
    """
    path = Path(annotations)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    ground_truth = _normalise_coco(raw, path)
    folder = Path(images) if images is not None else _find_coco_images(path)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: image folder not found (for {path})")
    image_paths = {int(im["id"]): folder / str(im["file_name"]) for im in ground_truth["images"]}
    missing = [p.name for p in image_paths.values() if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} of the {len(image_paths)} images in {path} are not in {folder} "
            f"({_listing(missing)}); is images the right folder?"
        )
    split = path.stem.removeprefix("instances_")
    return DetectionDataset(
        name=f"{_root_of_annotations(path).name}/{split}",
        layout="coco",
        ground_truth=ground_truth,
        image_paths=image_paths,
    )


def _root_of_annotations(path: Path) -> Path:
    parent = path.resolve().parent
    return parent.parent if parent.name == "annotations" else parent


def _find_coco_images(json_path: Path) -> Path:
    root = _root_of_annotations(json_path)
    split = json_path.stem.removeprefix("instances_")
    candidates = [root / "images" / split, root / split, root / "images"]
    for folder in candidates:
        if folder.is_dir():
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise DatasetError(
        f"cannot find the images of {json_path} (tried {tried}); give their folder as images"
    )


def _normalise_coco(raw: Any, where: Path) -> dict[str, Any]:
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetError(
            f"{where}: not a COCO instances file (needs 'images', 'annotations' and "
            "'categories' lists)"
        )
    images: list[dict[str, Any]] = []
    for i, im in enumerate(raw["images"]):
        if not (
            isinstance(im, dict)
            and _is_int(im.get("id"))
            and isinstance(im.get("file_name"), str)
            and _is_int(im.get("width"))
            and _is_int(im.get("height"))
            and im["width"] > 0
            and im["height"] > 0
        ):
            raise DatasetError(
                f"{where}: images[{i}] needs an integer 'id', a 'file_name' and positive "
                f"integer 'width' and 'height', got {_short(im)}"
            )
        images.append(
            {
                "id": int(im["id"]),
                "file_name": im["file_name"],
                "width": int(im["width"]),
                "height": int(im["height"]),
            }
        )
    image_ids = {im["id"] for im in images}
    if len(image_ids) != len(images):
        raise DatasetError(f"{where}: duplicate image ids")
    categories: list[dict[str, Any]] = []
    for i, cat in enumerate(raw["categories"]):
        if not (
            isinstance(cat, dict) and _is_int(cat.get("id")) and isinstance(cat.get("name"), str)
        ):
            raise DatasetError(
                f"{where}: categories[{i}] needs an integer 'id' and a 'name', got {_short(cat)}"
            )
        categories.append({"id": int(cat["id"]), "name": cat["name"]})
    category_ids = {c["id"] for c in categories}
    if len(category_ids) != len(categories):
        raise DatasetError(f"{where}: duplicate category ids")
    annotations: list[dict[str, Any]] = []
    for i, ann in enumerate(raw["annotations"]):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not (
            isinstance(ann, dict)
            and isinstance(bbox, list)
            and len(bbox) == 4
            and all(_is_number(v) for v in bbox)
        ):
            raise DatasetError(
                f"{where}: annotations[{i}] needs a 'bbox' of 4 numbers [x, y, w, h], got "
                f"{_short(ann)}"
            )
        x, y, w, h = (float(v) for v in bbox)
        if w < 0 or h < 0:
            raise DatasetError(f"{where}: annotations[{i}] has a negative box size {bbox}")
        if ann.get("image_id") not in image_ids:
            raise DatasetError(
                f"{where}: annotations[{i}] refers to image_id {ann.get('image_id')!r}, "
                "which is not in 'images'"
            )
        if ann.get("category_id") not in category_ids:
            raise DatasetError(
                f"{where}: annotations[{i}] refers to category_id {ann.get('category_id')!r}, "
                "which is not in 'categories'"
            )
        area = ann.get("area")
        area_px = float(area) if isinstance(area, int | float) and _is_number(area) else w * h
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": int(ann["image_id"]),
                "category_id": int(ann["category_id"]),
                "bbox": [x, y, w, h],
                "area": area_px,
                "iscrowd": int(bool(ann.get("iscrowd", 0))),
            }
        )
    return {"images": images, "annotations": annotations, "categories": categories}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- YOLO


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from ``classes.txt`` (one per line, line i = class i) or a YOLO yaml
    (``names:`` as a list or a ``{0: name, 1: …}`` map).

    Raises:
        DatasetError: unreadable file, no names, or ids that are not 0..N-1.
    """
    path = Path(path)
    if path.suffix.lower() in {".yaml", ".yml"}:
        config = _read_yaml(path)
        names = config.get("names")
        if isinstance(names, dict):
            if sorted(names) != list(range(len(names))):
                raise DatasetError(f"{path}: 'names' keys must be the class ids 0..N-1")
            names = [names[i] for i in range(len(names))]
        if not isinstance(names, list) or not names:
            raise DatasetError(f"{path}: no 'names' list of class names")
        return tuple(str(n) for n in names)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read class names ({exc})") from None
    names_txt = tuple(line.strip() for line in lines if line.strip())
    if not names_txt:
        raise DatasetError(f"{path}: no class names (one per line expected)")
    return names_txt


def read_yolo_labels(path: str | Path, num_classes: int) -> tuple[IntArray, Float64Array]:
    """Parse one YOLO label file.

    Each non-blank line is ``class cx cy w h`` (normalised box centre and size) or a
    segmentation polygon ``class x1 y1 x2 y2 x3 y3 …``, whose bounding box is taken.

    Returns:
        ``(class_id, cxcywh)``: (N,) int64 and (N, 4) float64, normalised to [0, 1] and
        clipped to the image.

    Raises:
        DatasetError: ``<file>:<line>: …`` for a line that is not numbers, has the wrong
            number of fields, a class outside ``0..num_classes-1``, a non-positive size or
            coordinates outside [0, 1].
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read label file ({exc})") from None
    class_ids: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise DatasetError(
                f"{where}: {line.strip()!r} is not numbers; expected 'class cx cy w h'"
            ) from None
        if not all(math.isfinite(v) for v in values):
            raise DatasetError(f"{where}: non-finite value in {line.strip()!r}")
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise DatasetError(
                f"{where}: class {fields[0]} is not an integer in 0..{num_classes - 1} "
                f"(there are {num_classes} class names)"
            )
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(values) >= 7 and len(values) % 2 == 1:
            xs, ys = values[1::2], values[2::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise DatasetError(
                f"{where}: {len(values)} fields in {line.strip()!r}; expected 'class cx cy w h' "
                "(5 numbers) or a polygon 'class x1 y1 x2 y2 x3 y3 …'"
            )
        if not (x2 > x1 and y2 > y1):
            raise DatasetError(f"{where}: box width and height must be > 0 in {line.strip()!r}")
        lo, hi = -_NORMALISED_TOLERANCE, 1 + _NORMALISED_TOLERANCE
        if min(x1, y1) < lo or max(x2, y2) > hi:
            raise DatasetError(
                f"{where}: box {line.strip()!r} reaches outside [0, 1]; YOLO labels are "
                "normalised (pixel coordinates divided by the image width and height)"
            )
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, 1.0), min(y2, 1.0)
        class_ids.append(int(cls))
        boxes.append(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))
    return (
        np.array(class_ids, dtype=np.int64),
        np.array(boxes, dtype=np.float64).reshape(-1, 4),
    )


def load_yolo_dataset(
    images: str | Path,
    *,
    labels: str | Path | None = None,
    class_names: Sequence[str] | str | Path | None = None,
    name: str | None = None,
) -> DetectionDataset:
    """Read a YOLO-format image folder (searched recursively) and its labels.

    Args:
        images: the images folder (``coco128/images/val2017``).
        labels: the labels folder; default: ``images`` with its last ``images`` path part
            replaced by ``labels``, or ``images`` itself when no part is called so.
        class_names: the names, or a file with them; default: the first of
            ``CLASS_NAME_FILES`` found in the folders above ``images`` (up to 3 levels).
        name: what to call the dataset (default ``<root>/<split>`` from the path).

    Image ids are 1..N in file path order. Label files without an image are ignored, with a
    logged warning.

    Raises:
        DatasetError: folders or class names not found, malformed label lines.
    """
    images_dir = Path(images)
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: image folder not found")
    labels_dir = Path(labels) if labels is not None else _labels_dir_for(images_dir)
    if not labels_dir.is_dir():
        raise DatasetError(
            f"{labels_dir}: labels folder not found (YOLO labels live in a 'labels' folder "
            f"parallel to '{images_dir}')"
        )
    if class_names is None:
        names_file = _find_class_names(images_dir)
        names = read_class_names(names_file)
    elif isinstance(class_names, str | Path):
        names = read_class_names(class_names)
    else:
        names = tuple(class_names)
    files = sorted(
        p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        raise DatasetError(f"{images_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    import cv2

    images_out: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    image_paths: dict[int, Path] = {}
    skipped: list[Path] = []
    for file in files:
        relative = file.relative_to(images_dir)
        label_file = (labels_dir / relative).with_suffix(".txt")
        class_ids, cxcywh = (
            read_yolo_labels(label_file, len(names))
            if label_file.is_file()
            else (np.empty(0, np.int64), np.empty((0, 4)))
        )
        # Decoded, not just the header read: the size must be the one the detector sees
        # (OpenCV applies the EXIF orientation), and an undecodable file is found now.
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            logger.warning("%s: cannot decode image, skipped", file)
            skipped.append(file)
            continue
        height, width = image.shape[:2]
        image_id = len(images_out) + 1
        images_out.append(
            {"id": image_id, "file_name": relative.as_posix(), "width": width, "height": height}
        )
        image_paths[image_id] = file
        scale = np.array([width, height, width, height], dtype=np.float64)
        px = cxcywh * scale
        xywh = np.column_stack([px[:, :2] - px[:, 2:] / 2, px[:, 2:]])
        for cls, box in zip(class_ids.tolist(), xywh.tolist(), strict=True):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    if skipped:
        logger.warning(
            "%s: %d of %d images could not be decoded", images_dir, len(skipped), len(files)
        )
    if labels_dir != images_dir:
        expected = {(labels_dir / f.relative_to(images_dir)).with_suffix(".txt") for f in files}
        orphans = sorted(p.name for p in labels_dir.rglob("*.txt") if p not in expected)
        if orphans:
            logger.warning(
                "%s: %d label files have no image, ignored (%s)",
                labels_dir,
                len(orphans),
                _listing(orphans),
            )
    return DetectionDataset(
        name=name or _yolo_name(images_dir),
        layout="yolo",
        ground_truth={
            "images": images_out,
            "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in enumerate(names)],
        },
        image_paths=image_paths,
        skipped_images=tuple(skipped),
    )


def load_yolo_yaml(path: str | Path, split: str | None = None) -> DetectionDataset:
    """Read the ``split`` (default ``val``) of a YOLO ``data.yaml``.

    ``path:`` is the dataset root (relative to the yaml's folder; default that folder), the
    split's value an images folder under it, ``names:`` the class names.

    Raises:
        DatasetError: no such split, a split given as a list or a .txt file list (not
            supported), or what :func:`load_yolo_dataset` raises.
    """
    yaml_path = Path(path)
    config = _read_yaml(yaml_path)
    names = read_class_names(yaml_path)
    root = Path(str(config.get("path") or "."))
    if not root.is_absolute():
        root = yaml_path.parent / root
    split = split or "val"
    entry = config.get(split)
    if entry is None:
        found = [k for k in ("train", "val", "test") if config.get(k)]
        raise DatasetError(
            f"{yaml_path}: no {split!r} split (splits listed: {', '.join(found) or 'none'})"
        )
    if not isinstance(entry, str) or entry.lower().endswith(".txt"):
        raise DatasetError(
            f"{yaml_path}: split {split!r} must be one images folder; lists and .txt image "
            "lists are not supported"
        )
    images_dir = root / entry
    return load_yolo_dataset(images_dir, class_names=names, name=f"{root.resolve().name}/{split}")


def _read_yaml(path: Path) -> dict[str, Any]:
    from tapetum._optional import import_optional

    yaml = import_optional("yaml", "eval", "reading a YOLO data.yaml")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{path}{at}: invalid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise DatasetError(f"{path}: expected a mapping with 'names' and split folders")
    return config


def _labels_dir_for(images_dir: Path) -> Path:
    parts = list(images_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images_dir


def _find_class_names(images_dir: Path) -> Path:
    searched: list[Path] = []
    folder = images_dir
    for _ in range(4):
        found = _first_existing(folder, CLASS_NAME_FILES)
        if found is not None:
            return found
        searched.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    raise DatasetError(
        f"no class names for {images_dir}: put them in classes.txt (one per line, line i = "
        f"class i) or a data.yaml 'names:' list in the dataset root (searched "
        f"{', '.join(str(s) for s in searched)})"
    )


def _yolo_name(images_dir: Path) -> str:
    parts = images_dir.resolve().parts
    if len(parts) >= 3 and parts[-2] == "images":
        return f"{parts[-3]}/{parts[-1]}"
    return images_dir.resolve().name


# --------------------------------------------------------------------------- helpers


def _name_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def _first_existing(folder: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def _splits_in(root: Path) -> list[str]:
    splits = set()
    if (root / "images").is_dir():
        splits |= {p.name for p in (root / "images").iterdir() if p.is_dir()}
    if (root / "annotations").is_dir():
        splits |= {
            p.stem.removeprefix("instances_")
            for p in (root / "annotations").glob("instances_*.json")
        }
    return sorted(splits)


def _listing(items: Sequence[Any], limit: int = _MAX_LISTED) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")
