"""Which detections make a good appearance crop: not occluded, not cut by the frame
border, not under a static overlay, not too small.

A re-identification embedding is only as good as its crop. A person half hidden behind
another embeds as a mix of both; a box cut by the frame edge or covered by a burned-in
logo or timestamp embeds the edge or the logo. Track-level appearance (an average over a
track's crops) is much cleaner when such crops are left out, and a crop left out need not
be embedded at all.

All tests are vectorised over a frame's boxes: the pairwise covered fraction is one (N, N)
intersection matrix, and a static mask is rasterised once per frame size into a summed-
area table, so the masked fraction of N boxes is four lookups each.

Example:
    >>> import numpy as np
    >>> boxes = np.array([[10, 10, 50, 110], [30, 20, 70, 120], [200, 50, 240, 150],
    ...                   [0, 40, 30, 140], [100, 10, 110, 30]], np.float32)
    >>> mask = StaticMask(rects=((190.0, 146.0, 320.0, 240.0),))
    >>> usable_crops(boxes, (240, 320), CropFilter(min_height_px=40), mask).tolist()
    [False, False, True, False, False]

    The first two cover each other by 45 %, the mask covers 4 % of the third (its last
    4 of 100 rows), the fourth touches the left border, the last is 20 px tall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tapetum._types import BoolArray, Float64Array
from tapetum.errors import ConfigError

#: A rectangle ``x1, y1, x2, y2`` in pixels.
Rect = tuple[float, float, float, float]
#: A polygon's vertices ``(x, y)`` in pixels, at least three.
Polygon = tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class CropFilter:
    """What makes a crop unusable for appearance.

    Attributes:
        min_height_px: boxes shorter than this are too small to embed reliably.
        max_covered: largest fraction of a box's area another box of the same frame may
            cover (a person behind or in front of another). The fraction of the box's own
            area, not the IoU: a small box wholly inside a large one is fully occluded
            though their IoU is small.
        border_px: a box within this many pixels of the frame edge is truncated.
        max_masked: largest fraction of a box the static mask may cover.
    """

    min_height_px: float = 32.0
    max_covered: float = 0.2
    border_px: float = 2.0
    max_masked: float = 0.05

    def __post_init__(self) -> None:
        for name in ("max_covered", "max_masked"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"CropFilter.{name} must be in [0, 1], got {value}")
        for name in ("min_height_px", "border_px"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"CropFilter.{name} must be ≥ 0 pixels, got {value}")


@dataclass(frozen=True)
class StaticMask:
    """Regions of a camera's frame covered by something static (a burned-in logo, a
    timestamp, a pillar): crops overlapping them are not used for appearance.

    Attributes:
        rects: rectangles ``x1, y1, x2, y2`` in pixels.
        polygons: polygons, each a sequence of ``(x, y)`` vertices in pixels.
        field_name: where the mask was configured (``cameras[1].mask``), named in errors.
    """

    rects: tuple[Rect, ...] = ()
    polygons: tuple[Polygon, ...] = ()
    field_name: str = "mask"
    _tables: dict[tuple[int, int], Float64Array] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for i, rect in enumerate(self.rects):
            x1, y1, x2, y2 = rect
            if not all(math.isfinite(v) for v in rect) or x2 <= x1 or y2 <= y1:
                raise ConfigError(
                    f"{self._item(i)}: a rectangle is [x1, y1, x2, y2] with x1 < x2 and "
                    f"y1 < y2, got {list(rect)}"
                )
        for j, poly in enumerate(self.polygons):
            if len(poly) < 3 or not all(math.isfinite(v) for p in poly for v in p):
                raise ConfigError(
                    f"{self._item(len(self.rects) + j)}: a polygon needs at least 3 finite "
                    f"(x, y) vertices, got {[list(p) for p in poly]}"
                )
        self.check_inside(None)

    def _item(self, i: int) -> str:
        return f"{self.field_name}[{i}]"

    def __bool__(self) -> bool:
        return bool(self.rects or self.polygons)

    def check_inside(self, frame_hw: tuple[int, int] | None) -> None:
        """Raise ConfigError naming the first region not inside the frame (with no size,
        only negative coordinates are caught).

        Args:
            frame_hw: frame height and width in pixels, or None when not known yet.
        """
        h, w = frame_hw if frame_hw is not None else (math.inf, math.inf)
        shapes: list[Sequence[tuple[float, float]]] = [
            ((r[0], r[1]), (r[2], r[3])) for r in self.rects
        ]
        shapes += list(self.polygons)
        for i, points in enumerate(shapes):
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            if min(xs) < 0 or min(ys) < 0 or max(xs) > w or max(ys) > h:
                frame = "the frame" if frame_hw is None else f"the {w}x{h} frame"
                raise ConfigError(
                    f"{self._item(i)}: region {[list(p) for p in points]} lies outside "
                    f"{frame} (pixels, origin at the top-left corner)"
                )

    def _table(self, frame_hw: tuple[int, int]) -> Float64Array:
        """Summed-area table of the rasterised mask, (H + 1, W + 1), built once per size."""
        table = self._tables.get(frame_hw)
        if table is None:
            import cv2

            self.check_inside(frame_hw)
            h, w = frame_hw
            raster = np.zeros((h, w), np.uint8)
            for x1, y1, x2, y2 in self.rects:
                raster[round(y1) : round(y2), round(x1) : round(x2)] = 1
            if self.polygons:
                pts = [np.round(np.asarray(p, np.float64)).astype(np.int32) for p in self.polygons]
                cv2.fillPoly(raster, pts, 1)
            table = np.zeros((h + 1, w + 1), np.float64)
            table[1:, 1:] = raster.cumsum(0).cumsum(1)
            self._tables[frame_hw] = table
        return table

    def covered_fraction(self, xyxy: npt.ArrayLike, frame_hw: tuple[int, int]) -> Float64Array:
        """(N,) fraction of each box's pixels (clipped to the frame) under the mask.

        Raises:
            ConfigError: a region lies outside a frame of this size.
        """
        boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
        if not self:
            return np.zeros(boxes.shape[0])
        table = self._table(frame_hw)
        h, w = frame_hw
        x1 = np.clip(np.floor(boxes[:, 0]), 0, w).astype(np.int64)
        y1 = np.clip(np.floor(boxes[:, 1]), 0, h).astype(np.int64)
        x2 = np.clip(np.ceil(boxes[:, 2]), 0, w).astype(np.int64)
        y2 = np.clip(np.ceil(boxes[:, 3]), 0, h).astype(np.int64)
        inside = table[y2, x2] - table[y1, x2] - table[y2, x1] + table[y1, x1]
        area = np.maximum((x2 - x1) * (y2 - y1), 1)
        fraction: Float64Array = inside / area
        return fraction


def covered_fraction(xyxy: npt.ArrayLike, others: npt.ArrayLike | None = None) -> Float64Array:
    """(N,) largest fraction of each box's area covered by one other box.

    Args:
        xyxy: (N, 4) boxes, pixels.
        others: (M, 4) the boxes that may cover them (default: ``xyxy`` itself). A box
            identical to the one tested is that box (a tracker's output rows are rows of
            the detections), not an occluder, and is skipped.
    """
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    o = b if others is None else np.asarray(others, np.float64).reshape(-1, 4)
    if b.shape[0] == 0 or o.shape[0] == 0:
        return np.zeros(b.shape[0])
    iw = np.minimum(b[:, None, 2], o[None, :, 2]) - np.maximum(b[:, None, 0], o[None, :, 0])
    ih = np.minimum(b[:, None, 3], o[None, :, 3]) - np.maximum(b[:, None, 1], o[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    same = np.all(np.abs(b[:, None, :] - o[None, :, :]) < 1e-3, axis=2)
    inter[same] = 0.0
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-9)
    covered: Float64Array = (inter / area[:, None]).max(axis=1)
    return covered


def usable_crops(
    xyxy: npt.ArrayLike,
    frame_hw: tuple[int, int] | None,
    crop_filter: CropFilter | None = None,
    mask: StaticMask | None = None,
    *,
    others: npt.ArrayLike | None = None,
) -> BoolArray:
    """(N,) True for boxes whose crop is fit for appearance.

    Args:
        xyxy: (N, 4) boxes of one frame, pixels.
        frame_hw: frame height and width; None skips the border and mask tests.
        crop_filter: thresholds; default :class:`CropFilter`.
        mask: the camera's static overlay, if any.
        others: (M, 4) every box of the frame that may occlude (default ``xyxy``): pass
            all detections when ``xyxy`` holds only the tracked ones.
    """
    cfg = crop_filter if crop_filter is not None else CropFilter()
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    ok: BoolArray = (b[:, 3] - b[:, 1]) >= cfg.min_height_px
    ok &= covered_fraction(b, others) <= cfg.max_covered
    if frame_hw is not None:
        h, w = frame_hw
        m = cfg.border_px
        ok &= (b[:, 0] > m) & (b[:, 1] > m) & (b[:, 2] < w - m) & (b[:, 3] < h - m)
        if mask:
            ok &= mask.covered_fraction(b, frame_hw) <= cfg.max_masked
    return ok
