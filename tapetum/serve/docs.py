"""The interactive API docs (``/docs``: Swagger UI, ``/redoc``: ReDoc), served offline.

FastAPI's own docs pages load Swagger UI and ReDoc from a CDN (and fonts from Google): a
server on an isolated network shows a blank page, and every visitor's browser runs
whatever the CDN serves that day. Here the pages load the copies that the
``fastapi-offline`` package ships (Swagger UI 5, ReDoc 2; part of the ``serve`` extra)
from ``/docs/static/``, and each page carries a Content-Security-Policy that lets only
those files and the page's own inline start-up script (by a per-response nonce) run:
no other origin, no framing (``frame-ancestors 'none'``), no form posts.

Example::

    app = FastAPI(docs_url=None, redoc_url=None)
    install_docs(app)
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException

__all__ = ["DOCS_STATIC_PATH", "docs_csp", "install_docs"]

log = logging.getLogger(__name__)

#: Where the Swagger UI / ReDoc files are served.
DOCS_STATIC_PATH = "/docs/static"

_STATIC_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


def docs_csp(nonce: str) -> str:
    """The Content-Security-Policy of a docs page whose inline script carries ``nonce``.

    Styles may be inline (both UIs set them at run time); ReDoc's search runs in a worker
    it makes from a ``blob:`` URL.
    """
    return (
        "default-src 'none'; "
        f"script-src 'self' 'nonce-{nonce}'; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "font-src 'self' data:; "
        "connect-src 'self'; "
        "worker-src 'self' blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def _static_dir() -> Path | None:
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if folder.is_dir() else None


#: The one off-site URL in ReDoc's bundle (its footer logo): the page's CSP would block it
#: and log a violation, so the bundle is served pointing at the local favicon instead.
_REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


def _offline_redoc_bundle(path: Path) -> bytes:
    """ReDoc's bundle with its footer logo taken from the docs' own static files."""
    return path.read_bytes().replace(_REDOC_CDN_LOGO, f"{DOCS_STATIC_PATH}/favicon.png".encode())


def _with_nonce(page: HTMLResponse, nonce: str) -> HTMLResponse:
    html = bytes(page.body).decode().replace("<script>", f'<script nonce="{nonce}">')
    return HTMLResponse(
        html,
        headers={"Content-Security-Policy": docs_csp(nonce), "Cache-Control": "no-store"},
    )


def install_docs(
    app: FastAPI, *, title: str = "Tapetum", openapi_url: str = "/openapi.json"
) -> None:
    """Add ``/docs``, ``/redoc`` and ``/docs/static/{name}`` to ``app`` (created with
    ``docs_url=None, redoc_url=None``). Without ``fastapi-offline`` installed the docs
    pages are left out (the OpenAPI document itself still is served), with a warning."""
    static = _static_dir()
    if static is None:
        log.warning("fastapi-offline is not installed: /docs and /redoc are off")
        return

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API docs",
            swagger_js_url=f"{DOCS_STATIC_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC_PATH}/favicon.png",
        )
        return _with_nonce(page, secrets.token_urlsafe(16))

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - API reference",
            redoc_js_url=f"{DOCS_STATIC_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_STATIC_PATH}/favicon.png",
            with_google_fonts=False,
        )
        return _with_nonce(page, secrets.token_urlsafe(16))

    redoc_bundle = _offline_redoc_bundle(static / "redoc.standalone.js")

    @app.get(DOCS_STATIC_PATH + "/{name}", include_in_schema=False)
    async def docs_static(name: str) -> Response:
        media_type = _STATIC_FILES.get(name)
        if media_type is None:  # a fixed list: no path ever reaches the file system
            raise HTTPException(404, f"no docs file {name!r}")
        if name == "redoc.standalone.js":
            return Response(
                redoc_bundle,
                media_type=media_type,
                headers={"Cache-Control": "public, max-age=86400"},
            )
        return FileResponse(
            static / name,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )
