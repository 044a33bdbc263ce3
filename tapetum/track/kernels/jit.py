"""Typed ``numba.njit`` decorators: compiled functions keep their Python signatures for mypy."""

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


def njit_step(func: F) -> F:
    """:func:`njit`, and inlined into its caller at numba IR level (``inline="always"``).

    For the named steps a tracker's compiled frame is written as: inlined, they compile to
    one function, as the frame was before it was split into steps. Measured against the
    unsplit frames, interleaved: as plain calls the steps cost 2-5 microseconds per frame
    (10-25% of a MOT15 frame); inlined, about half a microsecond (1-3%), with the same
    allocations but some 50 more reference-count updates compiled in (numba's inliner
    copies a step's array arguments).
    """
    return cast(F, numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")(func))
