"""Type aliases for the numpy arrays that flow through Tapetum, defined once.

Each alias names the dtype, never the shape: a docstring says the shape and units
(``xyxy: (N, 4) float32, pixels in the source frame``). Importing this module imports
numpy, so only modules that already need numpy import it (``tapetum/__init__.py`` must not;
``import tapetum`` stays numpy-free).

Example:
    >>> import numpy as np
    >>> from tapetum._types import Float32Array
    >>> def areas(xyxy: Float32Array) -> Float32Array:
    ...     return (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    >>> areas(np.array([[0, 0, 4, 2]], dtype=np.float32)).tolist()
    [8.0]
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = [
    "BoolArray",
    "Float32Array",
    "Float64Array",
    "Int8Array",
    "IntArray",
    "UInt8Array",
]

Float32Array: TypeAlias = npt.NDArray[np.float32]
"""Boxes, scores, embeddings, model tensors: what detectors and trackers exchange."""

Float64Array: TypeAlias = npt.NDArray[np.float64]
"""Kalman states and covariances, cost matrices, metric accumulators."""

IntArray: TypeAlias = npt.NDArray[np.int64]
"""Class ids, track ids, indices (int64, numpy's default integer on 64-bit platforms)."""

Int8Array: TypeAlias = npt.NDArray[np.int8]
"""Small per-row codes (track states) in the compiled kernels."""

UInt8Array: TypeAlias = npt.NDArray[np.uint8]
"""Images: (H, W, 3) BGR as decoded, unless a docstring says otherwise."""

BoolArray: TypeAlias = npt.NDArray[np.bool_]
"""Masks over rows (keep, matched, valid)."""
