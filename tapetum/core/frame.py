"""A decoded video frame and where it came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture of one source.

    Attributes:
        source_id: name of the source that produced the frame (unique within a pipeline).
        index: 0-based index of the frame in its source, counting every frame decoded
            (dropped frames keep their index, so gaps show where drops happened).
        image: (H, W, 3) uint8, BGR, pixels as decoded.
        timestamp_s: capture time in seconds on the source's own clock (stream pts for
            files and streams, wall-clock seconds since the epoch for image folders).
        arrival_s: ``time.perf_counter()`` when the frame left the decoder; every latency
            Tapetum reports is measured from here.
    """

    source_id: str
    index: int
    image: npt.NDArray[np.uint8]
    timestamp_s: float
    arrival_s: float

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
