"""Sticky traffic splits: which arm serves a stream, a frame or a request.

A key (source id, ``source id#frame``, an API key id, a header value) is hashed with the
experiment's name as salt (BLAKE2b, 64 bits) to a point of ``[0, 1)``; the variant whose
bucket holds the point serves it, the control serves the rest. The same key always lands
in the same arm for one experiment, on every process and machine, and a new experiment
(another name) reshuffles the keys.

Example:
    >>> from tapetum.experiments.spec import CanaryShare
    >>> split = TrafficSplit("demo", (CanaryShare("b", 0.0, 0.5),))
    >>> split.arm_for("cam-1") == split.arm_for("cam-1")
    True
    >>> sorted({split.arm_for(f"cam-{i}") for i in range(50)})
    ['b', 'control']
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from tapetum.experiments.spec import CONTROL, CanaryShare

__all__ = ["TrafficSplit", "hash_unit"]

_SCALE = float(2**64)


def hash_unit(salt: str, key: str) -> float:
    """A stable point of ``[0, 1)`` for ``key`` under ``salt``."""
    digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class TrafficSplit:
    """Maps keys to arms by the canary buckets (see the module docstring).

    Args:
        salt: the experiment's name.
        shares: the variants' buckets; the control takes the rest.
    """

    def __init__(self, salt: str, shares: Sequence[CanaryShare]) -> None:
        self.salt = salt
        self.shares = tuple(sorted(shares, key=lambda s: s.low))

    def arm_for(self, key: str) -> str:
        """The arm that serves ``key``."""
        point = hash_unit(self.salt, key)
        for share in self.shares:
            if share.low <= point < share.high:
                return share.arm
        return CONTROL

    def arm_for_frame(self, source_id: str, frame_index: int) -> str:
        """The arm that serves one frame of a per-frame split."""
        return self.arm_for(f"{source_id}#{frame_index}")
