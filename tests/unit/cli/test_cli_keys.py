"""``tapetum keys create/list/revoke`` through typer's CliRunner."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("argon2", reason="API keys need the serve extra (argon2-cffi)")

from typer.testing import CliRunner

from tapetum.cli.keys import KeyDatabaseNotFoundError, UnknownKeyError, keys_app
from tapetum.serve.auth import KeyStore, Scope

RAW_KEY = re.compile(r"tpk_([0-9a-f]{12})_\S+")


def test_create_list_revoke(tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"
    runner = CliRunner()

    created = runner.invoke(
        keys_app, ["create", "--name", "ci-bot", "--scopes", "infer,read", "--db", str(db)]
    )
    assert created.exit_code == 0, created.output
    raw = created.stdout.strip()
    match = RAW_KEY.fullmatch(raw)
    assert match is not None, created.stdout
    key_id = match.group(1)
    with KeyStore(db) as store:
        key = store.verify(raw)
    assert key is not None and key.scopes == {Scope.INFER, Scope.READ}

    listed = runner.invoke(keys_app, ["list", "--db", str(db)])
    assert listed.exit_code == 0, listed.output
    assert key_id in listed.stdout and "ci-bot" in listed.stdout and "active" in listed.stdout
    assert raw.split("_", 2)[2] not in listed.output  # never the secret

    revoked = runner.invoke(keys_app, ["revoke", key_id, "--db", str(db)])
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in runner.invoke(keys_app, ["list", "--db", str(db)]).stdout
    with KeyStore(db) as store:
        assert store.verify(raw) is None

    again = runner.invoke(keys_app, ["revoke", key_id, "--db", str(db)])
    assert isinstance(again.exception, UnknownKeyError)
    assert "already revoked" in str(again.exception)


def test_db_path_from_environment(tmp_path: Path) -> None:
    db = tmp_path / "from-env.sqlite"
    runner = CliRunner(env={"TAPETUM_KEYS_DB": str(db)})
    created = runner.invoke(keys_app, ["create", "--name", "bot", "--scopes", "admin"])
    assert created.exit_code == 0, created.output
    assert db.is_file()
    assert "admin" in runner.invoke(keys_app, ["list"]).stdout


def test_bad_scope_and_missing_db_are_user_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(
        keys_app, ["create", "--name", "x", "--scopes", "infer,sudo", "--db", str(tmp_path / "k")]
    )
    assert bad.exit_code != 0 and "unknown scope 'sudo'" in str(bad.exception)
    assert not (tmp_path / "k").exists()  # nothing created for a refused command

    missing = runner.invoke(keys_app, ["list", "--db", str(tmp_path / "nope.sqlite")])
    assert isinstance(missing.exception, KeyDatabaseNotFoundError)
    assert not (tmp_path / "nope.sqlite").exists()  # list never creates a database
