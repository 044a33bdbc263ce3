"""The REST API: ``create_app(settings) -> FastAPI``.

Everything the app needs (detector, key store, rate limiter, metrics registry, tracking
sessions) is built per app and injected or created in :func:`create_app`; nothing lives
in module globals, so two apps in one process (tests) do not share state.

Concurrency: detector calls run in worker threads, never on the event loop, bounded by an
``anyio.CapacityLimiter`` of ``detector.recommended_workers`` slots (2 single-threaded
ORT runs on a 2-core CPU; 1 on a GPU). No lock around the model: ONNX Runtime's
``InferenceSession.run`` is thread-safe, and the limiter keeps concurrent runs to what the
session's intra-op threads were sized for, so requests queue instead of oversubscribing
the cores. Per-session trackers are not thread-safe; each has its own lock.

Shutdown: uvicorn handles SIGTERM/SIGINT by closing the listening socket, letting in-flight
requests finish (up to ``timeout_graceful_shutdown``), then running the lifespan exit.

Example:
    >>> from pathlib import Path
    >>> settings = ServeSettings(model_path=Path("yolox_nano.onnx"), require_auth=False)
    >>> app = create_app(settings)                         # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tapetum.core.breaker import BreakerRegistry, CircuitOpenError
from tapetum.core.detections import Detections
from tapetum.detect.base import StagedDetector
from tapetum.errors import ConfigError, SourceError, TapetumError
from tapetum.serve.auth import Scope as KeyScope
from tapetum.serve.images import ImageError, ImageLimits, decode_image, normalize_content_type
from tapetum.serve.schemas import (
    BatchDetectResponse,
    BatchItem,
    DetectResponse,
    ErrorResponse,
    Health,
    ImageSize,
    ModelInfo,
    ModelList,
    detections_to_out,
    detections_to_response,
)
from tapetum.serve.sessions import SessionTrackers
from tapetum.serve.streams import (
    StreamInfo,
    StreamLimitError,
    StreamManager,
    StreamOptions,
    UnknownStreamError,
)

__all__ = [
    "ApiError",
    "DetectorLike",
    "KeyVerifier",
    "RateLimiterLike",
    "ServeSettings",
    "create_app",
    "default_detector_factory",
]

log = logging.getLogger("tapetum.serve")

# Multipart framing around the files: generous, the byte limits are per file.
_MULTIPART_OVERHEAD_BYTES = 64 * 1024
_SESSION_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


# --------------------------------------------------------------------------- interfaces


class _ModelHandle(Protocol):
    @property
    def path(self) -> Path: ...
    @property
    def providers(self) -> list[str]: ...


class DetectorLike(Protocol):
    """What the server needs of a detector (``YoloxDetector`` fits)."""

    @property
    def class_names(self) -> tuple[str, ...]: ...
    @property
    def input_hw(self) -> tuple[int, int]: ...
    @property
    def model(self) -> _ModelHandle: ...
    def __call__(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]: ...


class _Principal(Protocol):
    @property
    def key_id(self) -> str: ...
    def allows(self, scope: KeyScope) -> bool: ...


class KeyVerifier(Protocol):
    """``tapetum.serve.auth.KeyStore`` fits."""

    def verify(self, raw: str) -> _Principal | None: ...


class _Decision(Protocol):
    @property
    def allowed(self) -> bool: ...
    @property
    def retry_after_s(self) -> float: ...


class RateLimiterLike(Protocol):
    """``tapetum.serve.ratelimit.RateLimiter`` fits."""

    def hit(self, key_id: str, route: str) -> _Decision: ...


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Server configuration.

    Attributes:
        model_path: YOLOX ONNX file.
        model_name: name in ``/v1/models`` (default: the file stem).
        conf_threshold: default score threshold of ``/v1/detect``.
        min_conf_threshold: the detector's own threshold, the lowest a request may ask
            for; ByteTrack also sees boxes down to it (its second association uses them).
        nms_iou: NMS IoU threshold.
        max_upload_bytes: per image, encoded.
        max_side_px / max_pixels: decoded size limits, checked from the header.
        max_batch: most files in one ``/v1/detect/batch`` (≤ 16).
        keys_db: API key database (``KeyStore``) used when no key store is injected.
        require_auth: False serves every route without a key (local use only).
        rate_per_second / rate_burst: default token bucket per (key, route); None: no limit.
        route_rates: route path → (per_second, burst) overrides.
        tracker: tracker of ``session_id`` requests.
        session_frame_rate: frame rate assumed for sessions (scales lost-track lifetime).
        max_sessions / session_idle_s: tracking-session LRU size and idle expiry.
        warmup: run one inference before ``/readyz`` turns 200.
        max_streams: most server-side streams (``POST /v1/streams``) running at once.
        stream_breaker_failures / stream_breaker_reset_s: a stream URI that failed to open
            this many times in a row is refused with 503 for this long.
        stream_subscriber_queue: results buffered per live (SSE) subscriber; a slower
            client loses the oldest.
        sse_heartbeat_s: idle time after which an SSE connection gets a comment line.
    """

    model_path: Path
    model_name: str | None = None
    conf_threshold: float = 0.3
    min_conf_threshold: float = 0.1
    nms_iou: float = 0.45
    max_upload_bytes: int = 10 * 1024 * 1024
    max_side_px: int = 8192
    max_pixels: int = 40_000_000
    max_batch: int = 16
    keys_db: Path | None = None
    require_auth: bool = True
    rate_per_second: float | None = 20.0
    rate_burst: int = 40
    route_rates: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    tracker: str = "bytetrack"
    session_frame_rate: float = 30.0
    max_sessions: int = 256
    session_idle_s: float = 300.0
    warmup: bool = True
    max_streams: int = 4
    stream_breaker_failures: int = 3
    stream_breaker_reset_s: float = 30.0
    stream_subscriber_queue: int = 64
    sse_heartbeat_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_conf_threshold <= self.conf_threshold <= 1.0:
            raise ConfigError(
                f"need 0 ≤ min_conf_threshold ≤ conf_threshold ≤ 1, got "
                f"{self.min_conf_threshold} and {self.conf_threshold}"
            )
        if not 1 <= self.max_batch <= 16:
            raise ConfigError(f"max_batch must be in [1, 16], got {self.max_batch}")
        if self.max_upload_bytes < 1 or self.max_side_px < 1 or self.max_pixels < 1:
            raise ConfigError("upload limits must be positive")
        if self.max_streams < 0 or self.stream_subscriber_queue < 1:
            raise ConfigError("max_streams must be ≥ 0 and stream_subscriber_queue ≥ 1")
        if self.stream_breaker_failures < 1 or self.stream_breaker_reset_s <= 0:
            raise ConfigError("stream_breaker_failures must be ≥ 1 and the reset time > 0")
        if self.sse_heartbeat_s <= 0:
            raise ConfigError(f"sse_heartbeat_s must be > 0, got {self.sse_heartbeat_s}")

    @property
    def name(self) -> str:
        return self.model_name or self.model_path.stem

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_upload_bytes, self.max_side_px, self.max_pixels)


