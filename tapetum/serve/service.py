"""The detection service both APIs serve: ``DetectionService(settings, detector_factory)``.

Framework-free (no FastAPI, no gRPC): the REST app and the gRPC server are thin adapters
that authenticate, rate-limit, read their transport's request, call this, and render its
answers or its :class:`~tapetum.serve.settings.ApiError`.

It owns:

- the model: loaded and warmed in a background thread (:meth:`DetectionService.start`);
  ``ready``, ``load_error`` and :meth:`DetectionService.wait_ready` say where that stands,
  and every operation raises :class:`NotReadyError` (503, ``not_ready``) until it is done;
- ONE inference concurrency limit shared by every caller: a ``threading.BoundedSemaphore``
  of ``detector.recommended_workers`` slots (2 single-threaded ORT runs on a 2-core CPU,
  1 on a GPU). REST calls the blocking operations through ``anyio.to_thread``; gRPC
  handler threads call them directly; either way concurrent model runs stay within what
  the session's intra-op threads were sized for, so requests queue instead of
  oversubscribing the cores. No lock around the model: ``InferenceSession.run`` is
  thread-safe;
- the models: the default one of the settings plus models loaded at runtime
  (:meth:`~DetectionService.load_model`, :meth:`~DetectionService.unload_model`; at most
  ``settings.max_models`` in all), by name; every model shares the one inference limit.
  The default model can be replaced while serving (:meth:`~DetectionService.swap_model`,
  a new registry version): the new file is loaded and warmed beside the old one, then
  requests that start later get it, while those already running finish on the old one
  (each holds its detector); listeners (the server's streams) are told;
- the tracking sessions (one tracker per caller and ``session_id``, shared by both APIs;
  at most ``settings.max_sessions_per_key`` per caller). A session is keyed by its owner
  and id, not by model: a session should stick to one model (its tracker would otherwise
  mix boxes of different detectors);
- the request-level operations: :meth:`~DetectionService.check_conf`,
  :meth:`~DetectionService.class_ids`, :meth:`~DetectionService.model_info`,
  :meth:`~DetectionService.detect` and :meth:`~DetectionService.detect_batch`.

Example:
    >>> service = DetectionService(settings)                       # doctest: +SKIP
    >>> service.start(); service.wait_ready(60.0)                   # doctest: +SKIP
    True
    >>> service.detect(EncodedImage(jpeg_bytes, "image/jpeg"), conf=0.4)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from tapetum._types import UInt8Array
from tapetum.core.detections import Detections
from tapetum.detect.base import StagedDetector
from tapetum.errors import ConfigError, ModelLoadError, NotReadyError
from tapetum.serve.images import ImageError, decode_image
from tapetum.serve.ownership import ANONYMOUS
from tapetum.serve.schemas import (
    BatchDetectResponse,
    BatchItem,
    DetectResponse,
    ImageSize,
    ModelInfo,
    ModelList,
    detections_to_out,
    detections_to_response,
)
from tapetum.serve.sessions import SessionTracker, SessionTrackers
from tapetum.serve.settings import (
    MODEL_NAME_PATTERN,
    SESSION_ID_PATTERN,
    ApiError,
    DetectorLike,
    ServeSettings,
    default_detector_factory,
)
from tapetum.track.base import Tracker

if TYPE_CHECKING:
    from tapetum.classify import ClassifyStage

__all__ = ["DetectionService", "EncodedImage", "NotReadyError"]

log = logging.getLogger("tapetum.serve")

_SESSION_ID = re.compile(SESSION_ID_PATTERN)
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)

#: An image as decoded: (H, W, 3) uint8 BGR.
Image = UInt8Array


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """An image as the client sent it; the service decodes it with the settings' limits."""

    data: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class _Model:
    """A loaded model: its name, detector and settings (its default threshold)."""

    name: str
    detector: DetectorLike
    settings: ServeSettings


