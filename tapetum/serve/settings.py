"""Framework-free serving configuration and interfaces, shared by the REST and gRPC APIs.

Nothing here imports FastAPI or gRPC: :class:`ServeSettings`, the protocols a server needs
of its detector, key store and rate limiter, the :class:`ApiError` both APIs answer with,
and the factories of the default key store and rate limiter (``tapetum serve`` builds one
of each and hands it to both APIs, so a key's budget counts calls on both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tapetum.core.detections import Detections
from tapetum.errors import ApiError, ConfigError
from tapetum.serve.auth import Scope as KeyScope
from tapetum.serve.images import ImageLimits

if TYPE_CHECKING:
    from tapetum.serve.ratelimit import AuthFailureLimiter, RateLimiter

__all__ = [
    "MAX_CREDENTIAL_CHARS",
    "MODEL_NAME_PATTERN",
    "SESSION_ID_PATTERN",
    "ApiError",
    "DetectorLike",
    "KeyVerifier",
    "Principal",
    "RateLimiterLike",
    "ServeSettings",
    "default_auth_failure_limiter",
    "default_detector_factory",
    "default_key_store",
    "default_rate_limiter",
    "rate_limit_error",
    "require_scope",
]

#: What a tracking ``session_id`` may look like (both APIs check it).
SESSION_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"

#: What a model name loaded at runtime may look like (it appears in URL paths).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9._\-]{1,64}$"

#: Longest credential (API key or JWT) either API passes to a verifier; longer is a 401.
MAX_CREDENTIAL_CHARS = 8192


# --------------------------------------------------------------------------- interfaces


class _ModelHandle(Protocol):
    @property
    def path(self) -> Path: ...
    @property
    def providers(self) -> list[str]: ...


class DetectorLike(Protocol):
    """What the server needs of a detector (``OnnxDetector`` fits)."""

    @property
    def class_names(self) -> tuple[str, ...]: ...
    @property
    def input_hw(self) -> tuple[int, int]: ...
    @property
    def model(self) -> _ModelHandle: ...
    def __call__(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]: ...


class Principal(Protocol):
    """An authenticated caller (``tapetum.serve.auth.ApiKey`` fits)."""

    @property
    def key_id(self) -> str: ...
    def allows(self, scope: KeyScope) -> bool: ...


class KeyVerifier(Protocol):
    """``tapetum.serve.auth.KeyStore`` fits."""

    def verify(self, raw: str) -> Principal | None: ...


@runtime_checkable
class CachingKeyVerifier(KeyVerifier, Protocol):
    """A verifier that can answer from its cache without blocking (``KeyStore`` fits).

    ``verify_cached`` returns the principal only for a credential verified recently; None
    means "ask :meth:`verify`", which may hash and is run off the event loop.
    """

    def verify_cached(self, raw: str) -> Principal | None: ...


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
        model_path: ONNX detector file (any family :func:`tapetum.detect.load_detector` reads).
        model_name: name in ``/v1/models`` (default: the file stem).
        model_arch: the model's family when its file does not say (``--arch``); None:
            from the file's metadata or output shapes.
        providers: ONNX Runtime execution providers to try, in order (``--provider``);
            None: the best installed (see :mod:`tapetum.detect.providers`).
        conf_threshold: default score threshold of ``/v1/detect``.
        min_conf_threshold: the detector's own threshold, the lowest a request may ask
            for; ByteTrack also sees boxes down to it (its second association uses them).
        nms_iou: NMS IoU threshold.
        max_upload_bytes: per image, encoded.
        max_side_px / max_pixels: decoded size limits, checked from the header.
        max_batch: most files in one ``/v1/detect/batch`` (≤ 16).
        batch_requests: at most this many images of concurrent requests run as one
            model call (dynamic batching; 1 = off). Requests queue only while every
            inference worker is busy, so a lone client waits for nothing.
        batch_wait_ms: how long the first queued image may wait for more (0: take what
            is queued as soon as a worker is free).
        keys_db: API key database (``KeyStore``) used when no key store is injected.
        jwt_issuer / jwt_audience / jwt_jwks: accept OIDC bearer tokens (JWTs) from this
            issuer for this audience, checked against this JWKS (URL or local file); all
            three or none (None: API keys only). See ``tapetum.serve.jwt_auth``.
        require_auth: False serves every route without a key (local use only).
        rate_per_second / rate_burst: default token bucket per (key, route); None: no limit.
        rate_storage: where the limiter counts: ``memory://`` (one process) or a Redis URI
            (``redis://host:6379/0``) shared by several replicas.
        route_rates: route path → (per_second, burst) overrides.
        tracker: tracker of ``session_id`` requests.
        classify: label session tracks with a classifier,
            ``MODEL[:classes=...][:every=N][:min_box=PX][:grow=X][:labels=MAP]`` as
            ``tapetum run --classify`` takes it (``every`` counts the session's requests);
            None: no labels.
        session_frame_rate: frame rate assumed for sessions (scales lost-track lifetime).
        max_sessions / session_idle_s: tracking-session LRU size and idle expiry.
        warmup: run one inference before ``/readyz`` turns 200.
        max_streams: most server-side streams (``POST /v1/streams``) running at once.
        stream_breaker_failures / stream_breaker_reset_s: a stream URI that failed to open
            this many times in a row is refused with 503 for this long.
        stream_subscriber_queue: results buffered per live (SSE) subscriber; a slower
            client loses the oldest.
        sse_heartbeat_s: idle time after which an SSE connection gets a comment line.
        max_streams_per_key / max_sessions_per_key / max_subscriptions_per_key: what one
            key (or token subject) may hold at once: running streams, tracking sessions
            (beyond it the key's own least recently used session is dropped) and live
            result subscriptions (SSE and gRPC ``StreamResults``), so one key cannot take
            every slot or evict everyone's sessions.
        media_roots: folders whose files (and image folders) API callers may open as
            streams; a path's real location must lie inside one. Empty: no local paths.
        allowed_sources: exceptions to the network rules of stream sources (loopback,
            private, link-local and metadata addresses are refused, and only rtsp(s),
            rtmp and http(s)): CIDRs, URI globs (``rtsp://10.0.7.*``) or host globs. See
            :mod:`tapetum.serve.source_policy`.
        max_subscription_s: longest a live result subscription (SSE, gRPC
            ``StreamResults``) lasts; it then ends (``subscription_expired``) and the
            client subscribes again, so a forgotten one does not hold its slot for ever.
        model_roots: folders ``POST /v1/models`` / ``LoadModel`` may load ONNX files from
            (real locations); empty: the default model's folder.
        max_models: most models loaded at once, the default one included (more can be
            loaded at runtime with ``POST /v1/models`` / ``LoadModel``).
        max_json_body_bytes: largest request body of every route but the detect routes
            (JSON bodies), refused with 413 before it is read or the key checked.
        auth_failures_per_minute: failed authentications one client address may make per
            minute before it gets 429 (0: unlimited). Counted in ``rate_storage``.
        credential_recheck_s: how often a long-lived call (SSE, ``DetectStream``,
            ``StreamResults``) re-checks its key or token; a revoked key ends it.
        max_streaming_calls_per_key: gRPC ``DetectStream`` / ``StreamResults`` calls one
            key (or token subject) may hold open at once.
        grpc_max_workers / grpc_health_reserve: gRPC handler threads, and how many of them
            streaming calls may never take (so ``Health`` and unary calls still answer).
        grpc_keepalive_s: the gRPC server pings an idle connection this often and drops it
            when the ping is not answered within 20 s.
        grpc_max_connection_age_s / grpc_max_connection_age_grace_s: a gRPC connection is
            asked to reconnect after this age; its calls get the grace period to finish.
    """

    model_path: Path
    model_name: str | None = None
    model_arch: str | None = None
    providers: tuple[str, ...] | None = None
    conf_threshold: float = 0.3
    min_conf_threshold: float = 0.1
    nms_iou: float = 0.45
    max_upload_bytes: int = 10 * 1024 * 1024
    max_side_px: int = 8192
    max_pixels: int = 40_000_000
    max_batch: int = 16
    keys_db: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks: str | None = None
    require_auth: bool = True
    rate_per_second: float | None = 20.0
    rate_burst: int = 40
    rate_storage: str = "memory://"
    route_rates: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    tracker: str = "bytetrack"
    classify: str | None = None
    session_frame_rate: float = 30.0
    max_sessions: int = 256
    session_idle_s: float = 300.0
    warmup: bool = True
    max_streams: int = 4
    stream_breaker_failures: int = 3
    stream_breaker_reset_s: float = 30.0
    stream_subscriber_queue: int = 64
    sse_heartbeat_s: float = 10.0
    max_streams_per_key: int = 2
    max_sessions_per_key: int = 32
    max_subscriptions_per_key: int = 4
    media_roots: tuple[Path, ...] = ()
    allowed_sources: tuple[str, ...] = ()
    max_subscription_s: float = 3600.0
    model_roots: tuple[Path, ...] = ()
    max_models: int = 4
    batch_requests: int = 8
    batch_wait_ms: float = 0.0
    max_json_body_bytes: int = 64 * 1024
    auth_failures_per_minute: int = 20
    credential_recheck_s: float = 1.0
    max_streaming_calls_per_key: int = 4
    grpc_max_workers: int = 16
    grpc_health_reserve: int = 4
    grpc_keepalive_s: float = 60.0
    grpc_max_connection_age_s: float = 3600.0
    grpc_max_connection_age_grace_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_conf_threshold <= self.conf_threshold <= 1.0:
            raise ConfigError(
                f"need 0 ≤ min_conf_threshold ≤ conf_threshold ≤ 1, got "
                f"{self.min_conf_threshold} and {self.conf_threshold}"
            )
        if not 1 <= self.max_batch <= 16:
            raise ConfigError(f"max_batch must be in [1, 16], got {self.max_batch}")
        if not 1 <= self.batch_requests <= 64:
            raise ConfigError(f"batch_requests must be in [1, 64], got {self.batch_requests}")
        if not 0.0 <= self.batch_wait_ms <= 1000.0:
            raise ConfigError(f"batch_wait_ms must be in [0, 1000], got {self.batch_wait_ms}")
        if self.max_upload_bytes < 1 or self.max_side_px < 1 or self.max_pixels < 1:
            raise ConfigError("upload limits must be positive")
        if self.max_streams < 0 or self.stream_subscriber_queue < 1:
            raise ConfigError("max_streams must be ≥ 0 and stream_subscriber_queue ≥ 1")
        if self.stream_breaker_failures < 1 or self.stream_breaker_reset_s <= 0:
            raise ConfigError("stream_breaker_failures must be ≥ 1 and the reset time > 0")
        if self.sse_heartbeat_s <= 0:
            raise ConfigError(f"sse_heartbeat_s must be > 0, got {self.sse_heartbeat_s}")
        per_key = (self.max_streams_per_key, self.max_sessions_per_key)
        if min(*per_key, self.max_subscriptions_per_key) < 1:
            raise ConfigError(
                "max_streams_per_key, max_sessions_per_key and max_subscriptions_per_key "
                "must be ≥ 1"
            )
        for root in self.media_roots:
            if not root.is_dir():
                raise ConfigError(f"media root {root} is not a folder")
        if any(not pattern.strip() for pattern in self.allowed_sources):
            raise ConfigError("allowed_sources: a pattern is empty")
        if self.max_subscription_s <= 0:
            raise ConfigError(f"max_subscription_s must be > 0, got {self.max_subscription_s}")
        for root in self.model_roots:
            if not root.is_dir():
                raise ConfigError(f"model root {root} is not a folder")
        if self.max_models < 1:
            raise ConfigError(f"max_models must be ≥ 1, got {self.max_models}")
        if self.max_json_body_bytes < 1024 or self.auth_failures_per_minute < 0:
            raise ConfigError("max_json_body_bytes must be ≥ 1024 and auth_failures_per_minute ≥ 0")
        if self.credential_recheck_s <= 0 or self.max_streaming_calls_per_key < 1:
            raise ConfigError(
                "credential_recheck_s must be > 0 and max_streaming_calls_per_key ≥ 1"
            )
        if not 1 <= self.grpc_health_reserve < self.grpc_max_workers:
            raise ConfigError(
                f"need 1 ≤ grpc_health_reserve < grpc_max_workers, got "
                f"{self.grpc_health_reserve} and {self.grpc_max_workers}"
            )
        if min(self.grpc_keepalive_s, self.grpc_max_connection_age_s) <= 0 or (
            self.grpc_max_connection_age_grace_s < 0
        ):
            raise ConfigError("gRPC keepalive and connection age must be > 0, the grace ≥ 0")
        jwt_parts = (self.jwt_issuer, self.jwt_audience, self.jwt_jwks)
        if any(jwt_parts) and not all(jwt_parts):
            raise ConfigError("JWT auth needs all of jwt_issuer, jwt_audience and jwt_jwks")

    @property
    def jwt_enabled(self) -> bool:
        """True when bearer JWTs are accepted (all three ``jwt_*`` settings are given)."""
        return bool(self.jwt_issuer and self.jwt_audience and self.jwt_jwks)

    @property
    def name(self) -> str:
        return self.model_name or self.model_path.stem

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_upload_bytes, self.max_side_px, self.max_pixels)