def default_detector_factory(settings: ServeSettings) -> DetectorLike:
    """A ``YoloxDetector`` at the settings' floor threshold (requests filter above it)."""
    from tapetum.detect import DetectorConfig, YoloxDetector

    return YoloxDetector(
        settings.model_path,
        DetectorConfig(conf_threshold=settings.min_conf_threshold, nms_iou=settings.nms_iou),
    )


# ------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error response: status, stable code, reason, extra headers."""

    def __init__(
        self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})


def _error(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(detail=detail, code=code).model_dump()
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _validation_reason(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.code, exc.detail, exc.headers)

    async def image_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ImageError)
        return _error(exc.status, exc.code, str(exc))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _error(422, "invalid_request", _validation_reason(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return _error(exc.status_code, code, detail, exc.headers)

    async def config_error(request: Request, exc: Exception) -> Response:
        return _error(422, "invalid_request", str(exc))

    async def service_error(request: Request, exc: Exception) -> Response:
        # A deliberate Tapetum error that is not the client's (e.g. the rate-limit store
        # is down with fail_open off): the service is unavailable, not broken.
        log.warning("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        return _error(503, "service_unavailable", str(exc), {"Retry-After": "1"})

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error(
            "unhandled %s on %s %s",
            type(exc).__name__,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        return _error(500, "internal_error", "internal server error; see the server log")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ImageError, image_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ConfigError, config_error)
    app.add_exception_handler(TapetumError, service_error)
    app.add_exception_handler(Exception, unexpected)


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "Missing or invalid API key",
        403: "The key lacks the route's scope",
        422: "Invalid parameters",
        429: "Rate limited (see Retry-After)",
        503: "Model not loaded yet",
    }.items()
}
_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERROR_RESPONSES,
    400: {"model": ErrorResponse, "description": "Empty or malformed body"},
    413: {"model": ErrorResponse, "description": "Too many bytes or pixels"},
    415: {"model": ErrorResponse, "description": "Not an accepted image type"},
}


