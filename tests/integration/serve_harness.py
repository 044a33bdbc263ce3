"""Helpers shared by the REST server tests: uvicorn on loopback and error assertions."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route of ``app``, those of included routers too.

    Recent FastAPI keeps an included router as one lazy entry of ``app.routes``
    (``iter_route_contexts`` walks into it); older versions copy its routes in.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return [r for r in app.routes if isinstance(r, APIRoute)]
    found = (context.original_route for context in iter_route_contexts(app.routes))
    return [r for r in found if isinstance(r, APIRoute)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackServer:
    """uvicorn in a background thread; ``stop`` asks it to exit as SIGTERM would."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def wait_ready(client: httpx.Client, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "model never became ready"
        time.sleep(0.05)


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> None:
    """An error response: the status, the ``{detail, code}`` body, a reason."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"detail", "code"}, body
    assert body["detail"], "an error must say why"
    if code is not None:
        assert body["code"] == code, body
