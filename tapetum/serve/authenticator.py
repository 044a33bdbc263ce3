"""Who is calling: one authentication path for the REST and gRPC APIs.

:class:`Authenticator` turns a raw credential (an API key or a JWT) and the client's
address into a :class:`~tapetum.serve.settings.Principal`, or a client-visible
:class:`~tapetum.serve.settings.ApiError`:

- no credential: 401 ``missing_api_key``; a credential that does not verify: 401
  ``invalid_api_key``, and one failure counted against the client's address;
- an address over its failure budget (:class:`~tapetum.serve.ratelimit.AuthFailureLimiter`,
  20 per minute by default): 429 ``too_many_auth_failures`` *before* anything is verified,
  except for a key this process verified recently (the key store's cache), so a guesser
  cannot lock out a legitimate client behind the same address;
- a key store that cannot be read: 503 ``auth_unavailable`` with a generic reason (the
  database path and error go to the server log, never to an unauthenticated caller).

The work is split so that the REST app can do the cheap part on the event loop
(:meth:`Authenticator.precheck`: the failure budget and the verified-key cache) and only a
cache miss in a worker thread (:meth:`Authenticator.verify`).

:class:`CredentialWatch` keeps checking the credential of a long-lived call (an SSE
subscription, a gRPC ``DetectStream`` or ``StreamResults``): at most every ``recheck_s`` it
verifies the credential again (a cache hit costs a dict lookup; the key store drops its
cache within a second of a revocation by any process) and it ends the call at a token's
``exp``.

Example::

    auth = Authenticator(key_store, AuthFailureLimiter())
    principal = auth.precheck(raw, "203.0.113.9") or auth.verify(raw, "203.0.113.9")
    watch = CredentialWatch(auth, raw, principal)
    ...
    watch.check()  # raises ApiError(401) once the key is revoked or the token expired
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

from tapetum.errors import TapetumError
from tapetum.serve.settings import (
    MAX_CREDENTIAL_CHARS,
    ApiError,
    CachingKeyVerifier,
    KeyVerifier,
    Principal,
)

if TYPE_CHECKING:
    from tapetum.serve.ratelimit import AuthFailureLimiter

__all__ = ["Authenticator", "CredentialWatch", "credential_from_headers"]

log = logging.getLogger(__name__)

_CHALLENGE = 'Bearer realm="tapetum"'


def credential_from_headers(authorization: str | None, api_key: str | None) -> str | None:
    """The credential of ``Authorization: Bearer <x>`` or else ``X-API-Key: <x>``."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return (api_key or "").strip() or None


