"""The REST API: ``create_app(settings) -> FastAPI``.

Everything the app needs (detector, key store, rate limiter, metrics registry, tracking
sessions) is built per app and injected or created in :func:`create_app`; nothing lives
in module globals, so two apps in one process (tests) do not share state.

The detection work itself (model load and readiness, request checks, inference, tracking
sessions) is :class:`~tapetum.serve.service.DetectionService`, shared with the gRPC server;
this module is the HTTP adapter: auth, rate limits, uploads, error bodies, metrics, streams.

Concurrency: detector calls run in worker threads (``anyio.to_thread``), never on the event
loop, bounded by the service's inference semaphore of ``detector.recommended_workers``
slots, which gRPC calls share (see :mod:`tapetum.serve.service`).

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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tapetum.core.breaker import BreakerRegistry, CircuitOpenError
from tapetum.errors import ConfigError, SourceError, TapetumError
from tapetum.serve.auth import Scope as KeyScope
from tapetum.serve.images import ImageError, normalize_content_type
from tapetum.serve.schemas import (
    BatchDetectResponse,
    DetectResponse,
    ErrorResponse,
    Health,
    ModelInfo,
    ModelList,
)
from tapetum.serve.service import DetectionService, EncodedImage
from tapetum.serve.settings import (
    MAX_CREDENTIAL_CHARS,
    MODEL_NAME_PATTERN,
    SESSION_ID_PATTERN,
    ApiError,
    CachingKeyVerifier,
    DetectorLike,
    KeyVerifier,
    Principal,
    RateLimiterLike,
    ServeSettings,
    default_detector_factory,
    default_key_store,
    default_rate_limiter,
    rate_limit_error,
    require_scope,
)
from tapetum.serve.streams import (
    StreamInfo,
    StreamLimitError,
    StreamManager,
    StreamOptions,
    UnknownStreamError,
)

__all__ = [
    "ApiError",
    "DetectionService",
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

_LOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERROR_RESPONSES,
    400: {"model": ErrorResponse, "description": "The path is not an existing .onnx file"},
    409: {"model": ErrorResponse, "description": "The name is taken, or too many models"},
    422: {"model": ErrorResponse, "description": "Invalid body, or the file does not load"},
}
_UNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERROR_RESPONSES,
    404: {"model": ErrorResponse, "description": "Unknown model"},
    409: {"model": ErrorResponse, "description": "The default model cannot be unloaded"},
}


class ModelLoad(BaseModel):
    """Body of ``POST /v1/models``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "yolox_s", "path": "/models/yolox_s.onnx", "conf": 0.4}]
        },
    )

    name: str = Field(
        pattern=MODEL_NAME_PATTERN, description="Name for the detect routes' `model` parameter."
    )
    path: str = Field(min_length=1, max_length=4096, description="A YOLOX ONNX file on the server.")
    conf: float | None = Field(
        None, ge=0.0, le=1.0, description="The model's default score threshold."
    )


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
    service: DetectionService
    breakers: BreakerRegistry
    streams: StreamManager | None = None


@dataclass(frozen=True, slots=True)
class _Anonymous:
    """The principal of every request when ``require_auth`` is off."""

    key_id: str = "anonymous"

    def allows(self, scope: KeyScope) -> bool:
        return True


def _split_classes(classes: str | None) -> list[str] | None:
    """The ``classes`` query (comma-separated) → its entries; 422 when it names none."""
    if classes is None:
        return None
    wanted = [c for c in classes.split(",") if c.strip()]
    if not wanted:
        raise ApiError(422, "invalid_request", "classes: give class names or ids, comma-separated")
    return wanted


# ------------------------------------------------------------------------------------ app


#: Query parameters the detect routes share (one definition, one OpenAPI description).
ConfQuery = Annotated[
    float | None,
    Query(ge=0.0, le=1.0, description="Score threshold (default: the server's).", examples=[0.35]),
]
ClassesQuery = Annotated[
    str | None,
    Query(
        max_length=2000,
        description="Comma-separated class names or ids to keep.",
        examples=["person,bus"],
    ),
]
ModelQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description="Name of the loaded model to run (default: the server's default model). "
        "A tracking session should stick to one model.",
        examples=["yolox_nano"],
    ),
]


