"""The registry under concurrency and crashes, on a real MLflow SQLite store: processes
registering at once (on a store that does not exist yet) all succeed with distinct
versions; a registration killed with SIGKILL leaves no half version; racing promotions and
rollbacks settle on one alias that matches the end of its history."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from tapetum.errors import ModelNotFoundError
from tapetum.registry import (
    ArtifactCache,
    ModelRef,
    ModelRegistry,
    resolve_model_uri,
    sha256_file,
)
from tapetum.registry.aliases import alias_events

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

NAME = "det"

#: The child's preamble: the store URI, the model file, and a start time to wait for (all
#: children start their critical section within a few milliseconds of each other).
PRELUDE = """
import sys, time
from pathlib import Path
uri, model, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
from tapetum.registry import ModelRegistry  # mlflow is imported before the barrier
import mlflow  # noqa: F401
"""


def _spawn(code: str, uri: str, model: Path, start_at: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), uri, str(model), str(start_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TAPETUM_USER": "child", "PYTHONUNBUFFERED": "1"},
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child ended early: {proc.communicate()[1]}")
        assert time.monotonic() < deadline, "child never reached the point"
        time.sleep(0.02)


# --------------------------------------------------------------------------- registering


def test_processes_registering_at_once_on_a_new_store_all_get_distinct_versions(
    tmp_path: Path, yolox_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'new' / 'reg.db'}"  # does not exist yet: first use races too
    code = """
        while time.time() < start_at:
            time.sleep(0.001)
        reg = ModelRegistry(uri, artifacts=Path(uri[10:]).parent / "artifacts")
        for _ in range(2):
            print(reg.register(model, "det").version, flush=True)
    """
    start_at = time.time() + 12.0  # both children have imported MLflow by then
    children = [_spawn(code, uri, yolox_path, start_at) for _ in range(3)]
    got = [int(v) for child in children for v in _finish(child).split()]

    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    reg = ModelRegistry(uri)
    versions = reg.versions(NAME)
    assert [v.version for v in versions] == [1, 2, 3, 4, 5, 6]
    assert {v.sha256 for v in versions} == {sha256_file(yolox_path)}
    for v in versions:  # every version's artifact is whole
        assert sha256_file(reg.fetch(v, _cache(tmp_path))) == v.sha256


def _cache(tmp_path: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache")


@pytest.mark.parametrize(
    "where",
    [
        # just before the one call that creates the version: artifact stored, run open
        "ModelRegistry._create_version",
        # halfway through copying the file into the artifact store
        "upload",
    ],
)
def test_a_registration_killed_midway_leaves_no_version(
    tmp_path: Path, yolox_path: Path, where: str
) -> None:
    uri = f"sqlite:///{tmp_path / 'reg.db'}"
    ModelRegistry(uri, artifacts=tmp_path / "artifacts")  # created before the child runs
    marker = tmp_path / "reached"
    if where == "upload":
        stall = f"""
            from mlflow import MlflowClient
            def stalled_upload(self, run_id, local_path, artifact_path=None):
                dest = Path(self.get_run(run_id).info.artifact_uri) / (artifact_path or "")
                dest.mkdir(parents=True, exist_ok=True)
                data = Path(local_path).read_bytes()
                (dest / Path(local_path).name).write_bytes(data[: len(data) // 2])
                Path({str(marker)!r}).touch()
                time.sleep(120)
            MlflowClient.log_artifact = stalled_upload
        """
    else:
        stall = f"""
            def stalled(self, *args, **kwargs):
                Path({str(marker)!r}).touch()
                time.sleep(120)
            ModelRegistry._create_version = stalled
        """
    code = textwrap.dedent(stall) + 'ModelRegistry(uri).register(model, "det")\n'
    child = _spawn(code, uri, yolox_path)
    _wait_for(marker, child)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)

    reg = ModelRegistry(uri)
    assert reg.versions(NAME, ready_only=False) == []  # nothing half-made is visible
    with pytest.raises(ModelNotFoundError):
        resolve_model_uri("models:/det/1", registry=reg, cache_dir=tmp_path / "cache")
    with pytest.raises(ModelNotFoundError, match="no versions yet"):
        resolve_model_uri("models:/det/latest", registry=reg, cache_dir=tmp_path / "cache")
    # The store is usable: the next registration is version 1, whole.
    info = reg.register(yolox_path, NAME)
    resolved = resolve_model_uri("models:/det/1", registry=reg, cache_dir=tmp_path / "cache")
    assert info.version == 1 and sha256_file(resolved.path) == info.sha256


def test_kills_at_any_moment_never_expose_an_incomplete_version(
    tmp_path: Path, yolox_path: Path
) -> None:
    """No hooks: real registrations killed at spread-out moments; whatever versions are
    visible afterwards resolve to the registered bytes."""
    uri = f"sqlite:///{tmp_path / 'reg.db'}"
    reg = ModelRegistry(uri, artifacts=tmp_path / "artifacts")
    ready = tmp_path / "open"
    code = f"""
        reg = ModelRegistry(uri)
        Path({str(ready)!r}).touch()
        reg.register(model, "det")
    """
    for i, delay_s in enumerate((0.0, 0.3, 0.8, 1.5, 3.0)):
        ready.unlink(missing_ok=True)
        child = _spawn(code, uri, yolox_path)
        _wait_for(ready, child)
        time.sleep(delay_s)
        child.kill()
        child.wait(10)
        for v in reg.versions(NAME, ready_only=False):
            assert v.ready, f"kill {i}: {v.short} is visible but incomplete"
            path = reg.fetch(v, _cache(tmp_path))
            assert sha256_file(path) == v.sha256


# --------------------------------------------------------------------------- aliases


def test_racing_promotions_and_rollbacks_settle_on_one_consistent_alias(
    tmp_path: Path, yolox_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'reg.db'}"
    reg = ModelRegistry(uri, artifacts=tmp_path / "artifacts")
    for _ in range(3):
        reg.register(yolox_path, NAME)
    reg.promote(NAME, 1, reason="start")
    code = """
        import os
        from tapetum.errors import AliasConflictError, RegistryError
        reg = ModelRegistry(uri)
        me = os.getpid()
        while time.time() < start_at:
            time.sleep(0.001)
        for i in range(6):
            try:
                if (me + i) % 3 == 0:
                    change = reg.rollback("det", reason=f"{me}-{i}")
                else:
                    change = reg.promote("det", 1 + (me + i) % 3, reason=f"{me}-{i}")
                print("ok", change.action, change.version, flush=True)
            except AliasConflictError:
                print("lost", flush=True)
            except RegistryError as exc:  # nothing to roll back to at that moment
                print("none", str(exc).split(":")[0], flush=True)
    """
    start_at = time.time() + 10.0
    children = [_spawn(code, uri, yolox_path, start_at) for _ in range(4)]
    outcomes = [line.split()[0] for c in children for line in _finish(c).splitlines()]

    assert len(outcomes) == 24 and outcomes.count("ok") >= 4
    model = reg.get_model(NAME)
    events = alias_events(model.tags, "champion")
    # One alias, equal to the newest entry of its history; every attempt that got as far
    # as writing (won or lost) is in the history, none overwritten.
    assert model.aliases["champion"] == events[-1][1].version
    assert len(events) == 1 + outcomes.count("ok") + outcomes.count("lost")
    resolved = resolve_model_uri("models:/det@champion", registry=reg, cache_dir=tmp_path / "c")
    assert resolved.version == model.aliases["champion"]
    # And it stays consistent: a later promote from here works normally.
    change = reg.promote(NAME, 2, reason="after the race")
    assert reg.get_version(ModelRef(NAME, alias="champion")).version == 2 == change.version
