"""Array-backed detections: one object per frame, parallel numpy arrays inside.

Modelled on ``supervision.Detections``: every per-frame operation is a vectorised mask
or slice, never a Python loop over objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tapetum._types import Float32Array, IntArray

if TYPE_CHECKING:
    import supervision as sv

Index = int | slice | npt.NDArray[np.bool_] | npt.NDArray[np.integer[Any]] | list[int]

#: ``tracker_id`` of a detection that no tracker has confirmed.
NO_TRACK = -1


@dataclass(slots=True)
class Detections:
    """Objects found in one frame.

    Attributes:
        xyxy: (N, 4) float32, corners ``x1, y1, x2, y2`` in pixels of the source frame.
        confidence: (N,) float32 in [0, 1].
        class_id: (N,) int64, index into the detector's class names.
        tracker_id: (N,) int64, track identity, ``NO_TRACK`` (-1) where unassigned.
        embeddings: optional (N, D) float32 appearance vectors (re-identification).
        data: extra per-object arrays, each with N rows (e.g. ``"class_name"``).
    """

    xyxy: Float32Array
    confidence: Float32Array
    class_id: IntArray
    tracker_id: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    embeddings: Float32Array | None = None
    data: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = self.xyxy.shape[0]
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        tid = np.asarray(self.tracker_id, dtype=np.int64).reshape(-1)
        self.tracker_id = np.full(n, NO_TRACK, np.int64) if tid.size == 0 and n else tid
        if self.embeddings is not None:
            emb = np.asarray(self.embeddings, dtype=np.float32)
            # (0, D) stays (0, D): reshape(0, -1) cannot infer D from no rows
            self.embeddings = emb.reshape(n, emb.shape[-1] if emb.ndim > 1 else -1)
        for name, arr in (
            ("confidence", self.confidence),
            ("class_id", self.class_id),
            ("tracker_id", self.tracker_id),
        ):
            if arr.shape[0] != n:
                raise ValueError(f"Detections.{name} has {arr.shape[0]} rows, xyxy has {n}")
        for key, arr in self.data.items():
            if len(arr) != n:
                raise ValueError(f"Detections.data[{key!r}] has {len(arr)} rows, xyxy has {n}")

    @classmethod
    def empty(cls) -> Detections:
        """No objects."""
        return cls(np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int64))

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Index) -> Detections:
        """Select rows by boolean mask, integer array, list, slice or a single integer."""
        if isinstance(index, int | np.integer):
            index = slice(index, index + 1 if index != -1 else None)
        # Rows of arrays that were validated when this object was built: the result is
        # valid too, so skip ``__post_init__`` (trackers index once per frame).
        return Detections._unchecked(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=self.tracker_id[index],
            embeddings=None if self.embeddings is None else self.embeddings[index],
            data={k: v[index] for k, v in self.data.items()},
        )

    @classmethod
    def _unchecked(
        cls,
        *,
        xyxy: Float32Array,
        confidence: Float32Array,
        class_id: IntArray,
        tracker_id: IntArray,
        embeddings: Float32Array | None,
        data: dict[str, npt.NDArray[Any]],
    ) -> Detections:
        """Build without ``__post_init__``: the arrays must already have the documented
        dtypes and matching row counts (internal fast path)."""
        out = object.__new__(cls)
        out.xyxy = xyxy
        out.confidence = confidence
        out.class_id = class_id
        out.tracker_id = tracker_id
        out.embeddings = embeddings
        out.data = data
        return out

    @property
    def area(self) -> Float32Array:
        """(N,) float32 box areas in square pixels."""
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0.0, None)
        area: Float32Array = (wh[:, 0] * wh[:, 1]).astype(np.float32)
        return area

    @property
    def center(self) -> Float32Array:
        """(N, 2) float32 box centres in pixels."""
        return ((self.xyxy[:, :2] + self.xyxy[:, 2:]) * 0.5).astype(np.float32)

    @property
    def is_tracked(self) -> npt.NDArray[np.bool_]:
        """(N,) True where a tracker assigned an identity."""
        tracked: npt.NDArray[np.bool_] = self.tracker_id != NO_TRACK
        return tracked

    @classmethod
    def merge(cls, parts: Iterable[Detections]) -> Detections:
        """Concatenate detections row-wise. Extra ``data`` keys must match across parts."""
        items = [p for p in parts if len(p)]
        if not items:
            return cls.empty()
        keys = set(items[0].data)
        if any(set(p.data) != keys for p in items):
            raise ValueError("cannot merge Detections whose data keys differ")
        with_emb = [p.embeddings is not None for p in items]
        if any(with_emb) and not all(with_emb):
            raise ValueError("cannot merge Detections with and without embeddings")
        return cls(
            xyxy=np.concatenate([p.xyxy for p in items]),
            confidence=np.concatenate([p.confidence for p in items]),
            class_id=np.concatenate([p.class_id for p in items]),
            tracker_id=np.concatenate([p.tracker_id for p in items]),
            embeddings=np.concatenate([p.embeddings for p in items if p.embeddings is not None])
            if all(with_emb)
            else None,
            data={k: np.concatenate([p.data[k] for p in items]) for k in keys},
        )

    def to_supervision(self) -> sv.Detections:
        """Convert to ``supervision.Detections`` (for its annotators and utilities)."""
        import supervision as sv

        return sv.Detections(
            xyxy=self.xyxy.astype(np.float32, copy=False),
            confidence=self.confidence,
            class_id=self.class_id.astype(int, copy=False),
            tracker_id=self.tracker_id.astype(int, copy=False),
            data=dict(self.data),
        )

    @classmethod
    def from_supervision(cls, detections: sv.Detections) -> Detections:
        """Build from ``supervision.Detections``; missing fields become defaults."""
        n = len(detections)
        conf = detections.confidence if detections.confidence is not None else np.ones(n)
        cls_id = detections.class_id if detections.class_id is not None else np.zeros(n)
        tid = detections.tracker_id if detections.tracker_id is not None else np.full(n, NO_TRACK)
        data: Mapping[str, Any] = detections.data or {}
        return cls(
            xyxy=np.asarray(detections.xyxy, np.float32),
            confidence=np.asarray(conf, np.float32),
            class_id=np.asarray(cls_id, np.int64),
            tracker_id=np.asarray(tid, np.int64),
            data={k: np.asarray(v) for k, v in data.items()},
        )
