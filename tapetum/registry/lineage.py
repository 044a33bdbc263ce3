"""Lineage as a tree: a version's ancestors back to the root, then what was made from it.

Pure rendering (no registry calls): :class:`LineageNode` holds a version, the lines that
describe how it was made, and its children; :func:`render_tree` draws it with box-drawing
characters, the asked-for version marked ``◀``.

Example:
    >>> from tapetum.registry.records import VersionInfo
    >>> root = LineageNode("yolox_nano/1  fp32", ("tapetum models register …",))
    >>> int8 = LineageNode("yolox_nano/2  int8", ("tapetum optimize …",), marked=True)
    >>> print(render_tree(root.with_children([int8])))
    yolox_nano/1  fp32
    │   tapetum models register …
    └── yolox_nano/2  int8  ◀
            tapetum optimize …
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from tapetum.registry.records import RunRecord, VersionInfo

__all__ = ["LineageNode", "build_lineage", "describe_version", "render_tree"]


@dataclass(frozen=True, slots=True)
class LineageNode:
    """One version in a lineage tree.

    Attributes:
        label: the first line (name/version, precision, hash, aliases).
        details: further lines (command, data, code version).
        children: versions made from this one.
        marked: the version the tree was asked for.
    """

    label: str
    details: tuple[str, ...] = ()
    children: tuple[LineageNode, ...] = ()
    marked: bool = False

    def with_children(self, children: Sequence[LineageNode]) -> LineageNode:
        return replace(self, children=tuple(children))


def render_tree(root: LineageNode) -> str:
    """The tree as text, one version per branch, details indented under it."""
    lines: list[str] = []
    _render(root, "", True, True, lines)
    return "\n".join(lines)


def _render(node: LineageNode, prefix: str, last: bool, root: bool, out: list[str]) -> None:
    connector = "" if root else ("└── " if last else "├── ")
    out.append(prefix + connector + node.label + ("  ◀" if node.marked else ""))
    below = prefix + ("" if root else ("    " if last else "│   "))
    bar = "│   " if node.children else "    "
    out.extend(below + bar + line for line in node.details)
    for i, child in enumerate(node.children):
        _render(child, below, i == len(node.children) - 1, False, out)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC") if ms else "?"


def describe_version(info: VersionInfo, run: RunRecord | None) -> LineageNode:
    """A node for ``info``: label with precision, family, input, hash and aliases; details
    with when/who, the command, the data (with digests) and the code version."""
    aliases = "  " + " ".join(f"@{a}" for a in info.aliases) if info.aliases else ""
    label = (
        f"{info.short}  {info.precision or '?'} {info.family or '?'} {info.input_size or '?'}"
        f"  sha256 {info.sha256[:12]}{aliases}"
    )
    who = run.tags.get("mlflow.user", "") if run else ""
    details = [f"registered {_when(info.created_ms)}" + (f" by {who}" if who else "")]
    if info.command:
        details.append(f"$ {info.command}")
    for d in run.datasets if run else ():
        details.append(f"{d.context}: {d.name} (sha256 {d.digest[:12]}, {d.files} files)")
    if info.code_version:
        details.append(f"code: {info.code_version}")
    return LineageNode(label, tuple(details))


def build_lineage(
    chain: Sequence[VersionInfo],
    children: Mapping[str, Sequence[VersionInfo]],
    runs: Mapping[str, RunRecord],
) -> LineageNode:
    """The tree of ``chain`` (root first, the asked-for version last) with the descendants
    in ``children`` (``NAME/VERSION`` → versions made from it) under the last one.

    ``runs`` maps run id → the run that registered each version (for data and user).
    """

    seen: set[str] = set()

    def node(info: VersionInfo, marked: bool = False) -> LineageNode:
        seen.add(info.short)
        base = describe_version(info, runs.get(info.run_id or ""))
        kids = [node(c) for c in children.get(info.short, ()) if c.short not in seen]
        return replace(base, marked=marked, children=tuple(kids))

    tree = node(chain[-1], marked=True)
    for info in reversed(chain[:-1]):
        tree = replace(describe_version(info, runs.get(info.run_id or "")), children=(tree,))
    if chain and chain[0].parent is not None:  # the chain ends at a parent that is gone
        missing = chain[0].parent.short
        tree = LineageNode(f"{missing}  (no longer in the registry)", (), (tree,))
    return tree
