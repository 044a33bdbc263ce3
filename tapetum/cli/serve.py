"""``tapetum serve``: the REST API under uvicorn and, in the same process, the gRPC API.

Registered by the CLI as ``app.command("serve")(serve_command)``. The web stack is the
``serve`` extra and gRPC the ``grpc`` extra, imported only when the command runs.

Both APIs serve one :class:`~tapetum.serve.service.DetectionService` (one model, loaded in
the background, gRPC answering UNAVAILABLE and REST 503 until then; one inference limit;
one set of tracking sessions), one key store and one rate limiter, so a key's budget counts
calls on both.

``--model models:/NAME@ALIAS`` is resolved before anything listens (an unknown alias or an
unreachable registry is one ``error:`` line, exit 2) and then followed: every
``--model-poll`` seconds, and at once on ``POST /v1/models/NAME/reload`` or the gRPC
``ReloadModel``, a new version is loaded and warmed beside the serving one and swapped in
(:mod:`tapetum.serve.follow`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from tapetum.cli.keys import DEFAULT_DB
from tapetum.errors import ConfigError

if TYPE_CHECKING:
    from tapetum.experiments.serving import ServerExperiment
    from tapetum.registry import ModelRegistry, ResolvedModel
    from tapetum.serve.remote import RemoteDetector
    from tapetum.serve.settings import ServeSettings


def _server_experiment(
    path: Path | None, out: Path | None, provider: str | None
) -> ServerExperiment | None:
    """The ``--experiment``: read, every arm resolved, loaded and class-checked now."""
    if path is None:
        if out is not None:
            raise ConfigError("--experiment-out needs --experiment")
        return None
    import time

    from tapetum.cli.ab import prepare_arms
    from tapetum.experiments.serving import ServerExperiment

    spec, arms = prepare_arms(path, registry=None, provider=provider)
    run_dir = out or Path("runs") / time.strftime("ab-serve-%Y%m%d-%H%M%S")
    return ServerExperiment(spec, arms, run_dir)


def serve_command(  # noqa: PLR0917 - typer maps parameters to options
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="ONNX detector model file, or a registered one: models:/NAME/VERSION, or "
            "models:/NAME@ALIAS to follow the alias (see --model-poll).",
        ),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            envvar="TAPETUM_REGISTRY_URI",
            help="Model registry of a models:/ --model (default: sqlite:///tapetum-registry.db).",
        ),
    ] = None,
    model_poll: Annotated[
        float,
        typer.Option(
            help="With --model models:/NAME@ALIAS: seconds between alias checks; a new "
            "version is loaded and warmed beside the serving one, then swapped in (admins "
            "can also POST /v1/models/NAME/reload). 0: only on reload.",
        ),
    ] = 10.0,
    arch: Annotated[
        str | None,
        typer.Option(help="Model family when the file does not say (yolox, yolov8, rtdetr...)."),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            help="Execution providers to try, comma-separated: tensorrt, cuda, openvino, cpu "
            "(default: the best installed; CPU is always the last resort)."
        ),
    ] = None,
    batch_requests: Annotated[
        int,
        typer.Option(
            help="Images of concurrent requests run as one model call, at most (1: off). "
            "They queue only while every inference worker is busy."
        ),
    ] = 8,
    backend: Annotated[
        str | None,
        typer.Option(
            help="Instead of a local model: another Tapetum node's gRPC address "
            "(grpcs://host:50051 for TLS, grpc:// cleartext), called behind a circuit breaker."
        ),
    ] = None,
    backend_key_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the backend node's API key."),
    ] = None,
    backend_timeout_s: Annotated[
        float, typer.Option("--backend-timeout", help="Deadline of one backend call, seconds.")
    ] = 2.0,
    backend_ca: Annotated[
        Path | None,
        typer.Option(
            help="PEM CA bundle of the backend node's certificate (implies TLS; "
            "grpcs://host:port without it uses the system roots)."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate (chain): serve REST (HTTPS) and gRPC over TLS."),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Allow cleartext on a non-loopback address (TLS ends at a proxy in front), "
            "and sending the backend key over cleartext.",
        ),
    ] = False,
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
    jwt_issuer: Annotated[
        str | None,
        typer.Option(help="Also accept OIDC bearer tokens (JWTs) from this issuer (exact iss)."),
    ] = None,
    jwt_audience: Annotated[
        str | None, typer.Option(help="The aud those tokens must carry.")
    ] = None,
    jwt_jwks: Annotated[
        str | None,
        typer.Option(help="The issuer's JWKS: an https:// URL or a local JSON file."),
    ] = None,
    conf: Annotated[float, typer.Option(help="Default detection confidence threshold.")] = 0.3,
    rate: Annotated[
        float, typer.Option(help="Requests per second per API key and route (0: no limit).")
    ] = 20.0,
    burst: Annotated[int, typer.Option(help="Requests a key may make at once.")] = 40,
    rate_storage: Annotated[
        str,
        typer.Option(
            help="Rate-limit counters: memory:// (this process) or redis://host:6379/0 "
            "(shared by replicas)."
        ),
    ] = "memory://",
    graceful_s: Annotated[
        int,
        typer.Option(help="On SIGTERM, seconds to let in-flight requests finish."),
    ] = 30,
    grpc_port: Annotated[
        int,
        typer.Option("--grpc-port", help="gRPC port on the same host (0: no gRPC server)."),
    ] = 50051,
    max_streams_per_key: Annotated[
        int, typer.Option(help="Server-side streams one key may run at once.")
    ] = 2,
    max_subscriptions_per_key: Annotated[
        int,
        typer.Option(help="Live result feeds (SSE, gRPC StreamResults) one key may hold."),
    ] = 4,
    max_sessions_per_key: Annotated[
        int,
        typer.Option(
            help="Tracking sessions one key may hold; past it the key's own least recently "
            "used one is dropped."
        ),
    ] = 32,
    media_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--media-root",
            help="Folder whose videos and image folders API callers may stream (repeat for "
            "more). None: no local path may be opened over the API.",
        ),
    ] = None,
    allow_source: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-source",
            help="Stream sources allowed although loopback, private or link-local: a CIDR "
            "(10.0.7.0/24), a URI glob (rtsp://10.0.7.*, any scheme) or a host glob "
            "(*.cams.internal). Repeat for more.",
        ),
    ] = None,
    max_subscription_s: Annotated[
        float,
        typer.Option(
            "--max-subscription-s",
            help="Longest a live result feed lasts, seconds; then the client subscribes again.",
        ),
    ] = 3600.0,
    classify: Annotated[
        str | None,
        typer.Option(
            help="Label the tracks of session_id requests with a classifier: "
            "MODEL[:classes=car,truck,bus][:every=N][:min_box=PX][:grow=X][:labels=MAP] "
            "(as tapetum run --classify; every N requests of a session). Responses carry "
            "label, label_confidence, label_votes."
        ),
    ] = None,
    model_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--model-root",
            help="Folder admins may load models from at runtime (repeat for more; default: "
            "the --model file's folder).",
        ),
    ] = None,
    experiment: Annotated[
        Path | None,
        typer.Option(
            help="Run an A/B experiment over /v1/detect (YAML/JSON; canary split by key or "
            "header, or shadow): the arm that answered is named in X-Tapetum-Variant and in "
            "/metrics; the record goes to --experiment-out for tapetum ab report."
        ),
    ] = None,
    experiment_out: Annotated[
        Path | None,
        typer.Option(help="Run folder of the experiment's record (default runs/ab-serve-<time>)."),
    ] = None,
) -> None:
    """Serve detection over HTTP (REST, OpenAPI docs at /docs) and gRPC.

    Both listen on --host; an address other than loopback needs --tls-cert/--tls-key (or
    --insecure)."""
    from tapetum._optional import import_optional
    from tapetum.core.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts (tapetum.core.memory)
    uvicorn = import_optional("uvicorn", "serve", "tapetum serve")
    import_optional("fastapi", "serve", "tapetum serve")
    from tapetum.detect.providers import parse_provider_list
    from tapetum.serve.app import create_app
    from tapetum.serve.service import DetectionService
    from tapetum.serve.settings import (
        ServeSettings,
        default_auth_failure_limiter,
        default_key_store,
        default_rate_limiter,
    )
    from tapetum.serve.tls import TlsFiles, check_bind

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    tls = TlsFiles(tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    check_bind(host, tls, insecure=insecure, what="serve")

    if (model is None) == (backend is None):
        raise ConfigError("tapetum serve needs exactly one of --model PATH or --backend ADDRESS")
    if model_poll < 0:
        raise ConfigError(f"--model-poll must be ≥ 0 seconds, got {model_poll}")
    use_keys = not no_auth and (keys_db.is_file() or jwt_jwks is None)
    if use_keys and not keys_db.is_file():
        raise ConfigError(
            f"no API key database at {keys_db}: create a key with `tapetum keys create` "
            "(or pass --keys-db / TAPETUM_KEYS_DB), or serve with --no-auth for local use"
        )
    model_path, resolved, opened = _resolve_model(model, registry)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if resolved is not None:
        follows = f"follows @{resolved.alias}" if resolved.alias else "pinned"
        logging.getLogger("tapetum.serve").info(
            "model %s → %s (%s)", model, resolved.describe(), follows
        )
    settings = ServeSettings(
        model_path=model_path if model_path is not None else Path(str(backend)),
        model_name="remote" if model is None else resolved.name if resolved else None,
        model_arch=arch,
        providers=parse_provider_list(provider),
        batch_requests=batch_requests,
        # a remote node warms its own model; one it cannot reach yet must not fail the load
        warmup=model is not None,
        conf_threshold=conf,
        min_conf_threshold=min(conf, 0.1),
        keys_db=keys_db if use_keys else None,
        jwt_issuer=jwt_issuer,
        jwt_audience=jwt_audience,
        jwt_jwks=jwt_jwks,
        require_auth=not no_auth,
        rate_per_second=rate if rate > 0 else None,
        rate_burst=max(burst, int(rate) + (rate % 1 > 0)),
        rate_storage=rate_storage,
        max_streams_per_key=max_streams_per_key,
        max_subscriptions_per_key=max_subscriptions_per_key,
        max_sessions_per_key=max_sessions_per_key,
        media_roots=tuple(media_root or ()),
        allowed_sources=tuple(allow_source or ()),
        max_subscription_s=max_subscription_s,
        model_roots=tuple(model_root or ()),
        classify=classify,
    )
    remote = (
        _remote_detector(
            str(backend),
            backend_key_env,
            backend_timeout_s,
            settings,
            ca_file=backend_ca,
            allow_insecure=insecure,
        )
        if backend is not None
        else None
    )
    service = (
        DetectionService(settings)
        if remote is None
        else DetectionService(settings, lambda _s: remote)
    )
    follower = None
    if resolved is not None and opened is not None:
        from tapetum.serve.follow import ModelFollower

        follower = ModelFollower(service, resolved, registry=opened, poll_s=model_poll)
    key_store = default_key_store(settings)
    rate_limiter = default_rate_limiter(settings)
    auth_failures = default_auth_failure_limiter(settings)  # one count for both APIs
    app = create_app(
        settings,
        key_store=key_store,
        rate_limiter=rate_limiter,
        service=service,
        auth_failures=auth_failures,
        experiment=_server_experiment(experiment, experiment_out, provider),
        follower=follower,  # the lifespan starts its polling
    )
    if remote is not None:  # its breaker state goes to /metrics with the others
        app.state.tapetum.breakers.register(remote.breaker)
    grpc_server = None
    if grpc_port != 0:
        import_optional("grpc", "grpc", "tapetum serve --grpc-port")
        from tapetum.serve.grpc.server import create_grpc_server

        grpc_server = create_grpc_server(
            settings,
            service,
            key_store,
            rate_limiter,
            grpc_port,
            host=host,
            streams=app.state.tapetum.streams,  # one set of streams for both APIs
            tls=tls,
            auth_failures=auth_failures,
            follower=follower,
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
        **(tls.uvicorn_options() if tls is not None else {}),
    )
    from tapetum.core.memory import MemoryTrimmer

    # freed frames of ended streams and requests back to the OS (tapetum.core.memory)
    trimmer = MemoryTrimmer().start()
    try:
        _Server(config).run()
    finally:
        trimmer.stop()
        if follower is not None:
            follower.stop()
        if grpc_server is not None:
            grpc_server.stop(graceful_s).wait()
        service.close()  # both APIs have drained: stop the request batchers


def _resolve_model(
    model: str | None, registry: str | None
) -> tuple[Path | None, ResolvedModel | None, ModelRegistry | None]:
    """(file, registry version, open registry): a path as given (it must exist); a
    ``models:/`` reference resolved to a hash-checked file in the local cache (MLflow is
    imported only then). Raises the registry's typed errors (one ``error:`` line)."""
    if model is None:
        return None, None, None
    from tapetum.registry.uri import is_model_uri

    if not is_model_uri(model):
        path = Path(model)
        if not path.is_file():
            raise ConfigError(f"model file not found: {model}")
        return path, None, None
    from tapetum.registry import registry_for, resolve_model_uri

    opened = registry_for(registry)
    resolved = resolve_model_uri(model, registry=opened)
    return resolved.path, resolved, opened


def _remote_detector(
    backend: str,
    key_env: str | None,
    timeout_s: float,
    settings: ServeSettings,
    *,
    ca_file: Path | None,
    allow_insecure: bool,
) -> RemoteDetector:
    """The backend node as a detector, behind a breaker named after it."""
    import os

    from tapetum.core.breaker import CircuitBreaker
    from tapetum.serve.remote import RemoteDetector

    key = None
    if key_env is not None:
        key = os.environ.get(key_env)
        if not key:
            raise ConfigError(f"--backend-key-env {key_env}: that environment variable is empty")
    breaker = CircuitBreaker(f"backend:{backend}", failure_threshold=5, reset_timeout_s=30)
    return RemoteDetector(
        backend,
        key,
        timeout_s=timeout_s,
        breaker=breaker,
        conf_threshold=settings.min_conf_threshold,
        ca_file=ca_file,
        allow_insecure=allow_insecure,
    )
