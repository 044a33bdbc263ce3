"""A real Prometheus scrapes a real ``tapetum run`` (metrics and drift) and a real
``tapetum serve`` (a server stream, detect requests, an API key): every dashboard panel's
query and every alert's probes return series, every alert rule evaluates without error,
and the GPU series are absent (not zero) on a machine without a GPU."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tapetum.monitor.dashboards import ALERTS, PANELS
from tests.integration.monitor_harness import (
    PROMETHEUS,
    REPO,
    TAPETUM,
    Proc,
    Prometheus,
    http_get,
    wait_until,
)
from tests.integration.serve_harness import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

RULES = REPO / "deploy" / "prometheus" / "tapetum-alerts.yml"


@dataclass
class Stack:
    prometheus: Prometheus
    run: Proc
    serve: Proc
    gpu: bool


def _grafana_to_promql(query: str) -> str:
    """A panel query as Grafana sends it with every stream selected."""
    return query.replace("$source", ".*").replace("$__rate_interval", "1m")


@pytest.fixture(scope="module")
def stack(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (Debian package 'prometheus')")
    work = tmp_path_factory.mktemp("monitoring")
    model = assets / "models" / "yolox_nano.onnx"
    videos = assets / "video" / "epfl_campus4"
    # A reference for the run's camera from its first 10 s.
    subprocess.run(
        [*TAPETUM, "drift", "profile", str(videos / "campus4-c0.mp4"), "-o", str(work / "ref.json"),
         "--model", str(model), "--frames", "250"],
        check=True, capture_output=True, timeout=600, cwd=work,
    )  # fmt: skip
    # A read-only scrape key and an infer key for the server.
    keys_db = work / "keys.sqlite"

    def new_key(scopes: str) -> str:
        args = ["keys", "create", "--name", scopes, "--scopes", scopes, "--db", str(keys_db)]
        out = subprocess.run(
            [*TAPETUM, *args], check=True, capture_output=True, text=True, cwd=work
        ).stdout
        return next(w for w in out.split() if w.startswith("tpk_"))

    scrape_key, client_key = new_key("read"), new_key("infer,read")
    (work / "scrape.key").write_text(scrape_key)

    run_port, serve_port = free_port(), free_port()
    run = Proc(
        [*TAPETUM, "run", str(videos / "campus4-c0.mp4"), "--model", str(model), "--realtime",
         "--no-video", "-q", "--out", str(work / "run"), "--metrics-port", str(run_port),
         "--drift-ref", str(work / "ref.json")],
        work / "run.log",
    )  # fmt: skip
    serve = Proc(
        [*TAPETUM, "serve", "--model", str(model), "--port", str(serve_port),
         "--grpc-port", str(free_port()), "--keys-db", str(keys_db), "--media-root", str(videos)],
        work / "serve.log",
    )  # fmt: skip
    prom = None
    try:
        serve_url = f"http://127.0.0.1:{serve_port}"
        wait_until(lambda: http_get(serve_url + "/readyz"), 120, "the server's model")
        auth = {"X-API-Key": client_key, "Content-Type": "application/json"}
        body = json.dumps({"uri": str(videos / "campus4-c1.mp4"), "options": {"realtime": True}})
        req = urllib.request.Request(serve_url + "/v1/streams", body.encode(), auth, method="POST")
        assert json.loads(urllib.request.urlopen(req, timeout=60).read())["state"] == "running"
        image = (assets / "images" / "bus.jpg").read_bytes()
        jpeg = {"X-API-Key": client_key, "Content-Type": "image/jpeg"}
        for _ in range(3):  # HTTP and inference histograms
            detect = urllib.request.Request(serve_url + "/v1/detect", image, jpeg, method="POST")
            assert urllib.request.urlopen(detect, timeout=60).status == 200
        bearer = {"type": "Bearer", "credentials_file": str(work / "scrape.key")}
        jobs = [
            {"job_name": "tapetum-run", "static_configs": [{"targets": [f"127.0.0.1:{run_port}"]}]},
            {
                "job_name": "tapetum-serve",
                "authorization": bearer,
                "static_configs": [{"targets": [f"127.0.0.1:{serve_port}"]}],
            },
        ]
        prom = Prometheus(work / "prometheus", jobs, RULES)
        # Enough scrapes for rates, and the drift windows filled on the run's stream.
        wait_until(
            lambda: len(prom.query('count_over_time(up{job=~"tapetum.*"}[1m]) >= 8')) == 2,
            180,
            "eight scrapes of both targets",
        )
        wait_until(lambda: prom.query("tapetum_drift_score"), 180, "drift scores of the run")
        gpu = bool(prom.query("tapetum_gpu_available == 1"))
        assert run.alive(), run.output()
        yield Stack(prom, run, serve, gpu)
    finally:
        if prom is not None:
            prom.stop()
        run.stop()
        serve.stop()


def test_both_targets_are_up_with_authentication(stack: Stack) -> None:
    up = {r["metric"]["job"]: r["value"][1] for r in stack.prometheus.query("up")}
    assert up == {"tapetum-run": "1", "tapetum-serve": "1"}


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: f"{p.row}/{p.title}")
def test_every_dashboard_panel_query_returns_series(stack: Stack, panel: object) -> None:
    from tapetum.monitor.dashboards import Panel

    assert isinstance(panel, Panel)
    for query in panel.queries:
        result = stack.prometheus.query(_grafana_to_promql(query))
        if panel.gpu and not stack.gpu:
            assert result == [], "GPU series must be absent (not zero) without a GPU"
        else:
            assert result, f"{panel.title}: {query} returned no series"


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a.name)
def test_every_alert_probe_returns_series_and_the_rule_evaluates(
    stack: Stack, alert: object
) -> None:
    from tapetum.monitor.dashboards import Alert

    assert isinstance(alert, Alert)
    for probe in alert.probes:
        result = stack.prometheus.query(probe)
        if alert.gpu and not stack.gpu:
            assert result == [], probe
        else:
            assert result, f"{alert.name}: {probe} returned no series"
    stack.prometheus.query(alert.expr)  # a valid expression on the real series
    groups = stack.prometheus.api("rules")["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r["name"] == alert.name]
    assert rule["health"] == "ok", rule.get("lastError")
    assert rule["annotations"]["runbook_url"].endswith(f"{alert.name}.md")


def test_series_carry_only_bounded_labels(stack: Stack) -> None:
    names = stack.prometheus.api("label/__name__/values")
    ours = [n for n in names if n.startswith("tapetum_")]
    allowed = {
        "__name__", "job", "instance", "source", "class", "stage", "queue", "state", "sink",
        "signal", "gpu", "le", "model", "version", "route", "method", "status", "endpoint",
        "name", "to", "policy", "structure",
    }  # fmt: skip
    for name in ours:
        for series in stack.prometheus.api("series", **{"match[]": name}):
            assert set(series) <= allowed, series
