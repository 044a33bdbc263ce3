"""Authentication, scope and rate limit of a REST request, as one FastAPI dependency per
scope (:class:`Guards`).

A guard reads the key (``Authorization: Bearer <key>`` or ``X-API-Key``), verifies it
(from the verifier's cache on the event loop when it can, else in a worker thread: argon2
is deliberately slow), checks the route's scope (403) and counts one call of the key on the
route template (429 past its budget). With ``require_auth`` off every request is
:class:`Anonymous`, which may do everything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import Depends, Request

from tapetum.serve.auth import Scope as KeyScope
from tapetum.serve.rest.metrics import Metrics
from tapetum.serve.settings import (
    MAX_CREDENTIAL_CHARS,
    ApiError,
    CachingKeyVerifier,
    KeyVerifier,
    Principal,
    RateLimiterLike,
    ServeSettings,
    rate_limit_error,
    require_scope,
)

__all__ = ["Anonymous", "Guards", "authenticate", "make_guards"]


@dataclass(frozen=True, slots=True)
class Anonymous:
    """The principal of every request when ``require_auth`` is off."""

    key_id: str = "anonymous"

    def allows(self, scope: KeyScope) -> bool:
        return True


async def authenticate(request: Request, key_store: KeyVerifier | None) -> Principal:
    """The request's principal; 401 without a key or with one the verifier refuses."""
    if key_store is None:
        return Anonymous()
    raw: str | None = None
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            raw = token.strip()
    raw = raw or (request.headers.get("x-api-key") or "").strip() or None
    challenge = 'Bearer realm="tapetum"'
    if raw is None:
        raise ApiError(
            401,
            "missing_api_key",
            "this route needs an API key: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            {"WWW-Authenticate": challenge},
        )
    if len(raw) > MAX_CREDENTIAL_CHARS:
        principal = None
    else:
        # A key seen within the cache TTL answers here; anything else may hash (argon2 is
        # deliberately slow) or fetch keys, so it is verified off the event loop.
        principal = (
            key_store.verify_cached(raw) if isinstance(key_store, CachingKeyVerifier) else None
        )
        if principal is None:
            principal = await anyio.to_thread.run_sync(key_store.verify, raw)
    if principal is None:
        raise ApiError(
            401,
            "invalid_api_key",
            "the API key or token is unknown, revoked, expired or invalid",
            {"WWW-Authenticate": f'{challenge}, error="invalid_token"'},
        )
    return principal


@dataclass(frozen=True, slots=True)
class Guards:
    """``Depends(...)`` markers, one per scope: a route lists one in ``dependencies`` or
    takes it as a parameter (``_key: Principal = guards.infer``) to see its caller."""

    read: Any
    infer: Any
    admin: Any


def make_guards(
    settings: ServeSettings,
    key_store: KeyVerifier | None,
    rate_limiter: RateLimiterLike | None,
    metrics: Metrics,
) -> Guards:
    """The three guards of an app: auth with ``key_store`` (unless ``require_auth`` is
    off), the scope, then one hit of ``rate_limiter`` per request (429s are counted)."""
    verifier = key_store if settings.require_auth else None

    def guard(scope: KeyScope) -> Callable[[Request], Awaitable[Principal]]:
        async def dependency(request: Request) -> Principal:
            principal = await authenticate(request, verifier)
            require_scope(principal, scope, request.url.path)
            route = getattr(request.scope.get("route"), "path", request.url.path)
            error = rate_limit_error(rate_limiter, principal.key_id, route)
            if error is not None:
                metrics.rate_limited.labels(route).inc()
                raise error
            return principal

        return dependency

    return Guards(
        read=Depends(guard(KeyScope.READ)),
        infer=Depends(guard(KeyScope.INFER)),
        admin=Depends(guard(KeyScope.ADMIN)),
    )
