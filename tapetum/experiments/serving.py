"""A/B experiments on the REST server (``tapetum serve --experiment exp.yaml``).

Every arm is served by the detection service as a model of its own (``ab-<arm>``), loaded
and warmed at start-up. A ``/v1/detect`` request that names no model is assigned an arm:

* *canary*, split ``by: key``: sticky by the caller's API key (or token subject), so a
  caller — and its tracking sessions — always meets the same model; ``by: header``: by the
  value of a request header (``canary.header``, e.g. a cohort or camera id; without the
  header the control answers). The arm's model answers.
* *shadow*: the control answers; the same image is queued for every variant, which runs
  it in its own thread (a full queue drops the call and counts it), and their boxes are
  compared with the control's (agreement at IoU 0.5).

The answer names the arm in the ``X-Tapetum-Variant`` header (and the experiment in
``X-Tapetum-Experiment``); its ``model`` field is the arm's model. ``/metrics`` counts
requests, latency and boxes per variant and role (``served``/``shadow``), shadow drops, and
the running agreement. The record is the pipeline's (units: callers or header values ×
time windows), written to the run folder every ``snapshot_s`` and at shutdown, so
``tapetum ab report RUN_DIR`` reads a server experiment like a pipeline one. A request that
names a model (``?model=``) is outside the experiment.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tapetum.core.detections import Detections
from tapetum.core.frame import Frame
from tapetum.errors import ExperimentSpecError, QueueClosed
from tapetum.experiments.agreement import AgreementBook
from tapetum.experiments.arms import LoadedArm
from tapetum.experiments.live import EXPERIMENT_DIR, save_run
from tapetum.experiments.record import ArmRecorder
from tapetum.experiments.spec import CONTROL, ExperimentSpec, Mode, SplitBy
from tapetum.experiments.split import TrafficSplit
from tapetum.pipeline.queues import BoundedQueue, DropPolicy

if TYPE_CHECKING:
    from tapetum.serve.schemas import DetectResponse
    from tapetum.serve.service import DetectionService, EncodedImage

__all__ = ["Assignment", "ServerExperiment"]

log = logging.getLogger(__name__)

#: Model name prefix of the arms inside the detection service.
MODEL_PREFIX = "ab-"
VARIANT_HEADER = "X-Tapetum-Variant"
EXPERIMENT_HEADER = "X-Tapetum-Experiment"
_NO_IMAGE = np.zeros((1, 1, 3), np.uint8)


@dataclass(frozen=True, slots=True)
class Assignment:
    """The arm that answers one request.

    Attributes:
        arm: the arm's name.
        model: the service model that runs it.
        unit: the split unit (key id, or a digest of the header value).
        index: the request's number in the experiment (frames, for the record).
        started_s: ``perf_counter`` when the request was assigned.
    """

    arm: str
    model: str
    unit: str
    index: int
    started_s: float


@dataclass(slots=True)
class _Job:
    assignment: Assignment
    image: EncodedImage
    control: Detections
    timestamp_s: float


@dataclass(slots=True)
class _Agreement:
    tp: int = 0
    n_variant: int = 0
    n_control: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ServerExperiment:
    """An experiment over server requests (see the module docstring).

    Args:
        spec: shadow, or canary split by ``key`` or ``header``.
        arms: its loaded arms, control first.
        run_dir: where the record goes (``run_dir/experiment``).
        shadow_queue: shadow calls waiting per variant before new ones are dropped.
        snapshot_s: seconds between writes of the record while serving.

    Raises:
        ExperimentSpecError: a canary split by stream or frame (those are the pipeline's).
    """

    def __init__(
        self,
        spec: ExperimentSpec,
        arms: Sequence[LoadedArm],
        run_dir: Path,
        *,
        shadow_queue: int = 32,
        snapshot_s: float = 60.0,
    ) -> None:
        if spec.mode is Mode.CANARY and spec.split_by not in (SplitBy.KEY, SplitBy.HEADER):
            raise ExperimentSpecError(
                f"experiment {spec.name!r}: a server splits requests by key or header; a "
                f"split by {spec.split_by} is for tapetum run"
            )
        self.spec = spec
        self.arms = {arm.name: arm for arm in arms}
        self.folder = run_dir / EXPERIMENT_DIR
        self.split = TrafficSplit(spec.name, spec.shares)
        self.recorders = {a.name: ArmRecorder(a.name, a.class_names) for a in arms}
        variants = [a.name for a in arms[1:]]
        self.book = AgreementBook({v: self.recorders[v] for v in variants})
        self.shadow = spec.mode is Mode.SHADOW
        self.ready = threading.Event()
        self._service: DetectionService | None = None
        self._queues = {
            v: BoundedQueue[_Job](shadow_queue, DropPolicy.DROP_NEWEST) for v in variants
        }
        self._agreement = {v: _Agreement() for v in variants}
        self._counter = 0
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._snapshot_s = snapshot_s
        self._started = datetime.now(UTC)
        self._metrics: dict[str, Any] | None = None

    # ------------------------------------------------------------------ start-up
    def attach(self, service: DetectionService, timeout_s: float | None = None) -> None:
        """Wait for the service's default model, serve every arm as a model of its own
        (warmed), start the shadow workers and the snapshots. Blocking; call it from a
        thread. Until it returns, requests go to the server's default model."""
        if not service.wait_ready(timeout_s):
            log.error("experiment %s: the server's model did not load", self.spec.name)
            return
        for arm in self.arms.values():
            h, w = arm.detector.input_hw
            arm.detector([np.full((h, w, 3), 114, np.uint8)])
            service.add_model(
                MODEL_PREFIX + arm.name, arm.detector, arm.source.path, conf=arm.spec.conf
            )
        self._service = service
        if self.shadow:
            for name in self._queues:
                self._spawn(self._shadow_loop, name, f"ab-shadow-{name}")
        self._spawn(self._snapshot_loop, None, "ab-snapshot")
        self.ready.set()
        log.info("experiment %s serving %s", self.spec.name, ", ".join(self.arms))

    def _spawn(self, target: Any, arg: Any, name: str) -> None:
        thread = threading.Thread(
            target=target, args=() if arg is None else (arg,), name=name, daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def bind_metrics(self, registry: Any) -> None:
        """Register the experiment's metrics in a Prometheus registry (the app's)."""
        from prometheus_client import Counter, Gauge, Histogram

        labels = ["experiment", "variant", "role"]
        self._metrics = {
            "requests": Counter(
                "tapetum_experiment_requests",
                "Requests answered (served) or shadowed per experiment arm.",
                labels,
                registry=registry,
            ),
            "latency": Histogram(
                "tapetum_experiment_latency_seconds",
                "Server-side latency per experiment arm (shadow: its own decode and model).",
                labels,
                registry=registry,
                buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            ),
            "boxes": Counter(
                "tapetum_experiment_boxes",
                "Boxes returned per experiment arm.",
                labels,
                registry=registry,
            ),
            "dropped": Counter(
                "tapetum_experiment_shadow_dropped",
                "Shadow calls dropped because the variant's queue was full.",
                ["experiment", "variant"],
                registry=registry,
            ),
            "agreement": Gauge(
                "tapetum_experiment_agreement",
                "Running agreement of a shadow variant's boxes with the control's (IoU 0.5).",
                ["experiment", "variant", "measure"],
                registry=registry,
            ),
        }

    # ------------------------------------------------------------------ requests
    def assign(
        self, key_id: str, headers: Mapping[str, str], model: str | None
    ) -> Assignment | None:
        """The arm for a request, or None (it names a model, or the arms are not loaded
        yet: the server's default model answers)."""
        if model or not self.ready.is_set():
            return None
        if self.spec.split_by is SplitBy.HEADER and not self.shadow:
            value = headers.get(self.spec.header)
            unit = (
                "h:" + hashlib.blake2b(value.encode(), digest_size=6).hexdigest() if value else "-"
            )
            arm = self.split.arm_for(value) if value else CONTROL
        else:
            unit = key_id
            arm = CONTROL if self.shadow else self.split.arm_for(key_id)
        with self._count_lock:
            self._counter += 1
            index = self._counter
        return Assignment(arm, MODEL_PREFIX + arm, unit, index, time.perf_counter())

    def served(
        self, assignment: Assignment, response: DetectResponse, image: EncodedImage
    ) -> dict[str, str]:
        """Record the answer (and queue the shadows); returns the response headers."""
        detections = response_detections(response)
        now = time.time()
        self._record(assignment, assignment.arm, detections, response.timings_ms, now)
        self._observe(assignment.arm, "served", response.timings_ms, len(detections))
        if self.shadow:
            self.book.control((assignment.unit, assignment.index), detections)
            job = _Job(assignment, image, detections, now)
            for name, queue in self._queues.items():
                if not queue.put(job) and self._metrics is not None:  # full: dropped
                    self._metrics["dropped"].labels(self.spec.name, name).inc()
        return {VARIANT_HEADER: assignment.arm, EXPERIMENT_HEADER: self.spec.name}

    def _record(
        self,
        a: Assignment,
        arm: str,
        detections: Detections | None,
        timings_ms: Mapping[str, float],
        timestamp_s: float,
    ) -> int:
        frame = Frame(a.unit, a.index, _NO_IMAGE, timestamp_s, a.started_s)
        total = float(timings_ms.get("total", float("nan")))
        return self.recorders[arm].add(
            frame,
            done_s=time.perf_counter(),
            latency_ms=total,
            compute_ms=float(timings_ms.get("inference", total)),
            detections=detections,
        )

    def _observe(self, arm: str, role: str, timings_ms: Mapping[str, float], boxes: int) -> None:
        if self._metrics is None:
            return
        labels = (self.spec.name, arm, role)
        self._metrics["requests"].labels(*labels).inc()
        self._metrics["latency"].labels(*labels).observe(timings_ms.get("total", 0.0) / 1e3)
        self._metrics["boxes"].labels(*labels).inc(boxes)

    def _shadow_loop(self, name: str) -> None:
        queue = self._queues[name]
        while True:
            try:
                job = queue.get()
            except QueueClosed:
                return
            assert self._service is not None
            try:
                response = self._service.detect(job.image, model=MODEL_PREFIX + name)
            except Exception as exc:  # the variant failed on this image: counted, not fatal
                log.warning("shadow %s failed on a request: %s", name, exc)
                self._record(job.assignment, name, None, {}, job.timestamp_s)
                continue
            detections = response_detections(response)
            row = self._record(
                job.assignment, name, detections, response.timings_ms, job.timestamp_s
            )
            self._observe(name, "shadow", response.timings_ms, len(detections))
            self.book.variant(name, (job.assignment.unit, job.assignment.index), row, detections)
            self._update_agreement(name, detections, job.control)

    def _update_agreement(self, name: str, variant: Detections, control: Detections) -> None:
        from tapetum.experiments.agreement import box_agreement

        _, tp, n_var, n_ctl = box_agreement(variant, control)
        acc = self._agreement[name]
        with acc.lock:
            acc.tp += int(tp.sum())
            acc.n_variant += int(n_var.sum())
            acc.n_control += int(n_ctl.sum())
            tp_sum, nv, nc = acc.tp, acc.n_variant, acc.n_control
        if self._metrics is not None:
            gauge = self._metrics["agreement"]
            if nv:
                gauge.labels(self.spec.name, name, "precision").set(tp_sum / nv)
            if nc:
                gauge.labels(self.spec.name, name, "recall").set(tp_sum / nc)
            if nv + nc:
                gauge.labels(self.spec.name, name, "f1").set(2 * tp_sum / (nv + nc))

    # ------------------------------------------------------------------ the record
    def _snapshot_loop(self) -> None:
        while not self._stop.wait(self._snapshot_s):
            try:
                self.save()
            except OSError as exc:
                log.error("experiment %s: cannot write its record: %s", self.spec.name, exc)

    def save(self) -> Path:
        """Write the record now (``run_dir/experiment``); returns that folder."""
        extra = {
            "live": True,
            "server": {
                "requests": self._counter,
                "shadow": {
                    name: {
                        "dropped": q.dropped,
                        "paired": self.book.paired[name],
                        "unpaired": self.book.unpaired[name],
                    }
                    for name, q in self._queues.items()
                },
            },
        }
        save_run(
            self.folder, self.spec, self.arms, self.recorders, started=self._started, extra=extra
        )
        return self.folder

    def close(self, timeout_s: float = 30.0) -> Path:
        """Finish the queued shadow calls, stop, write the record."""
        self._stop.set()
        for queue in self._queues.values():
            queue.close()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.book.finish()
        return self.save()


def response_detections(response: DetectResponse) -> Detections:
    """The answer's boxes as :class:`Detections` (the API boundary, back to arrays)."""
    found = response.detections
    if not found:
        return Detections.empty()
    return Detections(
        xyxy=np.asarray([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in found], np.float32),
        confidence=np.asarray([d.confidence for d in found], np.float32),
        class_id=np.asarray([d.class_id for d in found], np.int64),
        tracker_id=np.asarray(
            [d.track_id if d.track_id is not None else -1 for d in found], np.int64
        ),
    )