def default_detector_factory(settings: ServeSettings) -> DetectorLike:
    """An ONNX detector of any family at the settings' floor threshold (requests filter
    above it)."""
    from tapetum.detect import DetectorConfig, RuntimeOptions, load_detector

    return load_detector(
        settings.model_path,
        settings.model_arch,
        DetectorConfig(conf_threshold=settings.min_conf_threshold, nms_iou=settings.nms_iou),
        RuntimeOptions(providers=settings.providers),
    )


def default_key_store(settings: ServeSettings) -> KeyVerifier | None:
    """The verifier the settings ask for: None when auth is off; else ``keys_db``'s
    ``KeyStore``, or, when JWT is configured, a ``ChainedVerifier`` of that store (if any)
    and a ``JwtVerifier``.

    Raises:
        ConfigError: auth is on but neither ``keys_db`` nor JWT is set, or the JWT settings
            are unusable (e.g. a missing JWKS file).
    """
    if not settings.require_auth:
        return None
    if settings.keys_db is None and not settings.jwt_enabled:
        raise ConfigError(
            "authentication is on: give a keys database (keys_db), JWT settings "
            "(jwt_issuer, jwt_audience, jwt_jwks) or turn it off (require_auth=False)"
        )
    from tapetum.serve.auth import KeyStore

    store = KeyStore(settings.keys_db) if settings.keys_db is not None else None
    if not settings.jwt_enabled:
        return store
    from tapetum.serve.jwt_auth import ChainedVerifier, JwtVerifier

    assert settings.jwt_issuer and settings.jwt_audience and settings.jwt_jwks
    return ChainedVerifier(
        store, JwtVerifier(settings.jwt_issuer, settings.jwt_audience, settings.jwt_jwks)
    )


