"""Serving a registry model with fakes (no model, no MLflow, no web framework): swapping the
default model while requests run on it, reloading an alias through ``ModelFollower`` and
``reload_model`` (each status an admin would see), the reasons API callers get without
the server's paths, and the ``/metrics`` families of the version serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pytest

from tapetum.core.detections import Detections
from tapetum.errors import (
    ArtifactMissingError,
    ModelLoadError,
    ModelNotFoundError,
    RegistryUnavailableError,
)
from tapetum.registry import ArtifactCache, ModelRef, ResolvedModel, VersionInfo
from tapetum.serve.follow import (
    FollowCollector,
    ModelFollower,
    public_reason,
    registry_api_error,
    reload_model,
)
from tapetum.serve.service import DetectionService
from tapetum.serve.settings import ApiError, ServeSettings

pytestmark = pytest.mark.timeout(30)

Image = npt.NDArray[np.uint8]


class _Model:
    providers: ClassVar[list[str]] = ["CPUExecutionProvider"]

    def __init__(self, path: Path) -> None:
        self.path = path


class _FileDetector:
    """One box per image whose confidence says which file the detector was loaded from
    (``v1.onnx`` → 0.1, ``v2.onnx`` → 0.2); ``gate`` holds calls until set."""

    class_names = ("person",)
    input_hw = (16, 16)
    recommended_workers = 2

    def __init__(self, path: Path) -> None:
        self.model = _Model(path)
        self.score = int(path.stem.removeprefix("v")) / 10
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.calls = 0

    def __call__(self, images: Sequence[Image]) -> list[Detections]:
        self.calls += 1
        self.started.set()
        self.gate.wait(10)
        return [
            Detections(
                np.array([[1, 1, 5, 5]], np.float32),
                np.array([self.score], np.float32),
                np.array([0], np.int64),
            )
            for _ in images
        ]


class _Factory:
    """Builds a :class:`_FileDetector` per file; ``fail`` makes the next loads raise."""

    def __init__(self) -> None:
        self.built: list[_FileDetector] = []
        self.fail: Exception | None = None

    def __call__(self, settings: ServeSettings) -> _FileDetector:
        if self.fail is not None:
            raise self.fail
        detector = _FileDetector(settings.model_path)
        self.built.append(detector)
        return detector


def _service(factory: _Factory, path: Path, name: str = "det") -> DetectionService:
    settings = ServeSettings(
        model_path=path,
        model_name=name,
        require_auth=False,
        batch_requests=1,
        conf_threshold=0.05,
        min_conf_threshold=0.05,
    )
    service = DetectionService(settings, factory)
    service.start()
    assert service.wait_ready(5), service.load_error
    return service


def _score(service: DetectionService) -> float:
    (det,) = service.detect(np.zeros((8, 8, 3), np.uint8)).detections
    return round(det.confidence, 3)


def test_a_swap_serves_the_new_file_while_a_request_under_way_finishes_on_the_old(
    tmp_path: Path,
) -> None:
    factory = _Factory()
    service = _service(factory, tmp_path / "v1.onnx")
    old = factory.built[0]
    notified: list[str] = []
    service.add_swap_listener(lambda: notified.append(service.detector().model.path.name))
    assert _score(service) == 0.1

    old.gate.clear()  # the next request on v1 blocks inside the model call
    old.started.clear()
    slow: list[float] = []
    request = threading.Thread(target=lambda: slow.append(_score(service)))
    request.start()
    assert old.started.wait(5)

    seconds = service.swap_model(tmp_path / "v2.onnx")
    assert seconds >= 0 and notified == ["v2.onnx"]
    assert _score(service) == 0.2  # new requests: the new file
    assert service.model_names() == ["det"]  # same name, same place
    assert service.model_info("det").path.endswith("v2.onnx")
    old.gate.set()
    request.join(5)
    assert slow == [0.1]  # the request under way finished on the old model


def test_a_file_that_does_not_load_keeps_the_old_model_serving(tmp_path: Path) -> None:
    factory = _Factory()
    service = _service(factory, tmp_path / "v1.onnx")
    factory.fail = ModelLoadError("not an ONNX file")
    with pytest.raises(ModelLoadError):
        service.swap_model(tmp_path / "v2.onnx")
    assert _score(service) == 0.1


class _FakeRegistry:
    """What the follower asks of a registry: the alias's version, and its file."""

    shown_uri = "sqlite:////srv/models/registry.db"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.version = 1
        self.error: Exception | None = None
        self.fetch_error: Exception | None = None

    def get_version(self, ref: ModelRef) -> VersionInfo:
        if self.error is not None:
            raise self.error
        version = ref.version or self.version
        return VersionInfo("det", version, {"tapetum.sha256": f"{version:064x}"})

    def fetch(self, info: VersionInfo, cache: ArtifactCache) -> Path:
        if self.fetch_error is not None:
            raise self.fetch_error
        return self.tmp / f"v{info.version}.onnx"


