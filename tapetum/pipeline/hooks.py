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

A third, read-only one serves long-running streams: a tracker, enricher or sink that keeps
per-track state reports its size (:class:`StateSized`); :meth:`Pipeline.state_sizes
<tapetum.pipeline.runtime.Pipeline.state_sizes>` gathers them and ``tapetum run
--metrics-port`` exports them as ``tapetum_state_entries`` (and ``tapetum_sink_state_entries``),
so a structure that only grows shows on a soak run (``bench/soak.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tapetum.core.frame import Frame
from tapetum.detect.base import StagedDetector
from tapetum.detect.letterbox import LetterboxMeta
from tapetum.sources.base import Source

__all__ = ["BatchTap", "DetectorRouter", "StateSized", "TappedFrame", "state_sizes_of"]


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


@runtime_checkable
class StateSized(Protocol):
    """A stage that keeps state per track (or per point, per identity): how many entries of
    each structure it holds now, e.g. ``{"tracker_tracks": 12}``. Called from another
    thread (a metrics scrape) while the stage runs: it must be cheap and need no lock (a
    count read once, possibly a frame stale, is fine)."""

    def state_sizes(self) -> dict[str, int]: ...


def state_sizes_of(parts: Iterable[object]) -> dict[str, int]:
    """The :class:`StateSized` reports of ``parts`` merged (parts that keep none are
    skipped)."""
    sizes: dict[str, int] = {}
    for part in parts:
        if isinstance(part, StateSized):
            sizes.update(part.state_sizes())
    return sizes
