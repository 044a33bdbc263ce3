"""The live dashboard's files: a page, a script and a style sheet, shipped in the package.

No build step and no CDN: ``static/`` holds plain HTML, JavaScript and CSS, read with
:mod:`importlib.resources`. The page (``/dashboard``) polls ``/metrics`` once a second and
draws per-stream FPS, latency (p50/p99 of the end-to-end histogram over the last poll),
drops, active tracks, the confidence histogram and each drift signal's score; on
``tapetum serve`` it asks for an API key (``#key=…`` in the address, kept in session
storage, never sent to the page's server except as ``X-API-Key`` on ``/metrics``).

The page works under :data:`DASHBOARD_CSP`, which allows only its own script and style
files from the same origin: no inline script or style, no ``eval``, nothing from elsewhere.
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["DASHBOARD_CSP", "STATIC_TYPES", "asset"]

#: Content-Security-Policy of the dashboard page.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: The files under ``/dashboard/static/`` and their content types.
STATIC_TYPES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@functools.cache
def asset(name: str) -> bytes:
    """The bytes of ``static/<name>`` (``index.html`` or a name in :data:`STATIC_TYPES`)."""
    if name != "index.html" and name not in STATIC_TYPES:
        raise KeyError(name)
    return resources.files("tapetum.monitor").joinpath("static", name).read_bytes()