def _resolved(tmp: Path, version: int = 1, alias: str | None = "champion") -> ResolvedModel:
    return ResolvedModel(tmp / f"v{version}.onnx", "det", version, f"{version:064x}", alias)


def _following(
    tmp: Path, alias: str | None = "champion"
) -> tuple[DetectionService, ModelFollower, _FakeRegistry, _Factory]:
    factory, reg = _Factory(), _FakeRegistry(tmp)
    service = _service(factory, tmp / "v1.onnx")
    follower = ModelFollower(
        service, _resolved(tmp, alias=alias), registry=reg, poll_s=0, cache_dir=tmp / "cache"
    )
    return service, follower, reg, factory


def test_reload_swaps_in_the_version_the_alias_points_at_then_reports_no_change(
    tmp_path: Path,
) -> None:
    service, follower, reg, _ = _following(tmp_path)
    same = reload_model(service, follower, "det")
    assert (same.changed, same.version, same.previous_version) == (False, 1, None)

    reg.version = 2
    moved = reload_model(service, follower, "det")
    assert (moved.changed, moved.version, moved.previous_version) == (True, 2, 1)
    assert moved.alias == "champion" and moved.sha256 == f"{2:064x}"
    assert moved.swap_seconds is not None
    assert _score(service) == 0.2 and follower.current.version == 2
    assert [s.trigger for s in follower.watcher.swaps] == ["manual"]  # type: ignore[union-attr]
    assert reload_model(service, follower, "det").changed is False


def test_polling_follows_the_alias_without_a_reload(tmp_path: Path) -> None:
    factory, reg = _Factory(), _FakeRegistry(tmp_path)
    service = _service(factory, tmp_path / "v1.onnx")
    follower = ModelFollower(
        service, _resolved(tmp_path), registry=reg, poll_s=0.05, cache_dir=tmp_path / "c"
    )
    follower.start()
    try:
        reg.version = 2
        deadline = time.monotonic() + 5
        while follower.current.version != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _score(service) == 0.2
        assert follower.watcher is not None and follower.watcher.swaps[0].trigger == "poll"
    finally:
        follower.stop()


