"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from tapetum.serve.rest.errors import ERROR_RESPONSES
from tapetum.serve.rest.guards import Guards
from tapetum.serve.rest.state import AppState
from tapetum.serve.schemas import Health

__all__ = ["build_router"]


def build_router(state: AppState, guards: Guards) -> APIRouter:
    """``/healthz`` and ``/readyz`` (no key) and ``/metrics`` (``read``)."""
    router = APIRouter()
    service, metrics, streams = state.service, state.metrics, state.streams

    @router.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Liveness: the process answers. No key needed."""
        return Health(status="ok", model_loaded=service.ready)

    @router.get(
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

    @router.get(
        "/metrics",
        tags=["health"],
        responses={200: {"content": {"text/plain": {}}}, **ERROR_RESPONSES},
        dependencies=[guards.read],
    )
    async def metrics_endpoint() -> Response:
        """Prometheus metrics (text format). Needs the ``read`` scope."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics.sessions.set(len(service.sessions))
        metrics.streams.set(len(streams))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