# -------------------------------------------------------------------------------- metrics


class _BreakerCollector:
    """Exports every breaker of a registry at scrape time (an open breaker whose pause
    ran out reads half-open, so the gauge is never stale)."""

    def __init__(self, breakers: BreakerRegistry) -> None:
        self.breakers = breakers

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = GaugeMetricFamily(
            "tapetum_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["name"],
        )
        transitions = CounterMetricFamily(
            "tapetum_breaker_transitions",
            "Circuit breaker transitions, by the state entered.",
            labels=["name", "to"],
        )
        for snap in self.breakers.snapshot():
            state.add_metric([snap.name], float(snap.state))
            for to, count in snap.transitions.items():
                transitions.add_metric([snap.name, to.name.lower()], count)
        yield state
        yield transitions


class _Metrics:
    """Prometheus metrics in a per-app registry."""

    def __init__(self, breakers: BreakerRegistry) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tapetum_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tapetum_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.inference = Histogram(
            "tapetum_inference_duration_seconds",
            "Detector call latency (one batch), waiting for a free slot excluded.",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
        )
        self.rate_limited = Counter(
            "tapetum_rate_limited",
            "Requests refused with 429, by route.",
            ["route"],
            registry=self.registry,
        )
        self.sessions = Gauge(
            "tapetum_tracking_sessions", "Live tracking sessions.", registry=self.registry
        )
        self.streams = Gauge(
            "tapetum_streams_running", "Server-side streams running.", registry=self.registry
        )
        self.registry.register(_BreakerCollector(breakers))


class _MetricsMiddleware:
    """Counts every response by route *template* (bounded label set) and status."""

    def __init__(self, app: ASGIApp, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - start)


# ---------------------------------------------------------------------------------- state


@dataclass(slots=True)
class _State:
    settings: ServeSettings
    metrics: _Metrics
    sessions: SessionTrackers
    breakers: BreakerRegistry
    streams: StreamManager | None = None
    detector: DetectorLike | None = None
    ready: bool = False
    load_error: str | None = None
    limiter: anyio.CapacityLimiter | None = None


@dataclass(frozen=True, slots=True)
class _Anonymous:
    """The principal of every request when ``require_auth`` is off."""

    key_id: str = "anonymous"

    def allows(self, scope: KeyScope) -> bool:
        return True


def _load_model(state: _State, factory: Callable[[ServeSettings], DetectorLike]) -> None:
    """Load and warm the detector (runs in a thread; /healthz answers meanwhile)."""
    try:
        t0 = time.perf_counter()
        detector = factory(state.settings)
        if state.settings.warmup:
            h, w = detector.input_hw
            detector([np.full((h, w, 3), 114, np.uint8)])
        workers = int(getattr(detector, "recommended_workers", 1) or 1)
        state.limiter = anyio.CapacityLimiter(max(1, workers))
        state.detector = detector
        state.ready = True
        log.info(
            "model %s ready in %.2f s (%d inference slots)",
            state.settings.name,
            time.perf_counter() - t0,
            workers,
        )
    except Exception as exc:  # reported by /readyz; the process stays up to say why
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.error("model load failed: %s", state.load_error)


# ------------------------------------------------------------------------------------ app


