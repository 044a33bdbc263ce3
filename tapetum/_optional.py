"""Optional dependencies: imported where used, with an actionable error when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from tapetum.errors import MissingDependencyError


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or explain which extra installs it.

    Raises:
        MissingDependencyError: ``"<purpose> needs <module>: pip install 'tapetum[<extra>]'"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the {module!r} package: pip install 'tapetum[{extra}]' ({exc})"
        ) from exc
