"""Alias history: who moved an alias, when, why, and to which version.

MLflow keeps only an alias's current version. Every promotion or rollback Tapetum makes is
also written as one *registered-model tag* of its own::

    tapetum.alias.champion.00001796543547283000000.3f9a1c2e = {"action": "promote", ...}

The key sorts by time (nanoseconds, zero-padded) then a random nonce, so concurrent
writers never overwrite each other's entries: the history is append-only. The alias itself
is then *reconciled* to the newest entry: set it, read the newest entry again, repeat
until they agree. Whatever order two racing ``promote``/``rollback`` commands interleave
in, the last alias write anyone makes is followed by a check that found no newer entry, so
the registry settles on one alias that matches the last entry of its history (see
:meth:`~tapetum.registry.store.ModelRegistry.promote`).

Rolling back replays the history as a stack of holders: a promotion pushes its version, a
rollback pops back to its target; the rollback target is the holder below the current one.

Example:
    >>> events = [AliasEvent.make("promote", 1, None, "ana", "first"),
    ...           AliasEvent.make("promote", 2, 1, "ana", "better mAP")]
    >>> holder_stack(events)
    [1, 2]
    >>> rollback_target(events, current=2)
    1
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tapetum.errors import RegistryError

__all__ = [
    "ALIAS_TAG_PREFIX",
    "AliasEvent",
    "alias_events",
    "current_user",
    "event_key",
    "holder_stack",
    "rollback_target",
]

log = logging.getLogger(__name__)

ALIAS_TAG_PREFIX = "tapetum.alias."


class AliasEvent(BaseModel):
    """One change of an alias, as stored in the registry (JSON in a tag value).

    Attributes:
        action: ``promote`` or ``rollback``.
        version: the version the alias moved to.
        previous: the version that held it before (None: the alias was new).
        by: who made the change (``$TAPETUM_USER``, else the login name).
        at: when, ISO 8601 UTC.
        reason: why, as given with ``--reason`` ("" when not given).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    action: Literal["promote", "rollback"]
    version: int
    previous: int | None = None
    by: str = ""
    at: str = ""
    reason: str = ""

    @classmethod
    def make(
        cls,
        action: Literal["promote", "rollback"],
        version: int,
        previous: int | None,
        by: str,
        reason: str = "",
    ) -> AliasEvent:
        """An event stamped now."""
        return cls(
            action=action,
            version=version,
            previous=previous,
            by=by,
            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            reason=reason,
        )


def current_user() -> str:
    """Who is acting: ``$TAPETUM_USER``, else the login name, else ``unknown``."""
    user = os.environ.get("TAPETUM_USER")
    if user:
        return user
    try:
        import getpass

        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def event_key(alias: str, at_ns: int | None = None) -> str:
    """A new, unique tag key for an event of ``alias`` that sorts after earlier ones."""
    stamp = time.time_ns() if at_ns is None else at_ns
    return f"{ALIAS_TAG_PREFIX}{alias}.{stamp:023d}.{secrets.token_hex(4)}"


def alias_events(tags: Mapping[str, str], alias: str) -> list[tuple[str, AliasEvent]]:
    """(tag key, event) of ``alias``, oldest first. An entry that does not parse (written by
    hand, or by a newer Tapetum) is skipped with a warning rather than failing the read."""
    prefix = f"{ALIAS_TAG_PREFIX}{alias}."
    out: list[tuple[str, AliasEvent]] = []
    for key in sorted(k for k in tags if k.startswith(prefix)):
        try:
            out.append((key, AliasEvent.model_validate_json(tags[key])))
        except ValidationError as exc:
            log.warning("ignoring malformed alias history entry %s: %s", key, exc)
    return out


def holder_stack(events: Sequence[AliasEvent]) -> list[int]:
    """Replay the history: the versions that held the alias, oldest at the bottom. A
    promotion pushes its version (unless it already holds); a rollback pops back to its
    target (pushing it when it is not on the stack)."""
    stack: list[int] = []
    for event in events:
        if event.action == "promote":
            if not stack or stack[-1] != event.version:
                stack.append(event.version)
            continue
        while stack and stack[-1] != event.version:
            stack.pop()
        if not stack:
            stack.append(event.version)
    return stack


def rollback_target(events: Sequence[AliasEvent], current: int | None) -> int:
    """The version a rollback moves the alias to: the holder below ``current`` (the
    version the alias points at now).

    Raises:
        RegistryError: the alias has no earlier holder.
    """
    stack = holder_stack(events)
    if current is not None and stack and stack[-1] == current:
        stack.pop()
    elif current is not None and stack:
        # The alias was moved outside Tapetum: go back to the last holder Tapetum set.
        return stack[-1]
    if not stack:
        raise RegistryError("the alias has no earlier holder to roll back to")
    return stack[-1]
