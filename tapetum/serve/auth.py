"""API keys for the serving API: scopes, records, and a SQLite key store.

A raw key reads ``tpk_<key_id>_<secret>``: ``key_id`` (12 hex characters) is public and
names the key in listings, logs and rate limits; ``secret`` (``secrets.token_urlsafe(32)``,
256 bits of randomness) is shown once by :meth:`KeyStore.create` and never stored.

What is stored is ``HMAC-SHA256(pepper, secret)``. A slow password hash buys nothing for
a 256-bit random secret (nobody can enumerate the space), and it hands an unauthenticated
caller a lever: every well-formed bogus key used to cost the server one 64 MiB argon2id
verification. The HMAC takes microseconds and is compared with :func:`hmac.compare_digest`.
The *pepper* is a server secret kept outside the database, so a copy of the database alone
does not let anyone test guesses offline: ``pepper=`` given to the store, else the
environment variable ``TAPETUM_KEYS_PEPPER``, else the file ``<database>.pepper`` beside
the database (32 random bytes, created with mode 0600 on first use).

Keys made by older versions carry an argon2id hash; such a key is checked with argon2 once,
on its first successful use, and its hash is then rewritten as the HMAC (a transparent
migration; argon2-cffi is needed only while such keys remain).

The database file is created with mode 0600 atomically (``O_CREAT | O_EXCL``); an existing
one, or pepper file, that other users can read is logged as a warning.

Revocation: :meth:`KeyStore.verify` keeps a small in-process cache of keys it has verified
(keyed by ``sha256(raw key)``, valid for ``cache_ttl_s``), so that the REST app can answer
a known key on the event loop. Every :meth:`KeyStore.revoke` bumps a *revocation generation*
stored in the database; each store reads it at most every ``revocation_poll_s`` (1 s) and
drops its whole cache when it changed, so a revoke made by any process (``tapetum keys
revoke``, another replica) takes effect everywhere within about a second.

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
import hmac
import logging
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from tapetum.errors import ConfigError, KeyStoreError

__all__ = [
    "KEY_PREFIX",
    "PEPPER_ENV",
    "ApiKey",
    "KeyStore",
    "KeyStoreError",
    "Scope",
    "parse_scopes",
]

log = logging.getLogger(__name__)

KEY_PREFIX = "tpk"
"""First part of every raw key, so a leaked key is recognisable (e.g. by secret scanners)."""

PEPPER_ENV = "TAPETUM_KEYS_PEPPER"
"""Environment variable that may hold the server pepper (at least 32 characters)."""

_KEY_ID_HEX_CHARS = 12
_RAW_KEY = re.compile(r"tpk_([0-9a-f]{12})_([A-Za-z0-9_-]{16,128})")
_CACHE_MAX_ENTRIES = 4096
_SCHEMA_VERSION = 2
_HMAC_PREFIX = "hmac-sha256$"
_ARGON2_PREFIX = "$argon2"
_MIN_PEPPER_BYTES = 32
_PEPPER_SUFFIX = ".pepper"


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


_Row = tuple[str, str, str, str, float, float | None]


class KeyStore:
    """API keys in one SQLite table; thread-safe (one connection behind a lock).

    Args:
        path: database file (created with mode 0600 if missing) or ``":memory:"``.
        pepper: the HMAC key (at least 32 bytes). None: ``$TAPETUM_KEYS_PEPPER``, else the
            file ``<path>.pepper`` (created 0600 with 32 random bytes when the database
            holds no HMAC-hashed key yet); an in-memory store gets a random one.
        cache_ttl_s: how long a verified key is trusted without reading the database
            again; 0 disables the cache.
        revocation_poll_s: how often a cached answer re-reads the revocation generation
            (revocations by other processes take effect within this).

    Raises:
        KeyStoreError: the file cannot be opened or is not a Tapetum key database, or the
            pepper is missing for a database that has HMAC-hashed keys.
        ConfigError: a pepper shorter than 32 bytes.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        pepper: bytes | None = None,
        cache_ttl_s: float = 60.0,
        revocation_poll_s: float = 1.0,
    ) -> None:
        self._path = str(path)
        self._in_memory = self._path == ":memory:"
        self._cache_ttl_s = cache_ttl_s
        self._revocation_poll_s = revocation_poll_s
        self._lock = threading.Lock()
        # sha256(raw key) -> (key, monotonic expiry); insertion order = age.
        self._cache: dict[bytes, tuple[ApiKey, float]] = {}
        # Bumped by every revoke seen: a verify that raced a revoke must not cache its result.
        self._revocations = 0
        self._generation = 0
        self._generation_read_at = time.monotonic()
        self._dummy_digest = secrets.token_bytes(32)
        if not self._in_memory:
            _create_private_file(Path(self._path))
        try:
            self._db = sqlite3.connect(self._path, check_same_thread=False, timeout=5.0)
            with self._db:
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
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS key_store_meta "
                    "(name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
                )
                self._db.execute(
                    "INSERT OR IGNORE INTO key_store_meta (name, value) "
                    "VALUES ('revocation_generation', 0)"
                )
                self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            self._generation = self._read_generation()
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot open API key database {self._path!r}: {exc}") from exc
        self._pepper = self._resolve_pepper(pepper)

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
        secret_hash = self._hmac_text(secret)
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
        """The key for ``raw`` if this process verified it within ``cache_ttl_s`` and no
        revocation happened since, else None.

        No hashing, and the database only once per ``revocation_poll_s`` (one small read):
        cheap enough to call on the event loop, so a request with a recently seen key skips
        the worker-thread hop that :meth:`verify` needs. None means "not known here", not
        "invalid": call :meth:`verify` then.
        """
        if not isinstance(raw, str) or _RAW_KEY.fullmatch(raw) is None:
            return None
        digest = hashlib.sha256(raw.encode()).digest()
        with self._lock:
            self._poll_revocations_locked()
            cached = self._cache.get(digest)
        if cached is None or cached[1] <= time.monotonic():
            return None
        return cached[0]

    def verify(self, raw: str) -> ApiKey | None:
        """The key for ``raw``, or None when it is malformed, unknown, revoked or wrong.

        A well-formed key costs one database read and one HMAC (against a random digest when
        the id is unknown, so the work does not depend on which ids exist); the comparison
        is constant-time. A key still stored as argon2id (made by an older version) is
        verified with argon2 once and rewritten as HMAC.
        """
        match = _RAW_KEY.fullmatch(raw) if isinstance(raw, str) else None
        if match is None:
            return None
        key_id, secret = match.group(1), match.group(2)
        digest = hashlib.sha256(raw.encode()).digest()
        now = time.monotonic()
        with self._lock:
            self._poll_revocations_locked()
            cached = self._cache.get(digest)
            if cached is not None:
                if cached[1] > now:
                    return cached[0]
                del self._cache[digest]
            row = self._fetch_row(key_id)
            revocations_seen = self._revocations

        # Unknown id: compare against a random digest, the same work as for a real one.
        stored = row[3] if row is not None else _HMAC_PREFIX + self._dummy_digest.hex()
        if stored.startswith(_ARGON2_PREFIX):
            matched = _argon2_matches(stored, secret)
        else:
            matched = hmac.compare_digest(stored.encode(), self._hmac_text(secret).encode())
        if row is None or not matched or row[5] is not None:
            return None

        key = _row_to_key(row)
        with self._lock:
            if stored.startswith(_ARGON2_PREFIX):
                self._store_hash(key_id, self._hmac_text(secret))
            if self._cache_ttl_s > 0 and self._revocations == revocations_seen:
                self._remember(digest, key, now + self._cache_ttl_s)
        return key

    def revoke(self, key_id: str) -> bool:
        """Revoke a key now; True if this call revoked it, False if unknown or already revoked.

        Other processes sharing the database see it within their ``revocation_poll_s``.

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
                    if cursor.rowcount > 0:
                        self._db.execute(
                            "UPDATE key_store_meta SET value = value + 1 "
                            "WHERE name = 'revocation_generation'"
                        )
                generation = self._read_generation()
            except sqlite3.Error as exc:
                raise KeyStoreError(f"cannot revoke key in {self._path!r}: {exc}") from exc
            self._revocations += 1
            self._generation = generation
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

    def _hmac_text(self, secret: str) -> str:
        mac = hmac.new(self._pepper, secret.encode(), hashlib.sha256).hexdigest()
        return f"{_HMAC_PREFIX}{mac}"

    def _resolve_pepper(self, pepper: bytes | None) -> bytes:
        if pepper is None:
            env = os.environ.get(PEPPER_ENV)
            if env:
                pepper = env.encode()
            elif self._in_memory:
                pepper = secrets.token_bytes(_MIN_PEPPER_BYTES)
            else:
                pepper = self._pepper_from_file(Path(self._path + _PEPPER_SUFFIX))
        if len(pepper) < _MIN_PEPPER_BYTES:
            raise ConfigError(
                f"the API key pepper must be at least {_MIN_PEPPER_BYTES} bytes, got {len(pepper)}"
            )
        return pepper

    def _pepper_from_file(self, path: Path) -> bytes:
        if not path.exists():
            if self._has_hmac_keys():
                raise KeyStoreError(
                    f"the API key pepper file {path} is missing, and the keys in "
                    f"{self._path} were hashed with it: restore it (or set "
                    f"{PEPPER_ENV}); without it every key must be re-created"
                )
            _create_private_file(path, secrets.token_hex(_MIN_PEPPER_BYTES).encode())
        for _ in range(20):  # a process that just created it may still be writing it
            try:
                data = path.read_bytes().strip()
            except OSError as exc:
                raise KeyStoreError(f"cannot read the API key pepper file {path}: {exc}") from exc
            if data:
                return data
            time.sleep(0.01)
        raise KeyStoreError(f"the API key pepper file {path} is empty")

    def _has_hmac_keys(self) -> bool:
        try:
            row = self._db.execute(
                "SELECT 1 FROM api_keys WHERE secret_hash LIKE ? LIMIT 1", (_HMAC_PREFIX + "%",)
            ).fetchone()
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot read API keys from {self._path!r}: {exc}") from exc
        return row is not None

    def _read_generation(self) -> int:
        row = self._db.execute(
            "SELECT value FROM key_store_meta WHERE name = 'revocation_generation'"
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def _poll_revocations_locked(self) -> None:
        # Caller holds the lock. One indexed read per revocation_poll_s at most.
        now = time.monotonic()
        if now - self._generation_read_at < self._revocation_poll_s:
            return
        self._generation_read_at = now
        try:
            generation = self._read_generation()
        except sqlite3.Error:
            log.warning("cannot read the revocation generation of %s; dropping cached keys", self)
            self._cache.clear()
            return
        if generation != self._generation:
            self._generation = generation
            self._revocations += 1
            self._cache.clear()

    def _fetch_row(self, key_id: str) -> _Row | None:
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

    def _store_hash(self, key_id: str, secret_hash: str) -> None:
        # Caller holds the lock. Best effort: a failed rewrite leaves the old, valid hash.
        try:
            with self._db:
                self._db.execute(
                    "UPDATE api_keys SET secret_hash = ? WHERE key_id = ?",
                    (secret_hash, key_id),
                )
        except sqlite3.Error:
            log.warning("could not rewrite the hash of API key %s as HMAC", key_id)

    def _remember(self, digest: bytes, key: ApiKey, expires_at: float) -> None:
        # Caller holds the lock.
        if len(self._cache) >= _CACHE_MAX_ENTRIES:
            now = time.monotonic()
            for stale in [d for d, (_, exp) in self._cache.items() if exp <= now]:
                del self._cache[stale]
            while len(self._cache) >= _CACHE_MAX_ENTRIES:
                del self._cache[next(iter(self._cache))]  # oldest first
        self._cache[digest] = (key, expires_at)

    def __repr__(self) -> str:
        return f"KeyStore({self._path!r})"


def _row_to_key(row: _Row) -> ApiKey:
    key_id, name, scopes_text, _hash, created_at, revoked_at = row
    scopes = frozenset(Scope(s) for s in scopes_text.split(",") if s)
    return ApiKey(key_id, name, scopes, float(created_at), revoked=revoked_at is not None)


def _argon2_matches(stored_hash: str, secret: str) -> bool:
    """A key hashed by an older version (argon2id): verified once, then rewritten."""
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(PasswordHasher().verify(stored_hash, secret))
    except (VerificationError, InvalidHashError):
        return False


def _create_private_file(path: Path, content: bytes = b"") -> None:
    """Create ``path`` with mode 0600 from the start (no window where others can read it);
    an existing file is left alone, with a warning when others may read it."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        _warn_if_readable_by_others(path)
        return
    except OSError as exc:
        raise KeyStoreError(f"cannot open or create {path}: {exc}") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


def _warn_if_readable_by_others(path: Path) -> None:
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "%s is accessible by other users (mode %s): run `chmod 600 %s`",
                path,
                oct(stat.S_IMODE(mode)),
                path,
            )