def create_app(
    settings: ServeSettings,
    detector_factory: Callable[[ServeSettings], DetectorLike] = default_detector_factory,
    key_store: KeyVerifier | None = None,
    rate_limiter: RateLimiterLike | None = None,
) -> FastAPI:
    """Build the REST app. The model loads in the lifespan, in a thread.

    Args:
        settings: configuration.
        detector_factory: builds the detector (tests inject fakes; default YOLOX).
        key_store: verifies API keys; default ``KeyStore(settings.keys_db)`` when
            ``require_auth``.
        rate_limiter: default ``RateLimiter`` from the settings' rates (none when
            ``settings.rate_per_second`` is None).

    Raises:
        ConfigError: auth is required but neither a key store nor ``keys_db`` is given.
    """
    from tapetum.track import make_tracker

    if settings.require_auth and key_store is None:
        if settings.keys_db is None:
            raise ConfigError("authentication is on: give a keys database (--keys-db) or --no-auth")
        from tapetum.serve.auth import KeyStore

        key_store = KeyStore(settings.keys_db)
    if rate_limiter is None and settings.rate_per_second is not None:
        from tapetum.serve.ratelimit import RateLimit, RateLimiter

        rate_limiter = RateLimiter(
            RateLimit(per_second=settings.rate_per_second, burst=settings.rate_burst),
            {r: RateLimit(per_second=p, burst=b) for r, (p, b) in settings.route_rates.items()},
        )
    make_tracker(settings.tracker, settings.session_frame_rate)  # a bad name fails now
    breakers = BreakerRegistry(
        failure_threshold=settings.stream_breaker_failures,
        reset_timeout_s=settings.stream_breaker_reset_s,
    )
    metrics = _Metrics(breakers)
    state = _State(
        settings=settings,
        metrics=metrics,
        sessions=SessionTrackers(
            lambda: make_tracker(settings.tracker, settings.session_frame_rate),
            settings.max_sessions,
            settings.session_idle_s,
        ),
        breakers=breakers,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(
            target=_load_model, args=(state, detector_factory), name="model-load", daemon=True
        )
        loader.start()
        yield
        log.info("shutting down: %d tracking sessions dropped", len(state.sessions))
        stopped = await anyio.to_thread.run_sync(streams.stop_all)
        log.info("shutting down: %d streams stopped", stopped)

    app = FastAPI(
        title="Tapetum",
        version="1",
        summary="Object detection and tracking over HTTP.",
        lifespan=lifespan,
        responses={404: {"model": ErrorResponse, "description": "Unknown route or model"}},
    )
    app.state.tapetum = state
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    _install_error_handlers(app)

    # ---- auth + rate limit, one dependency per scope ----

    def guard(scope: KeyScope) -> Callable[[Request], Awaitable[_Principal]]:
        async def dependency(request: Request) -> _Principal:
            principal = await _authenticate(request, key_store if settings.require_auth else None)
            if not principal.allows(scope):
                raise ApiError(
                    403,
                    "insufficient_scope",
                    f"this API key lacks the {scope.value!r} scope needed by {request.url.path}",
                )
            if rate_limiter is not None:
                route = getattr(request.scope.get("route"), "path", request.url.path)
                decision = rate_limiter.hit(principal.key_id, route)
                if not decision.allowed:
                    metrics.rate_limited.labels(route).inc()
                    retry = max(1, math.ceil(decision.retry_after_s))
                    raise ApiError(
                        429,
                        "rate_limited",
                        f"rate limit exceeded for {route}; retry in {retry} s",
                        {"Retry-After": str(retry)},
                    )
            return principal

        return dependency

    read_guard = Depends(guard(KeyScope.READ))
    infer_guard = Depends(guard(KeyScope.INFER))

    def ready_detector() -> tuple[DetectorLike, anyio.CapacityLimiter]:
        if not state.ready or state.detector is None or state.limiter is None:
            reason = state.load_error or "the model is still loading"
            raise ApiError(503, "not_ready", reason, {"Retry-After": "1"})
        return state.detector, state.limiter

    def stream_detector() -> StagedDetector:
        detector, _ = ready_detector()
        staged = ("preprocess", "infer", "postprocess", "max_batch")
        if not all(hasattr(detector, name) for name in staged):
            raise ApiError(
                501, "not_supported", "this server's detector cannot run streams (not staged)"
            )
        return cast(StagedDetector, detector)

    streams = StreamManager(
        stream_detector,
        max_streams=settings.max_streams,
        breakers=breakers,
        subscriber_queue_size=settings.stream_subscriber_queue,
    )
    state.streams = streams

    def model_info(detector: DetectorLike) -> ModelInfo:
        h, w = detector.input_hw
        return ModelInfo(
            name=settings.name,
            path=str(detector.model.path),
            input_width=w,
            input_height=h,
            num_classes=len(detector.class_names),
            providers=list(detector.model.providers),
        )

    def class_filter(detector: DetectorLike, classes: str | None) -> frozenset[int] | None:
        from tapetum.detect.classes import resolve_class_filter

        if classes is None:
            return None
        wanted = [c for c in classes.split(",") if c.strip()]
        if not wanted:
            raise ApiError(
                422, "invalid_request", "classes: give class names or ids, comma-separated"
            )
        return resolve_class_filter(detector.class_names, wanted)

    def check_conf(conf: float | None) -> float:
        value = settings.conf_threshold if conf is None else conf
        if value < settings.min_conf_threshold:
            raise ApiError(
                422,
                "invalid_request",
                f"conf: {value} is below this server's floor {settings.min_conf_threshold}",
            )
        return value

    # ---- health ----

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Liveness: the process answers. No key needed."""
        return Health(status="ok", model_loaded=state.ready)

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": Health, "description": "Model loading or failed"}},
    )
    async def readyz() -> Response:
        """Readiness: 200 once the model is loaded and warmed with one inference."""
        if state.ready:
            return JSONResponse(Health(status="ok", model_loaded=True).model_dump())
        status: Literal["loading", "failed"] = "failed" if state.load_error else "loading"
        body = Health(status=status, model_loaded=False, detail=state.load_error)
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})

    @app.get(
        "/metrics",
        tags=["health"],
        responses={200: {"content": {"text/plain": {}}}, **_ERROR_RESPONSES},
        dependencies=[read_guard],
    )
    async def metrics_endpoint() -> Response:
        """Prometheus metrics (text format). Needs the ``read`` scope."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics.sessions.set(len(state.sessions))
        metrics.streams.set(len(streams))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ---- models ----

    @app.get(
        "/v1/models",
        response_model=ModelList,
        tags=["models"],
        responses=_ERROR_RESPONSES,
        dependencies=[read_guard],
    )
    async def list_models() -> ModelList:
        """The loaded models. Needs the ``read`` scope."""
        detector, _ = ready_detector()
        return ModelList(models=[model_info(detector)])

    @app.get(
        "/v1/models/{name}",
        response_model=ModelInfo,
        tags=["models"],
        responses=_ERROR_RESPONSES,
        dependencies=[read_guard],
    )
    async def describe_model(name: str) -> ModelInfo:
        """One loaded model by name. Needs the ``read`` scope."""
        detector, _ = ready_detector()
        if name != settings.name:
            raise ApiError(
                404, "unknown_model", f"no model named {name!r}; loaded: {settings.name!r}"
            )
        return model_info(detector)

    # ---- detect ----

    image_body = {
        "requestBody": {
            "required": True,
            "description": "The image as the raw body with its Content-Type, or multipart "
            "with a `file` part.",
            "content": {
                **{t: {"schema": {"type": "string", "format": "binary"}} for t in _IMAGE_TYPES},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    }

    @app.post(
        "/v1/detect",
        response_model=DetectResponse,
        tags=["detect"],
        responses=_UPLOAD_RESPONSES,
        openapi_extra=image_body,
    )
    async def detect(
        request: Request,
        _key: _Principal = infer_guard,
        conf: float | None = Query(
            None,
            ge=0.0,
            le=1.0,
            description="Score threshold (default: the server's).",
            examples=[0.35],
        ),
        classes: str | None = Query(
            None,
            max_length=2000,
            description="Comma-separated class names or ids to keep.",
            examples=["person,bus"],
        ),
        session_id: str | None = Query(
            None,
            pattern=_SESSION_ID_PATTERN,
            description="Track objects across calls of this session (one camera's frames).",
            examples=["cam-1"],
        ),
    ) -> DetectResponse:
        """Detect objects in one image. Needs the ``infer`` scope."""
        detector, limiter = ready_detector()
        threshold = check_conf(conf)
        class_ids = class_filter(detector, classes)
        t0 = time.perf_counter()
        data, ctype = await _read_single_upload(request, settings.max_upload_bytes)
        image = await anyio.to_thread.run_sync(decode_image, data, ctype, settings.image_limits)
        t1 = time.perf_counter()
        session = state.sessions.get(session_id) if session_id else None

        def work() -> Detections:
            start = time.perf_counter()
            found = detector([image])[0]
            metrics.inference.labels("detect").observe(time.perf_counter() - start)
            if class_ids is not None:
                found = found[np.isin(found.class_id, np.fromiter(class_ids, np.int64))]
            if session is None:
                return found[found.confidence >= threshold]
            # The tracker sees every box down to the floor (ByteTrack's second association
            # feeds on low scores); the answer keeps boxes above the request's threshold
            # and every box that carries a confirmed track.
            found.data["row"] = np.arange(len(found))
            with session.lock:
                tracked = session.tracker.update(found)
            found.tracker_id[tracked.data["row"]] = tracked.tracker_id
            del found.data["row"]
            return found[(found.confidence >= threshold) | found.is_tracked]

        result = await anyio.to_thread.run_sync(work, limiter=limiter)
        t2 = time.perf_counter()
        return detections_to_response(
            result,
            class_names=detector.class_names,
            model=settings.name,
            image_hw=(int(image.shape[0]), int(image.shape[1])),
            timings_ms={
                "decode": (t1 - t0) * 1e3,
                "inference": (t2 - t1) * 1e3,
                "total": (t2 - t0) * 1e3,
            },
            session_id=session_id,
        )

    batch_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "maxItems": settings.max_batch,
                            }
                        },
                        "required": ["files"],
                    }
                }
            },
        }
    }

    @app.post(
        "/v1/detect/batch",
        response_model=BatchDetectResponse,
        tags=["detect"],
        responses=_UPLOAD_RESPONSES,
        openapi_extra=batch_body,
    )
    async def detect_batch(
        request: Request,
        _key: _Principal = infer_guard,
        conf: float | None = Query(None, ge=0.0, le=1.0, examples=[0.35]),
        classes: str | None = Query(None, max_length=2000, examples=["person"]),
    ) -> BatchDetectResponse:
        """Detect objects in several images (multipart ``files``) with one batched model
        call. Needs the ``infer`` scope."""
        detector, limiter = ready_detector()
        threshold = check_conf(conf)
        class_ids = class_filter(detector, classes)
        t0 = time.perf_counter()
        uploads = await _read_batch_upload(request, settings.max_upload_bytes, settings.max_batch)

        def decode_all() -> list[npt.NDArray[np.uint8]]:
            out = []
            for i, (data, ctype) in enumerate(uploads):
                try:
                    out.append(decode_image(data, ctype, settings.image_limits))
                except ImageError as exc:
                    raise ImageError(
                        f"files[{i}]: {exc}", status=exc.status, code=exc.code
                    ) from exc
            return out

        images = await anyio.to_thread.run_sync(decode_all)
        t1 = time.perf_counter()

        def work() -> list[Detections]:
            start = time.perf_counter()
            results = detector(images)
            metrics.inference.labels("detect_batch").observe(time.perf_counter() - start)
            kept = []
            wanted = None if class_ids is None else np.fromiter(class_ids, np.int64)
            for det in results:
                mask = det.confidence >= threshold
                if wanted is not None:
                    mask &= np.isin(det.class_id, wanted)
                kept.append(det[mask])
            return kept

        results = await anyio.to_thread.run_sync(work, limiter=limiter)
        t2 = time.perf_counter()
        return BatchDetectResponse(
            model=settings.name,
            results=[
                BatchItem(
                    image=ImageSize(width=int(img.shape[1]), height=int(img.shape[0])),
                    detections=detections_to_out(det, detector.class_names),
                )
                for img, det in zip(images, results, strict=True)
            ],
            timings_ms={
                "decode": round((t1 - t0) * 1e3, 2),
                "inference": round((t2 - t1) * 1e3, 2),
                "total": round((t2 - t0) * 1e3, 2),
            },
        )

    _install_stream_routes(
        app,
        streams,
        check_conf=check_conf,
        read_guard=read_guard,
        infer_guard=infer_guard,
        settings=settings,
    )
    return app


