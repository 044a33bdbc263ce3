"""API keys for the serving API: scopes, records, and a SQLite key store.

A raw key reads ``tpk_<key_id>_<secret>``: ``key_id`` (12 hex characters) is public and
names the key in listings, logs and rate limits; ``secret`` (``secrets.token_urlsafe(32)``,
256 bits) is shown once by :meth:`KeyStore.create` and never stored. The store keeps only
an argon2id hash of the secret (argon2-cffi ``PasswordHasher``, RFC 9106 low-memory
parameters by default).

Hashing is deliberately slow (tens of milliseconds), so :meth:`KeyStore.verify` keeps a
small in-process cache of keys it has verified, keyed by ``sha256(raw key)`` and valid for
``cache_ttl_s`` (60 s by default). :meth:`KeyStore.revoke` clears the key from that
process's cache at once; another process sharing the same database file sees the
revocation when its cache entry expires, so revocation takes effect everywhere within
``cache_ttl_s``.

Out of scope for this slice: JWT / OIDC bearer-token verification. Only API keys are
accepted.

Example::

    from tapetum.serve.auth import KeyStore, Scope

    store = KeyStore(":memory:")
    record, raw = store.create("ci-bot", ["infer", "read"])  # show `raw` to the user once
    key = store.verify(raw)
    assert key is not None and key.allows(Scope.INFER) and not key.allows(Scope.ADMIN)
    store.revoke(record.key_id)
    assert store.verify(raw) is None
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tapetum.errors import ConfigError, TapetumError

KEY_PREFIX = "tpk"
"""First part of every raw key, so a leaked key is recognisable (e.g. by secret scanners)."""

_KEY_ID_HEX_CHARS = 12
_RAW_KEY = re.compile(r"tpk_([0-9a-f]{12})_([A-Za-z0-9_-]{16,128})")
_CACHE_MAX_ENTRIES = 4096
_SCHEMA_VERSION = 1


class KeyStoreError(TapetumError):
    """The key database cannot be opened, read or written (bad path, corrupt file)."""


class Scope(StrEnum):
    """What a key may do. ``ADMIN`` implies every other scope."""

    READ = "read"
    INFER = "infer"
    ADMIN = "admin"


def parse_scopes(scopes: Iterable[Scope | str]) -> frozenset[Scope]:
    """Scopes from enum members or their names (``"infer"``, ``" READ "``).

    Raises:
        ConfigError: an unknown scope name, or no scope at all.
    """
    parsed: set[Scope] = set()
    for scope in scopes:
        if isinstance(scope, Scope):
            parsed.add(scope)
            continue
        name = scope.strip().lower()
        try:
            parsed.add(Scope(name))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ConfigError(f"unknown scope {scope!r}: expected one of {known}") from None
    if not parsed:
        raise ConfigError("an API key needs at least one scope (read, infer or admin)")
    return frozenset(parsed)


@dataclass(frozen=True)
class ApiKey:
    """One API key as stored, without its secret.

    ``created_at`` is a Unix time in seconds.
    """

    key_id: str
    name: str
    scopes: frozenset[Scope]
    created_at: float
    revoked: bool

    def allows(self, scope: Scope) -> bool:
        """True when this key may act in ``scope`` (``ADMIN`` allows everything).

        A revoked key allows nothing.
        """
        if self.revoked:
            return False
        return Scope.ADMIN in self.scopes or scope in self.scopes


class KeyStore:
    """API keys in one SQLite table; thread-safe (one connection behind a lock).

    Args:
        path: database file (created if missing, mode 0600) or ``":memory:"``.
        hasher: argon2 parameters for new hashes; the default is argon2-cffi's (argon2id,
            RFC 9106 low-memory profile). Stored hashes carry their own parameters, and a
            hash made with other parameters is re-hashed on its next successful verify.
        cache_ttl_s: how long a verified key is trusted without hashing again; 0 disables
            the cache. Bounds how long another process keeps accepting a revoked key.

    Raises:
        KeyStoreError: the file cannot be opened or is not a Tapetum key database.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        hasher: PasswordHasher | None = None,
        cache_ttl_s: float = 60.0,
    ) -> None:
        self._path = str(path)
        self._hasher = hasher if hasher is not None else PasswordHasher()
        self._cache_ttl_s = cache_ttl_s
        self._lock = threading.Lock()
        # sha256(raw key) -> (key, monotonic expiry); insertion order = age.
        self._cache: dict[bytes, tuple[ApiKey, float]] = {}
        self._dummy_hash: str | None = None
        # Bumped by every revoke: a verify that raced a revoke must not cache its result.
        self._revocations = 0
        is_new_file = self._path != ":memory:" and not Path(self._path).exists()
        try:
            self._db = sqlite3.connect(self._path, check_same_thread=False, timeout=5.0)
            if is_new_file:
                _restrict_permissions(self._path)
            self._db.execute(
                """CREATE TABLE IF NOT EXISTS api_keys (
                    key_id      TEXT PRIMARY KEY,
                    name        TEXT NOT NULL,
                    scopes      TEXT NOT NULL,
                    secret_hash TEXT NOT NULL,
                    created_at  REAL NOT NULL,
                    revoked_at  REAL
                )"""
            )
            self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            self._db.commit()
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot open API key database {self._path!r}: {exc}") from exc

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
            self._cache.clear()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- operations ------------------------------------------------------------------------

    def create(self, name: str, scopes: Iterable[Scope | str]) -> tuple[ApiKey, str]:
        """Make a key; return its record and the raw key, which is never available again.

        Raises:
            ConfigError: empty name, unknown or missing scopes.
            KeyStoreError: the database cannot be written.
        """
        name = name.strip()
        if not name:
            raise ConfigError("an API key needs a non-empty name")
        parsed = parse_scopes(scopes)
        secret = secrets.token_urlsafe(32)
        secret_hash = self._hasher.hash(secret)  # outside the lock: ~tens of ms
        created_at = time.time()
        scopes_text = ",".join(sorted(s.value for s in parsed))
        with self._lock:
            for _ in range(5):  # 48-bit ids: a clash is astronomically rare, but retry
                key_id = secrets.token_hex(_KEY_ID_HEX_CHARS // 2)
                try:
                    with self._db:
                        self._db.execute(
                            "INSERT INTO api_keys (key_id, name, scopes, secret_hash, created_at)"
                            " VALUES (?, ?, ?, ?, ?)",
                            (key_id, name, scopes_text, secret_hash, created_at),
                        )
                    break
                except sqlite3.IntegrityError:
                    continue
                except sqlite3.Error as exc:
                    raise KeyStoreError(f"cannot write API key to {self._path!r}: {exc}") from exc
            else:  # pragma: no cover - needs five 48-bit collisions in a row
                raise KeyStoreError("could not allocate a unique key id; try again")
        record = ApiKey(key_id, name, parsed, created_at, revoked=False)
        return record, f"{KEY_PREFIX}_{key_id}_{secret}"

    def verify_cached(self, raw: str) -> ApiKey | None:
        """The key for ``raw`` if this process verified it within ``cache_ttl_s``, else None.

        No hashing and no database: cheap enough to call on the event loop, so a request
        with a recently seen key skips the worker-thread hop that :meth:`verify` needs.
        None means "not known here", not "invalid": call :meth:`verify` then.
        """
        if not isinstance(raw, str) or _RAW_KEY.fullmatch(raw) is None:
            return None
        digest = hashlib.sha256(raw.encode()).digest()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is None or cached[1] <= time.monotonic():
            return None
        return cached[0]

    def verify(self, raw: str) -> ApiKey | None:
        """The key for ``raw``, or None when it is malformed, unknown, revoked or wrong.

        Every well-formed key costs one argon2 verification (against a dummy hash when the
        id is unknown), so response time does not reveal which key ids exist; the secret
        comparison itself is argon2's constant-time one.
        """
        match = _RAW_KEY.fullmatch(raw) if isinstance(raw, str) else None
        if match is None:
            return None
        key_id, secret = match.group(1), match.group(2)
        digest = hashlib.sha256(raw.encode()).digest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None:
                if cached[1] > now:
                    return cached[0]
                del self._cache[digest]
            row = self._fetch_row(key_id)
            revocations_seen = self._revocations

        stored_hash = row[3] if row is not None else self._get_dummy_hash()
        try:
            self._hasher.verify(stored_hash, secret)
            matched = True
        except (VerificationError, InvalidHashError):
            matched = False
        if row is None or not matched or row[5] is not None:
            return None

        key = _row_to_key(row)
        upgraded_hash = (
            self._hasher.hash(secret) if self._hasher.check_needs_rehash(stored_hash) else None
        )
        with self._lock:
            if upgraded_hash is not None:
                self._store_hash(key_id, upgraded_hash)
            if self._cache_ttl_s > 0 and self._revocations == revocations_seen:
                self._remember(digest, key, now + self._cache_ttl_s)
        return key

    def revoke(self, key_id: str) -> bool:
        """Revoke a key now; True if this call revoked it, False if unknown or already revoked.

        Raises:
            KeyStoreError: the database cannot be written.
        """
        with self._lock:
            try:
                with self._db:
                    cursor = self._db.execute(
                        "UPDATE api_keys SET revoked_at = ? "
                        "WHERE key_id = ? AND revoked_at IS NULL",
                        (time.time(), key_id),
                    )
            except sqlite3.Error as exc:
                raise KeyStoreError(f"cannot revoke key in {self._path!r}: {exc}") from exc
            self._revocations += 1
            stale = [d for d, (key, _) in self._cache.items() if key.key_id == key_id]
            for digest in stale:
                del self._cache[digest]
            return cursor.rowcount > 0

    def get(self, key_id: str) -> ApiKey | None:
        """The record for ``key_id`` (revoked or not), or None."""
        with self._lock:
            row = self._fetch_row(key_id)
        return _row_to_key(row) if row is not None else None

    def list(self) -> builtins.list[ApiKey]:
        """Every key, revoked ones included, oldest first. Secrets are never returned."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT key_id, name, scopes, secret_hash, created_at, revoked_at "
                    "FROM api_keys ORDER BY created_at, key_id"
                ).fetchall()
            except sqlite3.Error as exc:
                raise KeyStoreError(f"cannot read API keys from {self._path!r}: {exc}") from exc
        return [_row_to_key(row) for row in rows]

    # -- internals (callers hold the lock where noted) -------------------------------------

    def _fetch_row(self, key_id: str) -> tuple[str, str, str, str, float, float | None] | None:
        # Caller holds the lock.
        try:
            row = self._db.execute(
                "SELECT key_id, name, scopes, secret_hash, created_at, revoked_at "
                "FROM api_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot read API keys from {self._path!r}: {exc}") from exc
        return row  # type: ignore[no-any-return]

    def _get_dummy_hash(self) -> str:
        # Racing threads may each compute one; any of them is as good.
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))
        return self._dummy_hash

    def _store_hash(self, key_id: str, secret_hash: str) -> None:
        # Caller holds the lock. Best effort: a failed upgrade leaves the old, valid hash.
        try:
            with self._db:
                self._db.execute(
                    "UPDATE api_keys SET secret_hash = ? WHERE key_id = ?",
                    (secret_hash, key_id),
                )
        except sqlite3.Error:
            pass

    def _remember(self, digest: bytes, key: ApiKey, expires_at: float) -> None:
        # Caller holds the lock.
        if len(self._cache) >= _CACHE_MAX_ENTRIES:
            now = time.monotonic()
            for stale in [d for d, (_, exp) in self._cache.items() if exp <= now]:
                del self._cache[stale]
            while len(self._cache) >= _CACHE_MAX_ENTRIES:
                del self._cache[next(iter(self._cache))]  # oldest first
        self._cache[digest] = (key, expires_at)


def _row_to_key(row: tuple[str, str, str, str, float, float | None]) -> ApiKey:
    key_id, name, scopes_text, _hash, created_at, revoked_at = row
    scopes = frozenset(Scope(s) for s in scopes_text.split(",") if s)
    return ApiKey(key_id, name, scopes, float(created_at), revoked=revoked_at is not None)


def _restrict_permissions(path: str) -> None:
    # The file holds only hashes, but there is no reason for anyone else to read it.
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)
