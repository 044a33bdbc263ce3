"""A/B experiments on the REST server, uvicorn on loopback with YOLOX-nano:

* a canary split by API key: each key always meets the same arm, the arm is named in the
  ``X-Tapetum-Variant`` header and in ``/metrics`` labels, a request that names a model
  stays outside the experiment, and the record written at shutdown is reported on;
* shadow calls: the control answers every request, the variant runs each image in its own
  thread, and its agreement with the control reaches ``/metrics`` and the record.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

import httpx

from tapetum.experiments import (
    build_report,
    experiment_from_dict,
    load_arms,
)
from tapetum.experiments.serving import ServerExperiment
from tapetum.serve.app import ServeSettings, create_app
from tapetum.serve.auth import KeyStore, Scope
from tests.integration.serve_harness import LoopbackServer, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@dataclass
class Running:
    server: LoopbackServer
    client: httpx.Client
    experiment: ServerExperiment
    run_dir: Path


def _start(
    yolox_path: Path, tmp_path: Path, spec_dict: dict[str, object], store: KeyStore | None
) -> Running:
    spec = experiment_from_dict(spec_dict)
    experiment = ServerExperiment(spec, load_arms(spec), tmp_path / "run", snapshot_s=3600)
    settings = ServeSettings(model_path=yolox_path, require_auth=store is not None)
    server = LoopbackServer(create_app(settings, key_store=store, experiment=experiment)).start()
    client = httpx.Client(base_url=server.url, timeout=60)
    wait_ready(client, 60)
    assert experiment.ready.wait(120), "the experiment's arms never loaded"
    return Running(server, client, experiment, tmp_path / "run")


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[tuple[KeyStore, list[tuple[str, str]], str]]:
    store = KeyStore(tmp_path / "keys.db")
    made = [store.create(f"client{i}", [Scope.INFER]) for i in range(8)]
    reader = store.create("scraper", [Scope.READ])[1]
    yield store, [(record.key_id, secret) for record, secret in made], reader
    store.close()


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_canary_by_key_is_sticky_and_names_its_variant(
    yolox_path: Path,
    assets: Path,
    tmp_path: Path,
    keys: tuple[KeyStore, list[tuple[str, str]], str],
) -> None:
    store, made, reader = keys
    bus = (assets / "images" / "bus.jpg").read_bytes()
    running = _start(
        yolox_path,
        tmp_path,
        {
            "name": "strict-canary",
            "control": {"model": str(yolox_path), "conf": 0.3},
            "variants": [{"name": "strict", "model": str(yolox_path), "conf": 0.8}],
            "mode": "canary",
            "canary": {"by": "key", "shares": {"strict": 0.5}},
        },
        store,
    )
    exp = running.experiment
    expected = {key_id: exp.split.arm_for(key_id) for key_id, _ in made}
    assert set(expected.values()) == {"control", "strict"}
    seen: dict[str, set[str]] = {}
    boxes: dict[str, set[int]] = {}
    try:
        for key_id, secret in made:
            auth = {"Authorization": f"Bearer {secret}", "Content-Type": "image/jpeg"}
            for _ in range(2):
                resp = running.client.post("/v1/detect", content=bus, headers=auth)
                assert resp.status_code == 200, resp.text
                variant = resp.headers["X-Tapetum-Variant"]
                assert resp.headers["X-Tapetum-Experiment"] == "strict-canary"
                assert resp.json()["model"] == f"ab-{variant}"
                seen.setdefault(key_id, set()).add(variant)
                boxes.setdefault(variant, set()).add(len(resp.json()["detections"]))
        # outside the experiment: a request that names the model
        outside = running.client.post(
            "/v1/detect",
            params={"model": "yolox_nano"},
            content=bus,
            headers={"Authorization": f"Bearer {made[0][1]}", "Content-Type": "image/jpeg"},
        )
        assert outside.status_code == 200 and "X-Tapetum-Variant" not in outside.headers
        metrics = running.client.get("/metrics", headers={"Authorization": f"Bearer {reader}"})
        assert metrics.status_code == 200
    finally:
        running.client.close()
        running.server.stop()  # the lifespan exit writes the record
    assert seen == {k: {v} for k, v in expected.items()}  # sticky: one arm per key
    assert max(boxes["strict"]) < min(boxes["control"])  # 0.8 keeps fewer boxes than 0.3
    strict_keys = sum(v == "strict" for v in expected.values())
    served = _metric(
        metrics.text, "tapetum_experiment_requests_total", variant="strict", role="served"
    )
    assert served == 2 * strict_keys
    report = build_report(running.run_dir)
    assert report.arms["strict"].frames == 2 * strict_keys
    assert set(report.arms["strict"].streams) == {k for k, v in expected.items() if v == "strict"}
    assert report.effects["strict"]["detections_per_frame"].diff < 0


def test_shadow_calls_compare_the_variant_with_the_control(
    yolox_path: Path, assets: Path, tmp_path: Path
) -> None:
    running = _start(
        yolox_path,
        tmp_path,
        {
            "name": "shadow-serve",
            "control": {"model": str(yolox_path), "conf": 0.3},
            "variants": [{"name": "strict", "model": str(yolox_path), "conf": 0.7}],
        },
        None,
    )
    images = [assets / "images" / "bus.jpg", assets / "images" / "zidane.jpg"] * 3
    try:
        for path in images:
            resp = running.client.post(
                "/v1/detect", content=path.read_bytes(), headers={"Content-Type": "image/jpeg"}
            )
            assert resp.status_code == 200, resp.text
            assert resp.headers["X-Tapetum-Variant"] == "control"
        deadline = time.monotonic() + 60
        metrics = ""
        while time.monotonic() < deadline:
            metrics = running.client.get("/metrics").text
            shadowed = _metric(
                metrics, "tapetum_experiment_requests_total", variant="strict", role="shadow"
            )
            if shadowed == len(images):
                break
            time.sleep(0.2)
    finally:
        running.client.close()
        running.server.stop()
    assert shadowed == len(images)
    f1 = _metric(metrics, "tapetum_experiment_agreement", variant="strict", measure="f1")
    recall = _metric(metrics, "tapetum_experiment_agreement", variant="strict", measure="recall")
    precision = _metric(
        metrics, "tapetum_experiment_agreement", variant="strict", measure="precision"
    )
    assert precision == pytest.approx(1.0)  # the stricter threshold keeps a subset
    assert 0.3 < recall < 1.0 and 0.3 < f1 < 1.0
    assert (
        re.search(r'tapetum_experiment_shadow_dropped_total\{[^}]*variant="strict"', metrics)
        is None
    )
    report = build_report(running.run_dir)
    assert report.arms["control"].frames == report.arms["strict"].frames == len(images)
    assert report.effects["strict"]["agreement_recall"].variant == pytest.approx(recall, abs=1e-6)
