"""Serving a registry model: ``tapetum serve --model models:/NAME@ALIAS`` follows the alias.

:class:`ModelFollower` holds what the server resolved at start-up and, for an alias, an
:class:`~tapetum.registry.AliasWatcher` that checks it every ``poll_s`` seconds. When the
alias moves, the new version's hash-checked file is handed to
:meth:`DetectionService.swap_model <tapetum.serve.service.DetectionService.swap_model>`:
loaded and warmed beside the old model while it keeps serving, then swapped in; requests
already running finish on the old one, and the server's running streams take the new one
between frames (:meth:`Pipeline.swap_detector <tapetum.pipeline.Pipeline.swap_detector>`).
A version that fails to load is logged and counted, and the old model keeps serving.

``POST /v1/models/{name}/reload`` and the gRPC ``ReloadModel`` (``admin``) check the alias
now (:func:`reload_model`). Errors reach the caller without the server's paths or store
URIs (:func:`public_reason`): an alias, version or model the registry does not know is 404
``registry_not_found``; a registry that cannot be reached, or a new version that cannot be
fetched or loaded, is 503 with the reason, and the model already serving keeps serving.

``/metrics`` (:class:`FollowCollector`): ``tapetum_model_version_serving{model, version,
alias}`` (1 for the version serving now: one series per served model),
``tapetum_model_swaps_total{model, trigger}`` (``poll`` or ``manual``),
``tapetum_model_alias_check_errors_total{model}`` and
``tapetum_model_last_swap_seconds{model}``.

Example::

    reg = registry_for(None)
    resolved = resolve_model_uri("models:/yolox_nano@champion", registry=reg)
    settings = ServeSettings(model_path=resolved.path, model_name=resolved.name, ...)
    service = DetectionService(settings)
    follower = ModelFollower(service, resolved, registry=reg, poll_s=10)
    app = create_app(settings, service=service, follower=follower)  # starts and stops it
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tapetum.errors import ModelNotFoundError, RegistryError
from tapetum.serve.schemas import ModelReload
from tapetum.serve.settings import ApiError

if TYPE_CHECKING:
    from pathlib import Path

    from tapetum.registry import AliasWatcher, ResolvedModel, VersionSource
    from tapetum.serve.service import DetectionService

__all__ = [
    "FollowCollector",
    "ModelFollower",
    "public_reason",
    "registry_api_error",
    "reload_model",
]

log = logging.getLogger("tapetum.serve")

#: ``scheme://…`` or ``scheme:/…`` (a store, server or artifact location), but not ``models:/``.
_URI = re.compile(r"\b(?!models:)[A-Za-z][A-Za-z0-9+.\-]*:/+(?:[^\s'\"(),;]*[^\s'\"(),;:.])?")
#: an absolute or home-relative path (not the ``/2`` of ``name/2``).
_PATH = re.compile(r"(?<![\w.:/\-])~?/[^\s'\"(),;:]+")
#: a host as HTTP libraries name it (``host='db.internal', port=5432``) or an IPv4 address.
_HOST = re.compile(r"host=(['\"])[^'\"]*\1(?:,\s*port=\d+)?|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")


def public_reason(text: str) -> str:
    """``text`` without store URIs, server addresses or file paths, for API callers: the
    server log keeps the full message."""
    return _PATH.sub("<path>", _HOST.sub("<host>", _URI.sub("<registry>", text)))


def registry_api_error(exc: RegistryError) -> ApiError:
    """The API error of a registry failure: 404 ``registry_not_found`` for an unknown
    model, version or alias; 503 ``registry_unavailable`` (retry later) otherwise."""
    reason = public_reason(str(exc))
    if isinstance(exc, ModelNotFoundError):
        return ApiError(404, "registry_not_found", reason)
    return ApiError(503, "registry_unavailable", reason, {"Retry-After": "5"})


class ModelFollower:
    """The registry version a server's default model came from, and the alias it follows.

    Args:
        service: the detection service whose default model is ``resolved``'s file.
        resolved: what ``--model models:/…`` resolved to at start-up.
        registry: the open registry it came from (any :class:`VersionSource`).
        poll_s: seconds between alias checks; 0: only on :meth:`reload`. Ignored for a
            pinned version (``models:/NAME/VERSION``), which is never swapped.
        cache_dir: the local model cache (default: ``$TAPETUM_MODEL_CACHE``).
        ready_timeout_s: how long a swap waits for the first model to finish loading.

    Raises:
        ConfigError: a negative ``poll_s``.
    """

    def __init__(
        self,
        service: DetectionService,
        resolved: ResolvedModel,
        *,
        registry: VersionSource,
        poll_s: float = 10.0,
        cache_dir: str | Path | None = None,
        ready_timeout_s: float = 600.0,
    ) -> None:
        from tapetum.errors import ConfigError

        if poll_s < 0:
            raise ConfigError(f"the alias poll interval must be ≥ 0 seconds, got {poll_s}")
        self.service = service
        self.registry = registry
        self.poll_s = float(poll_s)
        self.ready_timeout_s = ready_timeout_s
        self._initial = resolved
        self._started = False
        self.watcher: AliasWatcher | None = None
        if resolved.alias is not None:
            from tapetum.registry import AliasWatcher

            self.watcher = AliasWatcher(
                f"{resolved.name}@{resolved.alias}",
                self._swap,
                poll_s=self.poll_s or 3600.0,  # 0: the thread is never started
                registry=registry,
                cache_dir=cache_dir,
                current=resolved,
            )

    @property
    def name(self) -> str:
        """The served model's name (``model`` in requests)."""
        return self.service.settings.name

    @property
    def current(self) -> ResolvedModel:
        """The registry version serving now."""
        watched = self.watcher.current if self.watcher is not None else None
        return watched or self._initial

    def start(self) -> None:
        """Start polling the alias (a daemon thread; nothing for a pinned version or a
        poll interval of 0). Idempotent."""
        if self._started or self.watcher is None or self.poll_s == 0:
            return
        self._started = True
        self.watcher.start()

    def stop(self) -> None:
        """Stop polling (waits for a swap in progress). Idempotent."""
        if self._started and self.watcher is not None:
            self.watcher.stop()

    def _swap(self, new: ResolvedModel) -> None:
        """The watcher's callback: load, warm and swap in ``new`` (raises to keep the old)."""
        self.service.wait_ready(self.ready_timeout_s)
        old = self.current
        seconds = self.service.swap_model(new.path)
        log.info(
            "model %s: %s → %s in %.2f s",
            self.name,
            old.describe(),
            new.describe(),
            seconds,
        )

    def reload(self) -> ModelReload:
        """Check the alias now; a new version is loaded, warmed and swapped in before this
        returns (``changed``), else the current one is reported. Blocking.

        Raises:
            ApiError: 409 ``model_not_followed`` for a pinned version; 404
                ``registry_not_found`` when the alias or model is gone; 503
                ``registry_unavailable`` (registry unreachable) or ``model_swap_failed``
                (the new version cannot be fetched or loaded); the current model keeps
                serving.
        """
        watcher = self.watcher
        before = self.current
        if watcher is None:
            raise ApiError(
                409,
                "model_not_followed",
                f"model {self.name!r} is pinned to {before.uri}; serve models:/NAME@ALIAS "
                "to follow an alias",
            )
        try:
            target = self.registry.get_version(watcher.ref)
        except RegistryError as exc:
            log.warning("reload of %s: %s", self.name, exc)
            raise registry_api_error(exc) from None
        errors = watcher.errors
        watcher.check_now(manual=True)
        now = self.current
        if (now.version, now.sha256) != (target.version, target.sha256) and (
            watcher.errors > errors
        ):
            reason = public_reason(watcher.last_error or "the swap failed")
            raise ApiError(
                503,
                "model_swap_failed",
                f"{target.short} could not be swapped in; {before.name}/{before.version} "
                f"keeps serving: {reason}",
                {"Retry-After": "5"},
            )
        changed = (now.version, now.sha256) != (before.version, before.sha256)
        swaps = watcher.swaps
        return ModelReload(
            name=self.name,
            changed=changed,
            version=now.version,
            previous_version=before.version if changed else None,
            alias=watcher.ref.alias or "",
            sha256=now.sha256,
            swap_seconds=round(swaps[-1].seconds, 3) if changed and swaps else None,
        )


