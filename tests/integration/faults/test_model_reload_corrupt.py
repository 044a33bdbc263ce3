"""A model file corrupted under a hot reload: ``tapetum serve`` follows
``models:/NAME@champion`` from a real SQLite MLflow store (version 1 YOLOX-nano, version 2
YOLOv8n INT8), the REST app on loopback uvicorn, one client posting images the whole
time. Version 2's stored file is overwritten with half of itself (a bad copy, bit rot),
then promoted.

The old model keeps serving (no request fails, the version gauge stays 1), the failure is
logged and counted (``tapetum_model_alias_check_errors_total``), an admin reload answers
503 ``model_swap_failed`` with the reason and is not retried on every poll. Once the file
is good again, a reload by hand swaps version 2 in."""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

pytest.importorskip("mlflow")
pytest.importorskip("fastapi")

from tapetum.registry import ModelRegistry, resolve_model_uri
from tapetum.registry.uri import ModelRef
from tapetum.serve.app import create_app
from tapetum.serve.follow import ModelFollower
from tapetum.serve.service import DetectionService
from tapetum.serve.settings import ServeSettings
from tests.integration.faults.conftest import MODEL_NAME, stored_artifact, wait_for
from tests.integration.serve_harness import LoopbackServer, assert_error, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@dataclass
class Client:
    """One client posting the JPEG to ``/v1/detect`` back to back; counts the answers."""

    url: str
    jpeg: bytes
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    resp = client.post(
                        "/v1/detect", content=self.jpeg, headers={"Content-Type": "image/jpeg"}
                    )
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                self.statuses[resp.status_code] += 1
                if resp.status_code != 200 or not resp.json()["detections"]:
                    self.errors.append(f"{resp.status_code} {resp.text[:200]}")

    def __enter__(self) -> Client:
        self._thread = threading.Thread(target=self._run, name="client", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(60)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> tuple[ModelRegistry, Path]:
    root = tmp_path_factory.mktemp("reload-store")
    artifacts = root / "artifacts"
    reg = ModelRegistry(f"sqlite:///{root / 'reg.db'}", artifacts=artifacts)
    v1 = reg.register(assets / "models" / "yolox_nano.onnx", MODEL_NAME)
    reg.register(assets / "models" / "yolov8n_int8_dynamic.onnx", MODEL_NAME, parent=v1.ref)
    reg.promote(MODEL_NAME, 1, reason="baseline")
    return reg, artifacts


@contextlib.contextmanager
def _serving(reg: ModelRegistry, cache: Path) -> Iterator[tuple[httpx.Client, ModelFollower]]:
    """What ``tapetum serve --model models:/NAME@champion --model-poll 0.2`` builds."""
    resolved = resolve_model_uri(f"models:/{MODEL_NAME}@champion", registry=reg, cache_dir=cache)
    settings = ServeSettings(
        model_path=resolved.path,
        model_name=resolved.name,
        require_auth=False,
        rate_per_second=None,
    )
    service = DetectionService(settings)
    follower = ModelFollower(service, resolved, registry=reg, poll_s=0.2, cache_dir=cache)
    server = LoopbackServer(create_app(settings, service=service, follower=follower)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            wait_ready(client, 120)
            yield client, follower
    finally:
        server.stop()
        service.close()


def _metric(client: httpx.Client, pattern: str) -> str:
    found = re.search(pattern, client.get("/metrics").text, re.M)
    assert found, pattern
    return found.group(1)


def test_a_corrupt_model_file_at_a_hot_reload_keeps_the_old_model_serving(
    store: tuple[ModelRegistry, Path], assets: Path, tmp_path: Path
) -> None:
    reg, artifacts = store
    info = reg.get_version(ModelRef(MODEL_NAME, version=2))
    stored = stored_artifact(artifacts, info.sha256)
    good = stored.read_bytes()
    jpeg = (assets / "images" / "bus.jpg").read_bytes()
    serving_version = r'^tapetum_model_version_serving\{[^}]*version="(\d+)"'
    check_errors = r"^tapetum_model_alias_check_errors_total\{[^}]*\} (\S+)$"
    try:
        with (
            _serving(reg, tmp_path / "cache") as (client, follower),
            Client(str(client.base_url), jpeg) as load,
        ):
            watcher = follower.watcher
            assert watcher is not None
            wait_for(lambda: load.statuses[200] >= 3, 60, "the client to be served")
            stored.write_bytes(good[: len(good) // 2])  # a bad copy in the store
            reg.promote(MODEL_NAME, 2, reason="next")
            wait_for(lambda: watcher.errors >= 1, 60, "the watcher to meet the bad file")
            served_before = load.statuses[200]
            wait_for(lambda: load.statuses[200] >= served_before + 3, 60, "more answers")
            assert watcher.last_error is not None
            assert "fetching faults-detector/2" in watcher.last_error
            assert "sha256" in watcher.last_error or "corrupt" in watcher.last_error
            errors_seen = watcher.errors
            checks = watcher.checks
            wait_for(lambda: watcher.checks >= checks + 5, 30, "five more polls")
            assert watcher.errors == errors_seen  # a bad version is not retried every poll
            assert _metric(client, serving_version) == "1"
            assert int(float(_metric(client, check_errors))) == watcher.errors

            # By hand: retried, and refused with the reason; version 1 still answers.
            resp = client.post(f"/v1/models/{MODEL_NAME}/reload")
            assert_error(resp, 503, "model_swap_failed")
            assert "keeps serving" in resp.json()["detail"]
            assert str(artifacts) not in resp.json()["detail"]
            assert watcher.errors == errors_seen + 1

            # The file is good again: a reload swaps version 2 in.
            stored.write_bytes(good)
            resp = client.post(f"/v1/models/{MODEL_NAME}/reload")
            assert resp.status_code == 200, resp.text
            assert resp.json()["changed"] is True and resp.json()["version"] == 2
            assert _metric(client, serving_version) == "2"
            swapped = load.statuses[200]
            wait_for(lambda: load.statuses[200] >= swapped + 3, 60, "answers from version 2")
    finally:
        stored.write_bytes(good)
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    # Every request the client made was answered 200: none lost to the swaps.
    assert load.errors == [], load.errors[:5]
    assert set(load.statuses) == {200}
