"""The gRPC API: ``create_grpc_server(...) -> grpc.Server``, the REST API's twin.

Same detection service, key store and rate limiter as the REST app (``tapetum serve`` passes one of
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
404 unknown stream          NOT_FOUND
400 bad stream source       INVALID_ARGUMENT (a generic reason; the log has the detail)
429 too many streams        RESOURCE_EXHAUSTED, trailing ``retry-after``
429 too many subscriptions  RESOURCE_EXHAUSTED, trailing ``retry-after``
408 subscription expired    DEADLINE_EXCEEDED (``StreamResults`` past its maximum duration)
503 source breaker open     UNAVAILABLE, trailing ``retry-after``
501 detector cannot stream  UNIMPLEMENTED
400 / 422 model won't load  INVALID_ARGUMENT (``bad_model_path``, ``model_load_failed``)
409 model name in use       ALREADY_EXISTS
409 too many models         RESOURCE_EXHAUSTED
409 unload default model    FAILED_PRECONDITION
409 model follows no alias  FAILED_PRECONDITION (``ReloadModel``)
404 registry has no alias   NOT_FOUND (``registry_not_found``)
503 registry unreachable    UNAVAILABLE, trailing ``retry-after``
==========================  ======================================================

Every error also carries the REST error code (``corrupt_image``, ``rate_limited``, …) in
the trailing metadata ``tapetum-error-code``. Bad input never becomes UNKNOWN or INTERNAL.

Keys come from the metadata ``authorization: Bearer <key>`` or ``x-api-key: <key>``.
``Health`` needs no key (like ``/readyz``); the other RPCs need ``read`` (models) or
``infer`` (detection, starting and stopping streams; listing, inspecting and following
streams needs ``read``) or ``admin`` (``LoadModel``, ``UnloadModel``, ``ReloadModel``). Rate limits
count per key and full method name (``/tapetum.v1.Detector/Detect``), once per call and
once per frame of ``DetectStream``. Streams and tracking sessions belong to the key that
made them (:mod:`tapetum.serve.ownership`): another key's stream is NOT_FOUND, like an
unknown id, unless the caller has ``admin``; ``session_id`` names one of the caller's own
sessions.

The detection work (model readiness, request checks, inference, tracking sessions) is the
:class:`~tapetum.serve.service.DetectionService` the REST app serves too; this module is the
gRPC adapter: metadata auth, rate limits, proto conversion, status codes.

Every call first passes :class:`~tapetum.serve.grpc.guard.CallGuard`, a server
interceptor: the key is verified (failures counted per client address) and the streaming
calls counted before any request message is read, each message is held to its method's
size limit, and long calls re-check their key (see :mod:`tapetum.serve.grpc.guard`).

Concurrency: a ``ThreadPoolExecutor`` of ``grpc_max_workers`` threads runs the handlers (a
``DetectStream`` or ``StreamResults`` holds one for its whole life, and they may take all
but ``grpc_health_reserve`` of them); detector calls are bounded by the service's
inference semaphore, shared with the REST app. Server-side streams (``StartStream`` …
``StreamResults``) are the REST app's :class:`~tapetum.serve.streams.StreamManager` when
one is given (``tapetum serve`` passes ``app.state.tapetum.streams``), so both APIs see and
stop the same streams; a ``StreamResults`` call holds a handler thread and one
subscription, released when the stream ends or the client cancels.

Example:
    >>> service = DetectionService(settings); service.start()       # doctest: +SKIP
    >>> server = create_grpc_server(settings, service, key_store, limiter,
    ...                             port=50051)                     # doctest: +SKIP
    >>> server.start()                                              # doctest: +SKIP
    >>> server.stop(grace=10).wait()    # drain in-flight calls     # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal, NoReturn, TypeVar

import grpc
import pydantic

from tapetum.core.breaker import CircuitOpenError
from tapetum.errors import (
    ConfigError,
    RegistryError,
    SourceError,
    SubscriptionLimitError,
    TapetumError,
)
from tapetum.serve import mapping
from tapetum.serve.auth import Scope
from tapetum.serve.authenticator import Authenticator
from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc
from tapetum.serve.grpc.guard import (
    CallGuard,
    StreamingSlots,
    check_current_call,
    current_call,
    method_limits,
)
from tapetum.serve.images import ImageError
from tapetum.serve.ownership import ANONYMOUS, Caller, caller_of
from tapetum.serve.schemas import Health
from tapetum.serve.service import DetectionService, EncodedImage, NotReadyError
from tapetum.serve.sessions import SessionTracker
from tapetum.serve.settings import (
    ApiError,
    KeyVerifier,
    Principal,
    RateLimiterLike,
    ServeSettings,
    default_auth_failure_limiter,
    rate_limit_error,
    require_scope,
)
from tapetum.serve.streams import (
    StreamLimitError,
    StreamManager,
    UnknownStreamError,
)

if TYPE_CHECKING:
    from tapetum.serve.follow import ModelFollower
    from tapetum.serve.ratelimit import AuthFailureLimiter
    from tapetum.serve.tls import TlsFiles

__all__ = ["SERVICE_NAME", "create_grpc_server"]

log = logging.getLogger("tapetum.serve.grpc")

SERVICE_NAME = "tapetum.v1.Detector"
_ERROR_CODE_KEY = "tapetum-error-code"
#: The server drops a connection whose keepalive ping is not answered within this.
_KEEPALIVE_TIMEOUT_MS = 20_000
#: Clients may ping an idle connection at most this often (more is a ping strike).
_MIN_CLIENT_PING_INTERVAL_MS = 10_000
_GRPC_CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
#: error codes whose gRPC status is not their HTTP status's.
_GRPC_CODES_BY_ERROR = {
    "model_exists": grpc.StatusCode.ALREADY_EXISTS,
    "too_many_models": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "default_model": grpc.StatusCode.FAILED_PRECONDITION,
    "model_not_followed": grpc.StatusCode.FAILED_PRECONDITION,
    "subscription_expired": grpc.StatusCode.DEADLINE_EXCEEDED,
}
#: how often a ``StreamResults`` call checks that its client is still there, seconds.
_RESULTS_POLL_S = 0.5

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


# ------------------------------------------------------------------------------- errors


def _to_api_error(exc: Exception) -> ApiError:
    """Any exception of a handler → the REST error it would have been."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ImageError):
        return ApiError(exc.status, exc.code, str(exc))
    if isinstance(exc, ConfigError):
        return ApiError(422, "invalid_request", str(exc))
    if isinstance(exc, UnknownStreamError):
        return ApiError(404, "unknown_stream", str(exc))
    if isinstance(exc, SubscriptionLimitError):
        return ApiError(429, "too_many_subscriptions", str(exc), {"Retry-After": "5"})
    if isinstance(exc, StreamLimitError):
        return ApiError(429, "too_many_streams", str(exc), {"Retry-After": "5"})
    if isinstance(exc, CircuitOpenError):
        retry = max(1, math.ceil(exc.retry_after_s))
        return ApiError(503, "source_circuit_open", str(exc), {"Retry-After": str(retry)})
    if isinstance(exc, SourceError):
        return ApiError(400, "bad_source", str(exc))
    if isinstance(exc, RegistryError):  # 404 unknown alias/model, else 503; no store paths
        from tapetum.serve.follow import registry_api_error

        log.warning("%s: %s", type(exc).__name__, exc)
        return registry_api_error(exc)
    if isinstance(exc, TapetumError):
        # Deliberate and not the client's (e.g. the rate-limit store is down).
        log.warning("%s: %s", type(exc).__name__, exc)
        return ApiError(503, "service_unavailable", str(exc), {"Retry-After": "1"})
    log.error("unhandled %s", type(exc).__name__, exc_info=exc)
    return ApiError(500, "internal_error", "internal server error; see the server log")