def reload_model(
    service: DetectionService, follower: ModelFollower | None, name: str
) -> ModelReload:
    """What ``POST /v1/models/{name}/reload`` does (the gRPC ``ReloadModel`` too).

    Raises:
        NotReadyError: the model is still loading (503).
        ApiError: 404 ``unknown_model`` for a name not loaded; 409 ``model_not_followed``
            for a model not served from a registry alias; and :meth:`ModelFollower.reload`'s.
    """
    loaded = service.model_names()  # 503 while loading
    if not loaded:
        service.detector()
    if name not in loaded:
        raise ApiError(404, "unknown_model", f"no model named {name!r}")
    if follower is None or name != follower.name:
        raise ApiError(
            409,
            "model_not_followed",
            f"model {name!r} was loaded from a file; only a default model served from "
            "models:/NAME@ALIAS follows its registry alias",
        )
    return follower.reload()


class FollowCollector:
    """The ``/metrics`` families of a :class:`ModelFollower` (read at scrape time, so the
    version gauge never shows a version that no longer serves)."""

    def __init__(self, follower: ModelFollower) -> None:
        self.follower = follower

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        follower, name = self.follower, self.follower.name
        current = follower.current
        serving = GaugeMetricFamily(
            "tapetum_model_version_serving",
            "The registry version each served model answers with now (value 1).",
            labels=["model", "version", "alias"],
        )
        serving.add_metric([name, str(current.version), current.alias or ""], 1.0)
        yield serving
        watcher = follower.watcher
        swaps = watcher.swaps if watcher is not None else []
        by_trigger = CounterMetricFamily(
            "tapetum_model_swaps",
            "Registry versions swapped in while serving, by trigger (poll or manual).",
            labels=["model", "trigger"],
        )
        for trigger in ("poll", "manual"):
            count = sum(1 for s in swaps if s.trigger == trigger)
            by_trigger.add_metric([name, trigger], float(count))
        yield by_trigger
        errors = CounterMetricFamily(
            "tapetum_model_alias_check_errors",
            "Alias checks that failed (registry unreachable, artifact missing or corrupt, "
            "the new version did not load); the serving model kept serving.",
            labels=["model"],
        )
        errors.add_metric([name], float(watcher.errors if watcher is not None else 0))
        yield errors
        if swaps:
            last = GaugeMetricFamily(
                "tapetum_model_last_swap_seconds",
                "Load, warm-up and swap time of the last model swap, seconds.",
                labels=["model"],
            )
            last.add_metric([name], swaps[-1].seconds)
            yield last
