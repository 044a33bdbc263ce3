"""The stream source policy: local paths only inside media roots, network hosts only at
public addresses unless the operator allow-lists them, and refusals that say nothing about
what exists."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapetum.errors import SourceError, SourceNotAllowedError
from tapetum.serve.source_policy import SourcePolicy

PUBLIC = "93.184.216.34"


def _resolver(table: dict[str, Sequence[str]]) -> Callable[[str, int | None], Sequence[str]]:
    def resolve(host: str, port: int | None) -> Sequence[str]:
        return table.get(host, ())

    return resolve


def _refused(policy: SourcePolicy, uri: str) -> SourceNotAllowedError:
    with pytest.raises(SourceNotAllowedError) as info:
        policy.check(uri)
    return info.value


# ---------------------------------------------------------------------------- local paths


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "cams").mkdir(parents=True)
    (root / "cams" / "gate.mp4").write_bytes(b"x")
    return root


def test_no_media_roots_no_local_paths(media: Path) -> None:
    err = _refused(SourcePolicy(), str(media / "cams" / "gate.mp4"))
    assert "no media roots" in err.reason


def test_a_file_inside_a_root_is_opened_by_its_real_path(media: Path) -> None:
    policy = SourcePolicy(media_roots=(media,))
    inside = media / "cams" / "gate.mp4"
    assert policy.check(str(inside)) == str(inside.resolve())
    assert policy.check("cams/gate.mp4") == str(inside.resolve()), "relative to a root"
    assert policy.check(str(media / "cams")) == str((media / "cams").resolve()), "a folder"


def test_dot_dot_and_symlinks_out_of_the_root_are_refused(media: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"x")
    (media / "cams" / "escape.mp4").symlink_to(secret)
    policy = SourcePolicy(media_roots=(media,))
    for uri in (
        str(media / "cams" / ".." / ".." / "secret.mp4"),
        "../secret.mp4",
        str(media / "cams" / "escape.mp4"),
        "/etc/passwd",
    ):
        assert "outside every media root" in _refused(policy, uri).reason, uri


def test_refusals_do_not_tell_whether_a_path_exists_or_what_it_is(
    media: Path, tmp_path: Path
) -> None:
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "not_a_video.txt").write_text("hello")
    policy = SourcePolicy(media_roots=(media,))
    messages = {
        str(_refused(policy, str(tmp_path / name))).replace(name, "NAME")
        for name in ("a_folder", "not_a_video.txt", "missing.mp4")
    }
    assert len(messages) == 1, messages


def test_a_media_root_that_is_a_symlink_still_works(media: Path, tmp_path: Path) -> None:
    link = tmp_path / "media-link"
    link.symlink_to(media)
    policy = SourcePolicy(media_roots=(link,))
    assert policy.check(str(link / "cams" / "gate.mp4")) == str(
        (media / "cams" / "gate.mp4").resolve()
    )


# --------------------------------------------------------------------------- network URIs

REFUSED_ADDRESSES = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.5",
    "192.168.1.10",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "100.100.100.200",  # a cloud's metadata, in 100.64/10
    "0.0.0.0",
    "224.0.0.1",
    "239.1.2.3",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fd00:ec2::254",  # cloud metadata (IPv6)
    "::ffff:127.0.0.1",
    "ff02::1",
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_non_public_addresses_are_refused_as_literals_and_as_resolved_names(
    address: str,
) -> None:
    policy = SourcePolicy(resolve=_resolver({"cam.example": [address]}))
    literal = f"[{address}]" if ":" in address else address
    assert "not a public address" in _refused(policy, f"http://{literal}:8080/x").reason
    assert "not a public address" in _refused(policy, "rtsp://cam.example/1").reason


def test_a_public_host_is_allowed_and_one_private_answer_refuses_it() -> None:
    policy = SourcePolicy(
        resolve=_resolver({"cam.example": [PUBLIC], "mixed.example": [PUBLIC, "10.0.0.1"]})
    )
    assert policy.check("rtsp://cam.example:554/Streaming/101") == (
        "rtsp://cam.example:554/Streaming/101"
    )
    assert policy.check(f"https://{PUBLIC}/live.m3u8") == f"https://{PUBLIC}/live.m3u8"
    _refused(policy, "rtsp://mixed.example/1")


def test_a_host_that_does_not_resolve_is_a_source_error_not_a_policy_refusal() -> None:
    with pytest.raises(SourceError) as info:
        SourcePolicy(resolve=_resolver({})).check("rtsp://nowhere.example/1")
    assert not isinstance(info.value, SourceNotAllowedError)


@pytest.mark.parametrize(
    "uri",
    [
        f"tcp://{PUBLIC}:22",
        f"udp://{PUBLIC}:1234",
        f"ftp://{PUBLIC}/x.ts",
        f"gopher://{PUBLIC}/",
        "file:///etc/passwd",
        f"concat:{PUBLIC}",
    ],
)
def test_only_the_stream_schemes_are_allowed_by_default(uri: str) -> None:
    policy = SourcePolicy(resolve=_resolver({}))
    with pytest.raises(SourceNotAllowedError):
        policy.check(uri)


@pytest.mark.parametrize(
    "uri",
    ["http://[::1/x", "rtsp://host:99999/1", "http:///nohost", "rtsp://cam\x00.example/1"],
)
def test_malformed_uris_are_refused_not_crashed_on(uri: str) -> None:
    _refused(SourcePolicy(resolve=_resolver({"host": [PUBLIC]})), uri)


def test_operator_allow_patterns() -> None:
    policy = SourcePolicy(
        allowed=("10.0.7.0/24", "udp://239.1.1.1:*", "*.cams.internal"),
        resolve=_resolver({"gate.cams.internal": ["10.9.9.9"], "nvr.lan": ["10.0.7.20"]}),
    )
    assert policy.check("rtsp://10.0.7.5/1") == "rtsp://10.0.7.5/1", "CIDR"
    assert policy.check("rtsp://nvr.lan/1") == "rtsp://nvr.lan/1", "CIDR of the resolved address"
    assert policy.check("udp://239.1.1.1:5000") == "udp://239.1.1.1:5000", "URI glob, any scheme"
    assert policy.check("rtsp://GATE.cams.internal/1") == "rtsp://GATE.cams.internal/1", "host"
    _refused(policy, "rtsp://10.0.8.5/1")
    _refused(policy, "udp://239.1.1.2:5000")
    _refused(policy, "tcp://10.0.7.5:22")  # a CIDR admits addresses, not schemes


def test_the_message_is_the_same_for_every_rule() -> None:
    policy = SourcePolicy(resolve=_resolver({"internal.example": ["10.0.0.1"]}))
    messages = {
        str(_refused(policy, uri)).replace(uri, "URI")
        for uri in ("/etc/passwd", "tcp://8.8.8.8:22", "http://internal.example/")
    }
    assert len(messages) == 1, messages


@settings(max_examples=300, deadline=None)
@given(
    address=st.ip_addresses(v=4, network="10.0.0.0/8") | st.ip_addresses(v=6, network="fc00::/7")
)
def test_any_private_address_is_refused(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    _refused(SourcePolicy(), f"rtsp://{host}/1")


@settings(max_examples=500, deadline=None)
@given(
    uri=st.text(min_size=1, max_size=80) | st.from_regex(r"[a-z]{2,6}://\S{0,40}", fullmatch=True)
)
def test_any_uri_is_allowed_or_refused_with_a_source_error(uri: str) -> None:
    policy = SourcePolicy(resolve=_resolver({}))
    with contextlib.suppress(SourceError):  # anything else (ValueError...) fails the test
        policy.check(uri)