class StreamCreate(StreamOptions):
    """Body of ``POST /v1/streams``."""

    uri: str = Field(
        min_length=1,
        max_length=4096,
        description="Video file path or live URL (rtsp, rtmp, http, srt, udp…).",
        examples=["rtsp://cam-7:554/Streaming/101"],
    )


_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERROR_RESPONSES,
    404: {"model": ErrorResponse, "description": "Unknown stream"},
}
_START_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERROR_RESPONSES,
    400: {"model": ErrorResponse, "description": "The source cannot be opened"},
    429: {"model": ErrorResponse, "description": "Too many streams, or rate limited"},
    503: {"model": ErrorResponse, "description": "Model not ready, or the URI's breaker is open"},
}


def _install_stream_routes(
    app: FastAPI,
    streams: StreamManager,
    *,
    check_conf: Callable[[float | None], float],
    read_guard: Any,
    infer_guard: Any,
    settings: ServeSettings,
) -> None:
    """``/v1/streams``: server-side pipelines and their live results (SSE)."""

    def unknown(stream_id: str) -> ApiError:
        return ApiError(404, "unknown_stream", f"no stream {stream_id!r}")

    @app.post(
        "/v1/streams",
        response_model=StreamInfo,
        status_code=201,
        tags=["streams"],
        responses=_START_RESPONSES,
        dependencies=[infer_guard],
    )
    async def start_stream(body: StreamCreate) -> StreamInfo:
        """Start detecting and tracking on a source in the background. Needs ``infer``."""
        if body.conf is not None:
            check_conf(body.conf)
        options = StreamOptions(tracker=body.tracker, conf=body.conf, realtime=body.realtime)
        try:
            # Opening probes the source (up to its open timeout): off the event loop.
            return await anyio.to_thread.run_sync(streams.start, body.uri, options)
        except StreamLimitError as exc:
            raise ApiError(429, "too_many_streams", str(exc), {"Retry-After": "5"}) from exc
        except CircuitOpenError as exc:
            retry = max(1, math.ceil(exc.retry_after_s))
            raise ApiError(
                503, "source_circuit_open", str(exc), {"Retry-After": str(retry)}
            ) from exc
        except SourceError as exc:
            raise ApiError(400, "bad_source", str(exc)) from exc

    @app.get(
        "/v1/streams",
        response_model=list[StreamInfo],
        tags=["streams"],
        responses=_ERROR_RESPONSES,
        dependencies=[read_guard],
    )
    async def list_streams() -> list[StreamInfo]:
        """Running and recently finished streams with live stats. Needs ``read``."""
        return streams.list()

    @app.get(
        "/v1/streams/{stream_id}",
        response_model=StreamInfo,
        tags=["streams"],
        responses=_STREAM_RESPONSES,
        dependencies=[read_guard],
    )
    async def get_stream(stream_id: str) -> StreamInfo:
        """One stream with live stats. Needs ``read``."""
        try:
            return streams.get(stream_id)
        except UnknownStreamError:
            raise unknown(stream_id) from None

    @app.delete(
        "/v1/streams/{stream_id}",
        response_model=StreamInfo,
        tags=["streams"],
        responses=_STREAM_RESPONSES,
        dependencies=[infer_guard],
    )
    async def stop_stream(stream_id: str) -> StreamInfo:
        """Stop a stream (queued frames are finished or dropped, counted) and forget it.
        Returns its final state. Needs ``infer``."""
        try:
            return await anyio.to_thread.run_sync(streams.stop, stream_id)
        except UnknownStreamError:
            raise unknown(stream_id) from None

    @app.get(
        "/v1/streams/{stream_id}/results",
        tags=["streams"],
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "Server-Sent Events: one `data:` JSON line per frame result "
                "(the JSONL record), `: heartbeat` comments when idle, and a final "
                "`event: end` when the stream ends.",
            },
            **_STREAM_RESPONSES,
        },
        dependencies=[read_guard],
    )
    async def stream_results(stream_id: str) -> StreamingResponse:
        """Live results of a stream as Server-Sent Events. Needs ``read``."""
        try:
            sub = streams.subscribe(stream_id, asyncio.get_running_loop())
        except UnknownStreamError:
            raise unknown(stream_id) from None
        heartbeat_s = settings.sse_heartbeat_s

        async def events() -> AsyncIterator[str]:
            # Starlette cancels this generator when the client disconnects.
            try:
                yield ": connected\n\n"
                last_s = time.monotonic()
                while True:
                    items = await sub.aget(min(heartbeat_s, 1.0))
                    now = time.monotonic()
                    if items is None:
                        end = {"stream_id": stream_id, "dropped": sub.dropped}
                        yield f"event: end\ndata: {json.dumps(end)}\n\n"
                        return
                    if items:
                        yield "".join(f"data: {item}\n\n" for item in items)
                        last_s = now
                    elif now - last_s >= heartbeat_s:
                        yield ": heartbeat\n\n"
                        last_s = now
            finally:
                streams.unsubscribe(stream_id, sub)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp")