def create_app(
    settings: ServeSettings,
    detector_factory: Callable[[ServeSettings], DetectorLike] = default_detector_factory,
    key_store: KeyVerifier | None = None,
    rate_limiter: RateLimiterLike | None = None,
    service: DetectionService | None = None,
) -> FastAPI:
    """Build the REST app. The model loads in the lifespan, in a thread.

    Args:
        settings: configuration.
        detector_factory: builds the detector (tests inject fakes; default YOLOX); used
            only when no ``service`` is given.
        key_store: verifies API keys; default :func:`default_key_store`.
        rate_limiter: default :func:`default_rate_limiter` (none when
            ``settings.rate_per_second`` is None).
        service: the detection service to serve (shared with a gRPC server); default a
            new one of ``detector_factory``. The lifespan starts it (idempotent).

    Raises:
        ConfigError: auth is required but neither a key store nor ``keys_db`` is given.
    """
    if settings.require_auth and key_store is None:
        key_store = default_key_store(settings)
    if rate_limiter is None:
        rate_limiter = default_rate_limiter(settings)
    owns_service = service is None
    if service is None:
        service = DetectionService(settings, detector_factory)  # a bad tracker fails now
    breakers = BreakerRegistry(
        failure_threshold=settings.stream_breaker_failures,
        reset_timeout_s=settings.stream_breaker_reset_s,
    )
    metrics = _Metrics(breakers)
    state = _State(settings=settings, metrics=metrics, service=service, breakers=breakers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        log.info("shutting down: %d tracking sessions dropped", len(service.sessions))
        stopped = await anyio.to_thread.run_sync(streams.stop_all)
        log.info("shutting down: %d streams stopped", stopped)
        if owns_service:  # a shared service is closed by whoever shares it
            await anyio.to_thread.run_sync(service.close)

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

    def guard(scope: KeyScope) -> Callable[[Request], Awaitable[Principal]]:
        async def dependency(request: Request) -> Principal:
            principal = await _authenticate(request, key_store if settings.require_auth else None)
            require_scope(principal, scope, request.url.path)
            route = getattr(request.scope.get("route"), "path", request.url.path)
            error = rate_limit_error(rate_limiter, principal.key_id, route)
            if error is not None:
                metrics.rate_limited.labels(route).inc()
                raise error
            return principal

        return dependency

    read_guard = Depends(guard(KeyScope.READ))
    infer_guard = Depends(guard(KeyScope.INFER))
    admin_guard = Depends(guard(KeyScope.ADMIN))

    streams = StreamManager(
        service.staged_detector,
        max_streams=settings.max_streams,
        breakers=breakers,
        subscriber_queue_size=settings.stream_subscriber_queue,
    )
    state.streams = streams

    # ---- health ----

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Liveness: the process answers. No key needed."""
        return Health(status="ok", model_loaded=service.ready)

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": Health, "description": "Model loading or failed"}},
    )
    async def readyz() -> Response:
        """Readiness: 200 once the model is loaded and warmed with one inference."""
        if service.ready:
            return JSONResponse(Health(status="ok", model_loaded=True).model_dump())
        error = service.load_error
        status: Literal["loading", "failed"] = "failed" if error else "loading"
        body = Health(status=status, model_loaded=False, detail=error)
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

        metrics.sessions.set(len(service.sessions))
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
        """The loaded models, the default first. Needs the ``read`` scope."""
        return service.list_models()

    @app.post(
        "/v1/models",
        response_model=ModelInfo,
        status_code=201,
        tags=["models"],
        responses=_LOAD_RESPONSES,
        dependencies=[admin_guard],
    )
    async def load_model(body: ModelLoad) -> ModelInfo:
        """Load and warm another model (a server-side ONNX file) under a name, for the
        ``model`` parameter of the detect routes. Needs the ``admin`` scope."""
        return await anyio.to_thread.run_sync(
            lambda: service.load_model(body.name, body.path, body.conf)
        )

    @app.delete(
        "/v1/models/{name}",
        status_code=204,
        response_class=Response,
        tags=["models"],
        responses=_UNLOAD_RESPONSES,
        dependencies=[admin_guard],
    )
    async def unload_model(name: str) -> Response:
        """Unload a model loaded at runtime (not the default one: 409). Needs the
        ``admin`` scope."""
        service.unload_model(name)
        return Response(status_code=204)

    @app.get(
        "/v1/models/{name}",
        response_model=ModelInfo,
        tags=["models"],
        responses=_ERROR_RESPONSES,
        dependencies=[read_guard],
    )
    async def describe_model(name: str) -> ModelInfo:
        """One loaded model by name. Needs the ``read`` scope."""
        return service.model_info(name)

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
        _key: Principal = infer_guard,
        conf: ConfQuery = None,
        classes: ClassesQuery = None,
        session_id: str | None = Query(
            None,
            pattern=SESSION_ID_PATTERN,
            description="Track objects across calls of this session (one camera's frames).",
            examples=["cam-1"],
        ),
        model: ModelQuery = None,
    ) -> Response:
        """Detect objects in one image. Needs the ``infer`` scope."""
        service.detector()
        service.check_conf(conf, model)
        wanted = _split_classes(classes)
        service.check_request(conf, wanted, session_id, model)  # before reading the body
        t0 = time.perf_counter()
        data, ctype = await _read_single_upload(request, settings.max_upload_bytes)
        observe = metrics.inference.labels("detect").observe
        return await anyio.to_thread.run_sync(
            lambda: _json_response(
                service.detect(
                    EncodedImage(data, ctype),
                    conf,
                    wanted,
                    session_id,
                    started_s=t0,
                    observe=observe,
                    model=model,
                )
            )
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
        _key: Principal = infer_guard,
        conf: ConfQuery = None,
        classes: ClassesQuery = None,
        model: ModelQuery = None,
    ) -> Response:
        """Detect objects in several images (multipart ``files``) with one batched model
        call. Needs the ``infer`` scope."""
        service.detector()
        service.check_conf(conf, model)
        wanted = _split_classes(classes)
        service.check_request(conf, wanted, model=model)  # before reading the body
        t0 = time.perf_counter()
        uploads = await _read_batch_upload(request, settings.max_upload_bytes, settings.max_batch)
        images = [EncodedImage(data, ctype) for data, ctype in uploads]
        observe = metrics.inference.labels("detect_batch").observe
        return await anyio.to_thread.run_sync(
            lambda: _json_response(
                service.detect_batch(
                    images, conf, wanted, field="files", started_s=t0, observe=observe, model=model
                )
            )
        )

    _install_stream_routes(
        app,
        streams,
        check_conf=service.check_conf,
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


def _json_response(body: BaseModel) -> Response:
    """Serialise a response model once, in the calling (worker) thread.

    The route still declares ``response_model`` for the OpenAPI document; returning a
    ready ``Response`` skips FastAPI's second validation pass over a model that the
    service has just built and validated.
    """
    return Response(body.model_dump_json(), media_type="application/json")


async def _authenticate(request: Request, key_store: KeyVerifier | None) -> Principal:
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
    if len(raw) > MAX_CREDENTIAL_CHARS:
        principal = None
    else:
        # A key seen within the cache TTL answers here; anything else may hash (argon2 is
        # deliberately slow) or fetch keys, so it is verified off the event loop.
        principal = (
            key_store.verify_cached(raw) if isinstance(key_store, CachingKeyVerifier) else None
        )
        if principal is None:
            principal = await anyio.to_thread.run_sync(key_store.verify, raw)
    if principal is None:
        raise ApiError(
            401,
            "invalid_api_key",
            "the API key or token is unknown, revoked, expired or invalid",
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
