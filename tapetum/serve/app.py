"""The REST API: ``create_app(settings) -> FastAPI``.

Everything the app needs (detector, key store, rate limiter, metrics registry, tracking
sessions) is built per app and injected or created in :func:`create_app`; nothing lives
in module globals, so two apps in one process (tests) do not share state.

The detection work itself (model load and readiness, request checks, inference, tracking
sessions) is :class:`~tapetum.serve.service.DetectionService`, shared with the gRPC server;
this module wires the HTTP adapter together: the routers of :mod:`tapetum.serve.routes`
(health, models, detect, streams) over the helpers of :mod:`tapetum.serve.rest` (auth and
rate-limit guards, bounded uploads, error bodies, metrics).

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

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

import anyio.to_thread
from fastapi import FastAPI

from tapetum.core.breaker import BreakerRegistry
from tapetum.serve.docs import install_docs
from tapetum.serve.middleware import BodyLimitMiddleware, SecurityHeadersMiddleware
from tapetum.serve.rest.errors import install_error_handlers
from tapetum.serve.rest.guards import make_guards
from tapetum.serve.rest.metrics import Metrics, MetricsMiddleware, register_monitoring
from tapetum.serve.rest.state import AppState
from tapetum.serve.rest.uploads import upload_body_limits
from tapetum.serve.routes import dashboard, detect, health, models, streams
from tapetum.serve.schemas import ErrorResponse
from tapetum.serve.service import DetectionService
from tapetum.serve.settings import (
    ApiError,
    DetectorLike,
    KeyVerifier,
    RateLimiterLike,
    ServeSettings,
    default_detector_factory,
    default_key_store,
    default_rate_limiter,
)
from tapetum.serve.streams import StreamManager

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

if TYPE_CHECKING:
    from tapetum.experiments.serving import ServerExperiment
    from tapetum.serve.follow import ModelFollower
    from tapetum.serve.ratelimit import AuthFailureLimiter

log = logging.getLogger("tapetum.serve")


def create_app(
    settings: ServeSettings,
    detector_factory: Callable[[ServeSettings], DetectorLike] = default_detector_factory,
    key_store: KeyVerifier | None = None,
    rate_limiter: RateLimiterLike | None = None,
    service: DetectionService | None = None,
    *,
    auth_failures: AuthFailureLimiter | None = None,
    experiment: ServerExperiment | None = None,
    follower: ModelFollower | None = None,
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
        auth_failures: failed authentications per client address (share one with a gRPC
            server); default :func:`~tapetum.serve.settings.default_auth_failure_limiter`.
        experiment: an A/B experiment over ``/v1/detect`` requests (its arms load once the
            default model is ready; its record is written at shutdown).
        follower: the registry alias the default model follows (``--model
            models:/NAME@ALIAS``): the lifespan starts and stops its polling, ``POST
            /v1/models/{name}/reload`` checks it now, ``/metrics`` shows its version and
            swaps.

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
    metrics = Metrics(breakers)
    stream_manager = StreamManager.from_settings(settings, service.staged_detector, breakers)
    service.add_swap_listener(stream_manager.swap_detector)  # streams follow model swaps
    register_monitoring(metrics, service, stream_manager)
    state = AppState(settings, metrics, service, breakers, stream_manager, experiment, follower)
    if experiment is not None:
        experiment.bind_metrics(metrics.registry)
    if hasattr(rate_limiter, "storage_errors"):  # ours (and so `limits` is installed)
        from tapetum.serve.ratelimit import RateLimitCollector, RateLimiter

        if isinstance(rate_limiter, RateLimiter):
            metrics.registry.register(RateLimitCollector(rate_limiter))
    if follower is not None:
        from tapetum.serve.follow import FollowCollector

        metrics.registry.register(FollowCollector(follower))
    lifespan = _lifespan(state, owns_service=owns_service)

    app = FastAPI(
        title="Tapetum",
        version="1",
        summary="Object detection and tracking over HTTP.",
        lifespan=lifespan,
        responses={404: {"model": ErrorResponse, "description": "Unknown route or model"}},
        docs_url=None,  # served offline with a CSP by install_docs
        redoc_url=None,
    )
    app.state.tapetum = state
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    # Outermost: a body over its route's cap is refused before auth or any read.
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings.max_json_body_bytes,
        limits=upload_body_limits(settings),
    )
    install_error_handlers(app)
    install_docs(app)
    guards = make_guards(settings, key_store, rate_limiter, metrics, auth_failures)
    for routes in (health, models, detect, streams, dashboard):
        app.include_router(routes.build_router(state, guards))
    return app


def _lifespan(
    state: AppState, *, owns_service: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the service (model load in a thread); at exit stop every stream and, when
    the app built the service, close it (a shared one is closed by whoever shares it)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.service.start()
        if state.follower is not None:  # swaps wait for the first model to be ready
            state.follower.start()
        experiment = state.experiment
        if experiment is not None:  # its arms load once the default model is ready
            threading.Thread(
                target=experiment.attach, args=(state.service,), name="ab-attach", daemon=True
            ).start()
        yield
        if state.follower is not None:
            await anyio.to_thread.run_sync(state.follower.stop)
        if experiment is not None:
            folder = await anyio.to_thread.run_sync(experiment.close)
            log.info("shutting down: experiment %s recorded in %s", experiment.spec.name, folder)
        log.info("shutting down: %d tracking sessions dropped", len(state.service.sessions))
        stopped = await anyio.to_thread.run_sync(state.streams.stop_all)
        log.info("shutting down: %d streams stopped", stopped)
        if owns_service:
            await anyio.to_thread.run_sync(state.service.close)

    return lifespan
