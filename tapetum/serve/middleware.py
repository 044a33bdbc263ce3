"""ASGI middleware of the REST app: request body limits and security headers.

:class:`BodyLimitMiddleware` caps the request body of every route *before* anything reads
it, before authentication too: an unauthenticated client must not make the server hold a
200 MiB JSON body just to learn that it lacks a key. A body whose ``Content-Length`` is
over the route's cap is refused with 413 at once, without reading a byte of it; a body
without one (``Transfer-Encoding: chunked``) is counted as it arrives, and at the first
chunk past the cap the client gets the 413 and the app sees a disconnect, so nothing more
is read. Either way the response says ``Connection: close``: the unread rest of the body
must not be taken for the next request.

:class:`SecurityHeadersMiddleware` adds ``X-Content-Type-Options: nosniff``,
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and a restrictive
``Content-Security-Policy`` to every response that does not set its own (the docs pages
set one that lets their own scripts run, see :mod:`tapetum.serve.docs`).

Example::

    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=64 * 1024,
        limits={"/v1/detect": 10 * 1024 * 1024 + 65536},
    )
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["API_CSP", "BodyLimitMiddleware", "SecurityHeadersMiddleware"]

#: The policy of API responses: they are data, never a page to render or frame.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

_SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", API_CSP.encode()),
)


class BodyLimitMiddleware:
    """Refuses request bodies over a per-route byte cap with 413, reading nothing more.

    Args:
        app: the ASGI app.
        default_limit: cap of every path not in ``limits`` (JSON bodies), bytes.
        limits: exact request path -> its cap (the upload routes), bytes.
    """

    def __init__(
        self, app: ASGIApp, default_limit: int, limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = dict(limits or {})

    def limit_for(self, path: str) -> int:
        """The cap of ``path`` in bytes."""
        return self.limits.get(path.rstrip("/") or "/", self.default_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", "/"))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, declared, limit)
            return

        received = 0
        refused = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not response_started:
                        await _send_413(send, None, limit)
                    # The app sees a client that went away: it stops reading, and whatever
                    # it answers is dropped below.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The app failed on the disconnect we fed it; the client already has its 413.


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 refuses these before we get here
    return None


async def _send_413(send: Send, declared: int | None, limit: int) -> None:
    if declared is not None:
        detail = f"the body is {declared} bytes; this route takes at most {limit} bytes"
    else:
        detail = f"the body is over this route's limit of {limit} bytes"
    body = json.dumps({"detail": detail, "code": "payload_too_large"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *_SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in _SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
