"""``tapetum serve``: the REST API under uvicorn and, in the same process, the gRPC API.

Registered by the CLI as ``app.command("serve")(serve_command)``. The web stack is the
``serve`` extra and gRPC the ``grpc`` extra, imported only when the command runs.

Both APIs serve one :class:`~tapetum.serve.service.DetectionService` (one model, loaded in
the background, gRPC answering UNAVAILABLE and REST 503 until then; one inference limit;
one set of tracking sessions), one key store and one rate limiter, so a key's budget counts
calls on both.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from tapetum.cli.keys import DEFAULT_DB
from tapetum.errors import ConfigError


def serve_command(  # noqa: PLR0917 - typer maps parameters to options
    model: Annotated[Path, typer.Option("--model", "-m", help="YOLOX ONNX model file.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 exposes it to the network).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    keys_db: Annotated[
        Path,
        typer.Option(
            "--keys-db",
            envvar="TAPETUM_KEYS_DB",
            help="API key database, as `tapetum keys` writes it.",
        ),
    ] = DEFAULT_DB,
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
    grpc_port: Annotated[
        int,
        typer.Option("--grpc-port", help="gRPC port on the same host (0: no gRPC server)."),
    ] = 50051,
) -> None:
    """Serve detection over HTTP (REST, OpenAPI docs at /docs) and gRPC."""
    from tapetum._optional import import_optional

    uvicorn = import_optional("uvicorn", "serve", "tapetum serve")
    import_optional("fastapi", "serve", "tapetum serve")
    from tapetum.serve.app import create_app
    from tapetum.serve.service import DetectionService
    from tapetum.serve.settings import ServeSettings, default_key_store, default_rate_limiter

    if not model.is_file():
        raise ConfigError(f"model file not found: {model}")
    if not no_auth and not keys_db.is_file():
        raise ConfigError(
            f"no API key database at {keys_db}: create a key with `tapetum keys create` "
            "(or pass --keys-db / TAPETUM_KEYS_DB), or serve with --no-auth for local use"
        )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = ServeSettings(
        model_path=model,
        conf_threshold=conf,
        min_conf_threshold=min(conf, 0.1),
        keys_db=None if no_auth else keys_db,
        require_auth=not no_auth,
        rate_per_second=rate if rate > 0 else None,
        rate_burst=max(burst, int(rate) + (rate % 1 > 0)),
    )
    service = DetectionService(settings)
    key_store = default_key_store(settings)
    rate_limiter = default_rate_limiter(settings)
    app = create_app(settings, key_store=key_store, rate_limiter=rate_limiter, service=service)
    grpc_server = None
    if grpc_port != 0:
        import_optional("grpc", "grpc", "tapetum serve --grpc-port")
        from tapetum.serve.grpc.server import create_grpc_server

        grpc_server = create_grpc_server(
            settings, service, key_store, rate_limiter, grpc_port, host=host
        )
        service.start()  # the REST lifespan would too; gRPC may be asked first
        grpc_server.start()

    # uvicorn owns SIGTERM/SIGINT: it stops accepting, waits for in-flight requests up to
    # timeout_graceful_shutdown, then runs the app's lifespan exit. The gRPC server drains
    # alongside (stop(grace) returns at once), so shutdown takes graceful_s, not twice that.
    class _Server(uvicorn.Server):  # type: ignore[misc,name-defined]
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if grpc_server is not None:
                grpc_server.stop(graceful_s)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=graceful_s,
        log_level="info",
        access_log=False,
    )
    try:
        _Server(config).run()
    finally:
        if grpc_server is not None:
            grpc_server.stop(graceful_s).wait()
