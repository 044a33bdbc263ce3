"""Which sources a server opens for its API callers: :class:`SourcePolicy`, a small pure
check run before anything is opened (``POST /v1/streams``, gRPC ``StartStream``).

A stream URI comes from a client, and the server opens it with its own network position
and file permissions, so without a policy a key with ``infer`` could make the server fetch
internal URLs (SSRF), scan ports (``tcp://`` answers in 3 ms when refused, after the
timeout when filtered) or probe the server's files. The rules:

- **Local paths** only inside the operator's media roots: the path's real location
  (symbolic links and ``..`` resolved) must lie inside a root's real location. A relative
  path is looked up in each root in turn. No roots configured: no local path at all. The
  check never says whether a refused path exists.
- **Network URIs** only with an allowed scheme (``rtsp``, ``rtsps``, ``rtmp``, ``http``,
  ``https``; ``udp`` and ``tcp`` only through an allow pattern), and only to hosts whose
  every resolved address is public: loopback, private, link-local (cloud metadata at
  169.254.169.254 included), carrier-grade NAT, multicast, unspecified and reserved
  addresses are refused.
- **Allow patterns** (``allowed``) let the operator open exceptions: a CIDR
  (``10.0.7.0/24``, ``fd00::/8``) admits those addresses; a pattern containing ``://`` is
  an :func:`fnmatch.fnmatchcase` glob on the whole URI (``rtsp://10.0.7.*``,
  ``udp://239.1.1.1:*``) and admits any scheme the video source reads; any other pattern is
  a glob on the host name (``*.cams.internal``).

Refusals raise :class:`~tapetum.errors.SourceNotAllowedError`, whose message is the same
for every rule (safe to show a client); its ``reason`` says which rule, for the log.

Residual risk: FFmpeg resolves the host again when it connects, so a DNS name whose
answer changes between the check and the connection (DNS rebinding) can still reach an
address the check refused, and an HTTP redirect is followed by FFmpeg, not checked here.
Allow-list by address (CIDR) where that matters, and keep the server's own egress filtered.

Example:
    >>> policy = SourcePolicy(resolve=lambda host, port: ["10.0.0.7"])
    >>> policy.check("rtsp://cam7/101")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    tapetum.errors.SourceNotAllowedError: the source rtsp://cam7/101 is not allowed by ...
    >>> SourcePolicy(allowed=("10.0.0.0/24",), resolve=lambda h, p: ["10.0.0.7"]).check(
    ...     "rtsp://cam7/101")
    'rtsp://cam7/101'
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import urlsplit

from tapetum.errors import ConfigError, SourceError, SourceNotAllowedError
from tapetum.sources.video import LIVE_SCHEMES, display_url, url_scheme

__all__ = [
    "DEFAULT_NETWORK_SCHEMES",
    "SourcePolicy",
    "resolve_host",
]

#: Schemes a URI may use without an allow pattern.
DEFAULT_NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "http", "https"})

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int | None], Sequence[str]]


def resolve_host(host: str, port: int | None) -> list[str]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``); empty when it does not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def _is_public(address: _Address) -> bool:
    """True for a globally routable unicast address (``is_global`` covers private,
    loopback, link-local, shared 100.64/10, reserved and documentation ranges)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast and not address.is_unspecified


def _is_inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives (Windows)
        return False


@dataclass(frozen=True, slots=True)
class SourcePolicy:
    """What the API may open (see the module docstring for the rules).

    Attributes:
        media_roots: folders whose files and subfolders may be opened; empty: none.
        allowed: operator exceptions: CIDRs, URI globs (with ``://``) or host globs.
        schemes: network schemes allowed without a URI glob.
        resolve: host, port → addresses (injectable for tests; default DNS).

    Raises:
        ConfigError: an empty allow pattern.
    """

    media_roots: tuple[Path, ...] = ()
    allowed: tuple[str, ...] = ()
    schemes: frozenset[str] = DEFAULT_NETWORK_SCHEMES
    resolve: Resolver = resolve_host
    _networks: tuple[_Network, ...] = field(init=False, repr=False)
    _uri_globs: tuple[str, ...] = field(init=False, repr=False)
    _host_globs: tuple[str, ...] = field(init=False, repr=False)
    _real_roots: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        networks: list[_Network] = []
        uri_globs: list[str] = []
        host_globs: list[str] = []
        for pattern in (p.strip() for p in self.allowed):
            if not pattern:
                raise ConfigError("an allowed-source pattern is empty")
            try:
                networks.append(ipaddress.ip_network(pattern, strict=False))
                continue
            except ValueError:
                pass
            (uri_globs if "://" in pattern else host_globs).append(pattern)
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_uri_globs", tuple(uri_globs))
        object.__setattr__(self, "_host_globs", tuple(h.lower() for h in host_globs))
        roots = tuple(os.path.realpath(root) for root in self.media_roots)
        object.__setattr__(self, "_real_roots", roots)

    def check(self, uri: str) -> str:
        """The URI to open for ``uri`` (a local path comes back as its real path, so
        what was checked is what is opened), or a refusal.

        Raises:
            SourceNotAllowedError: the policy refuses ``uri`` (``reason`` says why).
            SourceError: the host does not resolve.
        """
        if any(ord(c) < 0x20 or c == "\x7f" for c in uri):
            raise self._refuse(uri, "control characters in the URI")
        scheme = url_scheme(uri)
        if scheme is None:
            return self._check_path(uri)
        return self._check_url(uri, scheme)

    # ---------------------------------------------------------------------- local paths

    def _check_path(self, uri: str) -> str:
        if not self._real_roots:
            raise self._refuse(uri, "local paths are not allowed (no media roots configured)")
        path = Path(uri)
        candidates = [path] if path.is_absolute() else [Path(r) / path for r in self._real_roots]
        for candidate in candidates:
            real = os.path.realpath(candidate)
            if any(_is_inside(real, root) for root in self._real_roots):
                return real
        raise self._refuse(uri, "the path is outside every media root")

    # --------------------------------------------------------------------- network URIs

    def _check_url(self, uri: str, scheme: str) -> str:
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError as exc:
            raise self._refuse(uri, f"malformed URI ({exc})") from None
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise self._refuse(uri, "no host in the URI")
        if any(fnmatchcase(uri, glob) for glob in self._uri_globs):
            if scheme not in LIVE_SCHEMES:
                raise self._refuse(uri, f"scheme {scheme!r} is not a stream scheme")
            return uri
        if scheme not in self.schemes:
            raise self._refuse(uri, f"scheme {scheme!r} is not allowed")
        if any(fnmatchcase(host.lower(), glob) for glob in self._host_globs):
            return uri
        addresses = self._addresses(host, port)
        if not addresses:
            raise SourceError(f"cannot open {display_url(uri)}: its host does not resolve")
        for address in addresses:
            if not (_is_public(address) or any(address in net for net in self._networks)):
                raise self._refuse(uri, f"{host} resolves to {address}, not a public address")
        return uri

    def _addresses(self, host: str, port: int | None) -> list[_Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        found = []
        for text in self.resolve(host, port):
            try:
                found.append(ipaddress.ip_address(text.split("%", 1)[0]))  # drop a zone id
            except ValueError:
                continue
        return found

    @staticmethod
    def _refuse(uri: str, reason: str) -> SourceNotAllowedError:
        return SourceNotAllowedError(
            f"the source {display_url(uri)} is not allowed by this server's source policy "
            "(media roots and allowed sources)",
            reason,
        )
