"""``tapetum serve``: the REST API under uvicorn.

Registered by the CLI as ``app.command("serve")(serve_command)``. The web stack is the
``serve`` extra, imported only when the command runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from tapetum.errors import ConfigError


def serve_command(  # noqa: PLR0917 - typer maps parameters to options
    model: Annotated[Path, typer.Option("--model", "-m", help="YOLOX ONNX model file.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 exposes it to the network).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    keys_db: Annotated[
        Path | None,
        typer.Option("--keys-db", help="API key database (create keys with `tapetum keys`)."),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="Serve every route without an API key (local use only)."),
    ] = False,
    conf: Annotated[float, typer.Option(help="Default detection confidence threshold.")] = 0.3,
    rate: Annotated[
        float, typer.Option(help="Requests per second per API key and route (0: no limit).")
    ] = 20.0,
    burst: Annotated[int, typer.Option(help="Requests a key may make at once.")] = 40,
    graceful_s: Annotated[
        int,
        typer.Option(help="On SIGTERM, seconds to let in-flight requests finish."),
    ] = 30,
) -> None:
    """Serve detection over HTTP (REST, OpenAPI docs at /docs)."""
    from tapetum._optional import import_optional

    uvicorn = import_optional("uvicorn", "serve", "tapetum serve")
    import_optional("fastapi", "serve", "tapetum serve")
    from tapetum.serve.app import ServeSettings, create_app

    if not model.is_file():
        raise ConfigError(f"model file not found: {model}")
    if not no_auth and keys_db is None:
        raise ConfigError(
            "tapetum serve needs --keys-db (create keys with `tapetum keys create`) "
            "or --no-auth for local use"
        )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = ServeSettings(
        model_path=model,
        conf_threshold=conf,
        min_conf_threshold=min(conf, 0.1),
        keys_db=keys_db,
        require_auth=not no_auth,
        rate_per_second=rate if rate > 0 else None,
        rate_burst=max(burst, int(rate) + (rate % 1 > 0)),
    )
    app = create_app(settings)
    # uvicorn owns SIGTERM/SIGINT: it stops accepting, waits for in-flight requests up to
    # timeout_graceful_shutdown, then runs the app's lifespan exit.
    uvicorn.run(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=graceful_s,
        log_level="info",
        access_log=False,
    )
