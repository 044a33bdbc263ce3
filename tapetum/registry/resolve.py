"""Turn ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` into a local, hash-checked file.

This is the one entry point every consumer uses (``tapetum run``, ``eval``, ``optimize``,
serving): a plain path passes through untouched, without importing MLflow; a registry
reference is looked up (one registry call), then served from the content-addressed cache
(the file is hashed on every load) or downloaded into it.

Example:
    >>> path, resolved = local_model_path("yolox_nano.onnx")
    >>> str(path), resolved
    ('yolox_nano.onnx', None)
    >>> m = resolve_model_uri("models:/yolox_nano@champion")          # doctest: +SKIP
    >>> m.path, m.version, m.sha256[:12]                               # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tapetum.registry.cache import ArtifactCache
from tapetum.registry.records import ResolvedModel
from tapetum.registry.settings import model_cache_dir
from tapetum.registry.uri import ModelRef, is_model_uri, parse_model_uri

if TYPE_CHECKING:
    from tapetum.registry.store import ModelRegistry

__all__ = ["local_model_path", "resolve_model_uri"]


def resolve_model_uri(
    uri: str | ModelRef,
    *,
    registry: str | ModelRegistry | None = None,
    cache_dir: str | Path | None = None,
) -> ResolvedModel:
    """Resolve a registry reference to a verified local file.

    Args:
        uri: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/latest`` or a
            :class:`ModelRef`.
        registry: a store URI or an open :class:`ModelRegistry` (default:
            ``$TAPETUM_REGISTRY_URI``, else the local SQLite store).
        cache_dir: the local model cache (default: ``$TAPETUM_MODEL_CACHE``, else
            ``~/.cache/tapetum/models``).

    Raises:
        ConfigError: a malformed reference.
        ModelNotFoundError: unknown model, version or alias.
        RegistryUnavailableError: the registry cannot be reached.
        ArtifactMissingError, ArtifactCorruptError: the file cannot be had intact.
    """
    from tapetum.registry.store import ModelRegistry, registry_for

    ref = uri if isinstance(uri, ModelRef) else parse_model_uri(uri)
    reg = registry if isinstance(registry, ModelRegistry) else registry_for(registry)
    info = reg.get_version(ref)
    path = reg.fetch(info, ArtifactCache(model_cache_dir(cache_dir)))
    return ResolvedModel(
        path=path,
        name=info.name,
        version=info.version,
        sha256=info.sha256,
        alias=ref.alias,
        registry_uri=reg.shown_uri,
    )


def local_model_path(
    model: str | Path,
    *,
    registry: str | ModelRegistry | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[Path, ResolvedModel | None]:
    """(local file, what it resolved from): a path is returned as given with None; a
    ``models:/`` reference is resolved (see :func:`resolve_model_uri`)."""
    text = str(model)
    if not is_model_uri(text):
        return Path(model), None
    resolved = resolve_model_uri(text, registry=registry, cache_dir=cache_dir)
    return resolved.path, resolved
