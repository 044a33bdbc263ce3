"""``tapetum serve --model models:/NAME@champion`` follows the alias: a real SQLite MLflow
store in a tmp folder with YOLOX-nano (version 1) and its FP16 child (version 2), the REST
app on loopback uvicorn and the gRPC server, a real key store.

- A promotion and a rollback while 4 clients hammer ``/v1/detect``: zero failed requests,
  requests served after each swap, the swaps logged and counted in ``/metrics`` with the
  version serving.
- The admin reload (REST and gRPC): scope, unknown names, a swap now, no change; a stream
  started over the API swaps its detector too and loses no frame.
- The CLI: an unknown alias or version at start-up is one ``error:`` line and exit 2; a
  served alias is followed and reloaded through the real ``tapetum serve``.
- A registry that cannot be reached at reload (a real ``mlflow server``, then killed): 503
  with the reason and without the server's address, and the old model keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("mlflow")
pytest.importorskip("fastapi")
pytest.importorskip("grpc")

import grpc
from fastapi import FastAPI

from tapetum.detect.quantize import convert_fp16
from tapetum.registry import ModelRegistry, resolve_model_uri
from tapetum.serve.app import create_app
from tapetum.serve.auth import KeyStore, Scope
from tapetum.serve.follow import ModelFollower
from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc
from tapetum.serve.grpc.server import create_grpc_server
from tapetum.serve.service import DetectionService
from tapetum.serve.settings import ServeSettings
from tests.conftest import REPO_ROOT
from tests.helpers import remux_to_mpegts
from tests.integration.serve_harness import (
    LoopbackServer,
    assert_error,
    free_port,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

NAME = "people"


@dataclass
class Store:
    uri: str
    root: Path
    keys: KeyStore
    secrets: dict[str, str]

    def registry(self) -> ModelRegistry:
        """Another handle on the store, as a second process (the operator's CLI) has."""
        return ModelRegistry(self.uri)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, yolox_path: Path) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("serve-registry")
    fp16 = root / "yolox_nano_fp16.onnx"
    convert_fp16(yolox_path, fp16)
    uri = f"sqlite:///{root / 'reg.db'}"
    reg = ModelRegistry(uri, artifacts=root / "artifacts")
    v1 = reg.register(yolox_path, NAME)
    reg.register(fp16, NAME, parent=v1.ref)
    keys = KeyStore(root / "keys.db")
    secrets = {
        "admin": keys.create("ops", [Scope.ADMIN])[1],
        "infer": keys.create("client", [Scope.INFER, Scope.READ])[1],
        "read": keys.create("viewer", [Scope.READ])[1],
    }
    try:
        yield Store(uri, root, keys, secrets)
    finally:
        keys.close()


@pytest.fixture(scope="module")
def jpeg(assets: Path) -> bytes:
    return (assets / "images" / "bus.jpg").read_bytes()


@dataclass
class Served:
    app: FastAPI
    server: LoopbackServer
    client: httpx.Client
    follower: ModelFollower
    stub: pb_grpc.DetectorStub
    secrets: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[who]}"}

    def meta(self, who: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.secrets[who]}"),)

    def metrics(self) -> str:
        resp = self.client.get("/metrics", headers=self.auth("read"))
        assert resp.status_code == 200, resp.text
        return resp.text

    def serving(self) -> str | None:
        found = re.search(r'tapetum_model_version_serving\{[^}]*version="(\d+)"', self.metrics())
        return found.group(1) if found else None


@contextlib.contextmanager
def serving(
    store: Store,
    tmp: Path,
    *,
    poll_s: float,
    registry: ModelRegistry | None = None,
    media_roots: tuple[Path, ...] = (),
) -> Iterator[Served]:
    """What ``tapetum serve --model models:/NAME@champion`` builds, on free loopback ports."""
    reg = registry or ModelRegistry(store.uri)
    resolved = resolve_model_uri(f"models:/{NAME}@champion", registry=reg, cache_dir=tmp)
    settings = ServeSettings(
        model_path=resolved.path,
        model_name=resolved.name,
        rate_per_second=None,
        media_roots=media_roots,
    )
    service = DetectionService(settings)
    follower = ModelFollower(service, resolved, registry=reg, poll_s=poll_s, cache_dir=tmp)
    app = create_app(settings, key_store=store.keys, service=service, follower=follower)
    grpc_port = free_port()
    grpc_server = create_grpc_server(
        settings,
        service,
        store.keys,
        None,
        grpc_port,
        streams=app.state.tapetum.streams,
        follower=follower,
    )
    server = LoopbackServer(app).start()
    grpc_server.start()
    client = httpx.Client(base_url=server.url, timeout=60)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        wait_ready(client, 120)
        stub = pb_grpc.DetectorStub(channel)  # type: ignore[no-untyped-call]
        yield Served(app, server, client, follower, stub, store.secrets)
    finally:
        channel.close()
        client.close()
        grpc_server.stop(5).wait()
        server.stop()
        service.close()


