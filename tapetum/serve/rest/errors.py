"""Error bodies of the REST API: every error is ``{"detail": ..., "code": ...}``.

:func:`install_error_handlers` maps each kind of exception to its status: an
:class:`~tapetum.serve.settings.ApiError` or image error to its own, request validation to
422, a :class:`~tapetum.errors.ConfigError` to 422, a registry error to 404 (an unknown
model, version or alias) or 503 (without the store's paths; see
:func:`~tapetum.serve.follow.registry_api_error`), any other Tapetum error to 503 (the
service is unavailable, not broken) and anything else to a 500 whose detail stays in the
server log. :data:`ERROR_RESPONSES` documents the common ones in the OpenAPI document.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tapetum.errors import ConfigError, RegistryError, TapetumError
from tapetum.serve.images import ImageError
from tapetum.serve.schemas import ErrorResponse
from tapetum.serve.settings import ApiError

__all__ = ["ERROR_RESPONSES", "ResponseTable", "error_response", "install_error_handlers"]

log = logging.getLogger("tapetum.serve")

#: A route's documented error responses (``responses=`` of a route decorator).
ResponseTable = dict[int | str, dict[str, Any]]

#: The errors any protected route may answer with.
ERROR_RESPONSES: ResponseTable = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "Missing or invalid API key",
        403: "The key lacks the route's scope",
        422: "Invalid parameters",
        429: "Rate limited (see Retry-After)",
        503: "Model not loaded yet",
    }.items()
}

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON error body ``{detail, code}`` with ``status`` and extra ``headers``."""
    body = ErrorResponse(detail=detail, code=code).model_dump()
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _validation_reason(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Render every exception a route raises as an error body (never a bare 500 page)."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    async def image_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ImageError)
        return error_response(exc.status, exc.code, str(exc))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "invalid_request", _validation_reason(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return error_response(exc.status_code, code, detail, exc.headers)

    async def config_error(request: Request, exc: Exception) -> Response:
        return error_response(422, "invalid_request", str(exc))

    async def registry_error(request: Request, exc: Exception) -> Response:
        from tapetum.serve.follow import registry_api_error

        assert isinstance(exc, RegistryError)
        log.warning("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        err = registry_api_error(exc)
        return error_response(err.status, err.code, err.detail, err.headers)

    async def service_error(request: Request, exc: Exception) -> Response:
        # A deliberate Tapetum error that is not the client's (e.g. the rate-limit store
        # is down with fail_open off): the service is unavailable, not broken.
        log.warning("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
        return error_response(503, "service_unavailable", str(exc), {"Retry-After": "1"})

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error(
            "unhandled %s on %s %s",
            type(exc).__name__,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        return error_response(500, "internal_error", "internal server error; see the server log")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ImageError, image_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ConfigError, config_error)
    app.add_exception_handler(RegistryError, registry_error)
    app.add_exception_handler(TapetumError, service_error)
    app.add_exception_handler(Exception, unexpected)
