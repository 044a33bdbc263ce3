"""API keys: create, verify, revoke, list; only peppered HMACs reach the database, and old
argon2id hashes migrate on first use."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("argon2", reason="API keys need the serve extra (argon2-cffi)")

from argon2 import PasswordHasher

from tapetum.errors import ConfigError
from tapetum.serve.auth import PEPPER_ENV, ApiKey, KeyStore, KeyStoreError, Scope, parse_scopes

# Cheap argon2id parameters for the legacy hashes the migration tests plant.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def _no_pepper_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PEPPER_ENV, raising=False)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    with KeyStore(tmp_path / "keys.sqlite") as key_store:
        yield key_store


def test_create_then_verify_returns_the_record(store: KeyStore) -> None:
    record, raw = store.create("ci-bot", ["infer", Scope.READ])
    assert raw.startswith(f"tpk_{record.key_id}_")
    assert len(raw) > 50  # 256-bit secret
    assert record.scopes == {Scope.INFER, Scope.READ}
    assert record.name == "ci-bot" and not record.revoked
    assert store.verify(raw) == record


def test_each_create_gives_a_distinct_id_and_secret(store: KeyStore) -> None:
    (first, raw1), (second, raw2) = store.create("a", ["read"]), store.create("a", ["read"])
    assert first.key_id != second.key_id
    assert raw1.split("_", 2)[2] != raw2.split("_", 2)[2]


def test_wrong_secret_for_a_real_key_id_is_refused(store: KeyStore) -> None:
    record, raw = store.create("ci-bot", ["infer"])
    forged = f"tpk_{record.key_id}_{'A' * 43}"
    assert store.verify(forged) is None
    assert store.verify(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None
    assert store.verify(raw) == record  # the refusals did not disturb the real key


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "tpk_",
        "not-a-key",
        "Bearer tpk_0123456789ab_" + "x" * 43,
        "tpk_0123456789ab",
        "tpk_XYZ_" + "x" * 43,
        "tpk_0123456789ab_short",
        "tpk_0123456789ab_" + "x" * 43 + "\n",
        "tpk_0123456789ab_" + "x" * 500,
    ],
)
def test_malformed_keys_are_refused(store: KeyStore, raw: str) -> None:
    store.create("ci-bot", ["read"])
    assert store.verify(raw) is None


def test_unknown_key_id_is_refused(store: KeyStore) -> None:
    record, raw = store.create("ci-bot", ["read"])
    other_id = "0" * 12 if record.key_id != "0" * 12 else "1" * 12
    assert store.verify(raw.replace(record.key_id, other_id)) is None


def test_revoked_key_is_refused_even_after_it_was_cached(store: KeyStore) -> None:
    record, raw = store.create("ci-bot", ["infer"])
    assert store.verify(raw) is not None  # now in the verified-key cache
    assert store.revoke(record.key_id) is True
    assert store.verify(raw) is None
    assert store.revoke(record.key_id) is False  # already revoked
    assert store.revoke("f" * 12) is False  # unknown


def test_revocation_by_another_store_is_seen_within_the_poll_interval(tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"
    with (
        KeyStore(db, cache_ttl_s=60, revocation_poll_s=0.2) as caching,
        KeyStore(db, cache_ttl_s=0) as uncached,
        KeyStore(db) as admin,
    ):
        record, raw = admin.create("ci-bot", ["infer"])
        other, other_raw = admin.create("other", ["infer"])
        assert caching.verify(raw) is not None and uncached.verify(raw) is not None
        assert caching.verify(other_raw) is not None
        admin.revoke(record.key_id)
        assert uncached.verify(raw) is None  # no cache: sees the revocation at once
        time.sleep(0.25)
        # The revocation generation changed: the cache is dropped, the key re-read.
        assert caching.verify_cached(raw) is None
        assert caching.verify(raw) is None
        assert caching.verify(other_raw) == other  # other keys still verify


def test_cache_skips_the_database_until_the_ttl_expires(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "k.sqlite", cache_ttl_s=0.2) as store:
        record, raw = store.create("ci-bot", ["read"])
        assert store.verify(raw) == record
        # Delete the row behind the store's back: the cached answer holds until its TTL.
        with sqlite3.connect(tmp_path / "k.sqlite") as conn:
            conn.execute("DELETE FROM api_keys")
        assert store.verify(raw) == record
        time.sleep(0.25)
        assert store.verify(raw) is None


def test_verify_cached_answers_only_for_recently_verified_keys(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "k.sqlite", cache_ttl_s=0.2) as store:
        record, raw = store.create("ci-bot", ["infer"])
        assert store.verify_cached(raw) is None  # never verified: ask verify()
        assert store.verify(raw) is not None
        cached = store.verify_cached(raw)
        assert cached is not None and cached.key_id == record.key_id
        assert store.verify_cached("tpk_nonsense") is None
        time.sleep(0.25)
        assert store.verify_cached(raw) is None  # expired
        assert store.verify(raw) is not None
        store.revoke(record.key_id)
        assert store.verify_cached(raw) is None  # revocation clears it at once


def test_only_a_peppered_hmac_is_stored(tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"
    with KeyStore(db) as store:
        record, raw = store.create("ci-bot", ["infer"])
    secret = raw.split("_", 2)[2]
    content = db.read_bytes()
    assert secret.encode() not in content and raw.encode() not in content
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
    assert len(rows) == 1
    cells = [str(cell) for cell in rows[0]]
    assert not any(secret in cell for cell in cells)
    pepper = (tmp_path / "keys.sqlite.pepper").read_bytes().strip()
    expected = hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()
    assert f"hmac-sha256${expected}" in cells
    # Without the pepper the stored value is useless: a plain sha256 is not it.
    assert hashlib.sha256(secret.encode()).hexdigest() not in content.decode("latin-1")
    assert record.key_id in cells


def test_database_and_pepper_are_created_private(tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"
    old_umask = os.umask(0o022)  # a permissive umask must not matter
    try:
        with KeyStore(db) as store:
            store.create("ci-bot", ["read"])
    finally:
        os.umask(old_umask)
    for path in (db, tmp_path / "keys.sqlite.pepper"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_existing_database_readable_by_others_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "keys.sqlite"
    KeyStore(db).close()
    db.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="tapetum.serve.auth"), KeyStore(db):
        pass
    assert any("chmod 600" in r.getMessage() and str(db) in r.getMessage() for r in caplog.records)


def test_pepper_from_the_environment_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PEPPER_ENV, "p" * 40)
    with KeyStore(tmp_path / "keys.sqlite") as store:
        _, raw = store.create("ci-bot", ["read"])
    assert not (tmp_path / "keys.sqlite.pepper").exists()
    monkeypatch.setenv(PEPPER_ENV, "q" * 40)  # another pepper: the key no longer matches
    with KeyStore(tmp_path / "keys.sqlite") as store:
        assert store.verify(raw) is None


def test_short_pepper_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pepper"):
        KeyStore(tmp_path / "keys.sqlite", pepper=b"short")


def test_lost_pepper_file_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"
    with KeyStore(db) as store:
        store.create("ci-bot", ["read"])
    (tmp_path / "keys.sqlite.pepper").unlink()
    with pytest.raises(KeyStoreError, match=r"pepper file .* is missing"):
        KeyStore(db)


def _plant_argon2_key(db: Path, key_id: str, secret: str) -> None:
    """A key as versions before the HMAC change stored it."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO api_keys (key_id, name, scopes, secret_hash, created_at) "
            "VALUES (?, 'legacy', 'read', ?, ?)",
            (key_id, FAST_HASHER.hash(secret), time.time()),
        )