@dataclass
class Hammer:
    """``clients`` threads posting the JPEG to ``/v1/detect`` back to back."""

    url: str
    headers: dict[str, str]
    jpeg: bytes
    clients: int = 4
    done: list[tuple[float, float]] = field(default_factory=list)  # (start, end), time.time
    failed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self) -> None:
        headers = {**self.headers, "Content-Type": "image/jpeg"}
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                t0 = time.time()
                try:
                    resp = client.post("/v1/detect", content=self.jpeg, headers=headers)
                    ok = resp.status_code == 200 and resp.json()["detections"]
                    outcome = "" if ok else f"{resp.status_code} {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    if outcome:
                        self.failed.append(outcome)
                    else:
                        self.done.append((t0, time.time()))

    def __enter__(self) -> Hammer:
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, name=f"hammer-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def started_after(self, at: float) -> int:
        with self._lock:
            return sum(1 for t0, _ in self.done if t0 > at)


def _wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_promotion_and_a_rollback_swap_the_served_model_with_zero_failed_requests(
    store: Store, jpeg: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    operator = store.registry()
    operator.promote(NAME, 1, reason="baseline")
    caplog.set_level(logging.INFO)
    with serving(store, tmp_path, poll_s=0.3) as served:
        assert served.serving() == "1"
        with Hammer(served.server.url, served.auth("infer"), jpeg) as hammer:
            _wait_for(lambda: len(hammer.done) >= 8, 120, "requests before the swap")
            operator.promote(NAME, 2, reason="FP16")
            _wait_for(lambda: served.serving() == "2", 120, "version 2 to serve")
            (to_fp16,) = served.follower.watcher.swaps  # type: ignore[union-attr]
            _wait_for(lambda: hammer.started_after(to_fp16.at) >= 8, 120, "requests on v2")
            operator.rollback(NAME, reason="back to FP32")
            _wait_for(lambda: served.serving() == "1", 120, "version 1 to serve again")
            back = served.follower.watcher.swaps[-1]  # type: ignore[union-attr]
            _wait_for(lambda: hammer.started_after(back.at) >= 8, 120, "requests on v1")
        metrics = served.metrics()

    assert hammer.failed == [], hammer.failed[:5]
    assert len(hammer.done) >= 24
    assert [(s.current.version, s.trigger) for s in (to_fp16, back)] == [(2, "poll"), (1, "poll")]
    assert 'tapetum_model_version_serving{alias="champion",model="people",version="1"} 1.0' in (
        metrics
    )
    assert 'tapetum_model_swaps_total{model="people",trigger="poll"} 2.0' in metrics
    assert 'tapetum_model_alias_check_errors_total{model="people"} 0.0' in metrics
    logged = [r.getMessage() for r in caplog.records if "model swap" in r.getMessage()]
    assert any("people/1" in m and "people/2" in m for m in logged), logged


def test_admin_reload_over_rest_and_grpc_and_a_running_stream_follows(
    store: Store, jpeg: bytes, crowd_video: Path, tmp_path: Path
) -> None:
    operator = store.registry()
    operator.promote(NAME, 1, reason="baseline")
    (tmp_path / "media").mkdir()
    clip = remux_to_mpegts(crowd_video, tmp_path / "media" / "crowd.ts", max_s=4.0)
    with serving(store, tmp_path / "cache", poll_s=0, media_roots=(clip.parent,)) as served:
        started = served.client.post(
            "/v1/streams", json={"uri": str(clip), "realtime": True}, headers=served.auth("infer")
        )
        assert started.status_code == 201, started.text
        stream_id = started.json()["stream_id"]
        operator.promote(NAME, 2, reason="FP16")
        time.sleep(0.5)
        assert served.serving() == "1"  # poll 0: nothing moves until an admin asks

        url = f"/v1/models/{NAME}/reload"
        assert_error(served.client.post(url, headers=served.auth("read")), 403)
        assert_error(served.client.post(url), 401)
        unknown = served.client.post("/v1/models/nope/reload", headers=served.auth("admin"))
        assert_error(unknown, 404, "unknown_model")
        resp = served.client.post(url, headers=served.auth("admin"))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert (body["changed"], body["version"], body["previous_version"]) == (True, 2, 1)
        assert body["alias"] == "champion" and body["swap_seconds"] > 0
        assert str(tmp_path) not in resp.text
        assert served.serving() == "2"
        detect = served.client.post(
            "/v1/detect",
            content=jpeg,
            headers={**served.auth("infer"), "Content-Type": "image/jpeg"},
        )
        assert detect.status_code == 200 and detect.json()["model"] == NAME
        again = served.client.post(url, headers=served.auth("admin")).json()
        assert (again["changed"], again["version"]) == (False, 2)

        reply = served.stub.ReloadModel(pb.ModelRef(name=NAME), metadata=served.meta("admin"))
        assert (reply.changed, reply.version) == (False, 2)
        operator.rollback(NAME, reason="back")
        reply = served.stub.ReloadModel(pb.ModelRef(name=NAME), metadata=served.meta("admin"))
        assert (reply.changed, reply.version, reply.previous_version) == (True, 1, 2)
        with pytest.raises(grpc.RpcError) as denied:
            served.stub.ReloadModel(pb.ModelRef(name=NAME), metadata=served.meta("infer"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as missing:
            served.stub.ReloadModel(pb.ModelRef(name="nope"), metadata=served.meta("admin"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        # The stream started on version 1 took 2, then 1 again, between frames.
        def stream() -> dict[str, Any]:
            got = served.client.get(f"/v1/streams/{stream_id}", headers=served.auth("infer"))
            return dict(got.json())

        _wait_for(lambda: stream()["state"] != "running", 120, "the stream to end")
        info = stream()
        metrics = served.metrics()
    stats = info["stats"]
    assert info["state"] == "finished", info
    assert stats["frames_failed"] == 0 and stats["frames_processed"] > 0
    assert stats["frames_processed"] + stats["frames_dropped"] == stats["frames_read"]
    swaps = re.findall(r"^tapetum_detector_swaps_total(?:\{[^}]*\})? (\S+)$", metrics, re.M)
    assert swaps and max(float(s) for s in swaps) >= 1.0, swaps
    assert 'tapetum_model_swaps_total{model="people",trigger="manual"} 2.0' in metrics


def _tapetum(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapetum", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


@pytest.mark.parametrize("ref", [f"models:/{NAME}@nope", f"models:/{NAME}/99"])
def test_an_unknown_alias_or_version_at_start_up_is_one_error_line_and_exit_2(
    store: Store, tmp_path: Path, ref: str
) -> None:
    done = _tapetum(
        "serve", "--model", ref, "--registry", store.uri, "--no-auth",
        "--port", str(free_port()), "--grpc-port", "0",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert ("'nope'" if "@" in ref else "99") in lines[0]
    assert "Traceback" not in done.stderr


def test_the_serve_command_follows_the_alias_and_reloads_on_request(
    store: Store, tmp_path: Path
) -> None:
    operator = store.registry()
    operator.promote(NAME, 1, reason="baseline")
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapetum", "serve", "--model", f"models:/{NAME}@champion",
         "--registry", store.uri, "--keys-db", str(store.root / "keys.db"),
         "--model-poll", "0.5", "--port", str(port), "--grpc-port", "0"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        env={**os.environ, "TAPETUM_MODEL_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    admin = {"Authorization": f"Bearer {store.secrets['admin']}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 240
            while True:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        break
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.5)
            (model,) = client.get("/v1/models", headers=admin).json()["models"]
            assert model["name"] == NAME
            operator.promote(NAME, 2, reason="FP16")

            def serving() -> str:
                text = client.get("/metrics", headers=admin).text
                found = re.search(r'tapetum_model_version_serving\{[^}]*version="(\d+)"', text)
                return found.group(1) if found else ""

            _wait_for(lambda: serving() == "2", 120, "the server to follow the alias")
            reload = client.post(f"/v1/models/{NAME}/reload", headers=admin)
            assert reload.status_code == 200, reload.text
            assert (reload.json()["changed"], reload.json()["version"]) == (False, 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert f"model models:/{NAME}@champion → {NAME}/1" in text, text
    assert re.search(rf"model swap: {NAME}/1 .* → {NAME}/2 .*\(poll\)", text), text


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if exe is None:
        pytest.skip("the mlflow command is not installed")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "mlflow.log").open("w")
    server = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240  # a cold start on a busy two-core machine
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/health", timeout=2) as resp,
            ):
                if resp.status == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "mlflow.log").read_text())
            time.sleep(1)
        yield url, server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
        log.close()


def test_an_unreachable_registry_at_reload_is_503_and_the_old_model_keeps_serving(
    store: Store,
    mlflow_server: tuple[str, subprocess.Popen[bytes]],
    yolox_path: Path,
    jpeg: bytes,
    tmp_path: Path,
) -> None:
    url, process = mlflow_server
    remote = ModelRegistry(url)
    v1 = remote.register(yolox_path, NAME)
    remote.register(yolox_path, NAME, parent=v1.ref)  # the same file: a distinct version
    remote.promote(NAME, 1, reason="baseline")
    remote_store = Store(url, store.root, store.keys, store.secrets)
    with serving(remote_store, tmp_path / "cache", poll_s=0, registry=remote) as served:
        remote.promote(NAME, 2, reason="next")
        os.killpg(process.pid, signal.SIGKILL)  # the server and its workers
        process.wait(30)

        resp = served.client.post(f"/v1/models/{NAME}/reload", headers=served.auth("admin"))
        assert_error(resp, 503, "registry_unavailable")
        assert resp.headers.get("Retry-After")
        detail = resp.json()["detail"]
        assert "127.0.0.1" not in detail and str(tmp_path) not in detail, detail
        with pytest.raises(grpc.RpcError) as unavailable:
            served.stub.ReloadModel(pb.ModelRef(name=NAME), metadata=served.meta("admin"))
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE

        detect = served.client.post(
            "/v1/detect",
            content=jpeg,
            headers={**served.auth("infer"), "Content-Type": "image/jpeg"},
        )
        assert detect.status_code == 200 and detect.json()["detections"]
        assert served.serving() == "1"