def _validation_reason(exc: pydantic.ValidationError) -> str:
    """``field: message`` of each error, as the REST API words a 422."""
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or 'request'}: {err['msg']}"
        for err in exc.errors()[:5]
    ]
    return "; ".join(parts) or "invalid request"


def _expired(max_s: float | None) -> ApiError:
    return ApiError(
        408,
        "subscription_expired",
        f"this subscription reached its maximum of {max_s or 0:g} s; subscribe again",
    )


def _abort(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    err = _to_api_error(exc)
    if err.code in _GRPC_CODES_BY_ERROR:
        code = _GRPC_CODES_BY_ERROR[err.code]
    elif err.status in _GRPC_CODES:
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
        service: DetectionService,
        key_store: KeyVerifier | None,
        rate_limiter: RateLimiterLike | None,
        streams: StreamManager,
        *,
        follower: ModelFollower | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.key_store = key_store
        self.rate_limiter = rate_limiter
        self.streams = streams
        self.follower = follower

    # ---- RPCs ----

    def Detect(  # noqa: N802 - generated servicer's name
        self, request: pb.DetectRequest, context: grpc.ServicerContext
    ) -> pb.DetectResponse:
        return self._unary(
            request,
            context,
            Scope.INFER,
            "Detect",
            lambda req: self._detect(req, owner=self._caller(context).owner),
        )

    def DetectBatch(  # noqa: N802 - generated servicer's name
        self, request: pb.BatchDetectRequest, context: grpc.ServicerContext
    ) -> pb.BatchDetectResponse:
        return self._unary(request, context, Scope.INFER, "DetectBatch", self._detect_batch)

    def ListModels(  # noqa: N802 - generated servicer's name
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return self._unary(
            request,
            context,
            Scope.READ,
            "ListModels",
            lambda req: self._list_models(req, full_path=self._caller(context).admin),
        )

    def DescribeModel(  # noqa: N802 - generated servicer's name
        self, request: pb.DescribeModelRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfo:
        return self._unary(
            request,
            context,
            Scope.READ,
            "DescribeModel",
            lambda req: self._describe_model(req, full_path=self._caller(context).admin),
        )

    def LoadModel(  # noqa: N802 - generated servicer's name
        self, request: pb.LoadModelRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfo:
        return self._unary(request, context, Scope.ADMIN, "LoadModel", self._load_model)

    def UnloadModel(  # noqa: N802 - generated servicer's name
        self, request: pb.ModelRef, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return self._unary(request, context, Scope.ADMIN, "UnloadModel", self._unload_model)

    def ReloadModel(  # noqa: N802 - generated servicer's name
        self, request: pb.ModelRef, context: grpc.ServicerContext
    ) -> pb.ModelReload:
        return self._unary(request, context, Scope.ADMIN, "ReloadModel", self._reload_model)

    def Health(  # noqa: N802 - generated servicer's name
        self, request: pb.HealthRequest, context: grpc.ServicerContext
    ) -> pb.HealthResponse:
        if self.service.ready:
            health = Health(status="ok", model_loaded=True)
        else:
            error = self.service.load_error
            status: Literal["loading", "failed"] = "failed" if error else "loading"
            detail = error or "the model is still loading"
            health = Health(status=status, model_loaded=False, detail=detail)
        return mapping.health_to_proto(health)

    def DetectStream(  # noqa: N802 - generated servicer's name
        self, request_iterator: Iterator[pb.DetectRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.DetectResponse]:
        """One frame in, one result out, in order; one tracker for the whole call."""
        try:
            principal = self._guard(context, Scope.INFER, "DetectStream", count=False)
            session = SessionTracker(self.service.new_tracker())
            for i, frame in enumerate(request_iterator):
                self._rate_limit(principal.key_id, "DetectStream")
                try:
                    resp = self._detect(frame, session=session, session_id=frame.session_id)
                except NotReadyError:
                    raise  # the server's state, not this frame's
                except (ApiError, ImageError, ConfigError) as exc:
                    err = _to_api_error(exc)
                    raise ApiError(
                        err.status, err.code, f"frame {i}: {err.detail}", err.headers
                    ) from exc
                yield resp
        except Exception as exc:
            _abort(context, exc)

    def StartStream(  # noqa: N802 - generated servicer's name
        self, request: pb.StartStreamRequest, context: grpc.ServicerContext
    ) -> pb.StreamInfo:
        return self._unary(
            request,
            context,
            Scope.INFER,
            "StartStream",
            lambda req: self._start_stream(req, self._caller(context)),
        )

    def ListStreams(  # noqa: N802 - generated servicer's name
        self, request: pb.ListStreamsRequest, context: grpc.ServicerContext
    ) -> pb.ListStreamsResponse:
        return self._unary(
            request,
            context,
            Scope.READ,
            "ListStreams",
            lambda _req: mapping.stream_list_to_proto(self.streams.list(self._caller(context))),
        )

    def GetStream(  # noqa: N802 - generated servicer's name
        self, request: pb.StreamRef, context: grpc.ServicerContext
    ) -> pb.StreamInfo:
        return self._unary(
            request,
            context,
            Scope.READ,
            "GetStream",
            lambda req: mapping.stream_info_to_proto(
                self.streams.get(req.id, self._caller(context))
            ),
        )

    def StopStream(  # noqa: N802 - generated servicer's name
        self, request: pb.StreamRef, context: grpc.ServicerContext
    ) -> pb.StreamInfo:
        return self._unary(
            request,
            context,
            Scope.INFER,
            "StopStream",
            lambda req: mapping.stream_info_to_proto(
                self.streams.stop(req.id, caller=self._caller(context))
            ),
        )

    def StreamResults(  # noqa: N802 - generated servicer's name
        self, request: pb.StreamRef, context: grpc.ServicerContext
    ) -> Iterator[pb.FrameResult]:
        """One message per processed frame from now on; ends with the stream. The
        subscription is released when the stream ends, the client cancels or the
        server stops."""
        try:
            principal = self._guard(context, Scope.READ, "StreamResults")
            sub = self.streams.subscribe(request.id, caller=caller_of(principal))
        except Exception as exc:
            _abort(context, exc)
        try:
            while context.is_active():
                try:
                    check_current_call()  # a revoked key or an expired token ends the call
                except Exception as exc:
                    _abort(context, exc)
                if sub.expired:  # the most a subscription lasts: the client subscribes again
                    _abort(context, _expired(self.streams.max_subscription_s))
                items = sub.get(_RESULTS_POLL_S)
                if items is None:
                    return
                for item in items:
                    yield mapping.frame_record_to_proto(json.loads(item), sub.dropped)
        finally:
            self.streams.unsubscribe(request.id, sub)

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
    ) -> Principal:
        principal = self._authenticate(context)
        require_scope(principal, scope, method)
        if count:
            self._rate_limit(principal.key_id, method)
        return principal

    def _authenticate(self, context: grpc.ServicerContext) -> Principal:
        # CallGuard verified the call before the servicer ran; it is bound to this thread.
        if not self.settings.require_auth or self.key_store is None:
            return _Anonymous()
        call = current_call()
        if call is None:  # only when the servicer is served without its guard
            raise ApiError(401, "missing_api_key", "this RPC was not authenticated")
        return call.principal

    def _caller(self, context: grpc.ServicerContext) -> Caller:
        """The call's principal as ownership checks see it (streams, sessions)."""
        return caller_of(self._authenticate(context))

    def _rate_limit(self, key_id: str, method: str) -> None:
        error = rate_limit_error(self.rate_limiter, key_id, f"/{SERVICE_NAME}/{method}")
        if error is not None:
            raise error

    # ---- handlers ----

    def _list_models(
        self, request: pb.ListModelsRequest, *, full_path: bool
    ) -> pb.ListModelsResponse:
        return mapping.model_list_to_proto(self.service.list_models(full_path=full_path))

    def _describe_model(self, request: pb.DescribeModelRequest, *, full_path: bool) -> pb.ModelInfo:
        info = self.service.model_info(request.name, full_path=full_path)
        return mapping.model_info_to_proto(info)

    def _load_model(self, request: pb.LoadModelRequest) -> pb.ModelInfo:
        if not request.path or len(request.path) > 4096:
            raise ApiError(422, "invalid_request", "path: give 1 to 4096 characters")
        conf = request.conf if request.HasField("conf") else None
        if conf is not None and not 0.0 <= conf <= 1.0:
            raise ApiError(422, "invalid_request", f"conf: {conf} is not in [0, 1]")
        info = self.service.load_model(request.name, request.path, conf)
        return mapping.model_info_to_proto(info)

    def _reload_model(self, request: pb.ModelRef) -> pb.ModelReload:
        from tapetum.serve.follow import reload_model

        reload = reload_model(self.service, self.follower, request.name)
        return mapping.model_reload_to_proto(reload)

    def _unload_model(self, request: pb.ModelRef) -> pb.ListModelsResponse:
        self.service.unload_model(request.name)
        return mapping.model_list_to_proto(self.service.list_models())

    def _detect(
        self,
        request: pb.DetectRequest,
        *,
        session: SessionTracker | None = None,
        session_id: str | None = None,
        owner: str = ANONYMOUS,
    ) -> pb.DetectResponse:
        response = self.service.detect(
            EncodedImage(request.image, request.content_type),
            request.conf if request.HasField("conf") else None,
            list(request.classes),
            session_id if session is not None else request.session_id,
            session=session,
            model=request.model or None,
            owner=owner,
        )
        return mapping.detect_response_to_proto(response)

    def _start_stream(self, request: pb.StartStreamRequest, caller: Caller) -> pb.StreamInfo:
        conf = request.conf if request.HasField("conf") else None
        if conf is not None:
            self.service.check_conf(conf)
        try:
            options = mapping.start_options_from_proto(request)
        except pydantic.ValidationError as exc:
            raise ApiError(422, "invalid_request", _validation_reason(exc)) from None
        if not request.uri or len(request.uri) > 4096:
            raise ApiError(422, "invalid_request", "uri: give 1 to 4096 characters")
        return mapping.stream_info_to_proto(self.streams.start(request.uri, options, caller))

    def _detect_batch(self, request: pb.BatchDetectRequest) -> pb.BatchDetectResponse:
        response = self.service.detect_batch(
            [EncodedImage(item.data, item.content_type) for item in request.images],
            request.conf if request.HasField("conf") else None,
            list(request.classes),
            model=request.model or None,
        )
        return mapping.batch_detect_response_to_proto(response)


# ---------------------------------------------------------------------------------- server


def create_grpc_server(  # noqa: PLR0917 - the REST factory's order, plus the address
    settings: ServeSettings,
    service: DetectionService,
    key_store: KeyVerifier | None,
    rate_limiter: RateLimiterLike | None,
    port: int,
    host: str = "127.0.0.1",
    *,
    max_workers: int | None = None,
    streams: StreamManager | None = None,
    tls: TlsFiles | None = None,
    auth_failures: AuthFailureLimiter | None = None,
    follower: ModelFollower | None = None,
) -> grpc.Server:
    """Build the gRPC server, bound to ``host:port`` but not started.

    Args:
        settings: the REST app's settings (limits, thresholds, tracker, auth on/off).
        service: the detection service (shared with the REST app); the caller starts it.
        key_store: verifies API keys (required when ``settings.require_auth``).
        rate_limiter: None: no limit.
        port: TCP port (0: any free one; the port is already bound on return).
        max_workers: handler threads (default ``settings.grpc_max_workers``); each open
            ``DetectStream`` or ``StreamResults`` holds one, and they may take all but
            ``settings.grpc_health_reserve``.
        streams: the server-side streams to manage, shared with the REST app
            (``app.state.tapetum.streams``). None: a private manager of the settings'
            limits, whose streams the caller cannot stop at shutdown other than with
            ``StopStream``; pass the REST app's so its lifespan stops them.
        tls: certificate and key; None: cleartext (the caller checks the bind address,
            see :func:`tapetum.serve.tls.check_bind`).
        auth_failures: failed authentications per client address (share the REST app's);
            default :func:`~tapetum.serve.settings.default_auth_failure_limiter`.
        follower: the registry alias the default model follows (``ReloadModel`` checks it
            now); None: ``ReloadModel`` answers FAILED_PRECONDITION. Started and stopped by
            the caller (``tapetum serve``: the REST app's lifespan).

    Raises:
        ConfigError: auth is on without a key store, or the address cannot be bound.
    """
    if settings.require_auth and key_store is None:
        raise ConfigError("gRPC authentication is on: give a key store or turn auth off")
    if streams is None:
        streams = StreamManager.from_settings(settings, service.staged_detector)
        service.add_swap_listener(streams.swap_detector)  # streams follow model swaps
    servicer = _DetectorService(
        settings, service, key_store, rate_limiter, streams, follower=follower
    )
    workers = max_workers if max_workers is not None else settings.grpc_max_workers
    limits, default_limit = method_limits(settings)
    authenticator = None
    if settings.require_auth and key_store is not None:
        if auth_failures is None:
            auth_failures = default_auth_failure_limiter(settings)
        authenticator = Authenticator(
            key_store,
            auth_failures,
            missing_hint="metadata 'authorization: Bearer <key>' or 'x-api-key: <key>'",
        )
    guard = CallGuard(
        authenticator=authenticator,
        limits=limits,
        default_limit=default_limit,
        public=frozenset({"Health"}),
        slots=StreamingSlots(
            total=max(1, workers - settings.grpc_health_reserve),
            per_principal=settings.max_streaming_calls_per_key,
        ),
        recheck_s=settings.credential_recheck_s,
        abort=_abort,
    )
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        interceptors=[guard],
        options=[
            ("grpc.max_receive_message_length", max(limits.values())),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.keepalive_time_ms", int(settings.grpc_keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", _MIN_CLIENT_PING_INTERVAL_MS),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_s * 1000)),
            (
                "grpc.max_connection_age_grace_ms",
                int(settings.grpc_max_connection_age_grace_s * 1000),
            ),
        ],
    )
    pb_grpc.add_DetectorServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is not None:
            bound = server.add_secure_port(address, tls.grpc_server_credentials())
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen for gRPC on {address}: {exc}") from exc
    if bound == 0:
        raise ConfigError(f"cannot listen for gRPC on {address}")
    log.info("gRPC %s on %s:%d (%s)", SERVICE_NAME, host, bound, "TLS" if tls else "cleartext")
    return server
