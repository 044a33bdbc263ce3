"""The live dashboard page (``/dashboard``) and its static files, from ``tapetum.monitor``.

The page and its script and style are public (they hold no data); the script reads
``/metrics`` with the API key the user gives it (``#key=…`` in the address or the page's
key field), so what it shows needs the ``read`` scope like ``/metrics`` itself. Not in the
OpenAPI document: it is a page, not an API.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from tapetum.errors import ApiError
from tapetum.monitor.dashboard import DASHBOARD_CSP, STATIC_TYPES, asset
from tapetum.serve.rest.guards import Guards
from tapetum.serve.rest.state import AppState

__all__ = ["build_router"]

_HEADERS = {"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-store"}


def build_router(state: AppState, guards: Guards) -> APIRouter:
    """``/dashboard`` and ``/dashboard/static/{name}`` (no key needed)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/dashboard")
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(asset("index.html"), headers=_HEADERS)

    @router.get("/dashboard/static/{name}")
    async def dashboard_static(name: str) -> Response:
        media_type = STATIC_TYPES.get(name)
        if media_type is None:
            raise ApiError(404, "not_found", f"no dashboard file {name!r}")
        return Response(asset(name), media_type=media_type, headers=_HEADERS)

    return router