def _api_error(fn: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn()
    return info.value


def test_reload_of_an_unknown_a_file_or_a_pinned_model_says_why(tmp_path: Path) -> None:
    service, follower, _, _ = _following(tmp_path)
    err = _api_error(lambda: reload_model(service, follower, "nope"))
    assert (err.status, err.code) == (404, "unknown_model")
    err = _api_error(lambda: reload_model(service, None, "det"))  # served from a file
    assert (err.status, err.code) == (409, "model_not_followed")

    pinned_service, pinned, _, _ = _following(tmp_path, alias=None)
    err = _api_error(lambda: reload_model(pinned_service, pinned, "det"))
    assert (err.status, err.code) == (409, "model_not_followed")
    assert "models:/det/1" in err.detail


def test_an_unreachable_registry_is_503_with_a_reason_and_the_model_keeps_serving(
    tmp_path: Path,
) -> None:
    service, follower, reg, _ = _following(tmp_path)
    reg.version = 2
    reg.error = RegistryUnavailableError(
        "alias det@champion: cannot reach sqlite:////srv/models/registry.db: disk I/O error"
    )
    err = _api_error(lambda: reload_model(service, follower, "det"))
    assert (err.status, err.code) == (503, "registry_unavailable")
    assert err.headers.get("Retry-After")
    assert "disk I/O error" in err.detail and "/srv" not in err.detail
    assert _score(service) == 0.1

    reg.error = ModelNotFoundError("model 'det' has no alias 'champion' (aliases: none)")
    err = _api_error(lambda: reload_model(service, follower, "det"))
    assert (err.status, err.code) == (404, "registry_not_found")
    assert _score(service) == 0.1


def test_a_version_that_cannot_be_fetched_or_loaded_is_503_and_the_old_keeps_serving(
    tmp_path: Path,
) -> None:
    service, follower, reg, factory = _following(tmp_path)
    reg.version = 2
    reg.fetch_error = ArtifactMissingError(
        "the model file of det/2 is missing from the artifact store (/srv/artifacts/1/abc)"
    )
    err = _api_error(lambda: reload_model(service, follower, "det"))
    assert (err.status, err.code) == (503, "model_swap_failed")
    assert "det/1 keeps serving" in err.detail and "/srv" not in err.detail

    reg.fetch_error = None
    factory.fail = ModelLoadError("unexpected output shape")
    err = _api_error(lambda: reload_model(service, follower, "det"))
    assert (err.status, err.code) == (503, "model_swap_failed")
    assert "unexpected output shape" in err.detail
    assert _score(service) == 0.1 and follower.current.version == 1

    factory.fail = None  # fixed: a manual reload retries the version that failed
    assert reload_model(service, follower, "det").version == 2


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "alias m@c: sqlite:////home/ops/reg.db: (sqlite3.OperationalError) locked",
            "alias m@c: <registry>: (sqlite3.OperationalError) locked",
        ),
        ("cannot reach the MLflow server at http://10.0.0.5:5000: refused", None),
        ("missing from the artifact store (/var/lib/art/1/x/artifacts/model)", None),
        ("stored at mlflow-artifacts:/1/abc/artifacts/model", None),
        ("got ~/models/x.onnx", None),
        (
            "API request to endpoint /api/2.0/mlflow/registered-models/alias failed with "
            "exception HTTPConnectionPool(host='10.0.0.5', port=5000): Max retries exceeded",
            "API request to endpoint <path> failed with exception HTTPConnectionPool(<host>): "
            "Max retries exceeded",
        ),
        ("could not connect to server at 10.0.0.5:5432", None),
    ],
)
def test_public_reasons_keep_no_store_uri_or_path(text: str, shown: str | None) -> None:
    out = public_reason(text)
    assert "/home" not in out and "10.0.0.5" not in out and "/var" not in out
    assert "mlflow-artifacts:" not in out and "~/models" not in out
    if shown is not None:
        assert out == shown


def test_public_reasons_keep_model_references() -> None:
    text = "models:/det/2 (det/2, @champion) is not a complete version"
    assert public_reason(text) == text


def test_registry_errors_map_to_404_or_503() -> None:
    assert registry_api_error(ModelNotFoundError("no model 'x'")).status == 404
    assert registry_api_error(ArtifactMissingError("gone")).status == 503
    assert registry_api_error(RegistryUnavailableError("down")).code == "registry_unavailable"


def test_metrics_show_the_version_serving_and_count_swaps_and_errors(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    service, follower, reg, _ = _following(tmp_path)
    registry = CollectorRegistry()
    registry.register(FollowCollector(follower))

    def scrape() -> str:
        return generate_latest(registry).decode()

    text = scrape()
    assert 'tapetum_model_version_serving{alias="champion",model="det",version="1"} 1.0' in text
    assert "tapetum_model_last_swap_seconds" not in text
    reg.version = 2
    reload_model(service, follower, "det")
    reg.error = RegistryUnavailableError("down")
    with pytest.raises(ApiError):
        reload_model(service, follower, "det")
    follower.watcher.check_now(manual=False)  # type: ignore[union-attr]  # a poll, failing
    text = scrape()
    assert 'tapetum_model_version_serving{alias="champion",model="det",version="2"} 1.0' in text
    assert 'version="1"' not in text  # only what serves now: one series per model
    assert 'tapetum_model_swaps_total{model="det",trigger="manual"} 1.0' in text
    assert 'tapetum_model_swaps_total{model="det",trigger="poll"} 0.0' in text
    assert 'tapetum_model_alias_check_errors_total{model="det"} 1.0' in text
    assert 'tapetum_model_last_swap_seconds{model="det"}' in text
