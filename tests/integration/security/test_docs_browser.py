"""The offline API docs render in a real browser under their strict CSP (issue 11, Low: Swagger
UI from a CDN and /docs without CSP). Headless Chromium (Debian's ``chromium``) loads
``/docs`` and ``/redoc`` from a live server: the JavaScript UIs must build their pages from the
locally served bundles, and the console must show no CSP violation or error (ReDoc's bundle
names a CDN logo that the server rewrites to a local file)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("fastapi_offline")

from tapetum.serve.app import ServeSettings, create_app
from tests.integration.serve_harness import LoopbackServer

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(url: str) -> tuple[str, list[str]]:
    """(the DOM after scripts ran, the console lines Chromium logged) for ``url``."""
    assert CHROMIUM is not None
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=8000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


@pytest.fixture(scope="module")
def server(yolox_path: Path):  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    loopback = LoopbackServer(
        create_app(ServeSettings(model_path=yolox_path, require_auth=False))
    ).start()
    yield loopback
    loopback.stop()


def test_swagger_ui_renders_every_route_offline_without_console_errors(
    server: LoopbackServer,
) -> None:
    dom, console = render(f"{server.url}/docs")
    assert 'class="swagger-ui' in dom, "Swagger UI did not build its page"
    for path in ("/v1/detect", "/v1/streams", "/healthz"):
        assert path in dom, f"{path} missing from the rendered docs"
    assert console == []


def test_redoc_renders_offline_without_csp_violations(server: LoopbackServer) -> None:
    dom, console = render(f"{server.url}/redoc")
    assert "/v1/detect" in dom, "ReDoc did not render the operations"
    assert "cdn.redoc.ly" not in dom
    assert not [line for line in console if "Content Security Policy" in line], console
