"""Finding 10 (Low), this module's share: live subscriptions without an end, internal
details in answers, and runtime model loading from anywhere on the host.

Before the fix an SSE or ``StreamResults`` subscription lasted as long as its stream,
``/v1/models`` showed every key the server's model paths, and an admin could load any
``.onnx`` file the server could read (the answer told whether a path existed). Now a
subscription ends after ``max_subscription_s``, keys without ``admin`` see model file names
only, and runtime models load only from the model roots, by their real location. (The
per-key cap on subscriptions is in ``test_ownership``; malformed stream URIs answering 400
and source errors without paths are in ``test_source_policy``.)
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("grpc")

import grpc

from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tests.helpers import remux_to_mpegts
from tests.integration.security.stack import Stack, error_code, rpc_error, serve_stack
from tests.integration.serve_harness import assert_error

pytestmark = pytest.mark.integration

MAX_SUBSCRIPTION_S = 1.5


@pytest.fixture(scope="module")
def folders(
    yolox_path: Path, crowd_video: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """media: a 4 s clip; models: the model root, with a copy of the model and a link
    out; outside: a copy of the model where no root reaches."""
    media = tmp_path_factory.mktemp("media")
    remux_to_mpegts(crowd_video, media / "crowd_4s.ts", max_s=4.0)
    models = tmp_path_factory.mktemp("models")
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(yolox_path, models / "second.onnx")
    shutil.copy(yolox_path, outside / "elsewhere.onnx")
    (models / "escape.onnx").symlink_to(outside / "elsewhere.onnx")
    return {"media": media, "models": models, "outside": outside}


@pytest.fixture(scope="module")
def stack(
    yolox_path: Path, folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with serve_stack(
        yolox_path,
        tmp_path_factory.mktemp("keys"),
        media_roots=(folders["media"],),
        model_roots=(folders["models"],),
        max_subscription_s=MAX_SUBSCRIPTION_S,
    ) as served:
        yield served


@pytest.fixture(autouse=True)
def _no_streams_left(stack: Stack) -> Iterator[None]:
    yield
    stack.stop_all()


# ------------------------------------------------------------ subscriptions have an end


def test_rest_sse_subscription_ends_after_its_maximum_duration(stack: Stack) -> None:
    sid = stack.start("alice", "crowd_4s.ts", realtime=True).json()["stream_id"]
    t0 = time.monotonic()
    end: dict[str, object] | None = None
    frames = 0
    with stack.client.stream(
        "GET", f"/v1/streams/{sid}/results", headers=stack.auth("alice")
    ) as resp:
        event = "message"
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                if event == "end":
                    end = json.loads(line.removeprefix("data: "))
                    break
                frames += 1
    elapsed = time.monotonic() - t0
    assert end == {"stream_id": sid, "reason": "subscription_expired"}
    assert MAX_SUBSCRIPTION_S <= elapsed < MAX_SUBSCRIPTION_S + 2.0
    assert frames > 0
    info = stack.client.get(f"/v1/streams/{sid}", headers=stack.auth("alice")).json()
    assert info["state"] == "running", "the stream goes on; only the subscription ended"
    assert info["stats"]["subscribers"] == 0, "and its slot is free"


def test_grpc_stream_results_ends_after_its_maximum_duration(stack: Stack) -> None:
    info = stack.grpc_start("alice", "crowd_4s.ts", realtime=True)
    t0 = time.monotonic()
    call = stack.stub.StreamResults(pb.StreamRef(id=info.stream_id), metadata=stack.meta("alice"))
    err = rpc_error(lambda: call)
    elapsed = time.monotonic() - t0
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert error_code(err) == "subscription_expired"
    assert MAX_SUBSCRIPTION_S <= elapsed < MAX_SUBSCRIPTION_S + 2.0
    got = stack.stub.GetStream(pb.StreamRef(id=info.stream_id), metadata=stack.meta("alice"))
    assert got.state == pb.StreamInfo.STATE_RUNNING


# ---------------------------------------------------------------------- model file paths


def test_rest_model_paths_only_for_admins(stack: Stack, yolox_path: Path) -> None:
    for path in ("/v1/models", "/v1/models/yolox_nano"):
        reader = stack.client.get(path, headers=stack.auth("reader"))
        assert reader.status_code == 200
        assert str(yolox_path.parent) not in reader.text
        assert "yolox_nano.onnx" in reader.text
        admin = stack.client.get(path, headers=stack.auth("admin"))
        assert str(yolox_path) in admin.text


def test_grpc_model_paths_only_for_admins(stack: Stack, yolox_path: Path) -> None:
    (reader,) = stack.stub.ListModels(pb.ListModelsRequest(), metadata=stack.meta("reader")).models
    assert reader.path == "yolox_nano.onnx"
    described = stack.stub.DescribeModel(
        pb.DescribeModelRequest(name="yolox_nano"), metadata=stack.meta("alice")
    )
    assert described.path == "yolox_nano.onnx"
    (admin,) = stack.stub.ListModels(pb.ListModelsRequest(), metadata=stack.meta("admin")).models
    assert admin.path == str(yolox_path)


# ------------------------------------------------------------------ runtime model roots


def test_rest_admin_loads_models_only_from_the_model_roots(
    stack: Stack, folders: dict[str, Path]
) -> None:
    outside = folders["outside"]
    refused = [
        outside / "elsewhere.onnx",  # a real model outside the roots
        outside / "missing.onnx",  # nothing
        folders["models"] / "escape.onnx",  # a link out of the root
        folders["models"] / ".." / outside.name / "elsewhere.onnx",
        "/etc/passwd",
    ]
    details = set()
    for path in refused:
        resp = stack.client.post(
            "/v1/models", json={"name": "x", "path": str(path)}, headers=stack.auth("admin")
        )
        assert_error(resp, 400, "bad_model_path")
        details.add(resp.json()["detail"].replace(str(path), "<path>"))
    assert len(details) == 1, f"existing or not, the answer is the same: {details}"
    loaded = stack.client.post(
        "/v1/models", json={"name": "second", "path": "second.onnx"}, headers=stack.auth("admin")
    )
    assert loaded.status_code == 201, loaded.text
    assert loaded.json()["path"] == str((folders["models"] / "second.onnx").resolve())
    assert stack.client.delete("/v1/models/second", headers=stack.auth("admin")).status_code == 204


def test_grpc_admin_loads_models_only_from_the_model_roots(
    stack: Stack, folders: dict[str, Path]
) -> None:
    for path in (folders["outside"] / "elsewhere.onnx", folders["models"] / "escape.onnx"):
        err = rpc_error(
            lambda path=path: stack.stub.LoadModel(
                pb.LoadModelRequest(name="x", path=str(path)), metadata=stack.meta("admin")
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert error_code(err) == "bad_model_path"
    info = stack.stub.LoadModel(
        pb.LoadModelRequest(name="third", path=str(folders["models"] / "second.onnx")),
        metadata=stack.meta("admin"),
    )
    assert info.name == "third"
    stack.stub.UnloadModel(pb.ModelRef(name="third"), metadata=stack.meta("admin"))
