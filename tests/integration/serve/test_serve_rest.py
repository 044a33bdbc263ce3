"""The REST API end to end: a real uvicorn server on loopback, the real YOLOX-nano model, a
real key store, and an httpx client."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi import FastAPI

from tapetum.core.detections import Detections
from tapetum.serve.app import DetectorLike, ServeSettings, create_app, default_detector_factory
from tapetum.serve.auth import KeyStore, Scope
from tapetum.serve.ratelimit import RateLimit, RateLimiter
from tapetum.serve.settings import ApiError
from tests.integration.serve_harness import LoopbackServer, api_routes
from tests.integration.serve_harness import assert_error as _assert_error

pytestmark = pytest.mark.integration

MAX_UPLOAD_BYTES = 1024 * 1024
MAX_BATCH = 4
#: Routes anyone may call; every other route must demand a key.
PUBLIC_ROUTES = {
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/docs",
    "/docs/static/{name}",
    "/redoc",
    "/dashboard",  # the live page and its files hold no data; it reads /metrics with a key
    "/dashboard/static/{name}",
}
#: The scope each protected (method, route) needs (a new route must be added here, or the
#: walk fails).
ROUTE_SCOPES = {
    ("GET", "/metrics"): Scope.READ,
    ("GET", "/v1/models"): Scope.READ,
    ("GET", "/v1/models/{name}"): Scope.READ,
    ("POST", "/v1/models"): Scope.ADMIN,
    ("DELETE", "/v1/models/{name}"): Scope.ADMIN,
    ("POST", "/v1/models/{name}/reload"): Scope.ADMIN,
    ("POST", "/v1/detect"): Scope.INFER,
    ("POST", "/v1/detect/batch"): Scope.INFER,
    ("POST", "/v1/streams"): Scope.INFER,
    ("GET", "/v1/streams"): Scope.READ,
    ("GET", "/v1/streams/{stream_id}"): Scope.READ,
    ("DELETE", "/v1/streams/{stream_id}"): Scope.INFER,
    ("GET", "/v1/streams/{stream_id}/results"): Scope.READ,
}
#: Values for path parameters in the walk.
PATH_PARAMS = {"{name}": "yolox_nano", "{stream_id}": "no-such-stream"}


@dataclass
class Served:
    server: LoopbackServer
    app: FastAPI
    client: httpx.Client
    keys: dict[str, str]  # name -> raw secret
    readiness: list[int]  # /readyz statuses seen while the model was held back

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture(scope="module")
def served(yolox_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    db = tmp_path_factory.mktemp("keys") / "keys.db"
    store = KeyStore(db)
    keys = {
        "admin": store.create("admin", [Scope.ADMIN])[1],
        "read": store.create("reader", [Scope.READ])[1],
        "infer": store.create("inferrer", [Scope.INFER])[1],
        "burst": store.create("burst", [Scope.READ])[1],
    }
    limiter = RateLimiter(
        RateLimit(per_second=1000, burst=1000),
        {"/v1/models": RateLimit(per_second=1, burst=1)},
    )
    release = threading.Event()

    def held_back_factory(settings: ServeSettings) -> DetectorLike:
        release.wait(10)  # readiness must be seen at 503 first
        return default_detector_factory(settings)

    settings = ServeSettings(
        model_path=yolox_path,
        conf_threshold=0.35,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_batch=MAX_BATCH,
    )
    app = create_app(settings, held_back_factory, key_store=store, rate_limiter=limiter)
    server = LoopbackServer(app).start()
    client = httpx.Client(base_url=server.url, timeout=20)
    readiness = [client.get("/readyz").status_code]
    assert client.get("/healthz").status_code == 200  # live while the model loads
    release.set()
    deadline = time.monotonic() + 20
    while (status := client.get("/readyz").status_code) != 200:
        assert time.monotonic() < deadline, "model never became ready"
        readiness.append(status)
        time.sleep(0.05)
    readiness.append(status)
    try:
        yield Served(server, app, client, keys, readiness)
    finally:
        client.close()
        server.stop()
        store.close()


@pytest.fixture(scope="module")
def bus_jpg(assets: Path) -> bytes:
    return (assets / "images" / "bus.jpg").read_bytes()


def _classes(body: dict[str, object]) -> list[str]:
    dets = body["detections"]
    assert isinstance(dets, list)
    return sorted(d["class_name"] for d in dets)


def test_readiness_goes_503_then_200(served: Served) -> None:
    assert served.readiness[0] == 503
    assert served.readiness[-1] == 200
    assert served.client.get("/readyz").json()["model_loaded"] is True


def test_detect_finds_bus_and_three_people(served: Served, bus_jpg: bytes) -> None:
    resp = served.client.post(
        "/v1/detect",
        content=bus_jpg,
        headers={**served.auth("infer"), "Content-Type": "image/jpeg"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert _classes(body) == ["bus", "person", "person", "person"]
    assert body["image"] == {"width": 810, "height": 1080}
    bus = next(d for d in body["detections"] if d["class_name"] == "bus")
    assert bus["confidence"] > 0.85 and bus["track_id"] is None
    assert body["timings_ms"]["total"] > 0


def test_detect_multipart_class_filter_and_x_api_key(served: Served, bus_jpg: bytes) -> None:
    resp = served.client.post(
        "/v1/detect",
        params={"classes": "bus"},
        files={"file": ("bus.jpg", bus_jpg, "image/jpeg")},
        headers={"X-API-Key": served.keys["infer"]},
    )
    assert resp.status_code == 200, resp.text
    assert _classes(resp.json()) == ["bus"]


def test_session_keeps_track_ids(served: Served, bus_jpg: bytes) -> None:
    headers = {**served.auth("infer"), "Content-Type": "image/jpeg"}
    runs = [
        served.client.post(
            "/v1/detect", content=bus_jpg, params={"session_id": "cam-1"}, headers=headers
        ).json()
        for _ in range(2)
    ]
    ids = [
        sorted((d["class_name"], d["track_id"]) for d in r["detections"] if d["track_id"])
        for r in runs
    ]
    assert any(c == "bus" for c, _ in ids[0]), "the bus (0.91) starts a track on frame 1"
    assert ids[0] == ids[1]
    # Another session numbers its own tracks from the start.
    other = served.client.post(
        "/v1/detect", content=bus_jpg, params={"session_id": "cam-2"}, headers=headers
    ).json()
    assert {d["track_id"] for d in other["detections"] if d["track_id"]} == {t for _, t in ids[0]}


def test_batch_of_two(served: Served, bus_jpg: bytes, assets: Path) -> None:
    zidane = (assets / "images" / "zidane.jpg").read_bytes()
    resp = served.client.post(
        "/v1/detect/batch",
        files=[
            ("files", ("bus.jpg", bus_jpg, "image/jpeg")),
            ("files", ("z.jpg", zidane, "image/jpeg")),
        ],
        headers=served.auth("infer"),
    )
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert len(results) == 2
    assert _classes(results[0]) == ["bus", "person", "person", "person"]
    assert "person" in _classes(results[1])
    assert results[1]["image"] != results[0]["image"]


def test_models_list_describe_unknown(served: Served) -> None:
    listed = served.client.get("/v1/models", headers=served.auth("admin"))
    assert listed.status_code == 200, listed.text
    (info,) = listed.json()["models"]
    assert info["name"] == "yolox_nano" and info["family"] == "yolox"
    assert info["num_classes"] == 80 and info["input_width"] == 416
    assert "CPUExecutionProvider" in info["providers"]
    assert Path(info["path"]).is_absolute(), "an admin sees where the model file is"
    one = served.client.get("/v1/models/yolox_nano", headers=served.auth("read"))
    assert one.json() == {**info, "path": "yolox_nano.onnx"}, "others see its file name"
    _assert_error(
        served.client.get("/v1/models/yolov99", headers=served.auth("read")), 404, "unknown_model"
    )


def test_every_protected_route_needs_a_key_and_its_scope(served: Served) -> None:
    wrong_key = {Scope.READ: "infer", Scope.INFER: "read", Scope.ADMIN: "read"}
    checked = set()
    for route in api_routes(served.app):
        if route.path in PUBLIC_ROUTES:
            continue
        url = route.path
        for param, value in PATH_PARAMS.items():
            url = url.replace(param, value)
        for method in route.methods:
            key = (method, route.path)
            assert key in ROUTE_SCOPES, f"{method} {route.path}: add it to ROUTE_SCOPES"
            missing = served.client.request(method, url)
            _assert_error(missing, 401, "missing_api_key")
            assert missing.headers["WWW-Authenticate"].startswith("Bearer")
            bad = served.client.request(method, url, headers={"X-API-Key": "tpk_nope"})
            _assert_error(bad, 401, "invalid_api_key")
            lacking = served.auth(wrong_key[ROUTE_SCOPES[key]])
            _assert_error(
                served.client.request(method, url, headers=lacking), 403, "insufficient_scope"
            )
            checked.add(key)
    assert checked == set(ROUTE_SCOPES)
    for public in ("/healthz", "/readyz", "/openapi.json"):
        assert served.client.get(public).status_code == 200


def test_rate_limit_gives_429_with_retry_after(served: Served) -> None:
    headers = served.auth("burst")
    statuses = [served.client.get("/v1/models", headers=headers) for _ in range(3)]
    assert statuses[0].status_code == 200
    limited = statuses[-1]
    _assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    # Another route of the same key has its own budget.
    assert served.client.get("/v1/models/yolox_nano", headers=headers).status_code == 200


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat) - 4)
        + idat
        + struct.pack(">I", zlib.crc32(idat))
    )


def _multipart(*files: tuple[str, bytes, str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", f) for f in files]


BadRequest = Callable[[Served, bytes], httpx.Response]


def _raw(body: bytes, ctype: str, **params: str) -> BadRequest:
    def send(s: Served, _bus: bytes) -> httpx.Response:
        return s.client.post(
            "/v1/detect",
            content=body,
            params=params,
            headers={**s.auth("infer"), "Content-Type": ctype},
        )

    return send


def _bus(**params: str) -> BadRequest:
    def send(s: Served, bus: bytes) -> httpx.Response:
        return s.client.post(
            "/v1/detect",
            content=bus,
            params=params,
            headers={**s.auth("infer"), "Content-Type": "image/jpeg"},
        )

    return send


def _batch(n: int, last: bytes | None = None) -> BadRequest:
    def send(s: Served, bus: bytes) -> httpx.Response:
        files = [(f"{i}.jpg", bus, "image/jpeg") for i in range(n)]
        if last is not None:
            files[-1] = ("bad.jpg", last, "image/jpeg")
        return s.client.post("/v1/detect/batch", files=_multipart(*files), headers=s.auth("infer"))

    return send


def _truncated(s: Served, bus: bytes) -> httpx.Response:
    return _raw(bus[: len(bus) // 2], "image/jpeg")(s, bus)


def _other(method: str, url: str, ctype: str | None = None, **kw: object) -> BadRequest:
    def send(s: Served, _bus: bytes) -> httpx.Response:
        headers = {**s.auth("admin"), **({"Content-Type": ctype} if ctype else {})}
        return s.client.request(method, url, headers=headers, **kw)  # type: ignore[arg-type]

    return send


_RNG = np.random.default_rng(0)

BAD_INPUTS: dict[str, tuple[BadRequest, int, str]] = {
    "empty body": (_raw(b"", "image/jpeg"), 400, "empty_image"),
    "text/plain": (_raw(b"hello", "text/plain"), 415, "unsupported_media_type"),
    "no content type": (_raw(b"\xff\xd8\xff", ""), 415, "unsupported_media_type"),
    "truncated jpeg": (_truncated, 422, "corrupt_image"),
    "random bytes as jpeg": (_raw(_RNG.bytes(5000), "image/jpeg"), 422, "corrupt_image"),
    "png labelled jpeg": (_raw(_png_header(8, 8), "image/jpeg"), 415, "content_type_mismatch"),
    "decompression bomb png": (
        _raw(_png_header(100_000, 100_000), "image/png"),
        413,
        "image_too_large",
    ),
    "oversize body": (
        _raw(b"\xff" * (MAX_UPLOAD_BYTES + 1), "image/jpeg"),
        413,
        "payload_too_large",
    ),
    "conf=2": (_bus(conf="2"), 422, "invalid_request"),
    "conf=abc": (_bus(conf="abc"), 422, "invalid_request"),
    "conf below floor": (_bus(conf="0.01"), 422, "invalid_request"),
    "unknown class": (_bus(classes="unicorn"), 422, "invalid_request"),
    "bad session id": (_bus(session_id="a b/../c"), 422, "invalid_request"),
    "multipart without file": (
        _other("POST", "/v1/detect", files={"other": ("x", b"1", "image/jpeg")}),
        422,
        "missing_file",
    ),
    "batch over the limit": (_batch(MAX_BATCH + 1), 413, "batch_too_large"),
    "batch far over the limit": (_batch(MAX_BATCH + 3), 400, "bad_request"),
    "batch with a corrupt file": (_batch(2, last=b"\xff\xd8garbage"), 422, "corrupt_image"),
    "batch as raw body": (
        _other("POST", "/v1/detect/batch", content=b"x", ctype="image/jpeg"),
        415,
        "unsupported_media_type",
    ),
    "unknown route": (_other("GET", "/v1/nothing"), 404, "not_found"),
    "wrong method": (_other("GET", "/v1/detect"), 405, "method_not_allowed"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_4xx_with_a_reason(served: Served, bus_jpg: bytes, case: str) -> None:
    send, status, code = BAD_INPUTS[case]
    _assert_error(send(served, bus_jpg), status, code)


def test_metrics_count_requests_and_no_500s(served: Served, bus_jpg: bytes) -> None:
    served.client.post(
        "/v1/detect",
        content=bus_jpg,
        headers={**served.auth("infer"), "Content-Type": "image/jpeg"},
    )
    served.client.get("/v1/nothing")
    resp = served.client.get("/metrics", headers=served.auth("read"))
    assert resp.status_code == 200
    text = resp.text
    assert 'tapetum_http_requests_total{method="POST",route="/v1/detect",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "tapetum_inference_duration_seconds_count" in text
    assert 'tapetum_rate_limited_total{route="/v1/models"}' in text
    assert 'status="500"' not in text, "some request hit the generic 500 handler"


def test_openapi_lists_routes_with_examples(served: Served) -> None:
    spec = served.client.get("/openapi.json").json()
    assert {path for _, path in ROUTE_SCOPES} | {"/healthz", "/readyz"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    for name in ("DetectResponse", "ModelInfo", "ErrorResponse", "DetectionOut"):
        assert schemas[name].get("examples"), f"{name} has no example"
    detect = spec["paths"]["/v1/detect"]["post"]
    assert "image/jpeg" in detect["requestBody"]["content"]
    assert {"401", "403", "413", "415", "422", "429"} <= set(detect["responses"])


def test_admin_loads_detects_with_and_unloads_a_model(
    yolox_path: Path, bus_jpg: bytes, tmp_path: Path
) -> None:
    store = KeyStore(tmp_path / "keys.db")
    admin = {"Authorization": f"Bearer {store.create('admin', [Scope.ADMIN])[1]}"}
    infer = {"Authorization": f"Bearer {store.create('inferrer', [Scope.INFER])[1]}"}
    read = {"Authorization": f"Bearer {store.create('reader', [Scope.READ, Scope.INFER])[1]}"}
    settings = ServeSettings(
        model_path=yolox_path,
        conf_threshold=0.35,
        rate_per_second=None,
        model_roots=(yolox_path.parent, tmp_path),  # where runtime models may come from
    )
    server = LoopbackServer(create_app(settings, key_store=store)).start()
    second = {"name": "second", "path": str(yolox_path)}
    jpeg = {"Content-Type": "image/jpeg"}
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "model never became ready"
                time.sleep(0.05)
            for key in (infer, read):
                _assert_error(
                    client.post("/v1/models", json=second, headers=key), 403, "insufficient_scope"
                )
            bad = client.post("/v1/models", json={**second, "path": "/no/such.onnx"}, headers=admin)
            _assert_error(bad, 400, "bad_model_path")
            assert "/no/such.onnx" in bad.json()["detail"]
            not_onnx = tmp_path / "junk.onnx"
            not_onnx.write_bytes(b"not a model")
            junk = client.post("/v1/models", json={**second, "path": str(not_onnx)}, headers=admin)
            _assert_error(junk, 422, "model_load_failed")
            assert "junk.onnx" in junk.json()["detail"]
            _assert_error(
                client.post("/v1/models", json={**second, "name": "a/b"}, headers=admin),
                422,
                "invalid_request",
            )

            loaded = client.post("/v1/models", json=second, headers=admin)
            assert loaded.status_code == 201, loaded.text
            assert loaded.json()["name"] == "second" and loaded.json()["num_classes"] == 80
            _assert_error(
                client.post("/v1/models", json=second, headers=admin), 409, "model_exists"
            )
            _assert_error(
                client.post("/v1/models", json={**second, "name": "yolox_nano"}, headers=admin),
                409,
                "model_exists",
            )
            listed = client.get("/v1/models", headers=read).json()["models"]
            assert [m["name"] for m in listed] == ["yolox_nano", "second"]
            described = client.get("/v1/models/second", headers=read).json()
            assert described == {**loaded.json(), "path": yolox_path.name}

            resp = client.post(
                "/v1/detect", content=bus_jpg, params={"model": "second"}, headers={**infer, **jpeg}
            )
            assert resp.status_code == 200, resp.text
            assert resp.json()["model"] == "second"
            assert _classes(resp.json()) == ["bus", "person", "person", "person"]
            batch = client.post(
                "/v1/detect/batch",
                params={"model": "second"},
                files=[("files", ("bus.jpg", bus_jpg, "image/jpeg"))],
                headers=infer,
            )
            assert batch.status_code == 200, batch.text
            assert batch.json()["model"] == "second"
            assert _classes(batch.json()["results"][0]) == ["bus", "person", "person", "person"]

            _assert_error(client.delete("/v1/models/second", headers=infer), 403)
            _assert_error(client.delete("/v1/models/yolox_nano", headers=admin), 409)
            gone = client.delete("/v1/models/second", headers=admin)
            assert gone.status_code == 204 and not gone.content
            _assert_error(client.delete("/v1/models/second", headers=admin), 404, "unknown_model")
            assert [m["name"] for m in client.get("/v1/models", headers=read).json()["models"]] == [
                "yolox_nano"
            ]
            for route in ("/v1/detect", "/v1/detect/batch"):
                _assert_error(
                    client.post(
                        route,
                        content=bus_jpg,
                        params={"model": "second"},
                        headers={**infer, **jpeg},
                    ),
                    404,
                    "unknown_model",
                )
    finally:
        server.stop()
        store.close()


def test_model_limit_is_a_409(yolox_path: Path) -> None:
    settings = ServeSettings(model_path=yolox_path, require_auth=False, max_models=2)
    from tapetum.serve.service import DetectionService

    service = DetectionService(settings)
    service.start()
    assert service.wait_ready(60.0), service.load_error
    service.load_model("two", yolox_path, conf=0.5)
    assert [m.name for m in service.list_models().models] == ["yolox_nano", "two"]
    with pytest.raises(ApiError) as info:
        service.load_model("three", yolox_path)
    assert (info.value.status, info.value.code) == (409, "too_many_models")
    with pytest.raises(ApiError) as info:
        service.load_model("low", yolox_path, conf=0.01)
    assert (info.value.status, info.value.code) == (422, "invalid_request")
    service.unload_model("two")
    service.load_model("three", yolox_path)


class _SlowDetector:
    """Stands in for YOLOX where only timing matters (graceful shutdown)."""

    class_names = ("thing",)
    input_hw = (32, 32)

    class model:  # noqa: N801 - mirrors YoloxDetector.model
        path = Path("slow.onnx")
        providers: ClassVar[list[str]] = ["CPUExecutionProvider"]

    def __call__(self, images: object) -> list[Detections]:
        time.sleep(0.6)
        return [Detections.empty() for _ in images]  # type: ignore[attr-defined]


def test_shutdown_finishes_in_flight_request(tmp_path: Path) -> None:
    settings = ServeSettings(model_path=tmp_path / "slow.onnx", require_auth=False, warmup=False)
    app = create_app(settings, lambda _s: _SlowDetector())  # type: ignore[arg-type,return-value]
    server = LoopbackServer(app).start()
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (16, 16)).save(png, "PNG")
    result: list[httpx.Response] = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.01)
        sender = threading.Thread(
            target=lambda: result.append(
                client.post(
                    "/v1/detect", content=png.getvalue(), headers={"Content-Type": "image/png"}
                )
            )
        )
        sender.start()
        time.sleep(0.2)  # the request is inside the detector now
        server.stop()  # as SIGTERM: stop accepting, drain, exit
        sender.join(5)
    assert result and result[0].status_code == 200, result
