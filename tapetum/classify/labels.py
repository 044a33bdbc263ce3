"""Label maps: a classifier's classes grouped into the labels a user wants.

A map file (YAML or JSON) names each user label and the classifier classes it gathers, by
name (case-insensitive) or index. The probability of a label is the sum over its classes;
what no label claims goes to the ``other`` label (set ``other: null`` to drop that mass
and renormalise over the mapped labels instead)::

    labels:
      bus: [school bus, trolleybus, minibus]
      van: [minivan, moving van, police van]
    other: other

A plain ``{label: [classes]}`` mapping is read too. Tapetum ships maps by name
(``vehicles``: the ImageNet vehicle classes → car, van, truck, bus, motorcycle, bicycle,
train; ``tapetum/classify/maps/vehicles.json``); see :data:`BUILTIN_MAPS`.

Example:
    >>> import numpy as np
    >>> m = LabelMap.from_mapping({"pet": ["cat", "dog"]}, ("cat", "dog", "car"))
    >>> m.labels, m.project(np.array([[0.5, 0.3, 0.2]], np.float32)).astype(float).round(2).tolist()
    (('pet', 'other'), [[0.8, 0.2]])
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tapetum._types import Float32Array
from tapetum.errors import LabelMapError

__all__ = ["BUILTIN_MAPS", "LabelMap", "load_label_map"]

#: Maps shipped with Tapetum, by name (files in ``tapetum/classify/maps``).
BUILTIN_MAPS = ("vehicles",)

#: Name of the label that collects the probability no other label claims.
DEFAULT_OTHER = "other"


@dataclass(frozen=True, slots=True, eq=False)
class LabelMap:
    """Classifier classes (K) grouped into labels (L, ``other`` last when kept).

    Attributes:
        labels: label names, in output order.
        matrix: (K, L) float32 0/1: which label each class counts towards (an ``other``
            column holds every class no label names).
        other: the name of the ``other`` label, or None (mass outside the map dropped and
            each row renormalised over the mapped labels).
        source: where the map came from (file path or builtin name), for messages.
    """

    labels: tuple[str, ...]
    matrix: Float32Array
    other: str | None
    source: str = ""

    @classmethod
    def from_mapping(
        cls,
        labels: Mapping[str, Sequence[str | int]],
        class_names: Sequence[str],
        *,
        other: str | None = DEFAULT_OTHER,
        source: str = "",
    ) -> LabelMap:
        """Build a map against the classifier's ``class_names``.

        Raises:
            LabelMapError: no labels, an empty label, a class that the classifier does not
                have (all are listed, with the closest names it has), a class in two
                labels, or ``other`` reusing a label's name.
        """
        where = f"label map {source}: " if source else "label map: "
        if not labels:
            raise LabelMapError(f"{where}no labels")
        lookup = {name.strip().lower(): i for i, name in enumerate(class_names)}
        names = list(labels)
        if other is not None and other in labels:
            raise LabelMapError(f"{where}{other!r} is both a label and the 'other' label")
        k = len(class_names)
        matrix = np.zeros((k, len(names) + (other is not None)), np.float32)
        unknown: list[str] = []
        owner: dict[int, str] = {}
        for j, label in enumerate(names):
            members = labels[label]
            if isinstance(members, str | int) or not members:
                raise LabelMapError(f"{where}label {label!r} needs a list of classes")
            for member in members:
                idx = _class_index(member, lookup, k)
                if idx is None:
                    unknown.append(str(member))
                    continue
                if idx in owner and owner[idx] != label:
                    raise LabelMapError(
                        f"{where}class {class_names[idx]!r} is in both {owner[idx]!r} and {label!r}"
                    )
                owner[idx] = label
                matrix[idx, j] = 1.0
        if unknown:
            raise LabelMapError(
                f"{where}the classifier has no class {_suggest(unknown, class_names)}"
            )
        if other is not None:
            matrix[:, -1] = matrix[:, :-1].sum(axis=1) == 0
        return cls(tuple(names) + ((other,) if other is not None else ()), matrix, other, source)

    def project(self, probs: Float32Array) -> Float32Array:
        """(M, K) class probabilities → (M, L) label probabilities (rows sum to 1)."""
        out: Float32Array = np.asarray(probs, np.float32) @ self.matrix
        if self.other is None:
            total = out.sum(axis=1, keepdims=True)
            out = out / np.maximum(total, np.float32(1e-12))
        return out


def load_label_map(
    spec: str | Path, class_names: Sequence[str], *, other: str | None = DEFAULT_OTHER
) -> LabelMap:
    """Read a map file (``.yaml``/``.yml``/``.json``) or a builtin map by name.

    Raises:
        LabelMapError: the file is missing or malformed, or it names unknown classes.
    """
    text = str(spec)
    if text in BUILTIN_MAPS:
        path = resources.files("tapetum.classify").joinpath("maps", f"{text}.json")
        raw, source = _parse(path.read_text(encoding="utf-8"), ".json", text), text
    else:
        file = Path(text)
        if not file.is_file():
            raise LabelMapError(
                f"label map not found: {file} (a .yaml/.json file, or one of "
                f"{', '.join(BUILTIN_MAPS)})"
            )
        raw, source = _parse(file.read_text(encoding="utf-8"), file.suffix.lower(), text), text
    if not isinstance(raw, dict):
        raise LabelMapError(f"label map {source}: expected a mapping of label → classes")
    if "labels" in raw and isinstance(raw["labels"], dict):  # the full form (+ description)
        body, other = raw["labels"], raw.get("other", other)
        if other is not None and not isinstance(other, str):
            raise LabelMapError(f"label map {source}: 'other' must be a name or null")
    else:
        body = raw
    return LabelMap.from_mapping(
        {str(k): v for k, v in body.items()}, class_names, other=other, source=source
    )


def _parse(text: str, suffix: str, source: str) -> Any:
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix not in (".yaml", ".yml"):
            raise LabelMapError(f"label map {source}: expected a .yaml, .yml or .json file")
        from tapetum._optional import import_optional

        yaml = import_optional("yaml", "classify", "reading a YAML label map")
        return yaml.safe_load(text)
    except LabelMapError:
        raise
    except Exception as exc:  # json/yaml parse errors
        raise LabelMapError(f"label map {source} is not valid {suffix[1:]}: {exc}") from exc


def _class_index(member: str | int, lookup: Mapping[str, int], k: int) -> int | None:
    if isinstance(member, bool):
        return None
    if isinstance(member, int):
        return member if 0 <= member < k else None
    return lookup.get(str(member).strip().lower())


def _suggest(unknown: Sequence[str], class_names: Sequence[str]) -> str:
    """``'buss' (did you mean 'bus'?), 'xyz'``."""
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), list(class_names), n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        parts.append(f"{name!r}{hint}")
    return ", ".join(parts)