def default_rate_limiter(settings: ServeSettings) -> RateLimiter | None:
    """A ``RateLimiter`` from the settings' rates (None when ``rate_per_second`` is None)."""
    if settings.rate_per_second is None:
        return None
    from tapetum.serve.ratelimit import RateLimit, RateLimiter

    return RateLimiter(
        RateLimit(per_second=settings.rate_per_second, burst=settings.rate_burst),
        {r: RateLimit(per_second=p, burst=b) for r, (p, b) in settings.route_rates.items()},
        storage_uri=settings.rate_storage,
    )


def default_auth_failure_limiter(settings: ServeSettings) -> AuthFailureLimiter | None:
    """Failed authentications per client address, counted in ``settings.rate_storage``
    (None when ``auth_failures_per_minute`` is 0 or auth is off)."""
    if settings.auth_failures_per_minute == 0 or not settings.require_auth:
        return None
    from tapetum.serve.ratelimit import AuthFailureLimiter, RateLimit

    n = settings.auth_failures_per_minute
    return AuthFailureLimiter(
        RateLimit(per_second=n / 60, burst=n), storage_uri=settings.rate_storage
    )


def require_scope(principal: Principal, scope: KeyScope, target: str) -> None:
    """403 ``insufficient_scope`` unless the key allows ``scope`` (``target``: the route or
    RPC named in the message)."""
    if not principal.allows(scope):
        raise ApiError(
            403,
            "insufficient_scope",
            f"this API key lacks the {scope.value!r} scope needed by {target}",
        )


def rate_limit_error(
    rate_limiter: RateLimiterLike | None, key_id: str, route: str
) -> ApiError | None:
    """Count one call of ``key_id`` on ``route``; the 429 to answer when over the limit."""
    if rate_limiter is None:
        return None
    decision = rate_limiter.hit(key_id, route)
    if decision.allowed:
        return None
    retry = max(1, math.ceil(decision.retry_after_s))
    return ApiError(
        429,
        "rate_limited",
        f"rate limit exceeded for {route}; retry in {retry} s",
        {"Retry-After": str(retry)},
    )
