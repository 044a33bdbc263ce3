"""TLS for the servers and the remote backend client, and the rule on cleartext binds.

A key travels with every call, so a server reachable from the network must speak TLS:
:func:`check_bind` refuses to listen on an address that is not loopback without a
certificate, unless the operator says ``insecure=True`` (``tapetum serve --insecure``,
for a network where TLS ends at a proxy in front of the server).

:class:`TlsFiles` is a PEM certificate chain and its private key, as ``tapetum serve
--tls-cert/--tls-key`` take them: uvicorn gets the paths (:meth:`TlsFiles.uvicorn_options`),
the gRPC server a ``grpc.ssl_server_credentials`` (:meth:`TlsFiles.grpc_server_credentials`).
:func:`grpc_channel_credentials` is the client side (the ``--backend`` node): the system
roots, or a CA bundle for a private CA or a self-signed certificate.

Example::

    tls = TlsFiles(Path("server.crt"), Path("server.key"))
    check_bind("0.0.0.0", tls, insecure=False)             # fine: TLS
    check_bind("0.0.0.0", None, insecure=False)            # ConfigError
    uvicorn.run(app, host="0.0.0.0", port=8443, **tls.uvicorn_options())
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapetum.errors import ConfigError

if TYPE_CHECKING:
    import grpc

__all__ = ["TlsFiles", "check_bind", "grpc_channel_credentials", "is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``).

    Any other name counts as reachable from the network (it may resolve anywhere), and so
    do the wildcards ``0.0.0.0`` and ``::``.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tls: TlsFiles | None, *, insecure: bool, what: str = "serve") -> None:
    """Refuse a cleartext listener on a non-loopback ``host`` unless ``insecure``.

    Raises:
        ConfigError: ``host`` is not loopback, there is no TLS, and ``insecure`` is False.
    """
    if tls is not None or insecure or is_loopback_host(host):
        return
    raise ConfigError(
        f"refusing to {what} on {host} without TLS: API keys would cross the network in "
        "cleartext. Give a certificate and key (tls_cert / tls_key), bind to 127.0.0.1, "
        "or accept cleartext explicitly (insecure, e.g. behind a TLS-terminating proxy)"
    )


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A PEM certificate (chain) and its private key for a server.

    Raises:
        ConfigError: either file is missing or unreadable.
    """

    cert_file: Path
    key_file: Path

    def __post_init__(self) -> None:
        for label, path in (("certificate", self.cert_file), ("private key", self.key_file)):
            if not path.is_file():
                raise ConfigError(f"TLS {label} file not found: {path}")

    def read(self) -> tuple[bytes, bytes]:
        """(private key, certificate chain) as PEM bytes.

        Raises:
            ConfigError: a file cannot be read.
        """
        try:
            return self.key_file.read_bytes(), self.cert_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the TLS files: {exc}") from exc

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments of ``uvicorn.Config`` / ``uvicorn.run``."""
        return {"ssl_certfile": str(self.cert_file), "ssl_keyfile": str(self.key_file)}

    def grpc_server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials for ``server.add_secure_port`` (no client certificates)."""
        import grpc

        key, cert = self.read()
        return grpc.ssl_server_credentials([(key, cert)])


def grpc_channel_credentials(ca_file: Path | None = None) -> grpc.ChannelCredentials:
    """Client credentials that verify the server: the system roots, or ``ca_file``'s.

    Raises:
        ConfigError: ``ca_file`` cannot be read.
    """
    import grpc

    roots = None
    if ca_file is not None:
        try:
            roots = ca_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the CA file {ca_file}: {exc}") from exc
    return grpc.ssl_channel_credentials(root_certificates=roots)
