"""The registry on a PostgreSQL store on loopback: a throwaway database per test module
(created and dropped here), the same operations as on SQLite, and two processes
registering at once. Skipped with a reason when no PostgreSQL answers.

The server is ``$TAPETUM_TEST_POSTGRES`` (a URL to an administrative database), by default
``postgresql://postgres@127.0.0.1:5432/postgres``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
psycopg = pytest.importorskip("psycopg")

from tapetum.registry import ModelRef, ModelRegistry, resolve_model_uri, sha256_file  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

ADMIN_URL = os.environ.get("TAPETUM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def pg_uri() -> Iterator[str]:
    try:
        admin = psycopg.connect(ADMIN_URL, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}: {str(exc).strip().splitlines()[0]}")
    name = f"tapetum_registry_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def test_register_promote_rollback_and_resolve_on_postgres(
    pg_uri: str, yolox_path: Path, tmp_path: Path
) -> None:
    reg = ModelRegistry(pg_uri, artifacts=tmp_path / "artifacts")
    v1 = reg.register(yolox_path, "pg-model")
    v2 = reg.register(yolox_path, "pg-model", parent=v1.ref)
    assert reg.lineage(v2.ref)[0].short == "pg-model/1"
    reg.promote("pg-model", 1, reason="first")
    reg.promote("pg-model", 2, reason="second")
    assert reg.rollback("pg-model").version == 1
    resolved = resolve_model_uri(
        "models:/pg-model@champion", registry=reg, cache_dir=tmp_path / "cache"
    )
    assert resolved.version == 1 and sha256_file(resolved.path) == v1.sha256
    assert [e.version for e in reg.alias_history("pg-model")] == [1, 2, 1]
    assert reg.get_version(ModelRef("pg-model")).version == 2  # latest


def test_two_processes_register_at_once_on_postgres(
    pg_uri: str, yolox_path: Path, tmp_path: Path
) -> None:
    code = (
        "import sys, time\n"
        "from tapetum.registry import ModelRegistry\n"
        "reg = ModelRegistry(sys.argv[1], artifacts=sys.argv[3])\n"
        "while time.time() < float(sys.argv[4]):\n"
        "    time.sleep(0.001)\n"
        "for _ in range(2):\n"
        "    print(reg.register(sys.argv[2], 'pg-race').version, flush=True)\n"
    )
    start_at = str(time.time() + 15.0)
    args = [pg_uri, str(yolox_path), str(tmp_path / "artifacts"), start_at]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    got = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        got += [int(v) for v in out.split()]
    assert sorted(got) == [1, 2, 3, 4]
    versions = ModelRegistry(pg_uri).versions("pg-race")
    assert [v.version for v in versions] == [1, 2, 3, 4] and all(v.ready for v in versions)
