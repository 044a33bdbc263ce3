"""API keys: create, verify, revoke, list; only argon2id hashes reach the database."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

pytest.importorskip("argon2", reason="API keys need the serve extra (argon2-cffi)")

from argon2 import PasswordHasher

from tapetum.errors import ConfigError
from tapetum.serve.auth import ApiKey, KeyStore, KeyStoreError, Scope, parse_scopes

# Cheap argon2id parameters keep the suite fast; the hash format and checks are the same.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    with KeyStore(tmp_path / "keys.sqlite", hasher=FAST_HASHER) as key_store:
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


def test_revocation_by_another_store_is_seen_once_the_cache_expires(tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"
    with (
        KeyStore(db, hasher=FAST_HASHER, cache_ttl_s=60) as caching,
        KeyStore(db, hasher=FAST_HASHER, cache_ttl_s=0) as uncached,
        KeyStore(db, hasher=FAST_HASHER) as admin,
    ):
        record, raw = admin.create("ci-bot", ["infer"])
        assert caching.verify(raw) is not None and uncached.verify(raw) is not None
        admin.revoke(record.key_id)
        assert uncached.verify(raw) is None  # no cache: sees the revocation at once
        assert caching.verify(raw) is not None  # documented: stale for up to cache_ttl_s


class CountingHasher(PasswordHasher):
    """Counts argon2 verifications, to see the verified-key cache at work."""

    verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        type(self).verifications += 1
        return super().verify(hash, password)


def test_cache_skips_hashing_until_the_ttl_expires(tmp_path: Path) -> None:
    hasher = CountingHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with KeyStore(tmp_path / "k.sqlite", hasher=hasher, cache_ttl_s=0.2) as store:
        _, raw = store.create("ci-bot", ["read"])
        CountingHasher.verifications = 0
        for _ in range(5):
            assert store.verify(raw) is not None
        assert CountingHasher.verifications == 1
        time.sleep(0.25)
        assert store.verify(raw) is not None
        assert CountingHasher.verifications == 2


def test_verify_cached_answers_only_for_recently_verified_keys(tmp_path: Path) -> None:
    with KeyStore(tmp_path / "k.sqlite", hasher=FAST_HASHER, cache_ttl_s=0.2) as store:
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


def test_only_an_argon2id_hash_is_stored(tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"
    with KeyStore(db, hasher=FAST_HASHER) as store:
        record, raw = store.create("ci-bot", ["infer"])
    secret = raw.split("_", 2)[2]
    content = db.read_bytes()
    assert secret.encode() not in content and raw.encode() not in content
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
    assert len(rows) == 1
    cells = [str(cell) for cell in rows[0]]
    assert not any(secret in cell for cell in cells)
    hashes = [cell for cell in cells if cell.startswith("$argon2id$")]
    assert len(hashes) == 1 and FAST_HASHER.verify(hashes[0], secret)
    assert record.key_id in cells


def test_keys_persist_across_store_instances(tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"
    with KeyStore(db, hasher=FAST_HASHER) as store:
        record, raw = store.create("ci-bot", ["admin"])
    with KeyStore(db, hasher=FAST_HASHER) as reopened:
        assert reopened.verify(raw) == record
        assert reopened.list() == [record]


def test_hashes_made_with_other_parameters_are_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"
    with KeyStore(db, hasher=FAST_HASHER) as store:
        _, raw = store.create("ci-bot", ["read"])
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    with KeyStore(db, hasher=stronger, cache_ttl_s=0) as store:
        assert store.verify(raw) is not None
        assert store.verify(raw) is not None  # still valid after the upgrade
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT secret_hash FROM api_keys").fetchone()
    assert not stronger.check_needs_rehash(stored)


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
    with KeyStore(":memory:", hasher=FAST_HASHER) as store:
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
