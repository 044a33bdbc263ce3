"""Property-based API fuzzing of the REST API with schemathesis.

Schemathesis reads ``/openapi.json`` from a real uvicorn server on loopback and sends
generated requests (valid and invalid parameters and bodies) to every operation, with an
``admin`` API key, checking that no response is a 5xx and that every response matches the
schema the app declares for it.

The detector is a tiny numpy-only fake (:class:`FakeDetector`: two fixed boxes per image),
not YOLOX: the point is the HTTP layer (parsing, validation, auth, error mapping), and the
fake keeps the run to seconds. Image decoding, auth (a real argon2 ``KeyStore``), tracking
sessions and the response models are the real ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("schemathesis")

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tapetum.core.detections import Detections
from tapetum.serve.app import DetectorLike, ServeSettings, create_app
from tapetum.serve.auth import KeyStore, Scope
from tests.integration.serve_harness import LoopbackServer

pytestmark = pytest.mark.integration  # ~7 s on 2 cores: not "slow"

MAX_EXAMPLES = 25
CLASS_NAMES = ("person", "bicycle", "car", "bus")


@dataclass(frozen=True)
class _Model:
    path: Path = Path("fake.onnx")
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


class FakeDetector:
    """numpy-only stand-in for ``YoloxDetector``: a person and a bus in every image."""

    class_names = CLASS_NAMES
    input_hw = (416, 416)
    model = _Model()
    recommended_workers = 1

    def __call__(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        out = []
        for img in images:
            h, w = img.shape[:2]
            xyxy = np.array([[0, 0, w / 2, h / 2], [w / 4, h / 4, w, h]], np.float32)
            out.append(Detections(xyxy, np.array([0.9, 0.5], np.float32), np.array([0, 3])))
        return out


def _fake_factory(_: ServeSettings) -> DetectorLike:
    return FakeDetector()


@dataclass
class Fuzzed:
    server: LoopbackServer
    headers: dict[str, str]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    store = KeyStore(tmp / "keys.db")
    _, raw = store.create("fuzzer", [Scope.ADMIN])
    settings_ = ServeSettings(
        model_path=tmp / "fake.onnx",
        model_name="fake",
        max_upload_bytes=256 * 1024,
        rate_per_second=None,  # the fuzzer must not be throttled into 429s
    )
    server = LoopbackServer(create_app(settings_, _fake_factory, key_store=store)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(200):
                if client.get("/readyz").status_code == 200:
                    break
                time.sleep(0.05)
        yield Fuzzed(server, {"Authorization": f"Bearer {raw}"})
    finally:
        server.stop()
        store.close()


def _fuzz_one(
    operation: schemathesis.APIOperation,
    mode: schemathesis.GenerationMode,
    fuzzed: Fuzzed,
    sent: dict[str, int],
) -> Callable[[], None]:
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, don't minimize
    )
    @given(case=operation.as_strategy(mode))
    def check(case: schemathesis.Case) -> None:
        sent[operation.label] += 1
        case.call_and_validate(
            base_url=fuzzed.server.url,
            headers=fuzzed.headers,
            checks=[not_a_server_error, response_schema_conformance],
            timeout=10,
        )

    return check


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_api_never_5xx_and_matches_schema(fuzzed: Fuzzed, mode: str) -> None:
    """Every operation, ``MAX_EXAMPLES`` generated cases each, no 5xx, schema-conformant.

    Drives hypothesis directly (``operation.as_strategy`` + ``@given``) rather than through
    ``schemathesis.pytest.from_fixture``: the latter's subtests break on pytest 9.2
    (``AttributeError: 'Function' object has no attribute '_nodeid'``).
    """
    api = schemathesis.openapi.from_url(f"{fuzzed.server.url}/openapi.json")
    generation_mode = schemathesis.GenerationMode(mode)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 7, [op.label for op in operations]
    failures: dict[str, str] = {}
    unsatisfiable: list[str] = []
    sent: dict[str, int] = {}
    for operation in operations:
        sent[operation.label] = 0

        check = _fuzz_one(operation, generation_mode, fuzzed, sent)
        try:
            check()
        except Unsatisfiable:
            unsatisfiable.append(operation.label)  # nothing to make invalid (no parameters)
        except Exception as exc:
            failures[operation.label] = str(exc)
    print(f"schemathesis {mode}: {sum(sent.values())} cases {sent}; none for {unsatisfiable}")
    if mode == "positive":
        assert not unsatisfiable, unsatisfiable
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
