"""Two narrow extension points of :class:`~tapetum.pipeline.runtime.Pipeline` (A/B
experiments use both; see :mod:`tapetum.experiments.live`).

* A :class:`DetectorRouter` picks, per frame read, the detector that preprocesses, infers
  and decodes it (a canary: a share of the streams or frames goes to another model). The
  pipeline already keeps each frame on the detector that preprocessed it, so routed
  frames batch with their own model's.
* A :class:`BatchTap` sees every batch just before inference, with each frame's model
  input: a shadow model reuses the letterboxed tensors (no second decode or resize) and
  runs in its own thread. The tap is called from an inference worker and must only hand
  the batch on (e.g. put it in a bounded queue).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from tapetum.core.frame import Frame
from tapetum.detect.base import StagedDetector
from tapetum.detect.letterbox import LetterboxMeta
from tapetum.sources.base import Source

__all__ = ["BatchTap", "DetectorRouter", "TappedFrame"]


@dataclass(frozen=True, slots=True)
class TappedFrame:
    """One frame of a batch about to be inferred.

    Attributes:
        frame: the decoded frame.
        tensor: (3, h, w) float32, the model input made for it (shared: do not modify).
        meta: where the frame sits in that input.
        seq: the frame's position in its stream's inference order (0, 1, 2, … per stream;
            batches may reach a tap out of order when several workers infer).
    """

    frame: Frame
    tensor: npt.NDArray[np.float32]
    meta: LetterboxMeta
    seq: int


class BatchTap(Protocol):
    """Called with each batch (and the detector about to infer it) before inference."""

    def __call__(self, batch: Sequence[TappedFrame], detector: StagedDetector) -> None: ...


class DetectorRouter(Protocol):
    """The detector for one frame of ``source``; None: the pipeline's own."""

    def __call__(self, source: Source, frame: Frame) -> StagedDetector | None: ...
