"""Class-name tables."""

from __future__ import annotations

#: The 80 COCO class names in the order YOLO-family detectors emit them.
COCO80: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

#: COCO category ids (1-90) that no class uses: the 80 classes have ids 1-90 with gaps.
_COCO_UNUSED_IDS = frozenset({12, 26, 29, 30, 45, 66, 68, 69, 71, 83})


def _coco90() -> tuple[str, ...]:
    names = iter(COCO80)
    return tuple("N/A" if cid in _COCO_UNUSED_IDS else next(names) for cid in range(1, 91))


#: The 90 COCO category slots, index = category id - 1 ("N/A" where no class has the id):
#: how EfficientDet and other TF-lineage detectors number classes.
COCO90: tuple[str, ...] = _coco90()


def resolve_class_filter(names: tuple[str, ...], wanted: list[str] | None) -> frozenset[int] | None:
    """Turn class names or numeric ids into a set of class ids (None keeps every class).

    Raises:
        ConfigError: a name is neither a known class nor a valid id.
    """
    from tapetum.errors import ConfigError

    if not wanted:
        return None
    lookup = {n.lower(): i for i, n in enumerate(names)}
    ids: set[int] = set()
    for item in wanted:
        key = item.strip().lower()
        if key.isdigit() and int(key) < len(names):
            ids.add(int(key))
        elif key in lookup:
            ids.add(lookup[key])
        else:
            raise ConfigError(
                f"unknown class {item!r}; known classes include {', '.join(names[:8])}, …"
            )
    return frozenset(ids)
