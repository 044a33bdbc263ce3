"""Model references: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` (MLflow's URI forms)
and the short ``NAME/VERSION`` / ``NAME@ALIAS`` the ``tapetum models`` commands take.

Pure string handling: no MLflow, no I/O, so the CLI can tell a registry reference from a
file path without paying for the registry's imports.

Example:
    >>> parse_model_uri("models:/yolox_nano@champion")
    ModelRef(name='yolox_nano', version=None, alias='champion')
    >>> str(parse_model_ref("yolox_nano/3"))
    'models:/yolox_nano/3'
    >>> is_model_uri("yolox_nano.onnx")
    False
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tapetum.errors import ConfigError

__all__ = [
    "MODEL_URI_PREFIX",
    "ModelRef",
    "check_alias",
    "check_model_name",
    "is_model_uri",
    "parse_model_ref",
    "parse_model_uri",
]

MODEL_URI_PREFIX = "models:/"
#: The version a ``models:/NAME/latest`` reference means: the highest registered one.
LATEST = "latest"

# Names may hold letters, digits and . _ - (MLflow allows more; "/" and "@" would make the
# short forms ambiguous). Aliases follow MLflow's rule, minus its reserved ``v<digits>``.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$")
_RESERVED_ALIAS = re.compile(r"^v\d+$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A registered model version, by number or by alias.

    Attributes:
        name: the registered model's name.
        version: version number; None with an alias or for the latest version.
        alias: alias such as ``champion``; None with a version number.
    """

    name: str
    version: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        check_model_name(self.name)
        if self.version is not None and self.alias is not None:
            raise ConfigError("a model reference names a version or an alias, not both")
        if self.version is not None and self.version < 1:
            raise ConfigError(f"model versions start at 1, got {self.version}")
        if self.alias is not None:
            check_alias(self.alias)

    @property
    def is_alias(self) -> bool:
        return self.alias is not None

    @property
    def short(self) -> str:
        """``NAME/VERSION``, ``NAME@ALIAS`` or ``NAME/latest``."""
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return f"{self.name}/{self.version if self.version is not None else LATEST}"

    def __str__(self) -> str:
        return MODEL_URI_PREFIX + self.short


def check_model_name(name: str) -> str:
    """``name`` if it is a usable registered model name, else a ``ConfigError``."""
    if not _NAME.match(name):
        raise ConfigError(
            f"model name {name!r}: use letters, digits, '.', '_' or '-' (no '/' or '@'), "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    """``alias`` if MLflow accepts it as an alias, else a ``ConfigError``."""
    if not _ALIAS.match(alias) or _RESERVED_ALIAS.match(alias) or alias.lower() == LATEST:
        raise ConfigError(
            f"alias {alias!r}: use letters, digits, '_' or '-', starting with a letter; "
            "'latest' and v<number> are reserved"
        )
    return alias


def is_model_uri(text: str) -> bool:
    """True for ``models:/…`` (a registry reference), False for anything else (a path)."""
    return text.startswith(MODEL_URI_PREFIX)


def parse_model_uri(uri: str) -> ModelRef:
    """``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``models:/NAME/latest``.

    Raises:
        ConfigError: not a ``models:/`` URI, or a malformed one (the message shows the forms).
    """
    if not is_model_uri(uri):
        raise ConfigError(
            f"{uri!r} is not a model URI (models:/NAME/VERSION or models:/NAME@ALIAS)"
        )
    return parse_model_ref(uri[len(MODEL_URI_PREFIX) :], original=uri)


def parse_model_ref(text: str, *, original: str | None = None) -> ModelRef:
    """``NAME/VERSION``, ``NAME@ALIAS``, ``NAME/latest``, bare ``NAME`` (no version), or any
    of those as a ``models:/`` URI.

    Raises:
        ConfigError: a malformed reference.
    """
    if is_model_uri(text):
        return parse_model_uri(text)
    shown = original or text
    forms = "use NAME/VERSION, NAME@ALIAS or models:/NAME/VERSION, models:/NAME@ALIAS"
    if text.count("@") + text.count("/") > 1:
        raise ConfigError(f"malformed model reference {shown!r}: {forms}")
    try:
        if "@" in text:
            name, alias = text.split("@")
            return ModelRef(name, alias=alias)
        if "/" in text:
            name, version = text.split("/")
            if version.lower() == LATEST:
                return ModelRef(name)
            if not version.isdigit():
                raise ConfigError(f"version {version!r} is not a number")
            return ModelRef(name, version=int(version))
        return ModelRef(text)
    except ConfigError as exc:
        raise ConfigError(f"malformed model reference {shown!r}: {exc}; {forms}") from None
