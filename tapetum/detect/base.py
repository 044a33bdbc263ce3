"""The detector interface the pipeline drives in three stages."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tapetum.core.detections import Detections
from tapetum.detect.letterbox import LetterboxMeta


@runtime_checkable
class StagedDetector(Protocol):
    """A detector split into preprocess → batched inference → postprocess.

    The pipeline runs ``preprocess`` in each source's reader thread, ``infer`` once per
    cross-stream batch, and ``postprocess`` in each stream's tracking thread, so the three
    overlap instead of running back to back.
    """

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def input_hw(self) -> tuple[int, int]: ...

    @property
    def max_batch(self) -> int: ...

    def preprocess(
        self, image: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.float32], LetterboxMeta]: ...

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...

    def postprocess(self, raw: npt.NDArray[np.float32], meta: LetterboxMeta) -> Detections: ...
