"""Agreement of a variant's boxes with the control's on the same frame, per class.

A variant box agrees with a control box of the same class when their IoU is at least
:data:`~tapetum.experiments.metrics.AGREEMENT_IOU` (0.5); each box agrees with at most one
(an optimal one-to-one matching, Jonker-Volgenant as the trackers use, on ``1 - IoU`` with
other-class pairs forbidden). Per frame and class this gives ``tp`` (matched pairs), the
variant's box count and the control's; precision = Σtp / Σvariant, recall = Σtp / Σcontrol
over whatever units are summed (the control, compared with itself, scores 1).

:class:`AgreementBook` pairs results as they arrive from two threads (the control's from
its sink, a shadow variant's from its runner): whichever comes second computes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from tapetum._types import IntArray
from tapetum.core.boxes import box_iou
from tapetum.core.detections import Detections
from tapetum.experiments.metrics import AGREEMENT_IOU
from tapetum.experiments.record import ArmRecorder

__all__ = ["AgreementBook", "box_agreement"]

#: A frame: (source id, frame index).
FrameKey = tuple[str, int]


def box_agreement(
    variant: Detections, control: Detections, iou: float = AGREEMENT_IOU
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Per-class agreement counts of one frame.

    Returns:
        ``(class_id, tp, n_variant, n_control)``, each (K,) int64 over the K classes that
        either side has boxes of, ascending by class.
    """
    from tapetum.track.assignment import linear_assignment

    classes = np.union1d(variant.class_id, control.class_id).astype(np.int64)
    if classes.shape[0] == 0:
        empty = np.empty(0, np.int64)
        return empty, empty, empty, empty
    var_slot = np.searchsorted(classes, variant.class_id)
    ctl_slot = np.searchsorted(classes, control.class_id)
    tp = np.zeros(classes.shape[0], np.int64)
    if len(variant) and len(control):
        overlap = box_iou(variant.xyxy, control.xyxy)
        overlap[variant.class_id[:, None] != control.class_id[None, :]] = 0.0
        matches, _, _ = linear_assignment(1.0 - overlap.astype(np.float64), 1.0 - iou)
        if matches.shape[0]:
            good = overlap[matches[:, 0], matches[:, 1]] >= iou
            np.add.at(tp, var_slot[matches[good, 0]], 1)
    k = classes.shape[0]
    return (
        classes,
        tp,
        np.bincount(var_slot, minlength=k).astype(np.int64),
        np.bincount(ctl_slot, minlength=k).astype(np.int64),
    )


class AgreementBook:
    """Pairs each frame's control result with every shadow variant's and records the
    agreement on the variant's recorder.

    Args:
        recorders: the variants' recorders, by arm name.
        capacity: frames kept waiting for their partner; beyond it the oldest is dropped
            and counted (a variant that fell far behind, or a control result a full sink
            queue dropped).
    """

    def __init__(self, recorders: dict[str, ArmRecorder], capacity: int = 4096) -> None:
        self._recorders = recorders
        self._capacity = capacity
        self._lock = threading.Lock()
        self._control: OrderedDict[FrameKey, tuple[Detections, set[str]]] = OrderedDict()
        self._variant: OrderedDict[tuple[str, FrameKey], tuple[int, Detections]] = OrderedDict()
        #: frames compared, and frames dropped waiting for a partner, per variant.
        self.paired: dict[str, int] = dict.fromkeys(recorders, 0)
        self.unpaired: dict[str, int] = dict.fromkeys(recorders, 0)

    def control(self, key: FrameKey, detections: Detections) -> None:
        """The control's result of one frame."""
        ready: list[tuple[str, int, Detections]] = []
        with self._lock:
            waiting = set(self._recorders)
            for name in list(waiting):
                found = self._variant.pop((name, key), None)
                if found is not None:
                    ready.append((name, *found))
                    waiting.discard(name)
            if waiting:
                self._control[key] = (detections, waiting)
                while len(self._control) > self._capacity:
                    _, (_, missing) = self._control.popitem(last=False)
                    for name in missing:
                        self.unpaired[name] += 1
        for name, row, dets in ready:
            self._record(name, row, dets, detections)

    def variant(self, name: str, key: FrameKey, row: int, detections: Detections) -> None:
        """Variant ``name``'s result of one frame, recorded at ``row`` of its recorder."""
        with self._lock:
            entry = self._control.get(key)
            if entry is None or name not in entry[1]:
                self._variant[(name, key)] = (row, detections)
                while len(self._variant) > self._capacity * max(1, len(self._recorders)):
                    (lost, _), _ = self._variant.popitem(last=False)
                    self.unpaired[lost] += 1
                return
            control, waiting = entry
            waiting.discard(name)
            if not waiting:
                del self._control[key]
        self._record(name, row, detections, control)

    def _record(self, name: str, row: int, variant: Detections, control: Detections) -> None:
        classes, tp, n_var, n_ctl = box_agreement(variant, control)
        self._recorders[name].add_agreement(row, classes, tp, n_var, n_ctl)
        with self._lock:
            self.paired[name] += 1

    def finish(self) -> None:
        """Count every frame still waiting as unpaired (the run is over)."""
        with self._lock:
            for _, missing in self._control.values():
                for name in missing:
                    self.unpaired[name] += 1
            for name, _ in self._variant:
                self.unpaired[name] += 1
            self._control.clear()
            self._variant.clear()
