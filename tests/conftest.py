"""Shared fixtures. Real assets come from ``$TAPETUM_ASSETS`` (``.ci/run`` points it at
``../shared/assets``); integration tests skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _assets_dir() -> Path | None:
    env = os.environ.get("TAPETUM_ASSETS")
    candidate = Path(env) if env else REPO_ROOT.parent / "shared" / "assets"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def assets() -> Path:
    path = _assets_dir()
    if path is None:
        pytest.skip("shared assets not found: set TAPETUM_ASSETS to the shared/assets folder")
    return path


@pytest.fixture(scope="session")
def yolox_path(assets: Path) -> Path:
    return assets / "models" / "yolox_nano.onnx"


@pytest.fixture(scope="session")
def crowd_video(assets: Path) -> Path:
    return assets / "video" / "crowd_720p.avi"
