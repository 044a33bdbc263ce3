"""Model registry on MLflow: versions with lineage, aliases with history, evaluations,
model cards, and ``models:/NAME@ALIAS`` references resolved to hash-checked local files.

Names are imported lazily: ``tapetum.registry.uri`` and the settings are pure Python,
MLflow (the ``registry`` extra) is imported only when a registry is opened.

Example:
    >>> from tapetum.registry import is_model_uri
    >>> is_model_uri("models:/yolox_nano@champion")
    True
    >>> from tapetum.registry import ModelRegistry, resolve_model_uri  # doctest: +SKIP
    >>> reg = ModelRegistry()                     # sqlite:///tapetum-registry.db  # doctest: +SKIP
    >>> reg.register("yolox_nano.onnx", "yolox_nano")                  # doctest: +SKIP
    >>> reg.promote("yolox_nano", 1, "champion", reason="baseline")    # doctest: +SKIP
    >>> resolve_model_uri("models:/yolox_nano@champion").path          # doctest: +SKIP

How a server plugs in: resolve at start-up with :func:`resolve_model_uri`, then follow the
alias with an :class:`AliasWatcher` whose callback loads and warms the new file and swaps
it in; an admin "reload" endpoint calls :meth:`AliasWatcher.trigger` (or ``check_now``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "ModelRef": "tapetum.registry.uri",
    "is_model_uri": "tapetum.registry.uri",
    "parse_model_uri": "tapetum.registry.uri",
    "parse_model_ref": "tapetum.registry.uri",
    "registry_uri": "tapetum.registry.settings",
    "model_cache_dir": "tapetum.registry.settings",
    "ArtifactCache": "tapetum.registry.cache",
    "sha256_file": "tapetum.registry.cache",
    "content_digest": "tapetum.registry.cache",
    "AliasChange": "tapetum.registry.records",
    "DatasetRecord": "tapetum.registry.records",
    "EvaluationRecord": "tapetum.registry.records",
    "RegisteredModelInfo": "tapetum.registry.records",
    "ResolvedModel": "tapetum.registry.records",
    "RunRecord": "tapetum.registry.records",
    "VersionInfo": "tapetum.registry.records",
    "ModelDescription": "tapetum.registry.metadata",
    "describe_model": "tapetum.registry.metadata",
    "AliasEvent": "tapetum.registry.aliases",
    "ModelRegistry": "tapetum.registry.store",
    "registry_for": "tapetum.registry.store",
    "resolve_model_uri": "tapetum.registry.resolve",
    "local_model_path": "tapetum.registry.resolve",
    "AliasWatcher": "tapetum.registry.watch",
    "ModelSwap": "tapetum.registry.watch",
    "VersionSource": "tapetum.registry.watch",
    "LineageNode": "tapetum.registry.lineage",
    "build_lineage": "tapetum.registry.lineage",
    "render_tree": "tapetum.registry.lineage",
    "CardInputs": "tapetum.registry.card",
    "render_model_card": "tapetum.registry.card",
}

__all__ = [
    "AliasChange",
    "AliasEvent",
    "AliasWatcher",
    "ArtifactCache",
    "CardInputs",
    "DatasetRecord",
    "EvaluationRecord",
    "LineageNode",
    "ModelDescription",
    "ModelRef",
    "ModelRegistry",
    "ModelSwap",
    "RegisteredModelInfo",
    "ResolvedModel",
    "RunRecord",
    "VersionInfo",
    "VersionSource",
    "build_lineage",
    "content_digest",
    "describe_model",
    "is_model_uri",
    "local_model_path",
    "model_cache_dir",
    "parse_model_ref",
    "parse_model_uri",
    "registry_for",
    "registry_uri",
    "render_model_card",
    "render_tree",
    "resolve_model_uri",
    "sha256_file",
]

if TYPE_CHECKING:
    from tapetum.registry.aliases import AliasEvent
    from tapetum.registry.cache import ArtifactCache, content_digest, sha256_file
    from tapetum.registry.card import CardInputs, render_model_card
    from tapetum.registry.lineage import LineageNode, build_lineage, render_tree
    from tapetum.registry.metadata import ModelDescription, describe_model
    from tapetum.registry.records import (
        AliasChange,
        DatasetRecord,
        EvaluationRecord,
        RegisteredModelInfo,
        ResolvedModel,
        RunRecord,
        VersionInfo,
    )
    from tapetum.registry.resolve import local_model_path, resolve_model_uri
    from tapetum.registry.settings import model_cache_dir, registry_uri
    from tapetum.registry.store import ModelRegistry, registry_for
    from tapetum.registry.uri import ModelRef, is_model_uri, parse_model_ref, parse_model_uri
    from tapetum.registry.watch import AliasWatcher, ModelSwap, VersionSource


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tapetum.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
