"""The registry against a real ``mlflow server`` on a loopback port (started by the test,
SQLite backend, artifacts proxied by the server), and against servers and databases that
are not there: a clear, fast ``RegistryUnavailableError``, one ``error:`` line on the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from tapetum.errors import RegistryUnavailableError
from tapetum.registry import ModelRef, ModelRegistry, resolve_model_uri, sha256_file
from tests.integration.serve_harness import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if exe is None:
        pytest.skip("the mlflow command is not installed")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180  # a cold start on a busy two-core machine
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start:\n{(root / 'server.log').read_text()}"
                )
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_register_promote_and_resolve_through_an_mlflow_server(
    mlflow_server: str, yolox_path: Path, tmp_path: Path
) -> None:
    reg = ModelRegistry(mlflow_server)
    v1 = reg.register(yolox_path, "server-model", command="test register")
    v2 = reg.register(yolox_path, "server-model", parent=v1.ref)
    assert (v1.version, v2.version) == (1, 2)
    assert v1.source.startswith("mlflow-artifacts:/")  # stored by the server, not locally
    assert reg.lineage(v2.ref)[0].short == "server-model/1"
    assert [c.short for c in reg.children(v1)] == ["server-model/2"]
    assert [v.short for v in reg.find_by_sha256(v1.sha256)] == ["server-model/1", "server-model/2"]

    reg.promote("server-model", 1, reason="first")
    reg.promote("server-model", 2, reason="newer")
    resolved = resolve_model_uri(
        "models:/server-model@champion", registry=mlflow_server, cache_dir=tmp_path / "cache"
    )
    assert resolved.version == 2 and sha256_file(resolved.path) == v1.sha256
    change = reg.rollback("server-model", reason="back")
    assert (change.version, change.previous) == (1, 2)
    assert reg.get_version(ModelRef("server-model", alias="champion")).version == 1
    assert [e.reason for e in reg.alias_history("server-model")] == ["first", "newer", "back"]


def test_the_cli_talks_to_the_server_from_the_environment(
    mlflow_server: str, yolox_path: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "TAPETUM_REGISTRY_URI": mlflow_server, "COLUMNS": "200"}
    env["TAPETUM_MODEL_CACHE"] = str(tmp_path / "cache")

    def tapetum(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tapetum", *map(str, args)],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    reg = tapetum("models", "register", yolox_path, "--name", "cli-model")
    assert reg.returncode == 0, reg.stderr
    assert reg.stdout.startswith("registered cli-model/1: yolox fp32 416x416, 80 classes")
    assert f"({mlflow_server})" in reg.stdout and "View run" not in reg.stdout
    assert not (tmp_path / "tapetum-registry.db").exists()  # nothing local was created
    listed = tapetum("models", "list", "--json")
    assert listed.returncode == 0 and '"name": "cli-model"' in listed.stdout


def test_an_unreachable_server_fails_fast_with_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError, match=f"cannot reach the MLflow server at {url}"):
        ModelRegistry(url)
    assert time.monotonic() - started < 10

    proc = subprocess.run(
        [sys.executable, "-m", "tapetum", "run", "x.mp4", "--model", "models:/m@champion",
         "--registry", url],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: cannot reach the MLflow server at {url}"
    )


def test_an_unreachable_database_fails_fast_with_its_password_hidden() -> None:
    uri = f"postgresql://tapetum:s3cret@127.0.0.1:{free_port()}/registry"
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError) as info:
        ModelRegistry(uri)
    assert time.monotonic() - started < 15
    assert "cannot reach the registry database" in str(info.value)
    assert "s3cret" not in str(info.value) and "tapetum:***@" in str(info.value)
