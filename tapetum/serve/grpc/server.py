"""The gRPC API: ``create_grpc_server(...) -> grpc.Server``, the REST API's twin.

Same detector, key store and rate limiter as the REST app (``tapetum serve`` passes one of
each to both), same image checks (:func:`tapetum.serve.images.decode_image`), same response
bodies (:func:`tapetum.serve.schemas.detections_to_response`, converted once by
:mod:`tapetum.serve.mapping`), same reason texts. REST statuses map to gRPC codes:

==========================  ======================================================
REST                        gRPC
==========================  ======================================================
401 no / unknown key        UNAUTHENTICATED
403 key lacks the scope     PERMISSION_DENIED
404 unknown model           NOT_FOUND
400 / 415 / 422 bad input   INVALID_ARGUMENT
413 too large               RESOURCE_EXHAUSTED
429 rate limited            RESOURCE_EXHAUSTED, trailing ``retry-after`` (seconds)
503 model not ready         UNAVAILABLE, trailing ``retry-after: 1``
==========================  ======================================================

Every error also carries the REST error code (``corrupt_image``, ``rate_limited``, …) in
the trailing metadata ``tapetum-error-code``. Bad input never becomes UNKNOWN or INTERNAL.

Keys come from the metadata ``authorization: Bearer <key>`` or ``x-api-key: <key>``.
``Health`` needs no key (like ``/readyz``); the other RPCs need ``read`` (models) or
``infer`` (detection). Rate limits count per key and full method name
(``/tapetum.v1.Detector/Detect``), once per call and once per frame of ``DetectStream``.

Concurrency: a ``ThreadPoolExecutor`` of ``max_workers`` threads runs the handlers (a
``DetectStream`` holds one for its whole life); detector calls are bounded by a semaphore of
``detector.recommended_workers`` slots, like the REST app's capacity limiter.

Example:
    >>> server = create_grpc_server(settings, SharedDetector(), key_store, limiter,
    ...                             port=50051)                     # doctest: +SKIP
    >>> server.start()                                              # doctest: +SKIP
    >>> server.stop(grace=10).wait()    # drain in-flight calls     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, NoReturn, Protocol, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from tapetum.core.detections import Detections
from tapetum.errors import ConfigError, TapetumError
from tapetum.serve import mapping
from tapetum.serve.app import (
    _SESSION_ID_PATTERN,
    ApiError,
    DetectorLike,
    KeyVerifier,
    RateLimiterLike,
    ServeSettings,
    default_detector_factory,
)
from tapetum.serve.auth import Scope
from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc
from tapetum.serve.images import ImageError, decode_image
from tapetum.serve.schemas import (
    BatchDetectResponse,
    BatchItem,
    Health,
    ImageSize,
    ModelInfo,
    ModelList,
    detections_to_out,
    detections_to_response,
)
from tapetum.serve.sessions import SessionTracker, SessionTrackers
from tapetum.track.base import Tracker

__all__ = [
    "SERVICE_NAME",
    "DetectorProvider",
    "ModelNotReadyError",
    "SharedDetector",
    "create_grpc_server",
]

log = logging.getLogger("tapetum.serve.grpc")

SERVICE_NAME = "tapetum.v1.Detector"
_ERROR_CODE_KEY = "tapetum-error-code"
_MESSAGE_OVERHEAD_BYTES = 64 * 1024
_SESSION_ID = re.compile(_SESSION_ID_PATTERN)
_GRPC_CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


# --------------------------------------------------------------------------- the detector


class ModelNotReadyError(TapetumError):
    """The model is still loading (``failed`` False) or failed to load (True)."""

    def __init__(self, message: str, *, failed: bool = False) -> None:
        super().__init__(message)
        self.failed = failed


class DetectorProvider(Protocol):
    """Returns the loaded detector, or raises :class:`ModelNotReadyError`.

    ``lambda: detector`` fits; so does :class:`SharedDetector`.
    """

    def __call__(self) -> DetectorLike: ...


class SharedDetector:
    """One detector for the REST app and the gRPC server of one process.

    Pass :meth:`factory` as ``create_app(..., detector_factory=shared.factory)``: the REST
    lifespan loads the model once, in its thread, and the gRPC server (given ``shared`` as
    its provider) answers UNAVAILABLE until then. Without a REST app, call
    :meth:`load_in_background`. Thread-safe; the model loads at most once.
    """

    def __init__(
        self, factory: Callable[[ServeSettings], DetectorLike] = default_detector_factory
    ) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._detector: DetectorLike | None = None
        self._error: str | None = None

    def factory(self, settings: ServeSettings) -> DetectorLike:
        """Load the model (first call) or return the loaded one; re-raises a load error."""
        with self._lock:
            if self._detector is None:
                try:
                    self._detector = self._factory(settings)
                except Exception as exc:
                    self._error = f"{type(exc).__name__}: {exc}"
                    raise
            return self._detector

    def load_in_background(self, settings: ServeSettings) -> threading.Thread:
        def load() -> None:
            try:
                self.factory(settings)
            except Exception:
                log.exception("model load failed")

        thread = threading.Thread(target=load, name="grpc-model-load", daemon=True)
        thread.start()
        return thread

    def __call__(self) -> DetectorLike:
        detector = self._detector
        if detector is not None:
            return detector
        if self._error is not None:
            raise ModelNotReadyError(self._error, failed=True)
        raise ModelNotReadyError("the model is still loading")


# ------------------------------------------------------------------------------- errors


def _to_api_error(exc: Exception) -> ApiError:
    """Any exception of a handler → the REST error it would have been."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ImageError):
        return ApiError(exc.status, exc.code, str(exc))
    if isinstance(exc, ModelNotReadyError):
        return ApiError(503, "not_ready", str(exc), {"Retry-After": "1"})
    if isinstance(exc, ConfigError):
        return ApiError(422, "invalid_request", str(exc))
    if isinstance(exc, TapetumError):
        # Deliberate and not the client's (e.g. the rate-limit store is down).
        log.warning("%s: %s", type(exc).__name__, exc)
        return ApiError(503, "service_unavailable", str(exc), {"Retry-After": "1"})
    log.error("unhandled %s", type(exc).__name__, exc_info=exc)
    return ApiError(500, "internal_error", "internal server error; see the server log")


