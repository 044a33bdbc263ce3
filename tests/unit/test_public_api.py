"""The public API and the error tree, pinned (as httpx's ``tests/test_exported_members.py``).

A name added to or dropped from a package's ``__all__``, a lazy export of ``tapetum`` that
its three lists do not all name, an error defined outside ``tapetum/errors.py`` or missing
from its drawn tree: each fails here, so a change of the public surface is a visible edit of
``data/public_api.json`` or of ``tapetum/errors.py``'s drawn tree. Packages are found by
reading their ``__init__.py`` (nothing is imported at collection); the tests import them.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import tapetum
import tapetum.errors
from tapetum.errors import ConfigError, TapetumError

PACKAGE_DIR = Path(tapetum.__file__).parent

#: Every package's ``__all__``, pinned in data/public_api.json: changing the public API
#: means changing that file.
PUBLIC_API: dict[str, list[str]] = json.loads(
    (Path(__file__).parent / "data" / "public_api.json").read_text()
)

#: Modules ``import tapetum`` must not load (the lazy-import promise).
HEAVY_MODULES = ("numpy", "onnxruntime", "av", "cv2", "numba", "scipy", "fastapi", "grpc")


# ------------------------------------------------------------------------------ helpers


def _init_files() -> dict[str, Path]:
    return {
        ".".join(init.parent.relative_to(PACKAGE_DIR.parent).parts): init
        for init in sorted(PACKAGE_DIR.rglob("__init__.py"))
    }


def _declared_all(init: Path) -> list[str] | None:
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return None


#: Packages whose ``__init__.py`` declares ``__all__``, by module name.
PACKAGES_WITH_ALL = sorted(name for name, init in _init_files().items() if _declared_all(init))


def _own_public_bindings(package: str, init: Path) -> set[str]:
    """Public names the ``__init__`` defines or re-exports from its own submodules
    (imports from elsewhere, stdlib or ``tapetum.errors``, are its own business)."""
    names: set[str] = set()
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
            names |= {alias.asname or alias.name for alias in node.names}
    return {n for n in names if not n.startswith("_")}


def _type_checking_imports(init: Path) -> dict[str, str]:
    """``{name: module}`` of the ``if TYPE_CHECKING:`` imports of ``tapetum/__init__.py``."""
    imports: dict[str, str] = {}
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module is not None
                imports |= {alias.asname or alias.name: stmt.module for alias in stmt.names}
    return imports


def _all_modules() -> list[str]:
    names = ["tapetum"]
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="tapetum."):
        if info.name != "tapetum.__main__":  # running it would start the CLI
            names.append(info.name)
    return names


def _missing_third_party(exc: ImportError) -> bool:
    name = getattr(exc, "name", None) or ""
    return isinstance(exc, ModuleNotFoundError) and not name.startswith("tapetum")


def _builtin_exception_bases(path: Path) -> list[str]:
    """``class X(ValueError)``-style definitions in a module that cannot be imported here."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                if not isinstance(base, ast.Name):
                    continue
                value = getattr(builtins, base.id, None)
                if isinstance(value, type) and issubclass(value, BaseException):
                    found.append(f"{path}: class {node.name}({base.id})")
    return found


def _exception_classes(module: ModuleType) -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == module.__name__
    ]


# ------------------------------------------------------------------ the top-level package


def test_lazy_exports_all_and_type_checking_imports_name_the_same_things() -> None:
    init = Path(tapetum.__file__)
    lazy = dict(tapetum._EXPORTS)
    typed = _type_checking_imports(init)
    assert sorted(tapetum.__all__) == sorted([*lazy, "__version__"])
    assert typed == lazy  # same names, each from the module the lazy map loads it from


def test_every_top_level_name_resolves_to_the_object_of_its_module() -> None:
    for name, module in tapetum._EXPORTS.items():
        assert getattr(tapetum, name) is getattr(importlib.import_module(module), name), name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        getattr(tapetum, "Nope")  # noqa: B009 - the lazy __getattr__ is under test


def test_import_tapetum_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, tapetum, tapetum.errors; "
        f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


# --------------------------------------------------------------------------- sub-packages


def test_every_package_with_all_is_pinned() -> None:
    assert sorted(PUBLIC_API) == PACKAGES_WITH_ALL


@pytest.mark.parametrize("package", PACKAGES_WITH_ALL)
def test_all_matches_the_pinned_names(package: str) -> None:
    assert importlib.import_module(package).__all__ == PUBLIC_API[package]


@pytest.mark.parametrize("package", PACKAGES_WITH_ALL)
def test_every_name_in_all_resolves(package: str) -> None:
    module = importlib.import_module(package)
    unresolved = [name for name in module.__all__ if not hasattr(module, name)]
    assert unresolved == []


@pytest.mark.parametrize("package", sorted(_init_files()))
def test_no_public_name_is_missing_from_all(package: str) -> None:
    init = _init_files()[package]
    public = _own_public_bindings(package, init)
    declared = _declared_all(init)
    if package == "tapetum":
        declared = [*tapetum._EXPORTS, "__version__"]
    if declared is None:  # a namespace package: submodules only, nothing re-exported
        assert public == set()
    else:
        assert sorted(public - set(declared)) == []


# ---------------------------------------------------------------------------- error tree


def _documented_tree() -> dict[str, tuple[str | None, str | None]]:
    """``{class name: (parent, "also a X" builtin or None)}`` from the errors docstring."""
    doc = tapetum.errors.__doc__ or ""
    lines = re.findall(r"^( *)[*+-] (\w+)(?: \(also an? (\w+)\))?$", doc, re.MULTILINE)
    assert lines, "the tree is missing from tapetum/errors.py's docstring"
    tree: dict[str, tuple[str | None, str | None]] = {}
    stack: list[tuple[int, str]] = []
    for indent, name, also in lines:
        while stack and stack[-1][0] >= len(indent):
            stack.pop()
        tree[name] = (stack[-1][1] if stack else None, also or None)
        stack.append((len(indent), name))
    return tree


def test_the_drawn_tree_is_the_class_tree() -> None:
    classes = {cls.__name__: cls for cls in _exception_classes(tapetum.errors)}
    drawn = _documented_tree()
    assert sorted(drawn) == sorted(classes) == sorted(tapetum.errors.__all__)
    for name, (parent, also) in drawn.items():
        tapetum_bases = [b for b in classes[name].__bases__ if b.__module__ == "tapetum.errors"]
        other_bases = [b.__name__ for b in classes[name].__bases__ if b not in tapetum_bases]
        if parent is None:
            assert classes[name] is TapetumError
        else:
            assert [b.__name__ for b in tapetum_bases] == [parent], name
            assert other_bases == ([also] if also else []), name


def test_every_exception_under_tapetum_is_a_tapetum_error_from_errors_py() -> None:
    strays: list[str] = []
    for name in _all_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if not _missing_third_party(exc):
                raise
            path = PACKAGE_DIR.parent / (name.replace(".", "/") + ".py")
            strays += _builtin_exception_bases(path) if path.is_file() else []
            continue
        strays += [
            f"{cls.__module__}.{cls.__qualname__}"
            for cls in _exception_classes(module)
            if name != "tapetum.errors" or not issubclass(cls, TapetumError)
        ]
    assert strays == []


def test_config_error_is_caught_as_a_value_error() -> None:
    from tapetum.track import make_tracker

    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError, match="unknown tracker 'nope'"):
        make_tracker("nope", 30.0)
