"""The classification stage of a pipeline: one label per track, from a second model.

:class:`~tapetum.classify.service.ClassifierService` is shared by every stream of a
pipeline. Each stream's :class:`ClassificationEnricher` (run on the stream's tracking
thread, after the tracker) picks the tracks due for classification
(:class:`~tapetum.classify.voting.TrackLabels`: first sighting, then every N frames or when
the box grew), cuts their crops on its own thread and hands the service one job per frame;
the service's worker joins the jobs of every frame and stream waiting into one model call.
The enricher writes three columns per track::

    label             the track's label (None until it is first classified)
    label_confidence  mean probability of that label over the track's classifications
    label_votes       how many classifications the label rests on

Asynchronous (the default, like DeepStream's ``classifier-async-mode``): the tracking
thread never waits for the classifier. A frame's result carries the label known when the
frame is tracked; answers are counted into the tracks' votes on the stream's next frame
after they arrive (``result_lag_frames`` in the stats says how late). The cadence is kept
when crops are *sent*, so the same crops are classified as in synchronous mode; under
overload the oldest jobs are dropped and counted, the tracks wait for their next turn.
Synchronous (``asynchronous=False``): the frame waits for its crops' answers, so its own
classification is in its result: deterministic, for tests and for server sessions (each
request is a frame).

A crop outside the frame or of zero size is skipped and counted; a failed model call is
counted and logged, the frame keeps the labels it had: never a failed stream.

Example:
    >>> service = ClassifierService(OnnxClassifier("cls.onnx"),           # doctest: +SKIP
    ...                             load_label_map("vehicles", names))
    >>> config = ClassifyConfig(class_ids=frozenset({2, 5, 7}), every=10)
    >>> pipe = Pipeline(sources, detector, enrichers=[                      # doctest: +SKIP
    ...     lambda src: ClassificationEnricher(service, config)])
    >>> stats = pipe.run(); service.close()   # answers what is queued    # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tapetum._types import Float32Array, Float64Array, IntArray, UInt8Array
from tapetum.classify.service import ClassifierService, CropJob, JobOutcome
from tapetum.classify.voting import TrackLabels
from tapetum.core.detections import NO_TRACK, Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "LABEL_COLUMNS",
    "ClassificationEnricher",
    "ClassificationObserver",
    "ClassifyConfig",
    "ClassifyStage",
    "config_from_options",
    "parse_classify_option",
]

#: The ``Detections.data`` columns the stage writes.
LABEL_COLUMNS = ("label", "label_confidence", "label_votes")


@dataclass(frozen=True, slots=True)
class ClassifyConfig:
    """When and how a stream classifies its tracks.

    Attributes:
        class_ids: detector classes whose tracks are classified (None: every class).
        every: re-classify a track every this many frames (after the first sighting).
        grow: also re-classify when a box's area reaches ``grow`` × its area at the last
            classification (≥ 1; ``inf`` turns it off).
        min_box_px: boxes whose shorter side is under this are not classified (yet).
        max_age_frames: forget a track unseen for this many frames.
        asynchronous: do not wait for the classifier (see the module docstring).
        settled_every: re-classify a *settled* track (at least ``settle_votes``
            classifications, its label ``settle_margin`` ahead of the runner-up in mean
            probability) only every this many frames; None: every track every ``every``.
    """

    class_ids: frozenset[int] | None = None
    every: int = 10
    grow: float = 1.5
    min_box_px: float = 16.0
    max_age_frames: int = 150
    asynchronous: bool = True
    settled_every: int | None = None
    settle_votes: int = 3
    settle_margin: float = 0.3

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"classify every must be ≥ 1 frame, got {self.every}")
        if not self.grow >= 1:
            raise ConfigError(f"classify grow must be ≥ 1, got {self.grow}")
        if not (math.isfinite(self.min_box_px) and self.min_box_px >= 0):
            raise ConfigError(f"classify min_box must be ≥ 0 pixels, got {self.min_box_px}")
        if self.max_age_frames < 1:
            raise ConfigError(f"max_age_frames must be ≥ 1, got {self.max_age_frames}")
        if self.settled_every is not None and self.settled_every < self.every:
            raise ConfigError(
                f"classify settle must be ≥ every ({self.every}) frames, got {self.settled_every}"
            )
        if self.settle_votes < 1 or not 0 <= self.settle_margin <= 1:
            raise ConfigError(
                f"settle_votes must be ≥ 1 and settle_margin within [0, 1], got "
                f"{self.settle_votes}, {self.settle_margin}"
            )


#: Called with each frame's fresh classifications: frame, track ids (M,), probabilities (M, L).
ClassificationObserver = Callable[[Frame, IntArray, Float32Array], None]


class ClassificationEnricher:
    """Per-stream stage: ``label``, ``label_confidence``, ``label_votes`` per track (see the
    module docstring). One instance per stream; frames in order.

    Args:
        service: the shared classifier.
        config: which tracks, how often, asynchronous or not.
        observer: sees every classification as it is counted (with the frame its crops came
            from), before the vote (e.g. to log single-crop answers or collect hard
            examples); its exceptions are logged.
    """

    def __init__(
        self,
        service: ClassifierService,
        config: ClassifyConfig | None = None,
        observer: ClassificationObserver | None = None,
    ) -> None:
        self.service = service
        self.config = config or ClassifyConfig()
        self.observer = observer
        self.state = TrackLabels(len(service.labels), self.config.max_age_frames)
        self._labels = np.array([*service.labels, None], dtype=object)  # -1 → None
        self._inbox: deque[CropJob] = deque()
        self._pending: set[CropJob] = set()
        self._frame_index = 0

    def state_sizes(self) -> dict[str, int]:
        """Tracks whose votes are kept (forgotten ``max_age_frames`` after last seen)."""
        return {"label_tracks": len(self.state)}

    def __call__(self, frame: Frame, detections: Detections) -> Detections:
        cfg = self.config
        self._frame_index = frame.index
        self._count_answers(frame.index)
        tid = detections.tracker_id
        self.state.touch(tid, frame.index)
        xyxy = detections.xyxy
        wh = xyxy[:, 2:] - xyxy[:, :2]
        area = (wh[:, 0] * wh[:, 1]).astype(np.float64)
        eligible = (tid != NO_TRACK) & (wh.min(axis=1) >= cfg.min_box_px)
        if cfg.class_ids is not None:
            eligible &= np.isin(detections.class_id, list(cfg.class_ids))
        rows = np.flatnonzero(eligible)
        if rows.size:
            due = self.state.due(
                tid[rows],
                area[rows],
                frame.index,
                cfg.every,
                cfg.grow,
                cfg.settled_every,
                cfg.settle_votes,
                cfg.settle_margin,
            )
            rows = rows[due]
        if rows.size:
            self._classify(frame, xyxy[rows], tid[rows], area[rows])
        label, conf, votes = self.state.lookup(tid)
        detections.data["label"] = self._labels[label]
        detections.data["label_confidence"] = conf
        detections.data["label_votes"] = votes
        return detections

    def _classify(
        self, frame: Frame, xyxy: Float32Array, tid: IntArray, area: Float64Array
    ) -> None:
        pixels, valid = self.service.cut(frame.image, xyxy)
        if pixels.shape[0] == 0:
            return  # nothing croppable: those tracks stay due
        ids = tid[valid]
        self.state.mark(ids, area[valid], frame.index)
        job = CropJob(
            pixels,
            ids,
            frame.index,
            asynchronous=self.config.asynchronous,
            inbox=self._inbox if self.config.asynchronous else None,
            context=frame if self.observer is not None else None,
        )
        self.service.submit(job)
        if self.config.asynchronous:
            self._pending.add(job)
            return
        job.done.wait()
        self._count(job, frame.index)

    def _count_answers(self, frame_index: int) -> None:
        """Count the answers that came back since the last frame into the votes."""
        while self._inbox:
            job = self._inbox.popleft()
            self._pending.discard(job)
            self._count(job, frame_index)

    def _count(self, job: CropJob, frame_index: int) -> None:
        if job.outcome != JobOutcome.DONE or job.probs is None:
            if job.outcome == JobOutcome.FAILED:  # this frame keeps the labels it had
                log.warning(
                    "classification failed on frame %d (%d crops): %s",
                    job.frame_index,
                    job.size,
                    job.error,
                )
            return
        counted = self.state.vote(job.track_ids, job.probs)
        self.service.stats.count_lag(counted, max(0, frame_index - job.frame_index))
        if self.observer is not None and isinstance(job.context, Frame):
            try:
                self.observer(job.context, job.track_ids, job.probs)
            except Exception:
                log.exception("classification observer failed")

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait for this stream's answers still in the classifier and count them (the end
        of a stream; tests). False if ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        for job in list(self._pending):
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            if not job.done.wait(left):
                return False
        self._count_answers(self._frame_index)
        return True


def parse_classify_option(text: str) -> tuple[Path, dict[str, str]]:
    """``MODEL[:key=value]...`` → the model path and its options.

    Keys: ``classes`` (detector class names or ids, comma-separated), ``every`` (frames),
    ``min_box`` (pixels), ``grow`` (area factor), ``labels`` (a label-map file or a builtin
    map name), ``mode`` (``async`` or ``sync``), ``settle`` (frames between classifications
    of a settled track). A path may itself contain ``:``; options start at the first
    ``:key=``.

    Raises:
        ConfigError: no model, an unknown key, or a key given twice.
    """
    known = ("classes", "every", "min_box", "grow", "labels", "mode", "settle")
    parts = text.split(":")
    cut = len(parts)
    for i in range(1, len(parts)):
        if "=" in parts[i] and parts[i].split("=", 1)[0].strip() in known:
            cut = i
            break
    model = ":".join(parts[:cut]).strip()
    if not model:
        raise ConfigError(f"classify: no model in {text!r} (MODEL[:classes=...][:every=N]...)")
    options: dict[str, str] = {}
    for part in parts[cut:]:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ConfigError(
                f"classify: unknown option {part!r} in {text!r}; known: {', '.join(known)}"
            )
        if key in options:
            raise ConfigError(f"classify: {key} given twice in {text!r}")
        options[key] = value.strip()
    return Path(model), options


def config_from_options(
    options: dict[str, str], class_names: tuple[str, ...], *, asynchronous: bool = True
) -> ClassifyConfig:
    """A :class:`ClassifyConfig` from :func:`parse_classify_option`'s options; class names
    resolve against the detector's; ``asynchronous`` is the mode when ``mode`` is not given.

    Raises:
        ConfigError: a value that is not a number, an unknown mode, or an unknown class.
    """
    from tapetum.detect.classes import resolve_class_filter

    def number(key: str, cast: type[int] | type[float], default: float | None) -> Any:
        if key not in options:
            return default
        try:
            return cast(options[key])
        except ValueError:
            raise ConfigError(f"classify: {key} must be a number, got {options[key]!r}") from None

    mode = options.get("mode", "async" if asynchronous else "sync")
    if mode not in ("async", "sync"):
        raise ConfigError(f"classify: mode must be async or sync, got {mode!r}")
    classes = options.get("classes")
    return ClassifyConfig(
        class_ids=resolve_class_filter(class_names, classes.split(",")) if classes else None,
        every=number("every", int, 10),
        grow=number("grow", float, 1.5),
        min_box_px=number("min_box", float, 16.0),
        asynchronous=mode == "async",
        settled_every=number("settle", int, None),
    )


@dataclass(slots=True)
class _SessionLabels:
    """A session's enricher and how many frames it has been given (its frame index)."""

    enricher: ClassificationEnricher
    frames: int = 0