def _abort(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    err = _to_api_error(exc)
    if err.status in _GRPC_CODES:
        code = _GRPC_CODES[err.status]
    elif 400 <= err.status < 500:
        code = grpc.StatusCode.INVALID_ARGUMENT
    else:
        code = grpc.StatusCode.INTERNAL
    trailing: tuple[tuple[str, str | bytes], ...] = ((_ERROR_CODE_KEY, err.code),)
    retry = err.headers.get("Retry-After")
    if retry is not None:
        trailing += (("retry-after", retry),)
    context.set_trailing_metadata(trailing)
    context.abort(code, err.detail)


# ---------------------------------------------------------------------------- servicer


class _Anonymous:
    key_id = "anonymous"

    def allows(self, scope: Scope) -> bool:
        return True


class _DetectorService(pb_grpc.DetectorServicer):
    def __init__(
        self,
        settings: ServeSettings,
        provider: DetectorProvider,
        key_store: KeyVerifier | None,
        rate_limiter: RateLimiterLike | None,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.key_store = key_store
        self.rate_limiter = rate_limiter
        self._new_tracker()  # a bad tracker name fails now, not on the first request
        self.sessions = SessionTrackers(
            self._new_tracker, settings.max_sessions, settings.session_idle_s
        )
        self._slots_lock = threading.Lock()
        self._slots: threading.BoundedSemaphore | None = None

    def _new_tracker(self) -> Tracker:
        from tapetum.track import make_tracker

        return make_tracker(self.settings.tracker, self.settings.session_frame_rate)

    # ---- RPCs ----

    def Detect(  # noqa: N802 - generated servicer's name
        self, request: pb.DetectRequest, context: grpc.ServicerContext
    ) -> pb.DetectResponse:
        return self._unary(request, context, Scope.INFER, "Detect", self._detect)

    def DetectBatch(  # noqa: N802 - generated servicer's name
        self, request: pb.BatchDetectRequest, context: grpc.ServicerContext
    ) -> pb.BatchDetectResponse:
        return self._unary(request, context, Scope.INFER, "DetectBatch", self._detect_batch)

    def ListModels(  # noqa: N802 - generated servicer's name
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return self._unary(request, context, Scope.READ, "ListModels", self._list_models)

    def DescribeModel(  # noqa: N802 - generated servicer's name
        self, request: pb.DescribeModelRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfo:
        return self._unary(request, context, Scope.READ, "DescribeModel", self._describe_model)

    def Health(  # noqa: N802 - generated servicer's name
        self, request: pb.HealthRequest, context: grpc.ServicerContext
    ) -> pb.HealthResponse:
        try:
            self.provider()
            health = Health(status="ok", model_loaded=True)
        except ModelNotReadyError as exc:
            status: Literal["loading", "failed"] = "failed" if exc.failed else "loading"
            health = Health(status=status, model_loaded=False, detail=str(exc))
        return mapping.health_to_proto(health)

    def DetectStream(  # noqa: N802 - generated servicer's name
        self, request_iterator: Iterator[pb.DetectRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.DetectResponse]:
        """One frame in, one result out, in order; one tracker for the whole call."""
        try:
            principal = self._guard(context, Scope.INFER, "DetectStream", count=False)
            session = SessionTracker(self._new_tracker())
            for i, frame in enumerate(request_iterator):
                self._rate_limit(principal.key_id, "DetectStream")
                try:
                    resp = self._detect(frame, session=session, session_id=frame.session_id)
                except (ApiError, ImageError, ConfigError) as exc:
                    err = _to_api_error(exc)
                    raise ApiError(
                        err.status, err.code, f"frame {i}: {err.detail}", err.headers
                    ) from exc
                yield resp
        except Exception as exc:
            _abort(context, exc)

    # ---- plumbing ----

    def _unary(
        self,
        request: _Req,
        context: grpc.ServicerContext,
        scope: Scope,
        method: str,
        handler: Callable[[_Req], _Resp],
    ) -> _Resp:
        try:
            self._guard(context, scope, method)
            return handler(request)
        except Exception as exc:
            _abort(context, exc)

    def _guard(
        self, context: grpc.ServicerContext, scope: Scope, method: str, *, count: bool = True
    ) -> _Principal:
        principal = self._authenticate(context)
        if not principal.allows(scope):
            raise ApiError(
                403,
                "insufficient_scope",
                f"this API key lacks the {scope.value!r} scope needed by {method}",
            )
        if count:
            self._rate_limit(principal.key_id, method)
        return principal

    def _authenticate(self, context: grpc.ServicerContext) -> _Principal:
        if not self.settings.require_auth or self.key_store is None:
            return _Anonymous()
        raw: str | None = None
        metadata = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        scheme, _, token = metadata.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            raw = token.strip()
        raw = raw or metadata.get("x-api-key", "").strip() or None
        if raw is None:
            raise ApiError(
                401,
                "missing_api_key",
                "this RPC needs an API key: metadata 'authorization: Bearer <key>' or "
                "'x-api-key: <key>'",
            )
        principal = None if len(raw) > 512 else self.key_store.verify(raw)
        if principal is None:
            raise ApiError(401, "invalid_api_key", "the API key is unknown or revoked")
        return principal

    def _rate_limit(self, key_id: str, method: str) -> None:
        if self.rate_limiter is None:
            return
        route = f"/{SERVICE_NAME}/{method}"
        decision = self.rate_limiter.hit(key_id, route)
        if not decision.allowed:
            retry = max(1, math.ceil(decision.retry_after_s))
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit exceeded for {route}; retry in {retry} s",
                {"Retry-After": str(retry)},
            )

    def _inference_slots(self, detector: DetectorLike) -> threading.BoundedSemaphore:
        with self._slots_lock:
            if self._slots is None:
                workers = int(getattr(detector, "recommended_workers", 1) or 1)
                self._slots = threading.BoundedSemaphore(max(1, workers))
            return self._slots

    # ---- request checks (the REST app's, see the lead's note in the module report) ----

    def _threshold(self, request: pb.DetectRequest | pb.BatchDetectRequest) -> float:
        if not request.HasField("conf"):
            return self.settings.conf_threshold
        value = request.conf
        if not 0.0 <= value <= 1.0:
            raise ApiError(422, "invalid_request", f"conf: {value} is not in [0, 1]")
        if value < self.settings.min_conf_threshold:
            raise ApiError(
                422,
                "invalid_request",
                f"conf: {value} is below this server's floor {self.settings.min_conf_threshold}",
            )
        return value

    def _class_ids(self, detector: DetectorLike, classes: Sequence[str]) -> frozenset[int] | None:
        from tapetum.detect.classes import resolve_class_filter

        wanted = [c for c in classes if c.strip()]
        if len(wanted) != len(classes):
            raise ApiError(422, "invalid_request", "classes: an entry is empty")
        return resolve_class_filter(detector.class_names, wanted or None)

    def _model_info(self, detector: DetectorLike) -> ModelInfo:
        h, w = detector.input_hw
        return ModelInfo(
            name=self.settings.name,
            path=str(detector.model.path),
            input_width=w,
            input_height=h,
            num_classes=len(detector.class_names),
            providers=list(detector.model.providers),
        )

    # ---- handlers ----

    def _list_models(self, request: pb.ListModelsRequest) -> pb.ListModelsResponse:
        return mapping.model_list_to_proto(ModelList(models=[self._model_info(self.provider())]))

    def _describe_model(self, request: pb.DescribeModelRequest) -> pb.ModelInfo:
        detector = self.provider()
        if request.name != self.settings.name:
            raise ApiError(
                404,
                "unknown_model",
                f"no model named {request.name!r}; loaded: {self.settings.name!r}",
            )
        return mapping.model_info_to_proto(self._model_info(detector))

    def _detect(
        self,
        request: pb.DetectRequest,
        *,
        session: SessionTracker | None = None,
        session_id: str | None = None,
    ) -> pb.DetectResponse:
        detector = self.provider()
        threshold = self._threshold(request)
        class_ids = self._class_ids(detector, request.classes)
        if session is None and request.session_id:
            session_id = request.session_id
            if not _SESSION_ID.match(session_id):
                raise ApiError(
                    422,
                    "invalid_request",
                    f"session_id: must match {_SESSION_ID_PATTERN} (letters, digits, ._:-)",
                )
            session = self.sessions.get(session_id)
        t0 = time.perf_counter()
        image = decode_image(request.image, request.content_type, self.settings.image_limits)
        t1 = time.perf_counter()
        with self._inference_slots(detector):
            found = _detect_tracked(detector, image, threshold, class_ids, session)
        t2 = time.perf_counter()
        response = detections_to_response(
            found,
            class_names=detector.class_names,
            model=self.settings.name,
            image_hw=(int(image.shape[0]), int(image.shape[1])),
            timings_ms={
                "decode": (t1 - t0) * 1e3,
                "inference": (t2 - t1) * 1e3,
                "total": (t2 - t0) * 1e3,
            },
            session_id=session_id or None,
        )
        return mapping.detect_response_to_proto(response)

    def _detect_batch(self, request: pb.BatchDetectRequest) -> pb.BatchDetectResponse:
        detector = self.provider()
        threshold = self._threshold(request)
        class_ids = self._class_ids(detector, request.classes)
        if not request.images:
            raise ApiError(422, "missing_file", "the request needs one or more images")
        if len(request.images) > self.settings.max_batch:
            raise ApiError(
                413, "batch_too_large", f"a batch takes at most {self.settings.max_batch} files"
            )
        t0 = time.perf_counter()
        images = []
        for i, item in enumerate(request.images):
            try:
                images.append(
                    decode_image(item.data, item.content_type, self.settings.image_limits)
                )
            except ImageError as exc:
                raise ImageError(f"images[{i}]: {exc}", status=exc.status, code=exc.code) from exc
        t1 = time.perf_counter()
        with self._inference_slots(detector):
            results = detector(images)
        kept = [_filter(det, threshold, class_ids) for det in results]
        t2 = time.perf_counter()
        response = BatchDetectResponse(
            model=self.settings.name,
            results=[
                BatchItem(
                    image=ImageSize(width=int(img.shape[1]), height=int(img.shape[0])),
                    detections=detections_to_out(det, detector.class_names),
                )
                for img, det in zip(images, kept, strict=True)
            ],
            timings_ms={
                "decode": round((t1 - t0) * 1e3, 2),
                "inference": round((t2 - t1) * 1e3, 2),
                "total": round((t2 - t0) * 1e3, 2),
            },
        )
        return mapping.batch_detect_response_to_proto(response)


class _Principal(Protocol):
    @property
    def key_id(self) -> str: ...
    def allows(self, scope: Scope) -> bool: ...


def _filter(det: Detections, threshold: float, class_ids: frozenset[int] | None) -> Detections:
    mask = det.confidence >= threshold
    if class_ids is not None:
        mask &= np.isin(det.class_id, np.fromiter(class_ids, np.int64))
    return det[mask]


def _detect_tracked(
    detector: DetectorLike,
    image: npt.NDArray[np.uint8],
    threshold: float,
    class_ids: frozenset[int] | None,
    session: SessionTracker | None,
) -> Detections:
    """The REST ``/v1/detect`` work: detect, filter classes, track within the session."""
    found = detector([image])[0]
    if class_ids is not None:
        found = found[np.isin(found.class_id, np.fromiter(class_ids, np.int64))]
    if session is None:
        return found[found.confidence >= threshold]
    # The tracker sees every box down to the floor (ByteTrack's second association feeds on
    # low scores); the answer keeps boxes above the threshold and every confirmed track.
    found.data["row"] = np.arange(len(found))
    with session.lock:
        tracked = session.tracker.update(found)
    found.tracker_id[tracked.data["row"]] = tracked.tracker_id
    del found.data["row"]
    return found[(found.confidence >= threshold) | found.is_tracked]


# ---------------------------------------------------------------------------------- server


def create_grpc_server(  # noqa: PLR0917 - the REST factory's order, plus the address
    settings: ServeSettings,
    detector_provider: DetectorProvider,
    key_store: KeyVerifier | None,
    rate_limiter: RateLimiterLike | None,
    port: int,
    host: str = "127.0.0.1",
    *,
    max_workers: int = 16,
) -> grpc.Server:
    """Build the gRPC server, bound to ``host:port`` but not started.

    Args:
        settings: the REST app's settings (limits, thresholds, tracker, auth on/off).
        detector_provider: the loaded detector, or :class:`ModelNotReadyError`.
        key_store: verifies API keys (required when ``settings.require_auth``).
        rate_limiter: None: no limit.
        port: TCP port (0: any free one; ``server.add_insecure_port`` is already done).
        max_workers: handler threads; each open ``DetectStream`` holds one.

    Raises:
        ConfigError: auth is on without a key store, or the address cannot be bound.
    """
    if settings.require_auth and key_store is None:
        raise ConfigError("gRPC authentication is on: give a key store or turn auth off")
    service = _DetectorService(settings, detector_provider, key_store, rate_limiter)
    max_message = settings.max_batch * settings.max_upload_bytes + _MESSAGE_OVERHEAD_BYTES
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
    pb_grpc.add_DetectorServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen for gRPC on {address}: {exc}") from exc
    if bound == 0:
        raise ConfigError(f"cannot listen for gRPC on {address}")
    log.info("gRPC %s on %s:%d", SERVICE_NAME, host, bound)
    return server
