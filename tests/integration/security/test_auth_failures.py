"""Finding 5 of issue 11: bogus keys cost no argon2 work any more (see
tests/unit/serve/test_serve_auth.py) and repeated authentication failures from one address are
refused with 429 / RESOURCE_EXHAUSTED before anything is verified, REST and gRPC alike.
Before: every failure was a 401, forever, each costing a 64 MiB argon2id verification."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("grpc")

import grpc

from tapetum.serve.app import ServeSettings, create_app
from tapetum.serve.auth import KeyStore, Scope
from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc
from tests.integration.security.conftest import grpc_server
from tests.integration.serve_harness import LoopbackServer

pytestmark = pytest.mark.integration

BUDGET = 5


def _bogus(i: int) -> str:
    return f"tpk_{i:012x}_{'x' * 43}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    with KeyStore(tmp_path / "keys.db") as key_store:
        yield key_store


def test_rest_failed_authentications_from_one_address_get_429(
    yolox_path: Path, store: KeyStore
) -> None:
    _, known = store.create("known", [Scope.READ])
    _, unused = store.create("unused", [Scope.READ])
    settings = ServeSettings(model_path=yolox_path, auth_failures_per_minute=BUDGET)
    server = LoopbackServer(create_app(settings, key_store=store)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=20) as client:
            ok = client.get("/v1/models", headers={"X-API-Key": known})
            assert ok.status_code in (200, 503)  # verified (and now cached)
            for i in range(BUDGET):
                assert client.get("/v1/models", headers={"X-API-Key": _bogus(i)}).status_code == 401
            refused = client.get("/v1/models", headers={"X-API-Key": _bogus(99)})
            assert refused.status_code == 429
            assert refused.json()["code"] == "too_many_auth_failures"
            assert int(refused.headers["Retry-After"]) >= 1
            # A key this server verified recently still works from the same address ...
            assert client.get("/v1/models", headers={"X-API-Key": known}).status_code != 429
            # ... but nothing new is verified for it until the budget recovers.
            assert client.get("/v1/models", headers={"X-API-Key": unused}).status_code == 429
    finally:
        server.stop()


def test_grpc_failed_authentications_from_one_address_are_resource_exhausted(
    yolox_path: Path, store: KeyStore
) -> None:
    settings = ServeSettings(model_path=yolox_path, auth_failures_per_minute=BUDGET)
    server, port, service = grpc_server(settings, store)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.DetectorStub(channel)  # type: ignore[no-untyped-call]
    try:
        for i in range(BUDGET):
            with pytest.raises(grpc.RpcError) as failed:
                stub.ListModels(pb.ListModelsRequest(), metadata=(("x-api-key", _bogus(i)),))
            assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListModels(pb.ListModelsRequest(), metadata=(("x-api-key", _bogus(99)),))
        err = refused.value
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        trailing = dict(err.trailing_metadata())  # type: ignore[attr-defined]
        assert trailing["tapetum-error-code"] == "too_many_auth_failures"
        assert stub.Health(pb.HealthRequest()).model_loaded  # needs no key: unaffected
    finally:
        channel.close()
        server.stop(0).wait()
        service.close()


def test_unreadable_key_store_is_a_generic_503_without_its_path(
    yolox_path: Path, tmp_path: Path
) -> None:
    db = tmp_path / "secret-location" / "keys.db"
    db.parent.mkdir()
    store = KeyStore(db)
    store.close()  # every read now fails with KeyStoreError naming the file
    settings = ServeSettings(model_path=yolox_path)
    server = LoopbackServer(create_app(settings, key_store=store)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=20) as client:
            resp = client.get("/v1/models", headers={"X-API-Key": _bogus(1)})
        assert resp.status_code == 503
        assert resp.json()["code"] == "auth_unavailable"
        assert "secret-location" not in resp.text and "keys.db" not in resp.text
    finally:
        server.stop()
