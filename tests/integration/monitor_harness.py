"""Helpers of the monitoring integration tests: real ``tapetum run`` / ``tapetum serve``
processes, a real Prometheus (Debian's binary, started here on a free loopback port with a
temporary configuration, never the system service) and a minimal Chrome DevTools Protocol
client for Debian's headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.integration.serve_harness import free_port

PROMETHEUS = shutil.which("prometheus")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPO = Path(__file__).resolve().parents[2]
TAPETUM = [sys.executable, "-m", "tapetum"]


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> bytes:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return bytes(resp.read())


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy (and return it)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last})")


class Proc:
    """A child process with its output in a log file; stopped with SIGINT, then killed."""

    def __init__(self, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None):
        self.args = list(args)
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=log.parent,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()
        return int(self.proc.returncode)


class Prometheus:
    """Debian's Prometheus on a free loopback port, scraping ``targets`` every second."""

    def __init__(self, workdir: Path, jobs: Sequence[dict[str, Any]], rules: Path) -> None:
        assert PROMETHEUS is not None
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(rules, workdir / rules.name)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules.name],
            "scrape_configs": list(jobs),
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            workdir / "prometheus.log",
        )
        wait_until(lambda: http_get(self.url + "/-/ready"), 60, "prometheus to be ready")

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        body = json.loads(http_get(f"{self.url}/api/v1/{path}?{query}", timeout=30))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def stop(self) -> None:
        self.proc.stop()


class Cdp:
    """A few Chrome DevTools Protocol calls over the page's websocket; every event seen is
    kept in ``events``."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                assert "error" not in msg, msg
                return dict(msg.get("result", {}))
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def pump(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        import websocket

        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.ws.settimeout(left)
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            if "method" in msg:
                self.events.append(msg)
        self.ws.settimeout(60)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (CSP violations,
        failed loads) seen so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {p.get('args')}")
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def chromium_page(workdir: Path) -> Iterator[Cdp]:
    """Headless Chromium on about:blank; yields a DevTools client of its page with the
    Runtime, Log and Page domains enabled (so nothing the page does later is missed)."""
    assert CHROMIUM is not None
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    proc = Proc(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "about:blank",
        ],
        workdir / "chromium.log",
    )
    try:
        active = profile / "DevToolsActivePort"
        port = int(wait_until(lambda: active.read_text().split()[0], 60, "chromium's devtools"))
        pages = wait_until(
            lambda: [
                t
                for t in json.loads(http_get(f"http://127.0.0.1:{port}/json/list"))
                if t["type"] == "page"
            ],
            30,
            "a page target",
        )
        cdp = Cdp(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Runtime", "Log", "Page"):
            cdp.call(f"{domain}.enable")
        yield cdp
        cdp.close()
    finally:
        proc.stop(10)