class _BatchedRunner:
    """Runs concurrent requests' images through one :class:`DynamicBatcher`.

    Preprocessing and postprocessing stay in each request's thread; only the model call
    is shared. With ``max_wait_ms`` 0 a free worker takes whatever is queued at once, so
    images queue (and batch) only while every worker is busy: more throughput under load,
    no added wait for a lone client.
    """

    def __init__(
        self, detector: StagedDetector, workers: int, max_batch: int, max_wait_ms: float, name: str
    ) -> None:
        from tapetum.detect.batcher import DynamicBatcher

        self.detector = detector
        self.batcher: DynamicBatcher[npt.NDArray[np.float32], npt.NDArray[np.float32]] = (
            DynamicBatcher(
                self._run_batch,
                max_batch=max(1, min(max_batch, detector.max_batch)),
                max_wait_ms=max_wait_ms,
                workers=workers,
                name=f"batcher[{name}]",
            )
        )

    def _run_batch(self, tensors: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        return self.detector.infer(np.stack(tensors))

    def __call__(self, images: Sequence[Image]) -> list[Detections] | None:
        """Detections per image, or None once the batcher is closed (model unloaded while
        this request was under way: the caller runs the detector directly)."""
        from tapetum.detect.batcher import BatcherClosedError

        prepared = [self.detector.preprocess(image) for image in images]
        try:
            futures = [self.batcher.submit(tensor) for tensor, _ in prepared]
            raws = [future.result() for future in futures]
        except BatcherClosedError:
            return None
        return [
            self.detector.postprocess(raw, meta)
            for raw, (_, meta) in zip(raws, prepared, strict=True)
        ]

    def close(self) -> None:
        self.batcher.close(drain=True)


class DetectionService:
    """Model lifecycle, inference limit, tracking sessions and the detection operations.

    Args:
        settings: configuration (thresholds, limits, tracker, warmup).
        detector_factory: builds the detector, in the load thread (tests inject fakes).

    Raises:
        ConfigError: the settings name an unknown tracker.
    """

    def __init__(
        self,
        settings: ServeSettings,
        detector_factory: Callable[[ServeSettings], DetectorLike] = default_detector_factory,
    ) -> None:
        self.settings = settings
        self._factory = detector_factory
        self.new_tracker()  # a bad tracker name fails now, not on the first request
        self.classify: ClassifyStage | None = None
        if settings.classify:  # a bad classifier or label map fails now too
            from tapetum.classify import ClassifyStage
            from tapetum.detect.runtime import RuntimeOptions

            self.classify = ClassifyStage.from_option(
                settings.classify,
                RuntimeOptions(intra_op_threads=1, workers=1, providers=settings.providers),
            )
        self.sessions = SessionTrackers(
            self.new_tracker,
            settings.max_sessions,
            settings.session_idle_s,
            max_per_owner=settings.max_sessions_per_key,
        )
        self._detector: DetectorLike | None = None
        self._slots: threading.BoundedSemaphore | None = None
        self._load_error: str | None = None
        self._done = threading.Event()
        self._start_lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self._models_lock = threading.Lock()
        self._extra: dict[str, _Model] = {}  # loaded at runtime, in load order
        self._runners: dict[int, _BatchedRunner] = {}  # id(detector) → its batcher
        self._loading: set[str] = set()  # names reserved by loads in progress
        self._swap_lock = threading.Lock()  # one default-model swap at a time
        self._swap_listeners: list[Callable[[], object]] = []

    # ---- lifecycle ----

    def start(self) -> None:
        """Load and warm the model in a background thread (idempotent)."""
        with self._start_lock:
            if self._loader is None:
                self._loader = threading.Thread(target=self._load, name="model-load", daemon=True)
                self._loader.start()

    def _load(self) -> None:
        try:
            t0 = time.perf_counter()
            detector = self._factory(self.settings)
            if self.settings.warmup:
                h, w = detector.input_hw
                detector([np.full((h, w, 3), 114, np.uint8)])
            workers = max(1, int(getattr(detector, "recommended_workers", 1) or 1))
            self._slots = threading.BoundedSemaphore(workers)
            self._add_runner(detector, self.settings.name)
            self._detector = detector
            log.info(
                "model %s ready in %.2f s (%d inference slots)",
                self.settings.name,
                time.perf_counter() - t0,
                workers,
            )
        except Exception as exc:  # reported by readiness; the process stays up to say why
            self._load_error = f"{type(exc).__name__}: {exc}"
            log.error("model load failed: %s", self._load_error)
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        """The model is loaded and warmed."""
        return self._detector is not None

    @property
    def load_error(self) -> str | None:
        """Why the model failed to load (None while loading or once loaded)."""
        return self._load_error

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the load finished (or ``timeout`` s passed); True when ready."""
        self._done.wait(timeout)
        return self.ready

    def detector(self) -> DetectorLike:
        """The loaded detector, or :class:`NotReadyError`."""
        detector = self._detector
        if detector is not None:
            return detector
        if self._load_error is not None:
            raise NotReadyError(self._load_error, failed=True)
        raise NotReadyError("the model is still loading")

    def staged_detector(self) -> StagedDetector:
        """The detector as streams need it (stage by stage); 501 when it cannot."""
        detector = self.detector()
        staged = ("preprocess", "infer", "postprocess", "max_batch")
        if not all(hasattr(detector, name) for name in staged):
            raise ApiError(
                501, "not_supported", "this server's detector cannot run streams (not staged)"
            )
        return cast(StagedDetector, detector)

    def new_tracker(self) -> Tracker:
        """A fresh tracker of the settings' kind (one per session or stream call)."""
        from tapetum.track import make_tracker

        return make_tracker(self.settings.tracker, self.settings.session_frame_rate)

    def _add_runner(self, detector: DetectorLike, name: str) -> None:
        """Batch concurrent requests on a staged detector (``batch_requests`` > 1)."""
        staged = ("preprocess", "infer", "postprocess", "max_batch")
        if self.settings.batch_requests <= 1 or not all(hasattr(detector, a) for a in staged):
            return
        workers = max(1, int(getattr(detector, "recommended_workers", 1) or 1))
        runner = _BatchedRunner(
            cast(StagedDetector, detector),
            workers,
            self.settings.batch_requests,
            self.settings.batch_wait_ms,
            name,
        )
        with self._models_lock:
            self._runners[id(detector)] = runner

    def _drop_runner(self, detector: DetectorLike) -> None:
        with self._models_lock:
            runner = self._runners.pop(id(detector), None)
        if runner is not None:
            runner.close()  # queued images still run; later calls go direct

    def close(self) -> None:
        """Stop the batchers (queued images still run). Idempotent."""
        with self._models_lock:
            runners = list(self._runners.values())
            self._runners.clear()
        for runner in runners:
            runner.close()
        if self.classify is not None:
            self.classify.close()

    def _infer(self, images: Sequence[Image], detector: DetectorLike) -> list[Detections]:
        self.detector()
        runner = self._runners.get(id(detector))
        if runner is not None:
            found = runner(images)
            if found is not None:
                return found
        assert self._slots is not None  # set before the detector
        with self._slots:
            return detector(images)

    # ---- request checks ----

    def _model(self, name: str | None) -> _Model:
        """The model of a request: the default for None or empty; 503 until the default
        is ready, 404 for an unknown name."""
        detector = self.detector()
        if not name or name == self.settings.name:
            return _Model(self.settings.name, detector, self.settings)
        model = self._extra.get(name)
        if model is None:
            raise ApiError(
                404,
                "unknown_model",
                f"no model named {name!r}; loaded: {', '.join(map(repr, self.model_names()))}",
            )
        return model

    def model_names(self) -> list[str]:
        """The loaded models' names, the default first (empty until it is ready)."""
        if not self.ready:
            return []
        return [self.settings.name, *list(self._extra)]

    def check_conf(self, conf: float | None, model: str | None = None) -> float:
        """The request's score threshold (the model's default for None); 422 out of
        range; 404 for an unknown ``model``."""
        default = self.settings.conf_threshold
        if model:
            default = self._model(model).settings.conf_threshold
        value = default if conf is None else conf
        if not 0.0 <= value <= 1.0:
            raise ApiError(422, "invalid_request", f"conf: {value} is not in [0, 1]")
        if value < self.settings.min_conf_threshold:
            raise ApiError(
                422,
                "invalid_request",
                f"conf: {value} is below this server's floor {self.settings.min_conf_threshold}",
            )
        return value

    def class_ids(
        self, names: Sequence[str] | None, model: str | None = None
    ) -> frozenset[int] | None:
        """Class names or ids → the ids to keep (None or empty: all); 422 for a blank
        entry, ``ConfigError`` for an unknown class. Needs the model."""
        from tapetum.detect.classes import resolve_class_filter

        detector = self._model(model).detector
        wanted = [c for c in names or () if c.strip()]
        if names is not None and len(wanted) != len(names):
            raise ApiError(422, "invalid_request", "classes: an entry is empty")
        return resolve_class_filter(detector.class_names, wanted or None)

    def check_session_id(self, session_id: str) -> None:
        """422 unless ``session_id`` matches :data:`SESSION_ID_PATTERN`."""
        if not _SESSION_ID.match(session_id):
            raise ApiError(
                422,
                "invalid_request",
                f"session_id: must match {SESSION_ID_PATTERN} (letters, digits, ._:-)",
            )

    def check_request(
        self,
        conf: float | None = None,
        classes: Sequence[str] | None = None,
        session_id: str | None = None,
        model: str | None = None,
    ) -> tuple[float, frozenset[int] | None]:
        """Every check of a detection request, in the order the APIs report them: not
        ready (503), unknown model (404), conf, classes, session id (422). Returns
        (threshold, class ids)."""
        self._model(model)
        threshold = self.check_conf(conf, model)
        class_ids = self.class_ids(classes, model)
        if session_id:
            self.check_session_id(session_id)
        return threshold, class_ids

    # ---- operations ----

    def model_info(self, name: str | None = None, *, full_path: bool = True) -> ModelInfo:
        """A loaded model (None: the default one); 404 for an unknown name.

        ``full_path`` False (callers without ``admin``): ``path`` is the file name only, so
        the server's folders do not show."""
        if name is not None and not name:
            raise ApiError(404, "unknown_model", "no model named ''")
        return self._info(self._model(name), full_path)

    def list_models(self, *, full_path: bool = True) -> ModelList:
        """Every loaded model, the default first then in load order."""
        self.detector()
        with self._models_lock:
            extra = list(self._extra.values())
        return ModelList(
            models=[
                self.model_info(full_path=full_path),
                *(self._info(m, full_path) for m in extra),
            ]
        )

    @staticmethod
    def _info(model: _Model, full_path: bool = True) -> ModelInfo:
        detector = model.detector
        h, w = detector.input_hw
        return ModelInfo(
            name=model.name,
            path=str(detector.model.path) if full_path else Path(detector.model.path).name,
            input_width=w,
            input_height=h,
            num_classes=len(detector.class_names),
            providers=list(detector.model.providers),
        )

    def _decode(self, image: Image | EncodedImage, name: str | None = None) -> Image:
        if not isinstance(image, EncodedImage):
            return image
        try:
            return decode_image(image.data, image.content_type, self.settings.image_limits)
        except ImageError as exc:
            if name is None:
                raise
            raise ImageError(f"{name}: {exc}", status=exc.status, code=exc.code) from exc

    def detect(
        self,
        image: Image | EncodedImage,
        conf: float | None = None,
        classes: Sequence[str] | None = None,
        session_id: str | None = None,
        *,
        session: SessionTracker | None = None,
        started_s: float | None = None,
        observe: Callable[[float], None] | None = None,
        model: str | None = None,
        owner: str = ANONYMOUS,
    ) -> DetectResponse:
        """Detect (and with a session, track) objects in one image. Blocking.

        Args:
            image: decoded RGB, or the encoded bytes to decode under the settings' limits.
            conf / classes: the request's threshold and class filter (None: defaults).
            session_id: track across calls of this id (the service's session LRU).
            session: track with this session instead (``session_id`` is only echoed).
            started_s: ``time.perf_counter()`` when the request began (default: now).
            observe: gets the model call's seconds (metrics).
            model: the loaded model to run (None: the default one; 404 when unknown). A
                session should stick to one model.
            owner: the caller's ``key_id``; ``session_id`` names one of its sessions
                (another caller's session of the same id is another tracker).

        Raises:
            NotReadyError, ApiError, ImageError, ConfigError.
        """
        t0 = time.perf_counter() if started_s is None else started_s
        loaded = self._model(model)
        threshold, class_ids = self.check_request(
            conf, classes, None if session is not None else session_id, model
        )
        decoded = self._decode(image)
        t1 = time.perf_counter()
        if session is None and session_id:
            session = self.sessions.get(session_id, owner)
        start = time.perf_counter()
        found = self._infer([decoded], loaded.detector)[0]
        if observe is not None:
            observe(time.perf_counter() - start)
        if class_ids is not None:
            found = found[np.isin(found.class_id, np.fromiter(class_ids, np.int64))]
        if session is None:
            found = found[found.confidence >= threshold]
        else:
            # The tracker sees every box down to the floor (ByteTrack's second association
            # feeds on low scores); the answer keeps boxes above the request's threshold
            # and every box that carries a confirmed track.
            found.data["row"] = np.arange(len(found))
            with session.lock:
                tracked = session.tracker.update(found)
                if self.classify is not None:  # labels of the session's tracks
                    tracked = self.classify.label_session(
                        session,
                        decoded,
                        tracked,
                        tuple(loaded.detector.class_names),
                        session_id or "session",
                    )
            found.tracker_id[tracked.data["row"]] = tracked.tracker_id
            if self.classify is not None:
                _copy_labels(tracked, found)
            del found.data["row"]
            found = found[(found.confidence >= threshold) | found.is_tracked]
        t2 = time.perf_counter()
        return detections_to_response(
            found,
            class_names=loaded.detector.class_names,
            model=loaded.name,
            image_hw=(int(decoded.shape[0]), int(decoded.shape[1])),
            timings_ms={
                "decode": (t1 - t0) * 1e3,
                "inference": (t2 - t1) * 1e3,
                "total": (t2 - t0) * 1e3,
            },
            session_id=session_id or None,
        )

    def detect_batch(
        self,
        images: Sequence[Image | EncodedImage],
        conf: float | None = None,
        classes: Sequence[str] | None = None,
        *,
        field: str = "images",
        started_s: float | None = None,
        observe: Callable[[float], None] | None = None,
        model: str | None = None,
    ) -> BatchDetectResponse:
        """Detect objects in several images with one batched model call. Blocking.

        Args:
            field: the request field named in per-image errors (``images[2]: …``).
            started_s / observe / model: as :meth:`detect`.

        Raises:
            NotReadyError, ApiError (none or too many images), ImageError, ConfigError.
        """
        t0 = time.perf_counter() if started_s is None else started_s
        loaded = self._model(model)
        threshold, class_ids = self.check_request(conf, classes, model=model)
        if not images:
            raise ApiError(422, "missing_file", "the request needs one or more images")
        if len(images) > self.settings.max_batch:
            raise ApiError(
                413, "batch_too_large", f"a batch takes at most {self.settings.max_batch} files"
            )
        decoded = [self._decode(img, f"{field}[{i}]") for i, img in enumerate(images)]
        t1 = time.perf_counter()
        start = time.perf_counter()
        results = self._infer(decoded, loaded.detector)
        if observe is not None:
            observe(time.perf_counter() - start)
        wanted = None if class_ids is None else np.fromiter(class_ids, np.int64)
        kept = []
        for det in results:
            mask = det.confidence >= threshold
            if wanted is not None:
                mask &= np.isin(det.class_id, wanted)
            kept.append(det[mask])
        t2 = time.perf_counter()
        class_names = loaded.detector.class_names
        return BatchDetectResponse(
            model=loaded.name,
            results=[
                BatchItem(
                    image=ImageSize(width=int(img.shape[1]), height=int(img.shape[0])),
                    detections=detections_to_out(det, class_names),
                )
                for img, det in zip(decoded, kept, strict=True)
            ],
            timings_ms={
                "decode": round((t1 - t0) * 1e3, 2),
                "inference": round((t2 - t1) * 1e3, 2),
                "total": round((t2 - t0) * 1e3, 2),
            },
        )

    # ---- runtime models ----

    def load_model(self, name: str, path: str | Path, conf: float | None = None) -> ModelInfo:
        """Load and warm another model under ``name``, in the calling thread. Blocking.

        Args:
            name: the model's name in requests (``model=``); :data:`MODEL_NAME_PATTERN`.
            path: an ONNX file the detector adapter accepts, inside one of
                :meth:`model_roots` by its real location (a relative path is looked up in
                each root).
            conf: the model's default score threshold (None: the settings' default).

        Raises:
            NotReadyError: the default model is not ready (503).
            ApiError: 422 bad name or conf, or the file does not load as a detector
                (``model_load_failed``, with the loader's reason); 400 ``bad_model_path``
                when ``path`` is not an ``.onnx`` file inside the model roots (the same
                answer whether or not it exists elsewhere); 409 ``model_exists`` for
                a name in use, ``too_many_models`` at ``settings.max_models``.
        """
        self.detector()
        if not _MODEL_NAME.match(name):
            raise ApiError(
                422,
                "invalid_request",
                f"name: must match {MODEL_NAME_PATTERN} (letters, digits, ._-)",
            )
        try:
            settings = dataclasses.replace(
                self.settings,
                model_path=self._model_file(path),
                model_name=name,
                model_arch=None,  # the new file's metadata or shapes decide
                conf_threshold=self.settings.conf_threshold if conf is None else conf,
            )
        except ConfigError as exc:
            raise ApiError(422, "invalid_request", f"conf: {exc}") from exc
        file = settings.model_path
        with self._models_lock:
            if name == self.settings.name or name in self._extra or name in self._loading:
                raise ApiError(409, "model_exists", f"a model named {name!r} is already loaded")
            count = 1 + len(self._extra) + len(self._loading)
            if count >= self.settings.max_models:
                raise ApiError(
                    409,
                    "too_many_models",
                    f"this server holds at most {self.settings.max_models} models; "
                    "unload one first",
                )
            self._loading.add(name)
        try:
            t0 = time.perf_counter()
            try:
                detector = self._factory(settings)
                if settings.warmup:
                    h, w = detector.input_hw
                    self._infer([np.full((h, w, 3), 114, np.uint8)], detector)
            except (ModelLoadError, ConfigError) as exc:
                raise ApiError(422, "model_load_failed", f"path: {exc}") from exc
            except Exception as exc:  # the adapter refused the file in its own words
                raise ApiError(
                    422, "model_load_failed", f"path: {type(exc).__name__}: {exc}"
                ) from exc
            loaded = _Model(name, detector, settings)
            self._add_runner(detector, name)
            with self._models_lock:
                self._extra[name] = loaded
            log.info("model %s (%s) loaded in %.2f s", name, file, time.perf_counter() - t0)
            return self._info(loaded)
        finally:
            with self._models_lock:
                self._loading.discard(name)

    def add_model(
        self, name: str, detector: DetectorLike, path: Path, conf: float | None = None
    ) -> ModelInfo:
        """Serve a detector the operator loaded at start-up under ``name`` (an A/B
        experiment's arm): no request chose its file, so no model-root check; ``path`` is
        what :meth:`model_info` shows admins. Warm it first.

        Raises:
            NotReadyError: the default model is not ready (503).
            ApiError: 422 for a bad name, 409 ``model_exists`` for a name in use.
        """
        self.detector()
        if not _MODEL_NAME.match(name):
            raise ApiError(
                422,
                "invalid_request",
                f"name: must match {MODEL_NAME_PATTERN} (letters, digits, ._-)",
            )
        settings = dataclasses.replace(
            self.settings,
            model_path=path,
            model_name=name,
            model_arch=None,
            conf_threshold=self.settings.conf_threshold if conf is None else conf,
        )
        loaded = _Model(name, detector, settings)
        with self._models_lock:
            if name == self.settings.name or name in self._extra or name in self._loading:
                raise ApiError(409, "model_exists", f"a model named {name!r} is already loaded")
            self._extra[name] = loaded
        self._add_runner(detector, name)
        return self._info(loaded)

    def model_roots(self) -> tuple[Path, ...]:
        """The folders runtime models load from: ``settings.model_roots``, or the default
        model's folder when none are configured (real locations)."""
        roots = self.settings.model_roots
        if not roots:
            default_folder = self.settings.model_path.parent
            roots = (default_folder,) if default_folder.is_dir() else ()
        return tuple(Path(os.path.realpath(root)) for root in roots)

    def _model_file(self, path: str | Path) -> Path:
        """``path``'s real location when it is an ``.onnx`` file inside a model root;
        400 ``bad_model_path`` otherwise (a file outside the roots is never looked at)."""
        given = Path(path)
        roots = self.model_roots()
        candidates = [given] if given.is_absolute() else [root / given for root in roots]
        for candidate in candidates:
            real = Path(os.path.realpath(candidate))
            inside = any(real.is_relative_to(root) for root in roots)
            if inside and real.suffix.lower() == ".onnx" and real.is_file():
                return real
        raise ApiError(
            400,
            "bad_model_path",
            f"path: {str(given)!r} is not an .onnx file in this server's model folders",
        )

    def unload_model(self, name: str) -> None:
        """Forget a model loaded at runtime (in-flight requests on it finish).

        Raises:
            NotReadyError (503); ApiError: 409 ``default_model`` for the default model,
            404 ``unknown_model`` for a name not loaded.
        """
        self.detector()
        if name == self.settings.name:
            raise ApiError(
                409, "default_model", f"{name!r} is the server's default model; it stays loaded"
            )
        with self._models_lock:
            model = self._extra.pop(name, None)
        if model is None:
            raise ApiError(404, "unknown_model", f"no model named {name!r}")
        self._drop_runner(model.detector)
        log.info("model %s unloaded", name)

    # ---- replacing the default model ----

    def add_swap_listener(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` after each :meth:`swap_model`, once the new detector serves
        (the server's stream manager hands it to running streams). Its errors are logged."""
        self._swap_listeners.append(listener)

    def swap_model(self, path: str | Path) -> float:
        """Serve ``path`` as the default model from now on, under the same name. Blocking.

        The new detector is loaded and warmed in the calling thread while the old one keeps
        serving; then the swap is one assignment: a request that starts afterwards runs on
        the new one, a request already under way finishes on the old one (it holds it), and
        the old one's request batcher runs what is queued before it stops. Tracking sessions
        keep their trackers. One swap at a time.

        Returns:
            Seconds the load, warm-up and swap took.

        Raises:
            NotReadyError: the default model is not loaded yet.
            ModelLoadError, ConfigError (or the adapter's own error): the file does not
                load; the old model keeps serving.
        """
        self.detector()
        with self._swap_lock:
            t0 = time.perf_counter()
            settings = dataclasses.replace(
                self.settings, model_path=Path(path), model_name=self.settings.name
            )
            detector = self._factory(settings)
            if settings.warmup:
                h, w = detector.input_hw
                self._infer([np.full((h, w, 3), 114, np.uint8)], detector)
            self._add_runner(detector, self.settings.name)
            old, self._detector = self._detector, detector
            for listener in list(self._swap_listeners):
                try:
                    listener()
                except Exception:
                    log.exception("a model swap listener failed")
            if old is not None and old is not detector:
                self._drop_runner(old)  # its queued images still run
            seconds = time.perf_counter() - t0
        log.info(
            "default model %s now serves %s (loaded, warmed and swapped in %.2f s)",
            self.settings.name,
            Path(path).name,
            seconds,
        )
        return seconds


def _copy_labels(tracked: Detections, found: Detections) -> None:
    """Put the label columns of ``tracked`` (rows ``tracked.data["row"]`` of ``found``)
    into ``found``; rows without a track get none."""
    from tapetum.classify import LABEL_COLUMNS

    rows = tracked.data["row"]
    n = len(found)
    found.data["label"] = np.full(n, None, dtype=object)
    found.data["label_confidence"] = np.full(n, np.nan, np.float32)
    found.data["label_votes"] = np.zeros(n, np.int64)
    for column in LABEL_COLUMNS:
        found.data[column][rows] = tracked.data[column]
