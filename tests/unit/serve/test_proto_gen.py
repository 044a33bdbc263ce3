"""The committed gRPC code is exactly what ``scripts/gen_proto.py`` makes of the proto."""

from __future__ import annotations

import importlib.util
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed (pip install grpcio-tools)")


def _gen_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_proto", REPO_ROOT / "scripts" / "gen_proto.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    gen = _gen_script()
    installed = version("grpcio-tools")
    if installed != gen.GENERATOR_VERSION:
        pytest.skip(
            f"grpcio-tools {installed} installed; the code is pinned to {gen.GENERATOR_VERSION}"
        )
    written = gen.generate(tmp_path)
    committed_dir = REPO_ROOT / "tapetum" / "serve" / "grpc" / "_gen"
    assert sorted(p.name for p in written) == sorted(
        p.name for p in committed_dir.iterdir() if p.is_file()
    ), "the committed _gen folder has missing or extra files"
    for fresh in written:
        committed = committed_dir / fresh.name
        assert committed.read_bytes() == fresh.read_bytes(), (
            f"{committed} is stale: run `python scripts/gen_proto.py`"
        )


def test_generated_imports_are_relative() -> None:
    text = (REPO_ROOT / "tapetum" / "serve" / "grpc" / "_gen" / "tapetum_pb2_grpc.py").read_text()
    assert "from . import tapetum_pb2" in text
    assert "from tapetum.v1" not in text
