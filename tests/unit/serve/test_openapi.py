"""The REST API's OpenAPI document is pinned: a route, parameter, schema or response that
drifts (renamed, dropped, re-documented, reordered) fails here.

After a deliberate API change, regenerate the saved copy and review its diff::

    python -m tests.unit.serve.test_openapi
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from tapetum.serve.app import ServeSettings, create_app

SAVED = Path(__file__).parent / "data" / "openapi.json"


def live_document() -> dict[str, Any]:
    """The document of an app with default settings (the model is never loaded)."""
    app = create_app(ServeSettings(model_path=Path("model.onnx"), require_auth=False))
    # Through JSON, as /openapi.json serves it (tuples become lists).
    return dict(json.loads(json.dumps(app.openapi(), ensure_ascii=False)))


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


@pytest.fixture(scope="module")
def saved() -> dict[str, Any]:
    return dict(json.loads(SAVED.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def live() -> dict[str, Any]:
    return live_document()


def test_the_same_routes_and_methods_in_the_same_order(
    live: dict[str, Any], saved: dict[str, Any]
) -> None:
    def routes(doc: dict[str, Any]) -> list[tuple[str, list[str]]]:
        return [(path, list(item)) for path, item in doc["paths"].items()]

    assert routes(live) == routes(saved)


@pytest.mark.parametrize("path", list(json.loads(SAVED.read_text(encoding="utf-8"))["paths"]))
def test_each_route_is_documented_as_saved(
    path: str, live: dict[str, Any], saved: dict[str, Any]
) -> None:
    assert live["paths"].get(path) == saved["paths"][path]


def test_the_schemas_are_as_saved(live: dict[str, Any], saved: dict[str, Any]) -> None:
    assert live["components"] == saved["components"]


def test_the_whole_document_is_identical_to_the_saved_copy(
    live: dict[str, Any], saved: dict[str, Any]
) -> None:
    assert _dump(live) == SAVED.read_text(encoding="utf-8")


if __name__ == "__main__":
    SAVED.write_text(_dump(live_document()), encoding="utf-8")
    print(f"wrote {SAVED}")
