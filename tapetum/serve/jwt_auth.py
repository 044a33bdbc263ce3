"""JWT (OIDC) bearer tokens for the serving API, next to API keys.

:class:`JwtVerifier` checks a token signed by an OIDC provider: the signature against the
provider's JWKS (a URL, fetched with ``jwt.PyJWKClient`` and cached, or a local JSON file),
``exp`` / ``nbf`` / ``iat`` (with ``leeway_s`` of clock skew), ``iss`` and ``aud``. Scopes
come from ``scope_claim`` (a space-separated string, as OAuth 2 writes ``scope``, or a
list); names that are not a :class:`~tapetum.serve.auth.Scope` (``openid``, ``profile``)
are ignored. The principal's ``key_id`` is ``jwt:<sub>``: rate limits and stream
ownership count per subject, in a namespace of their own (a token whose ``sub`` is some API
key's id does not share that key's budget or streams).

The JWKS must come over ``https://`` or from a local file: over plain ``http://`` anyone on
the path could substitute their own signing keys.

:class:`ChainedVerifier` is the :class:`~tapetum.serve.settings.KeyVerifier` the servers
use when JWT is configured: credentials shaped like a JWT (three dot-separated base64url
parts) go to the JWT verifier, anything else (``tpk_...`` keys) to the key store.

Every verifier here answers None for a credential it does not accept and logs why at
debug level only (the client sees one 401 whatever the reason).

Needs PyJWT with its crypto extra (``pyjwt[crypto]``, in the ``serve`` extra).

Example::

    from tapetum.serve.jwt_auth import ChainedVerifier, JwtVerifier

    verifier = ChainedVerifier(
        key_store,
        JwtVerifier("https://id.example.com/", "tapetum", "https://id.example.com/jwks"),
    )
    principal = verifier.verify(raw)  # an ApiKey, a JwtPrincipal, or None
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from tapetum.errors import ConfigError
from tapetum.serve.auth import Scope

if TYPE_CHECKING:
    from tapetum.serve.settings import KeyVerifier, Principal

__all__ = [
    "JWT_PRINCIPAL_PREFIX",
    "ChainedVerifier",
    "JwtPrincipal",
    "JwtVerifier",
    "looks_like_jwt",
]

_log = logging.getLogger(__name__)

#: Prefix of a JWT principal's ``key_id`` (API key ids are bare hex).
JWT_PRINCIPAL_PREFIX = "jwt:"

#: A compact JWS: header.payload.signature, each base64url without padding.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def looks_like_jwt(raw: str) -> bool:
    """True when ``raw`` has the shape of a compact JWT (not whether it is valid)."""
    return _JWT_SHAPE.fullmatch(raw) is not None


@dataclass(frozen=True, slots=True)
class JwtPrincipal:
    """A caller authenticated by a JWT (fits ``tapetum.serve.settings.Principal``).

    Attributes:
        subject: the token's ``sub``.
        scopes: the Tapetum scopes the token grants (``ADMIN`` implies the others).
        expires_at: the token's ``exp`` (Unix seconds).
    """

    subject: str
    scopes: frozenset[Scope]
    expires_at: float

    @property
    def key_id(self) -> str:
        """``jwt:<sub>``: the name rate limits and ownership use, apart from API key ids."""
        return f"{JWT_PRINCIPAL_PREFIX}{self.subject}"

    def allows(self, scope: Scope) -> bool:
        """True when the token grants ``scope`` (or ``ADMIN``) and has not expired."""
        if time.time() >= self.expires_at:
            return False
        return Scope.ADMIN in self.scopes or scope in self.scopes


class JwtVerifier:
    """Verifies OIDC access tokens against one issuer, audience and JWKS.

    Args:
        issuer: the exact ``iss`` required.
        audience: the ``aud`` required (one of the token's audiences).
        jwks: the issuer's JWKS: an ``https://`` URL, or a local JSON file path (re-read
            when its modification time changes, so keys can be rotated in place).
        scope_claim: claim holding the scopes (``scope``; some providers use ``scp``).
        algorithms: signature algorithms accepted; asymmetric ones only (a JWKS holds
            public keys, and ``none`` / HMAC would let a token pick its own trust).
        leeway_s: clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        jwks_cache_s: how long a fetched JWKS is trusted before fetching again (URL only).

    Raises:
        ConfigError: an empty issuer or audience, a symmetric or unknown algorithm, a JWKS
            URL that is not ``https://``, or a local JWKS file that is missing or holds no
            usable key.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks: str,
        *,
        scope_claim: str = "scope",
        algorithms: Sequence[str] = ("RS256", "ES256"),
        leeway_s: float = 30,
        jwks_cache_s: float = 300,
    ) -> None:
        if not issuer or not audience:
            raise ConfigError("JWT verification needs an issuer and an audience")
        bad = [a for a in algorithms if a not in _ASYMMETRIC_ALGORITHMS]
        if bad or not algorithms:
            raise ConfigError(
                f"JWT algorithms must be asymmetric ones of {sorted(_ASYMMETRIC_ALGORITHMS)}, "
                f"got {list(algorithms)}"
            )
        self.issuer = issuer
        self.audience = audience
        self.scope_claim = scope_claim
        self.algorithms = tuple(algorithms)
        self.leeway_s = leeway_s
        self._lock = threading.Lock()
        self._client: jwt.PyJWKClient | None = None
        self._file: Path | None = None
        self._file_mtime = 0.0
        self._file_keys: jwt.PyJWKSet | None = None
        scheme = jwks.partition("://")[0].lower() if "://" in jwks else ""
        if scheme and scheme != "https":
            raise ConfigError(
                f"the JWKS must be an https:// URL or a local file, not {scheme}:// "
                "(whoever can alter the JWKS in transit can sign tokens)"
            )
        if scheme == "https":
            self._client = jwt.PyJWKClient(
                jwks, cache_jwk_set=True, lifespan=jwks_cache_s, timeout=5
            )
        else:
            self._file = Path(jwks)
            self._load_file()

    def verify(self, raw: str) -> JwtPrincipal | None:
        """The principal of a valid token, or None (the reason is logged at debug)."""
        try:
            header = jwt.get_unverified_header(raw)
            alg = header.get("alg")
            if alg not in self.algorithms:
                _log.debug("JWT rejected: algorithm %r is not accepted", alg)
                return None
            key = self._signing_key(header.get("kid"))
            if key is None:
                return None
            claims: dict[str, Any] = jwt.decode(
                raw,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            _log.debug("JWT rejected: %s: %s", type(exc).__name__, exc)
            return None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            _log.debug("JWT rejected: no usable 'sub' claim")
            return None
        return JwtPrincipal(sub, self._scopes(claims.get(self.scope_claim)), float(claims["exp"]))

    # -- internals --------------------------------------------------------------------------

    def _signing_key(self, kid: object) -> jwt.PyJWK | None:
        if kid is not None and not isinstance(kid, str):
            _log.debug("JWT rejected: 'kid' is not a string")
            return None
        if self._client is not None:
            if kid is None:
                _log.debug("JWT rejected: no 'kid' in the header")
                return None
            return self._client.get_signing_key(kid)  # raises PyJWKClientError if unknown
        with self._lock:
            self._maybe_reload()
            keys = self._file_keys
        assert keys is not None
        if kid is None:
            if len(keys.keys) == 1:
                return keys.keys[0]
            _log.debug("JWT rejected: no 'kid' and the JWKS holds several keys")
            return None
        for key in keys.keys:
            if key.key_id == kid:
                return key
        _log.debug("JWT rejected: unknown key id %r", kid)
        return None

    def _load_file(self) -> None:
        assert self._file is not None
        try:
            mtime = self._file.stat().st_mtime
            data = json.loads(self._file.read_text(encoding="utf-8"))
            keys = jwt.PyJWKSet.from_dict(data)
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ConfigError(f"cannot load the JWKS file {self._file}: {exc}") from exc
        self._file_keys, self._file_mtime = keys, mtime

    def _maybe_reload(self) -> None:
        # Caller holds the lock. A file that turns unreadable keeps the last good keys.
        assert self._file is not None
        try:
            changed = self._file.stat().st_mtime != self._file_mtime
        except OSError:
            return
        if changed:
            try:
                self._load_file()
            except ConfigError as exc:
                _log.warning("%s; keeping the previous keys", exc)

    def _scopes(self, claim: object) -> frozenset[Scope]:
        names: list[object]
        if isinstance(claim, str):
            names = list(claim.split())
        elif isinstance(claim, list):
            names = list(claim)
        else:
            return frozenset()
        scopes: set[Scope] = set()
        for name in names:
            if not isinstance(name, str):
                continue
            try:
                scopes.add(Scope(name.strip().lower()))
            except ValueError:
                continue  # openid, profile, ... mean nothing here
        return frozenset(scopes)


class ChainedVerifier:
    """API keys and JWTs behind one ``verify`` (fits ``KeyVerifier``).

    Args:
        key_store: verifies everything that is not JWT-shaped; None: JWTs only.
        jwt_verifier: verifies JWT-shaped credentials.
    """

    def __init__(self, key_store: KeyVerifier | None, jwt_verifier: JwtVerifier) -> None:
        self.key_store = key_store
        self.jwt_verifier = jwt_verifier

    def verify(self, raw: str) -> Principal | None:
        if looks_like_jwt(raw):
            return self.jwt_verifier.verify(raw)
        if self.key_store is None:
            return None
        return self.key_store.verify(raw)

    def verify_cached(self, raw: str) -> Principal | None:
        """API keys from the key store's cache; None for JWTs (verified per request)."""
        from tapetum.serve.settings import CachingKeyVerifier

        if looks_like_jwt(raw) or not isinstance(self.key_store, CachingKeyVerifier):
            return None
        return self.key_store.verify_cached(raw)
