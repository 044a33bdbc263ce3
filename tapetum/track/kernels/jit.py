"""A typed ``numba.njit``: compiled functions keep their Python signatures for mypy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

F = TypeVar("F", bound=Callable[..., Any])


def njit(func: F) -> F:
    """Compile ``func`` in nopython mode, cached on disk, with exact IEEE float semantics
    (no fastmath: results must match the numpy reference bit for bit where they can) and
    numpy's error model (division by zero gives inf/NaN, as in the numpy reference, and
    never raises mid-frame)."""
    return cast(F, numba.njit(cache=True, nogil=True, error_model="numpy")(func))
