"""The classification stage of a pipeline: one label per track, from a second model.

:class:`ClassifierService` is shared by every stream of a pipeline. Each stream's
:class:`ClassificationEnricher` (run on the stream's tracking thread, after the tracker)
picks the tracks due for classification (:class:`~tapetum.classify.voting.TrackLabels`),
cuts their crops on its own thread, and hands the service one block of crops per frame; the
service's :class:`~tapetum.detect.batcher.DynamicBatcher` joins the blocks of streams that
arrive together into one model call. The enricher then writes three columns per track::

    label             the track's label (None until it is first classified)
    label_confidence  mean probability of that label over the track's classifications
    label_votes       how many classifications the label rests on

A crop outside the frame or of zero size is skipped and counted; a failed model call is
counted and logged, the frame keeps the labels it had: never a failed stream.

Example:
    >>> service = ClassifierService(OnnxClassifier("cls.onnx"),           # doctest: +SKIP
    ...                             load_label_map("vehicles", names))
    >>> config = ClassifyConfig(class_ids=frozenset({2, 5, 7}), every=10)
    >>> pipe = Pipeline(sources, detector, enrichers=[                      # doctest: +SKIP
    ...     lambda src: ClassificationEnricher(service, config)])
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tapetum._types import BoolArray, Float32Array, Float64Array, IntArray, UInt8Array
from tapetum.classify.crops import crop_batch
from tapetum.classify.labels import LabelMap
from tapetum.classify.spec import ClassifierSpec
from tapetum.classify.voting import TrackLabels
from tapetum.core.detections import NO_TRACK, Detections
from tapetum.core.frame import Frame
from tapetum.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "LABEL_COLUMNS",
    "ClassificationEnricher",
    "ClassificationObserver",
    "ClassifierService",
    "ClassifyConfig",
    "ClassifyStage",
    "ClassifyStats",
    "CropClassifier",
    "parse_classify_option",
]

#: The ``Detections.data`` columns the stage writes.
LABEL_COLUMNS = ("label", "label_confidence", "label_votes")


class CropClassifier(Protocol):
    """What the service needs of a classifier (``OnnxClassifier``, or a scripted one)."""

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def spec(self) -> ClassifierSpec: ...

    def predict(self, tensor: Float32Array) -> Float32Array: ...


@dataclass(frozen=True, slots=True)
class ClassifyConfig:
    """When a stream classifies its tracks.

    Attributes:
        class_ids: detector classes whose tracks are classified (None: every class).
        every: re-classify a track every this many frames (after the first sighting).
        grow: also re-classify when a box's area reaches ``grow`` × its area at the last
            classification (≥ 1; ``inf`` turns it off).
        min_box_px: boxes whose shorter side is under this are not classified (yet).
        max_age_frames: forget a track unseen for this many frames.
    """

    class_ids: frozenset[int] | None = None
    every: int = 10
    grow: float = 1.5
    min_box_px: float = 16.0
    max_age_frames: int = 150

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"classify every must be ≥ 1 frame, got {self.every}")
        if not self.grow >= 1:
            raise ConfigError(f"classify grow must be ≥ 1, got {self.grow}")
        if not (math.isfinite(self.min_box_px) and self.min_box_px >= 0):
            raise ConfigError(f"classify min_box must be ≥ 0 pixels, got {self.min_box_px}")
        if self.max_age_frames < 1:
            raise ConfigError(f"max_age_frames must be ≥ 1, got {self.max_age_frames}")


@dataclass(slots=True)
class ClassifyStats:
    """Counters of a service, all streams together.

    Attributes:
        crops_classified: crops that went through the model.
        crops_skipped: boxes due for classification that could not be cropped (outside
            the frame, zero size, not finite).
        calls: model calls (each may hold several streams' crops).
        failed_calls / failed_crops: model calls that raised, and the crops they held.
    """

    crops_classified: int = 0
    crops_skipped: int = 0
    calls: int = 0
    failed_calls: int = 0
    failed_crops: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {
                "crops_classified": self.crops_classified,
                "crops_skipped": self.crops_skipped,
                "calls": self.calls,
                "failed_calls": self.failed_calls,
                "failed_crops": self.failed_crops,
            }


class ClassifierService:
    """One classifier shared by every stream; label-space probabilities out.

    Args:
        classifier: the model (its ``spec`` says how to cut crops).
        label_map: classes → labels; None keeps the classifier's own classes.
        max_wait_ms: how long a stream's crops wait for other streams' to share a call
            (0 for a single stream: nothing to wait for).
        max_batch: most frames' blocks joined into one call.
    """

    def __init__(
        self,
        classifier: CropClassifier,
        label_map: LabelMap | None = None,
        *,
        max_wait_ms: float = 2.0,
        max_batch: int = 16,
    ) -> None:
        from tapetum.detect.batcher import DynamicBatcher

        if label_map is not None and label_map.matrix.shape[0] != len(classifier.class_names):
            raise ConfigError(
                f"the label map covers {label_map.matrix.shape[0]} classes, the classifier "
                f"has {len(classifier.class_names)}"
            )
        self.classifier = classifier
        self.label_map = label_map
        self.labels: tuple[str, ...] = (
            label_map.labels if label_map is not None else tuple(classifier.class_names)
        )
        self.stats = ClassifyStats()
        self._batcher: DynamicBatcher[Float32Array, Float32Array] = DynamicBatcher(
            self._run_blocks, max_batch=max_batch, max_wait_ms=max_wait_ms, name="classify"
        )

    def _run_blocks(self, blocks: list[Float32Array]) -> list[Float32Array]:
        """One model call over the crops of several frames; each frame gets its rows."""
        sizes = [b.shape[0] for b in blocks]
        probs = self.classifier.predict(np.concatenate(blocks) if len(blocks) > 1 else blocks[0])
        with self.stats.lock:
            self.stats.calls += 1
        return np.split(probs, np.cumsum(sizes)[:-1])

    def classify(self, image: UInt8Array, xyxy: Float32Array) -> tuple[Float32Array, BoolArray]:
        """Label probabilities (M, L) of the boxes that could be cropped, and the (N,) mask
        of which. Raises what the model raised (the enricher counts it)."""
        batch = crop_batch(image, xyxy, self.classifier.spec)
        skipped = batch.skipped
        if batch.tensor.shape[0] == 0:
            with self.stats.lock:
                self.stats.crops_skipped += skipped
            return np.empty((0, len(self.labels)), np.float32), batch.valid
        try:
            probs = self._batcher.submit(batch.tensor).result()
        except Exception:
            with self.stats.lock:
                self.stats.failed_calls += 1
                self.stats.failed_crops += int(batch.tensor.shape[0])
                self.stats.crops_skipped += skipped
            raise
        with self.stats.lock:
            self.stats.crops_classified += int(batch.tensor.shape[0])
            self.stats.crops_skipped += skipped
        if self.label_map is not None:
            probs = self.label_map.project(probs)
        return probs, batch.valid

    def close(self) -> None:
        """Stop the batcher's thread (queued crops still run)."""
        self._batcher.close()

    def __enter__(self) -> ClassifierService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Called with each frame's fresh classifications: frame, track ids (M,), probabilities (M, L).
ClassificationObserver = Callable[[Frame, IntArray, Float32Array], None]


class ClassificationEnricher:
    """Per-stream stage: ``label``, ``label_confidence``, ``label_votes`` per track (see the
    module docstring). One instance per stream; frames in order.

    Args:
        service: the shared classifier.
        config: which tracks, how often.
        observer: sees every classification as it is made, before the vote (e.g. to log
            single-crop answers or collect hard examples); its exceptions are logged.
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

    def __call__(self, frame: Frame, detections: Detections) -> Detections:
        cfg = self.config
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
            due = self.state.due(tid[rows], area[rows], frame.index, cfg.every, cfg.grow)
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
        try:
            probs, valid = self.service.classify(frame.image, xyxy)
        except Exception as exc:  # the model failed: this frame keeps the labels it had
            log.warning(
                "classification failed on %s frame %d (%d crops): %s",
                frame.source_id,
                frame.index,
                xyxy.shape[0],
                exc,
            )
            return
        self.state.add(tid[valid], probs, area[valid], frame.index)
        if self.observer is not None:
            try:
                self.observer(frame, tid[valid], probs)
            except Exception:
                log.exception("classification observer failed")


def parse_classify_option(text: str) -> tuple[Path, dict[str, str]]:
    """``MODEL[:key=value]...`` → the model path and its options.

    Keys: ``classes`` (detector class names or ids, comma-separated), ``every`` (frames),
    ``min_box`` (pixels), ``grow`` (area factor), ``labels`` (a label-map file or a builtin
    map name). A path may itself contain ``:``; options start at the first ``:key=``.

    Raises:
        ConfigError: no model, an unknown key, or a key given twice.
    """
    known = ("classes", "every", "min_box", "grow", "labels")
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


def config_from_options(options: dict[str, str], class_names: tuple[str, ...]) -> ClassifyConfig:
    """A :class:`ClassifyConfig` from :func:`parse_classify_option`'s options; class names
    resolve against the detector's.

    Raises:
        ConfigError: a value that is not a number, or an unknown class.
    """
    from tapetum.detect.classes import resolve_class_filter

    def number(key: str, cast: type[int] | type[float], default: float) -> Any:
        if key not in options:
            return default
        try:
            return cast(options[key])
        except ValueError:
            raise ConfigError(f"classify: {key} must be a number, got {options[key]!r}") from None

    classes = options.get("classes")
    return ClassifyConfig(
        class_ids=resolve_class_filter(class_names, classes.split(",")) if classes else None,
        every=number("every", int, 10),
        grow=number("grow", float, 1.5),
        min_box_px=number("min_box", float, 16.0),
    )


@dataclass(slots=True)
class _SessionLabels:
    """A session's enricher and how many frames it has been given (its frame index)."""

    enricher: ClassificationEnricher
    frames: int = 0


class ClassifyStage:
    """The stage as a ``--classify`` option describes it: one shared
    :class:`ClassifierService` and a :class:`ClassificationEnricher` per stream or
    per tracking session of a server.

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
        self._configs: dict[tuple[str, ...], ClassifyConfig] = {}
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

    def config(self, detector_classes: tuple[str, ...]) -> ClassifyConfig:
        """The stage's config for a detector with these class names (cached).

        Raises:
            ConfigError: ``classes`` names a class the detector does not have.
        """
        with self._lock:
            config = self._configs.get(detector_classes)
            if config is None:
                config = config_from_options(self.options, detector_classes)
                self._configs[detector_classes] = config
            return config

    def enricher(self, detector_classes: tuple[str, ...]) -> ClassificationEnricher:
        """A new per-stream (per-session) enricher."""
        return ClassificationEnricher(self.service, self.config(detector_classes))

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
            state = session.labels = _SessionLabels(self.enricher(detector_classes))
        frame = Frame(name, state.frames, image, time.time(), time.perf_counter())
        state.frames += 1
        return state.enricher(frame, detections)

    def close(self) -> None:
        self.service.close()
