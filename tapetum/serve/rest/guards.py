"""Authentication, scope and rate limit of a REST request, as one FastAPI dependency per
scope (:class:`Guards`).

A guard reads the key (``Authorization: Bearer <key>`` or ``X-API-Key``) and verifies it
through the shared :class:`~tapetum.serve.authenticator.Authenticator`: a key verified
recently answers on the event loop, anything else in a worker thread; failures count
against the client's address (429 past its budget, before anything is verified). Then it
checks the route's scope (403) and counts one call of the key on the route template (429
past its budget). With ``require_auth`` off every request is :class:`Anonymous`, which may
do everything.

Each guarded request carries a :class:`~tapetum.serve.authenticator.CredentialWatch`
(:func:`credential_watch`): a long-lived response (the SSE results) re-checks its key with
it and ends when the key is revoked or the token expires.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import Depends, Request

from tapetum.serve.auth import Scope as KeyScope
from tapetum.serve.authenticator import Authenticator, CredentialWatch, credential_from_headers
from tapetum.serve.rest.metrics import Metrics
from tapetum.serve.settings import (
    KeyVerifier,
    Principal,
    RateLimiterLike,
    ServeSettings,
    default_auth_failure_limiter,
    rate_limit_error,
    require_scope,
)

if TYPE_CHECKING:
    from tapetum.serve.ratelimit import AuthFailureLimiter

__all__ = ["Anonymous", "Guards", "authenticate", "credential_watch", "make_guards"]


@dataclass(frozen=True, slots=True)
class Anonymous:
    """The principal of every request when ``require_auth`` is off."""

    key_id: str = "anonymous"

    def allows(self, scope: KeyScope) -> bool:
        return True


def _client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def authenticate(request: Request, authenticator: Authenticator | None) -> Principal:
    """The request's principal: 401 without a key or with one the verifier refuses, 429
    when the client's address failed too often, 503 when the key store is unreadable."""
    if authenticator is None:
        return Anonymous()
    raw = credential_from_headers(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    address = _client_address(request)
    principal = authenticator.precheck(raw, address)
    if principal is None:
        assert raw is not None
        # Not known to the cache: a database read, a JWT signature, maybe a JWKS fetch.
        principal = await anyio.to_thread.run_sync(authenticator.verify, raw, address)
    return principal


def credential_watch(request: Request) -> CredentialWatch:
    """The watch on the credential of a request that passed a guard."""
    watch = getattr(request.state, "credential_watch", None)
    if not isinstance(watch, CredentialWatch):  # a route without a guard
        return CredentialWatch(None, None, Anonymous())
    return watch


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
    auth_failures: AuthFailureLimiter | None = None,
) -> Guards:
    """The three guards of an app: auth with ``key_store`` (unless ``require_auth`` is
    off; failures counted by ``auth_failures``, default
    :func:`~tapetum.serve.settings.default_auth_failure_limiter`), the scope, then one hit
    of ``rate_limiter`` per request (429s are counted)."""
    authenticator = None
    if settings.require_auth and key_store is not None:
        if auth_failures is None:
            auth_failures = default_auth_failure_limiter(settings)
        authenticator = Authenticator(key_store, auth_failures)

    def guard(scope: KeyScope) -> Callable[[Request], Awaitable[Principal]]:
        async def dependency(request: Request) -> Principal:
            principal = await authenticate(request, authenticator)
            raw = credential_from_headers(
                request.headers.get("authorization"), request.headers.get("x-api-key")
            )
            request.state.credential_watch = CredentialWatch(
                authenticator, raw, principal, settings.credential_recheck_s
            )
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
