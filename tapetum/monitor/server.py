"""A small HTTP server for ``tapetum run``: ``/metrics``, the live ``/dashboard``, ``/healthz``.

Standard library only (``http.server``, one thread per connection, daemon threads), so a
pipeline gets its metrics without FastAPI. The dashboard is three static files shipped in
the package (:mod:`tapetum.monitor.dashboard`): the page polls ``/metrics`` itself, so the
same page works here and on ``tapetum serve``. Every response carries the security headers
of the REST app; the page's Content-Security-Policy allows only its own script and style
files (no inline code).

Example:
    >>> server = MetricsServer(new_registry(), host="127.0.0.1", port=0).start()  # doctest: +SKIP
    >>> server.url                                  # doctest: +SKIP
    'http://127.0.0.1:40123'
    >>> server.stop()                               # doctest: +SKIP
"""

from __future__ import annotations

import errno
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

from tapetum.errors import MetricsServerError
from tapetum.monitor.dashboard import DASHBOARD_CSP, asset

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["MetricsServer"]

log = logging.getLogger(__name__)

#: Responses that are data, never a page (same policy as the REST API's).
_DATA_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


class MetricsServer:
    """Serves a registry's metrics and the dashboard in a background thread.

    Args:
        registry: the Prometheus registry to expose.
        host: address to listen on (loopback by default: metrics tell a lot about a site).
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
        dashboard: serve ``/dashboard`` too.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str = "127.0.0.1",
        port: int = 9400,
        *,
        dashboard: bool = True,
    ) -> None:
        if not 0 <= port <= 65535:
            raise MetricsServerError(f"metrics port must be 0-65535, got {port}")
        self.registry = registry
        self.host = host
        self.port = port
        self.dashboard = dashboard
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> MetricsServer:
        """Listen and serve in a daemon thread; returns self.

        Raises:
            MetricsServerError: the address cannot be bound (port taken, not a local
                address, no permission).
        """
        handler = type("Handler", (_Handler,), {"server_ref": self})
        try:
            self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            reason = "the port is taken" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise MetricsServerError(
                f"cannot serve metrics on {self.host}:{self.port}: {reason}"
            ) from None
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def render_metrics(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Handler(BaseHTTPRequestHandler):
    server_ref: ClassVar[MetricsServer]
    server_version = "tapetum-metrics"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        srv = self.server_ref
        if path == "/metrics":
            try:
                body, ctype = srv.render_metrics()
            except Exception as exc:  # a collector failed: say so, keep serving
                log.exception("metrics collection failed")
                self._send(500, f"metrics collection failed: {exc}\n".encode(), "text/plain")
                return
            self._send(200, body, ctype)
        elif path == "/healthz":
            self._send(200, b'{"status":"ok"}', "application/json")
        elif srv.dashboard and path in ("/dashboard", "/dashboard/"):
            self._send(200, asset("index.html"), "text/html; charset=utf-8", DASHBOARD_CSP)
        elif srv.dashboard and path.startswith("/dashboard/static/"):
            found = _static(path.removeprefix("/dashboard/static/"))
            if found is None:
                self._send(404, b"not found\n", "text/plain")
            else:
                self._send(200, *found)
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, status: int, body: bytes, ctype: str, csp: str = _DATA_CSP) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", csp)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)


def _static(name: str) -> tuple[bytes, str] | None:
    from tapetum.monitor.dashboard import STATIC_TYPES

    ctype = STATIC_TYPES.get(name)
    return None if ctype is None else (asset(name), ctype)