class ClassifyStage:
    """The stage as a ``--classify`` option describes it: one shared
    :class:`ClassifierService` and a :class:`ClassificationEnricher` per stream or
    per tracking session of a server. Streams are asynchronous and sessions synchronous
    (a request's own crops are in its answer) unless ``mode`` says otherwise.

    Args:
        service: the shared classifier.
        options: the option's ``key=value`` pairs (``classes`` resolved per detector).

    Example:
        >>> stage = ClassifyStage.from_option("cls.onnx:classes=car,bus:every=5")  # doctest: +SKIP
        >>> enricher = stage.enricher(detector.class_names)                       # doctest: +SKIP
    """

    def __init__(self, service: ClassifierService, options: dict[str, str]) -> None:
        self.service = service
        self.options = dict(options)
        self._configs: dict[tuple[tuple[str, ...], bool], ClassifyConfig] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_option(
        cls, text: str, runtime: Any = None, *, max_wait_ms: float = 2.0
    ) -> ClassifyStage:
        """Load the classifier and label map of ``MODEL[:key=value]...`` now, so a bad
        file, map or number fails at start-up (``classes`` needs the detector: checked by
        :meth:`config`).

        Raises:
            ConfigError, LabelMapError, ModelLoadError, ClassifierError.
        """
        from tapetum.classify.labels import load_label_map
        from tapetum.classify.runtime import OnnxClassifier

        path, options = parse_classify_option(text)
        config_from_options({k: v for k, v in options.items() if k != "classes"}, ())
        classifier = OnnxClassifier(path, runtime=runtime)
        label_map = (
            load_label_map(options["labels"], classifier.class_names)
            if "labels" in options
            else None
        )
        return cls(ClassifierService(classifier, label_map, max_wait_ms=max_wait_ms), options)

    def config(
        self, detector_classes: tuple[str, ...], *, asynchronous: bool = True
    ) -> ClassifyConfig:
        """The stage's config for a detector with these class names (cached);
        ``asynchronous`` is the mode when the option does not name one.

        Raises:
            ConfigError: ``classes`` names a class the detector does not have.
        """
        key = (detector_classes, asynchronous)
        with self._lock:
            config = self._configs.get(key)
            if config is None:
                config = config_from_options(
                    self.options, detector_classes, asynchronous=asynchronous
                )
                self._configs[key] = config
            return config

    def enricher(
        self, detector_classes: tuple[str, ...], *, asynchronous: bool = True
    ) -> ClassificationEnricher:
        """A new per-stream (per-session) enricher."""
        return ClassificationEnricher(
            self.service, self.config(detector_classes, asynchronous=asynchronous)
        )

    def label_session(
        self,
        session: Any,
        image: UInt8Array,
        detections: Detections,
        detector_classes: tuple[str, ...],
        name: str = "session",
    ) -> Detections:
        """Label one request's tracked ``detections`` of a server session.

        ``session.labels`` holds the session's state (created on first use), so it lives
        and is evicted with the session; the caller holds the session's lock. The session's
        requests are its frames: ``every`` counts them.
        """
        state: _SessionLabels | None = session.labels
        if state is None:
            enricher = self.enricher(detector_classes, asynchronous=False)
            state = session.labels = _SessionLabels(enricher)
        frame = Frame(name, state.frames, image, time.time(), time.perf_counter())
        state.frames += 1
        return state.enricher(frame, detections)

    def close(self) -> None:
        self.service.close()