# ------------------------------------------------------------------------------- helpers


async def _authenticate(request: Request, key_store: KeyVerifier | None) -> _Principal:
    if key_store is None:
        return _Anonymous()
    raw: str | None = None
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            raw = token.strip()
    raw = raw or (request.headers.get("x-api-key") or "").strip() or None
    challenge = 'Bearer realm="tapetum"'
    if raw is None:
        raise ApiError(
            401,
            "missing_api_key",
            "this route needs an API key: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            {"WWW-Authenticate": challenge},
        )
    if len(raw) > 512:
        principal = None
    else:
        # Key hashes (argon2) are deliberately slow: verify off the event loop.
        principal = await anyio.to_thread.run_sync(key_store.verify, raw)
    if principal is None:
        raise ApiError(
            401,
            "invalid_api_key",
            "the API key is unknown or revoked",
            {"WWW-Authenticate": f'{challenge}, error="invalid_token"'},
        )
    return principal


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise ApiError(400, "bad_request", "Content-Length is not a number") from None
    if length > limit:
        raise ApiError(
            413, "payload_too_large", f"the body is {length} bytes; the limit is {limit} bytes"
        )


async def _read_body_limited(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` (chunked bodies too)."""
    _check_declared_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_file_part(part: UploadFile, limit: int, name: str) -> tuple[bytes, str]:
    data = await part.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "image_too_large", f"{name} is over the limit of {limit} bytes")
    return data, part.content_type or ""


async def _read_single_upload(request: Request, limit: int) -> tuple[bytes, str]:
    ctype = normalize_content_type(request.headers.get("content-type"))
    if ctype != "multipart/form-data":
        return await _read_body_limited(request, limit), ctype
    _check_declared_length(request, limit + _MULTIPART_OVERHEAD_BYTES)
    form = await request.form(max_files=1, max_fields=16)
    part = form.get("file")
    if not isinstance(part, UploadFile):
        raise ApiError(422, "missing_file", "the multipart body needs a 'file' part")
    return await _read_file_part(part, limit, "file")


async def _read_batch_upload(
    request: Request, limit: int, max_batch: int
) -> list[tuple[bytes, str]]:
    ctype = normalize_content_type(request.headers.get("content-type"))
    if ctype != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "the batch route takes multipart/form-data with 'files' parts, "
            f"not {ctype or '(none)'}",
        )
    _check_declared_length(request, (limit + 1024) * max_batch + _MULTIPART_OVERHEAD_BYTES)
    # One more file than allowed parses, so the over-limit case gets our clear message.
    form = await request.form(max_files=max_batch + 1, max_fields=16)
    parts = [p for p in form.getlist("files") if isinstance(p, UploadFile)]
    if not parts:
        raise ApiError(422, "missing_file", "the multipart body needs one or more 'files' parts")
    if len(parts) > max_batch:
        raise ApiError(413, "batch_too_large", f"a batch takes at most {max_batch} files")
    return [await _read_file_part(p, limit, f"files[{i}]") for i, p in enumerate(parts)]
