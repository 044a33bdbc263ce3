"""Finding 9 of issue 11 and the Low items on the docs pages: TLS for REST and gRPC (and
the remote backend client), no cleartext listener on a non-loopback address unless asked,
and ``/docs`` served offline with CSP, frame and sniffing protection.
Before: gRPC listened in cleartext wherever REST did, the backend key crossed the network
in cleartext, and /docs loaded Swagger UI from a CDN with no security headers."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("grpc")

import grpc

from tapetum.errors import ConfigError
from tapetum.serve.app import ServeSettings, create_app
from tapetum.serve.auth import KeyStore, Scope
from tapetum.serve.grpc._gen import tapetum_pb2 as pb
from tapetum.serve.grpc._gen import tapetum_pb2_grpc as pb_grpc
from tapetum.serve.remote import RemoteDetector
from tapetum.serve.tls import TlsFiles, check_bind, grpc_channel_credentials
from tests.integration.security.conftest import grpc_server

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_cleartext_on_a_network_address_is_refused(host: str, tls_files: TlsFiles) -> None:
    with pytest.raises(ConfigError, match="without TLS"):
        check_bind(host, None, insecure=False)
    check_bind(host, tls_files, insecure=False)
    check_bind(host, None, insecure=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_cleartext_on_loopback_is_fine(host: str) -> None:
    check_bind(host, None, insecure=False)


def test_cli_refuses_a_cleartext_non_loopback_bind(yolox_path: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapetum.cli.app",
            "serve",
            "--model",
            str(yolox_path),
            "--host",
            "0.0.0.0",
            "--no-auth",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TAPETUM_KEYS_DB": str(tmp_path / "k.db")},
    )
    assert result.returncode == 2, result.stderr
    assert "without TLS" in result.stderr


def test_grpc_over_tls_with_the_remote_backend(
    yolox_path: Path, tmp_path: Path, tls_files: TlsFiles
) -> None:
    with KeyStore(tmp_path / "keys.db") as store:
        _, key = store.create("node", [Scope.READ, Scope.INFER])
        server, port, service = grpc_server(
            ServeSettings(model_path=yolox_path), store, tls=tls_files
        )
        try:
            remote = RemoteDetector(
                f"localhost:{port}", key, ca_file=tls_files.cert_file, timeout_s=10
            )
            assert remote.tls and len(remote.class_names) == 80
            remote.close()
            secure = grpc.secure_channel(
                f"localhost:{port}", grpc_channel_credentials(tls_files.cert_file)
            )
            stub = pb_grpc.DetectorStub(secure)  # type: ignore[no-untyped-call]
            assert stub.Health(pb.HealthRequest(), timeout=5).model_loaded
            secure.close()
            # A cleartext client gets nothing from a TLS port.
            plain = grpc.insecure_channel(f"127.0.0.1:{port}")
            with pytest.raises(grpc.RpcError):
                pb_grpc.DetectorStub(plain).Health(pb.HealthRequest(), timeout=2)  # type: ignore[no-untyped-call]
            plain.close()
        finally:
            server.stop(0).wait()
            service.close()


def test_remote_backend_refuses_to_send_its_key_in_cleartext_off_loopback() -> None:
    with pytest.raises(ConfigError, match="cleartext"):
        RemoteDetector("grpc://192.0.2.10:50051", "tpk_0123456789ab_" + "s" * 43)


def test_rest_over_tls_and_offline_docs_with_security_headers(
    yolox_path: Path, tls_files: TlsFiles
) -> None:

    import uvicorn

    from tests.integration.serve_harness import free_port

    app = create_app(ServeSettings(model_path=yolox_path, require_auth=False))
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", **tls_files.uvicorn_options()
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        with httpx.Client(
            base_url=f"https://localhost:{port}",
            verify=ssl.create_default_context(cafile=str(tls_files.cert_file)),
            timeout=10,
        ) as client:
            docs = client.get("/docs")
            assert docs.status_code == 200
            csp = docs.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self' 'nonce-" in csp
            assert docs.headers["x-frame-options"] == "DENY"
            assert docs.headers["x-content-type-options"] == "nosniff"
            assert "cdn" not in docs.text and "https://" not in docs.text  # nothing off-site
            nonce = csp.split("'nonce-")[1].split("'")[0]
            assert f'<script nonce="{nonce}">' in docs.text
            bundle = client.get("/docs/static/swagger-ui-bundle.js")
            assert bundle.status_code == 200 and len(bundle.content) > 100_000
            assert client.get("/redoc").status_code == 200
            assert client.get("/docs/static/redoc.standalone.js").status_code == 200
            assert client.get("/docs/static/..%2Fcore.py").status_code == 404
            api = client.get("/healthz")
            assert api.headers["x-content-type-options"] == "nosniff"
            assert "default-src 'none'" in api.headers["content-security-policy"]
        with pytest.raises(httpx.HTTPError):  # cleartext to the TLS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3)
    finally:
        server.should_exit = True
        thread.join(10)
