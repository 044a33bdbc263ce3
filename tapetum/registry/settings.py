"""Where the registry lives: the store URI, the artifact root and the local model cache.

Each comes from an explicit argument, else an environment variable, else the embedded
default (a SQLite file and an artifact folder in the working directory, created on first
use; a cache under the user's cache folder).

===================  ==========================  ==================================================
what                 environment variable        default
===================  ==========================  ==================================================
store                ``TAPETUM_REGISTRY_URI``    ``sqlite:///tapetum-registry.db`` (``--registry``)
artifact root (SQL)  ``TAPETUM_ARTIFACT_ROOT``   beside a SQLite file, else ``./tapetum-artifacts``
local model cache    ``TAPETUM_MODEL_CACHE``     ``~/.cache/tapetum/models``
===================  ==========================  ==================================================

An ``http(s)://`` URI is an MLflow tracking server, which keeps its own artifacts; a
``postgresql://`` or ``mysql://`` URI is a SQL store like the SQLite default, with artifacts
under the artifact root (use a shared folder or object store URI when several machines
register).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from tapetum.errors import ConfigError

__all__ = [
    "DEFAULT_ARTIFACT_ROOT",
    "DEFAULT_REGISTRY_URI",
    "ENV_ARTIFACT_ROOT",
    "ENV_MODEL_CACHE",
    "ENV_REGISTRY_URI",
    "artifact_root",
    "model_cache_dir",
    "redact_uri",
    "registry_uri",
    "store_kind",
]

ENV_REGISTRY_URI = "TAPETUM_REGISTRY_URI"
ENV_ARTIFACT_ROOT = "TAPETUM_ARTIFACT_ROOT"
ENV_MODEL_CACHE = "TAPETUM_MODEL_CACHE"
DEFAULT_REGISTRY_URI = "sqlite:///tapetum-registry.db"
DEFAULT_ARTIFACT_ROOT = "tapetum-artifacts"

_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_HTTP_SCHEMES = ("http", "https")


def registry_uri(explicit: str | None = None) -> str:
    """The store URI to use: ``explicit``, else ``$TAPETUM_REGISTRY_URI``, else the default.

    Raises:
        ConfigError: a URI of a kind the registry cannot use (the message lists the kinds).
    """
    uri = explicit or os.environ.get(ENV_REGISTRY_URI) or DEFAULT_REGISTRY_URI
    store_kind(uri)
    return uri


def store_kind(uri: str) -> str:
    """``"sqlite"``, ``"sql"`` (PostgreSQL, MySQL, SQL Server) or ``"http"``.

    Raises:
        ConfigError: any other scheme, e.g. a bare folder (MLflow's file store has no
            model registry aliases: use ``sqlite:///PATH``).
    """
    scheme = urlsplit(uri).scheme.split("+", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in _SQL_SCHEMES:
        return "sql"
    if scheme in _HTTP_SCHEMES:
        return "http"
    raise ConfigError(
        f"registry URI {redact_uri(uri)!r}: use sqlite:///FILE.db, postgresql://…, "
        "mysql://… or an MLflow server's http(s)://HOST:PORT"
    )


def artifact_root(explicit: str | Path | None = None, registry: str | None = None) -> str:
    """Artifact root for a SQL store: ``explicit``, ``$TAPETUM_ARTIFACT_ROOT``, else
    ``tapetum-artifacts`` beside a SQLite ``registry``'s database file (so a store and its
    files stay together whatever folder a command runs from), else ``./tapetum-artifacts``.
    A local folder is made absolute (MLflow stores it as given)."""
    root = explicit or os.environ.get(ENV_ARTIFACT_ROOT)
    if root is None:
        database = sqlite_path(registry) if registry else None
        root = database.parent / DEFAULT_ARTIFACT_ROOT if database else DEFAULT_ARTIFACT_ROOT
    if "://" in str(root):
        return str(root)
    return str(Path(root).expanduser().resolve())


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (None for other stores or in-memory)."""
    parts = urlsplit(uri)
    if parts.scheme.split("+", 1)[0].lower() != "sqlite" or not parts.path.strip("/"):
        return None
    # sqlite:///rel.db → "/rel.db" (relative), sqlite:////abs.db → "//abs.db" (absolute)
    return Path(parts.path[1:])


def model_cache_dir(explicit: str | Path | None = None) -> Path:
    """Local cache of downloaded model files: ``explicit``, ``$TAPETUM_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/tapetum/models`` (``~/.cache/tapetum/models``)."""
    chosen = explicit or os.environ.get(ENV_MODEL_CACHE)
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tapetum" / "models"


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
