"""Fixtures of the serving security tests: a self-signed certificate, raw HTTP over a
socket (to send bodies the way an attacker would), and the process's resident memory."""

from __future__ import annotations

import datetime as dt
import ipaddress
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapetum.serve.tls import TlsFiles


def rss_bytes() -> int:
    """Resident memory of this process (the servers under test run in it)."""
    import psutil

    return int(psutil.Process().memory_info().rss)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for localhost / 127.0.0.1 (it is its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(Path(cert_path), Path(key_path))


def send_until_answered(
    port: int, head: bytes, chunks: Iterator[bytes], *, max_send: int, wait_s: float = 5.0
) -> tuple[int | None, int]:
    """Send ``head`` then ``chunks`` until the server answers, ``max_send`` bytes went out,
    or the server stops reading; returns (HTTP status or None when no answer came, bytes of
    body sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait_s)
    sent = 0
    try:
        sock.sendall(head)
        sock.settimeout(0.2)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0] or sent >= max_send:
                break
            try:
                sock.sendall(chunk)
            except (TimeoutError, BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        deadline = time.monotonic() + wait_s
        data = b""
        sock.settimeout(0.2)
        while time.monotonic() < deadline and b"\r\n" not in data:
            try:
                part = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
        if not data.startswith(b"HTTP/1.1 "):
            return None, sent
        return int(data.split(b" ", 2)[1]), sent
    finally:
        sock.close()


def grpc_server(settings, key_store, **kwargs):  # type: ignore[no-untyped-def]
    """A started gRPC server on a free loopback port with its own service: (server, port,
    service)."""
    from tapetum.serve.grpc.server import create_grpc_server
    from tapetum.serve.service import DetectionService
    from tests.integration.serve_harness import free_port

    service = DetectionService(settings)
    service.start()
    assert service.wait_ready(120.0), service.load_error
    port = free_port()
    server = create_grpc_server(settings, service, key_store, None, port, **kwargs)
    server.start()
    return server, port, service
