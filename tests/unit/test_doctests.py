"""The examples in the package's docstrings run and print what they show.

Examples that need a model, a video or a server are marked ``# doctest: +SKIP``; every
other one runs here, one test per module, in a temporary working directory. The modules
are found by reading the source for ``>>>``, so collection imports nothing.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "tapetum"


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


DOCTEST_MODULES = _modules_with_examples()


def test_the_examples_are_found() -> None:
    assert {"tapetum.track", "tapetum.core.breaker", "tapetum._types"} <= set(DOCTEST_MODULES)


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_examples_run(
    module_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("tapetum"):
            raise
        pytest.skip(f"{module_name} needs {exc.name} (an optional extra)")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, module_name):
        runner.run(test, out=report.append)
    assert runner.summarize(verbose=False).failed == 0, "".join(report)
