"""The live ``/dashboard`` in Debian's headless Chromium, driven over the DevTools protocol,
during a real ``tapetum run`` and on a real ``tapetum serve`` (with an API key): it renders
the streams, its numbers change between two screenshots, and the console shows no error,
uncaught exception or CSP violation."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.monitor_harness import (
    CHROMIUM,
    TAPETUM,
    Cdp,
    Proc,
    chromium_page,
    http_get,
    wait_until,
)
from tests.integration.serve_harness import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

#: The page's status line, or an empty stand-in while the previous page is still shown.
STATUS = "(document.getElementById('status') || {dataset: {}})"

ROW_FIELDS = """
(() => Array.from(document.querySelectorAll('#streams tbody tr')).map(tr =>
   Object.fromEntries(Array.from(tr.cells).map(td => [td.dataset.field, td.textContent]))))()
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    with chromium_page(tmp_path_factory.mktemp("chromium")) as cdp:
        yield cdp


def _open(cdp: Cdp, url: str) -> None:
    cdp.events.clear()
    cdp.call("Page.navigate", url=url)
    wait_until(
        lambda: int(cdp.evaluate(STATUS + ".dataset.polls || 0")) >= 2,
        60,
        "two polls of /metrics by the page",
    )


def _screenshot(cdp: Cdp, path: Path) -> bytes:
    import base64

    png = base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])
    path.write_bytes(png)
    return png


def test_run_dashboard_renders_and_updates_without_console_errors(
    browser: Cdp, assets: Path, tmp_path: Path
) -> None:
    port = free_port()
    run = Proc(
        [*TAPETUM, "run", str(assets / "video" / "epfl_campus4" / "campus4-c0.mp4"),
         "--model", str(assets / "models" / "yolox_nano.onnx"), "--realtime", "--no-video",
         "-q", "--out", str(tmp_path / "run"), "--metrics-port", str(port)],
        tmp_path / "run.log",
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: b"tapetum_stream_frames_processed_total" in http_get(url + "/metrics"),
            120,
            "the run's first frames",
        )
        _open(browser, url + "/dashboard")
        first_rows = browser.evaluate(ROW_FIELDS)
        first_png = _screenshot(browser, tmp_path / "dashboard-1.png")
        browser.pump(3.0)
        second_rows = browser.evaluate(ROW_FIELDS)
        second_png = _screenshot(browser, tmp_path / "dashboard-2.png")
        svg_bars = browser.evaluate("document.querySelectorAll('svg.hist rect').length")
        problems = browser.problems()  # before the run ends and the page's polls fail
        browser.call("Page.navigate", url="about:blank")
        assert run.alive(), run.output()
    finally:
        run.stop()
    assert [r["source"] for r in first_rows] == ["campus4-c0"]
    assert first_rows[0]["state"] == "running"
    assert int(second_rows[0]["processed"]) > int(first_rows[0]["processed"])
    assert float(second_rows[0]["p99"]) > 0  # latency from the histogram drawn
    assert first_png != second_png  # the numbers on the screen moved
    assert svg_bars == 10  # the confidence histogram has its ten buckets
    assert problems == []


def test_serve_dashboard_shows_server_streams_with_a_key(
    browser: Cdp, assets: Path, tmp_path: Path
) -> None:
    keys_db = tmp_path / "keys.sqlite"
    args = ["keys", "create", "--name", "ui", "--scopes", "infer,read", "--db", str(keys_db)]
    out = subprocess.run(
        [*TAPETUM, *args], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout
    key = next(w for w in out.split() if w.startswith("tpk_"))
    port = free_port()
    videos = assets / "video" / "epfl_campus4"
    serve = Proc(
        [*TAPETUM, "serve", "--model", str(assets / "models" / "yolox_nano.onnx"),
         "--port", str(port), "--grpc-port", str(free_port()), "--keys-db", str(keys_db),
         "--media-root", str(videos)],
        tmp_path / "serve.log",
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(url + "/readyz"), 120, "the server's model")
        body = json.dumps({"uri": str(videos / "campus4-c1.mp4"), "options": {"realtime": True}})
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        req = urllib.request.Request(url + "/v1/streams", body.encode(), headers, method="POST")
        stream_id = json.loads(urllib.request.urlopen(req, timeout=60).read())["stream_id"]
        # Without a key the page asks for one (and says why), with no console error.
        _open_without_polls(browser, url + "/dashboard")
        assert browser.evaluate("document.getElementById('auth').hidden") is False
        _open(browser, f"{url}/dashboard#key={key}")
        assert "key=" not in browser.evaluate("location.href")  # the key leaves the address
        rows = browser.evaluate(ROW_FIELDS)
        problems = browser.problems()
        browser.call("Page.navigate", url="about:blank")
    finally:
        serve.stop()
    assert [r["source"] for r in rows] == [stream_id]
    assert problems == []  # events were cleared when the key arrived: its polls all passed


def _open_without_polls(cdp: Cdp, url: str) -> None:
    cdp.events.clear()
    cdp.call("Page.navigate", url=url)
    wait_until(
        lambda: "not updating" in (cdp.evaluate(STATUS + ".textContent") or ""),
        30,
        "the page to report the missing key",
    )
