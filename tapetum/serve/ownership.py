"""Who owns a server-side stream or a tracking session, and who may see it.

Every stream and tracking session records the principal that made it: its ``key_id`` (an
API key's public id, or ``jwt:<sub>`` for a bearer token, so the two never collide). A
caller sees, follows and stops only what it owns; an ``admin`` principal sees everything.
Anything else answers as if it did not exist (404), so ids cannot be probed. Tracking
sessions are keyed by (owner, ``session_id``): two keys using the same id get two trackers.

With auth off every request is the anonymous principal, which may do everything.

Example:
    >>> caller = Caller(owner="3f2a9c1b7d4e", admin=False)
    >>> caller.may_see("3f2a9c1b7d4e"), caller.may_see("9e8d7c6b5a41")
    (True, False)
    >>> Caller(owner="ops", admin=True).may_see("9e8d7c6b5a41")
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from tapetum.serve.auth import Scope
from tapetum.serve.settings import Principal

__all__ = ["ANONYMOUS", "Caller", "caller_of"]

#: The owner of what is made while auth is off (and the key id of that principal).
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Caller:
    """The principal of one call, as ownership checks need it.

    Attributes:
        owner: the principal's ``key_id``, recorded on what it makes.
        admin: the principal has the ``admin`` scope: it sees and stops everyone's.
    """

    owner: str
    admin: bool = False

    def may_see(self, owner: str) -> bool:
        """True when this caller may see, follow or stop what ``owner`` made."""
        return self.admin or owner == self.owner


def caller_of(principal: Principal) -> Caller:
    """The :class:`Caller` of an authenticated principal."""
    return Caller(owner=principal.key_id, admin=principal.allows(Scope.ADMIN))
