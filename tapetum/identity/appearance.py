"""What a person looks like to the identity service: a ReID embedding and a colour
signature, in one vector.

A small ReID model (OSNet x0.25) on low-resolution surveillance crops separates people
poorly: on the EPFL campus footage two men in jeans, one in a white shirt and one in an
olive sweater, score 0.94-0.97 cosine between their tracks, as high as one person's own
tracks. Their clothes' colours tell them apart at once. The **colour signature** is the
classic complement: hue-saturation-value histograms of the torso and of the legs (the
box's centre 60 % of width; rows 15-50 % and 55-95 % of its height, leaving out the head,
the ground and the background at the sides), square-rooted (the Hellinger embedding, so
the cosine of two signatures is their Bhattacharyya coefficient) and L2-normalised.

The two are joined as ``[sqrt(1 - w) · reid, sqrt(w) · colour]``: for unit parts, the
cosine of two joined vectors is ``(1 - w) · cos_reid + w · cos_colour``, so one gallery,
one threshold and one exact dot product serve both. ``w`` is ``colour_weight``.

Example:
    >>> import numpy as np
    >>> image = np.zeros((100, 60, 3), np.uint8)
    >>> image[15:50] = (0, 0, 255)          # red torso (BGR)
    >>> image[55:95] = (255, 0, 0)          # blue legs
    >>> sig = colour_signatures(image, np.array([[0, 0, 60, 100]]))
    >>> sig.shape, round(float(np.linalg.norm(sig)), 3)
    ((1, 256), 1.0)
    >>> joined = join_appearance(np.eye(1, 8, dtype=np.float32), sig, AppearanceConfig(0.5))
    >>> round(float(joined[0] @ joined[0]), 3), joined.shape
    (1.0, (1, 264))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tapetum._types import Float32Array, UInt8Array
from tapetum.errors import ConfigError

#: Hue, saturation and value bins of one body part's histogram.
HSV_BINS = (8, 4, 4)
#: Length of a colour signature: torso and legs histograms.
COLOUR_DIM = 2 * HSV_BINS[0] * HSV_BINS[1] * HSV_BINS[2]
#: (top, bottom) of the torso and of the legs, as fractions of the box height.
_PARTS = ((0.15, 0.50), (0.55, 0.95))
#: Fraction of the box width dropped on each side (background beside the body).
_SIDE = 0.2


@dataclass(frozen=True, slots=True)
class AppearanceConfig:
    """How the identity service's appearance vector is made.

    Attributes:
        colour_weight: share ``w`` of the colour signature in the cosine (0: ReID only,
            the vector is then the ReID embedding itself).
    """

    colour_weight: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.colour_weight) and 0.0 <= self.colour_weight < 1.0):
            raise ConfigError(
                f"AppearanceConfig.colour_weight must be in [0, 1), got {self.colour_weight}"
            )

    def dim(self, reid_dim: int) -> int:
        """Length of the joined vector for a ReID embedding of ``reid_dim``."""
        return reid_dim + (COLOUR_DIM if self.colour_weight > 0 else 0)


def colour_signatures(image: UInt8Array, xyxy: npt.ArrayLike) -> Float32Array:
    """(N, COLOUR_DIM) unit colour signatures of the boxes (see the module docstring).

    Args:
        image: (H, W, 3) uint8 BGR frame.
        xyxy: (N, 4) boxes in pixels; clipped to the frame. A box with no pixel of a part
            left gets a zero histogram for it (a zero row if both are empty).
    """
    import cv2

    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    n = boxes.shape[0]
    out = np.zeros((n, COLOUR_DIM), np.float32)
    if n == 0:
        return out
    h_img, w_img = image.shape[:2]
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    x1 = np.clip(np.round(boxes[:, 0] + _SIDE * w), 0, w_img).astype(np.int64)
    x2 = np.clip(np.round(boxes[:, 2] - _SIDE * w), 0, w_img).astype(np.int64)
    half = COLOUR_DIM // 2
    ranges = [0, 180, 0, 256, 0, 256]
    for p, (top, bottom) in enumerate(_PARTS):
        y1 = np.clip(np.round(boxes[:, 1] + top * h), 0, h_img).astype(np.int64)
        y2 = np.clip(np.round(boxes[:, 1] + bottom * h), 0, h_img).astype(np.int64)
        for i in range(n):
            if y2[i] <= y1[i] or x2[i] <= x1[i]:
                continue
            roi = hsv[y1[i] : y2[i], x1[i] : x2[i]]
            hist = cv2.calcHist([roi], [0, 1, 2], None, list(HSV_BINS), ranges).ravel()
            out[i, p * half : (p + 1) * half] = np.sqrt(hist / max(float(hist.sum()), 1.0))
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    unit: Float32Array = out / np.maximum(norm, 1e-12)
    return unit


def join_appearance(
    reid: npt.ArrayLike, colour: npt.ArrayLike | None, config: AppearanceConfig
) -> Float32Array:
    """``[sqrt(1 - w) · reid, sqrt(w) · colour]`` with each part L2-normalised first; a
    row whose ReID part is zero (no crop) stays zero.

    Args:
        reid: (N, D) ReID embeddings.
        colour: (N, COLOUR_DIM) colour signatures; ignored when ``colour_weight`` is 0.
        config: the weight.
    """
    raw = np.asarray(reid, np.float32)
    r: Float32Array = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    w = config.colour_weight
    if w == 0 or colour is None:
        return r
    c = np.asarray(colour, np.float32).reshape(r.shape[0], COLOUR_DIM)
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    has = np.linalg.norm(r, axis=1, keepdims=True) > 0.5
    joined: Float32Array = np.concatenate(
        [math.sqrt(1 - w) * r, math.sqrt(w) * c * has], axis=1
    ).astype(np.float32)
    return joined