def test_argon2_keys_migrate_to_hmac_on_first_use(tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"
    KeyStore(db).close()
    secret = "S" * 43
    _plant_argon2_key(db, "00aa11bb22cc", secret)
    raw = f"tpk_00aa11bb22cc_{secret}"
    with KeyStore(db, cache_ttl_s=0) as store:
        assert store.verify(f"tpk_00aa11bb22cc_{'W' * 43}") is None  # wrong: no rewrite
        with sqlite3.connect(db) as conn:
            (stored,) = conn.execute("SELECT secret_hash FROM api_keys").fetchone()
        assert stored.startswith("$argon2id$")
        key = store.verify(raw)
        assert key is not None and key.key_id == "00aa11bb22cc" and key.scopes == {Scope.READ}
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT secret_hash FROM api_keys").fetchone()
    assert stored.startswith("hmac-sha256$")
    with KeyStore(db, cache_ttl_s=0) as reopened:
        assert reopened.verify(raw) == key  # still valid after the rewrite


def test_bogus_keys_cost_no_argon2_work(tmp_path: Path) -> None:
    """A well-formed key with an unknown id used to cost a 64 MiB argon2id verify."""
    with KeyStore(tmp_path / "keys.sqlite") as store:
        store.create("ci-bot", ["read"])
        bogus = [f"tpk_{i:012x}_{'x' * 43}" for i in range(50)]
        start = time.perf_counter()
        assert all(store.verify(raw) is None for raw in bogus)
        per_key_ms = (time.perf_counter() - start) / len(bogus) * 1000
    assert per_key_ms < 5, f"{per_key_ms:.2f} ms per bogus key"


def test_keys_persist_across_store_instances(tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"
    with KeyStore(db) as store:
        record, raw = store.create("ci-bot", ["admin"])
    with KeyStore(db) as reopened:
        assert reopened.verify(raw) == record
        assert reopened.list() == [record]


def test_list_shows_every_key_without_secrets(store: KeyStore) -> None:
    first, _ = store.create("alpha", ["read"])
    second, _ = store.create("beta", ["infer", "read"])
    store.revoke(first.key_id)
    listed = store.list()
    assert [k.key_id for k in listed] == [first.key_id, second.key_id]
    assert listed[0].revoked and not listed[1].revoked
    assert all(isinstance(k, ApiKey) for k in listed)
    assert not any(hasattr(k, "secret") or hasattr(k, "secret_hash") for k in listed)


def test_scopes_and_admin_implication(store: KeyStore) -> None:
    reader, reader_raw = store.create("reader", ["read"])
    admin, _ = store.create("root", [Scope.ADMIN])
    assert reader.allows(Scope.READ)
    assert not reader.allows(Scope.INFER) and not reader.allows(Scope.ADMIN)
    assert all(admin.allows(scope) for scope in Scope)
    store.revoke(reader.key_id)
    assert store.get(reader.key_id) is not None
    revoked = store.get(reader.key_id)
    assert revoked is not None and not revoked.allows(Scope.READ)
    assert store.verify(reader_raw) is None


@pytest.mark.parametrize("scopes", [[], ["write"], ["read", "sudo"]])
def test_bad_scopes_are_a_config_error(store: KeyStore, scopes: list[str]) -> None:
    with pytest.raises(ConfigError, match="scope"):
        store.create("ci-bot", scopes)
    assert store.list() == []


def test_parse_scopes_accepts_names_in_any_case() -> None:
    assert parse_scopes([" Infer", "READ", Scope.READ]) == {Scope.INFER, Scope.READ}


def test_empty_name_is_a_config_error(store: KeyStore) -> None:
    with pytest.raises(ConfigError, match="name"):
        store.create("  ", ["read"])


def test_unopenable_database_is_a_key_store_error(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="cannot open"):
        KeyStore(tmp_path / "missing-dir" / "keys.sqlite")


def test_in_memory_store_is_thread_safe() -> None:
    with KeyStore(":memory:") as store:
        created = [store.create(f"k{i}", ["read"]) for i in range(4)]
        failures: list[str] = []

        def worker(raw: str, key_id: str) -> None:
            for _ in range(10):
                key = store.verify(raw)
                if key is None or key.key_id != key_id:
                    failures.append(key_id)

        threads = [threading.Thread(target=worker, args=(raw, r.key_id)) for r, raw in created]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert len(store.list()) == 4
