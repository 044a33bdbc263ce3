"""Registry references, settings and the content-addressed cache: pure parts, no MLflow."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapetum.errors import ArtifactCorruptError, ArtifactMissingError, ConfigError
from tapetum.registry import (
    ArtifactCache,
    ModelRef,
    content_digest,
    is_model_uri,
    local_model_path,
    parse_model_ref,
    parse_model_uri,
    sha256_file,
)
from tapetum.registry.settings import (
    DEFAULT_REGISTRY_URI,
    model_cache_dir,
    redact_uri,
    registry_uri,
    store_kind,
)

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
aliases = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,20}", fullmatch=True).filter(
    lambda a: a.lower() != "latest" and not (a[:1] in "vV" and a[1:].isdigit() and a[1:])
)


# ------------------------------------------------------------------------ references


@given(name=names, version=st.integers(1, 10**6))
def test_a_version_uri_round_trips(name: str, version: int) -> None:
    ref = ModelRef(name, version=version)
    assert parse_model_uri(str(ref)) == ref
    assert parse_model_ref(ref.short) == ref


@given(name=names, alias=aliases)
def test_an_alias_uri_round_trips(name: str, alias: str) -> None:
    ref = ModelRef(name, alias=alias)
    assert parse_model_uri(f"models:/{name}@{alias}") == ref
    assert parse_model_ref(f"{name}@{alias}") == ref


def test_latest_and_bare_names_mean_no_version() -> None:
    assert parse_model_uri("models:/yolox_nano/latest") == ModelRef("yolox_nano")
    assert parse_model_ref("yolox_nano") == ModelRef("yolox_nano")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("models:/", "model name ''"),
        ("models:/a/b/c", "malformed"),
        ("models:/yolox/two", "not a number"),
        ("models:/yolox/0", "start at 1"),
        ("models:/yolox@v3", "reserved"),
        ("models:/yolox@latest", "reserved"),
        ("models:/yo lox@champion", "model name"),
        ("models:/yolox@champ@x", "malformed"),
    ],
)
def test_malformed_references_are_config_errors_naming_the_problem(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_model_uri(text)


def test_a_path_is_not_a_model_uri_and_passes_through_untouched() -> None:
    assert not is_model_uri("models/yolox_nano.onnx")
    assert not is_model_uri("/data/models:/x.onnx")
    path, resolved = local_model_path("models/yolox_nano.onnx")
    assert (path, resolved) == (Path("models/yolox_nano.onnx"), None)
    with pytest.raises(ConfigError, match="not a model URI"):
        parse_model_uri("yolox_nano.onnx")


# ------------------------------------------------------------------------ settings


def test_registry_uri_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAPETUM_REGISTRY_URI", raising=False)
    assert registry_uri() == DEFAULT_REGISTRY_URI
    monkeypatch.setenv("TAPETUM_REGISTRY_URI", "http://mlflow:5000")
    assert registry_uri() == "http://mlflow:5000"
    assert registry_uri("postgresql://u@db/reg") == "postgresql://u@db/reg"


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("sqlite:///tapetum-registry.db", "sqlite"),
        ("postgresql://u:p@127.0.0.1:5432/reg", "sql"),
        ("postgresql+psycopg2://u@h/reg", "sql"),
        ("https://mlflow.example.com", "http"),
    ],
)
def test_store_kinds(uri: str, kind: str) -> None:
    assert store_kind(uri) == kind


@pytest.mark.parametrize("uri", ["./mlruns", "file:///tmp/mlruns", "s3://bucket/x"])
def test_stores_without_a_model_registry_are_refused(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"sqlite:///FILE\.db"):
        registry_uri(uri)


def test_passwords_never_reach_messages() -> None:
    assert redact_uri("postgresql://tap:s3cret@db:5432/reg") == "postgresql://tap:***@db:5432/reg"
    with pytest.raises(ConfigError) as info:
        store_kind("ftp://tap:s3cret@host/x")
    assert "s3cret" not in str(info.value)


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TAPETUM_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir() == tmp_path / "xdg" / "tapetum" / "models"
    monkeypatch.setenv("TAPETUM_MODEL_CACHE", str(tmp_path / "env"))
    assert model_cache_dir() == tmp_path / "env"
    assert model_cache_dir(tmp_path / "arg") == tmp_path / "arg"


# ------------------------------------------------------------------------ cache


def _model(tmp_path: Path, content: bytes = b"onnx bytes") -> tuple[Path, str]:
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def test_fetch_downloads_once_then_serves_the_checked_copy(tmp_path: Path) -> None:
    src, digest = _model(tmp_path)
    calls: list[Path] = []

    def download(folder: Path) -> Path:
        calls.append(folder)
        (folder / "m.onnx").write_bytes(src.read_bytes())
        return folder / "m.onnx"

    cache = ArtifactCache(tmp_path / "cache")
    first = cache.fetch(digest, download)
    second = cache.fetch(digest, download)
    assert first == second == cache.path_for(digest)
    assert len(calls) == 1 and not calls[0].exists()  # the download folder is cleaned up
    assert sha256_file(first) == digest
    assert src.exists()  # a file the downloader did not put in the folder is copied


def test_a_corrupted_cached_file_is_replaced_by_a_fresh_download(tmp_path: Path) -> None:
    src, digest = _model(tmp_path)
    cache = ArtifactCache(tmp_path / "cache")
    cached = cache.fetch(digest, lambda folder: src)
    cached.write_bytes(b"bit rot")
    assert cache.get(digest) is None and not cached.exists()
    assert sha256_file(cache.fetch(digest, lambda folder: src)) == digest


def test_a_download_with_the_wrong_hash_is_refused_and_not_cached(tmp_path: Path) -> None:
    _, digest = _model(tmp_path)
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(b"something else")
    cache = ArtifactCache(tmp_path / "cache")
    with pytest.raises(ArtifactCorruptError, match="sha256 mismatch"):
        cache.fetch(digest, lambda folder: tampered)
    assert not cache.path_for(digest).exists()
    assert list(cache.path_for(digest).parent.iterdir()) == []  # no temp leftovers


def test_a_download_that_yields_no_file_is_a_missing_artifact(tmp_path: Path) -> None:
    _, digest = _model(tmp_path)
    with pytest.raises(ArtifactMissingError):
        ArtifactCache(tmp_path / "c").fetch(digest, lambda folder: folder / "nothing.onnx")


def test_content_digest_follows_content_not_the_folder_name(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "1.jpg").write_bytes(b"one")
        (tmp_path / name / "sub" / "2.jpg").write_bytes(b"two")
    da, n = content_digest([tmp_path / "a"])
    assert n == 2 and da == content_digest([tmp_path / "b"])[0]
    (tmp_path / "b" / "sub" / "2.jpg").write_bytes(b"changed")
    assert content_digest([tmp_path / "b"])[0] != da
    with pytest.raises(ConfigError, match="not found"):
        content_digest([tmp_path / "missing"])
