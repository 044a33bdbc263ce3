"""The structure-of-arrays track table every tracker keeps its state in."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt


class ColumnTable:
    """Mixin for a dataclass whose fields are parallel arrays, one row per track.

    Subclasses are ``@dataclass(slots=True)`` with array fields only, ``track_id`` among
    them; selecting and appending rows then works column by column, so a tracker's state
    update is a handful of array operations rather than a loop over track objects.
    """

    _column_names: ClassVar[tuple[str, ...]] = ()
    track_id: npt.NDArray[np.int64]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._column_names = ()  # filled lazily: the dataclass decorator runs after this

    @classmethod
    def _columns_of(cls) -> tuple[str, ...]:
        if not cls._column_names:
            cls._column_names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        return cls._column_names

    def __len__(self) -> int:
        return int(self.track_id.shape[0])

    def columns(self) -> dict[str, npt.NDArray[Any]]:
        """Field name → array, in declaration order."""
        return {name: getattr(self, name) for name in self._columns_of()}

    def select(self, rows: npt.NDArray[np.bool_] | npt.NDArray[np.int64]) -> Self:
        """The tracks at ``rows`` (a boolean mask or integer indices), copied."""
        return type(self)(**{k: v[rows] for k, v in self.columns().items()})

    def concat(self, other: Self) -> Self:
        """This table's tracks followed by ``other``'s."""
        theirs = other.columns()
        return type(self)(**{k: np.concatenate((v, theirs[k])) for k, v in self.columns().items()})