class Authenticator:
    """Verifies credentials, counts failures per client address, hides store errors.

    Args:
        verifier: the key store / JWT verifier (see ``default_key_store``).
        failures: failed authentications per address; None: not limited.
        missing_hint: how to send a key, for the 401 of a call without one.
    """

    def __init__(
        self,
        verifier: KeyVerifier,
        failures: AuthFailureLimiter | None = None,
        *,
        missing_hint: str = "'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    ) -> None:
        self.verifier = verifier
        self.failures = failures
        self.missing_hint = missing_hint

    def precheck(self, raw: str | None, address: str) -> Principal | None:
        """The cheap part, fine on an event loop: the principal of a recently verified
        key, or None when :meth:`verify` must run.

        Raises:
            ApiError: 401 without a credential; 429 when ``address`` failed too often.
        """
        if raw is None:
            raise ApiError(
                401,
                "missing_api_key",
                f"this call needs an API key: {self.missing_hint}",
                {"WWW-Authenticate": _CHALLENGE},
            )
        if len(raw) <= MAX_CREDENTIAL_CHARS and isinstance(self.verifier, CachingKeyVerifier):
            try:
                principal = self.verifier.verify_cached(raw)
            except TapetumError as exc:
                raise _unavailable(exc) from None
            if principal is not None:
                return principal
        if self.failures is not None:
            decision = self.failures.check(address)
            if not decision.allowed:
                retry = max(1, math.ceil(decision.retry_after_s))
                raise ApiError(
                    429,
                    "too_many_auth_failures",
                    f"too many failed authentications from this address; retry in {retry} s",
                    {"Retry-After": str(retry)},
                )
        return None

    def verify(self, raw: str, address: str) -> Principal:
        """The blocking part (a database read, a JWT signature, maybe a JWKS fetch).

        Raises:
            ApiError: 401 when the credential does not verify (one failure is counted for
                ``address``); 503 when the key store cannot be read.
        """
        try:
            principal = self.verifier.verify(raw) if len(raw) <= MAX_CREDENTIAL_CHARS else None
        except TapetumError as exc:
            raise _unavailable(exc) from None
        if principal is None:
            if self.failures is not None:
                self.failures.record(address)
            raise ApiError(
                401,
                "invalid_api_key",
                "the API key or token is unknown, revoked, expired or invalid",
                {"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
            )
        return principal

    def authenticate(self, raw: str | None, address: str) -> Principal:
        """:meth:`precheck`, then :meth:`verify` when needed (blocking; for threads)."""
        principal = self.precheck(raw, address)
        if principal is not None:
            return principal
        assert raw is not None
        return self.verify(raw, address)

    def still_valid(self, raw: str) -> bool:
        """True while ``raw`` still verifies (no failure is counted; blocking on a miss)."""
        cached = isinstance(self.verifier, CachingKeyVerifier) and (
            self.verifier.verify_cached(raw) is not None
        )
        return cached or self.verifier.verify(raw) is not None


class CredentialWatch:
    """The credential of one long-lived call, re-checked as the call goes on.

    Args:
        authenticator: None when auth is off (the watch never ends a call).
        raw: the credential the call was authenticated with.
        principal: who it was; a token's ``expires_at`` ends the call at that time.
        recheck_s: verify the credential again at most this often.
    """

    def __init__(
        self,
        authenticator: Authenticator | None,
        raw: str | None,
        principal: Principal,
        recheck_s: float = 1.0,
    ) -> None:
        self.authenticator = authenticator
        self.raw = raw
        self.principal = principal
        self.recheck_s = recheck_s
        expires_at = getattr(principal, "expires_at", None)
        self.expires_at: float | None = float(expires_at) if expires_at is not None else None
        self._checked_at = time.monotonic()

    def seconds_left(self) -> float:
        """Seconds until the token expires (``inf`` for API keys)."""
        if self.expires_at is None:
            return math.inf
        return self.expires_at - time.time()

    def due(self) -> bool:
        """True when :meth:`check` would verify again (or the token has expired)."""
        if self.authenticator is None:
            return False
        return self.seconds_left() <= 0 or time.monotonic() - self._checked_at >= self.recheck_s

    def check(self) -> None:
        """Raise when the call must end; verifies at most every ``recheck_s`` (blocking on
        a key store cache miss: call from a worker thread, or use :meth:`due` first).

        Raises:
            ApiError: 401 ``token_expired`` or ``credential_revoked``; 503 when the key
                store cannot be read.
        """
        if self.authenticator is None or self.raw is None:
            return
        if self.seconds_left() <= 0:
            raise ApiError(401, "token_expired", "the token expired during the call")
        if time.monotonic() - self._checked_at < self.recheck_s:
            return
        try:
            valid = self.authenticator.still_valid(self.raw)
        except TapetumError as exc:
            raise _unavailable(exc) from None
        self._checked_at = time.monotonic()
        if not valid:
            raise ApiError(
                401,
                "credential_revoked",
                "the API key was revoked (or the token is no longer valid) during the call",
            )


def _unavailable(exc: TapetumError) -> ApiError:
    # The detail (a database path, an I/O error) is for the operator, not for the caller.
    log.error("authentication unavailable: %s: %s", type(exc).__name__, exc)
    return ApiError(
        503,
        "auth_unavailable",
        "authentication is unavailable right now; try again later",
        {"Retry-After": "1"},
    )
