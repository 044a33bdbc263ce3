"""Prometheus metrics of one REST app, in a per-app registry (two apps in one process,
as in tests, do not share counters), and the middleware that counts every response."""

from __future__ import annotations

import functools
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tapetum.core.breaker import BreakerRegistry

if TYPE_CHECKING:
    from tapetum.serve.service import DetectionService
    from tapetum.serve.streams import StreamManager

__all__ = [
    "BreakerCollector",
    "Metrics",
    "MetricsMiddleware",
    "ModelInfoCollector",
    "register_monitoring",
]


class BreakerCollector:
    """Exports every breaker of a registry at scrape time (an open breaker whose pause
    ran out reads half-open, so the gauge is never stale)."""

    def __init__(self, breakers: BreakerRegistry) -> None:
        self.breakers = breakers

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = GaugeMetricFamily(
            "tapetum_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["name"],
        )
        transitions = CounterMetricFamily(
            "tapetum_breaker_transitions",
            "Circuit breaker transitions, by the state entered.",
            labels=["name", "to"],
        )
        for snap in self.breakers.snapshot():
            state.add_metric([snap.name], float(snap.state))
            for to, count in snap.transitions.items():
                transitions.add_metric([snap.name, to.name.lower()], count)
        yield state
        yield transitions


class Metrics:
    """Prometheus metrics in a per-app registry."""

    def __init__(self, breakers: BreakerRegistry) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tapetum_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tapetum_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.inference = Histogram(
            "tapetum_inference_duration_seconds",
            "Detector call latency (one batch), waiting for a free slot excluded.",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
        )
        self.rate_limited = Counter(
            "tapetum_rate_limited",
            "Requests refused with 429, by route.",
            ["route"],
            registry=self.registry,
        )
        self.sessions = Gauge(
            "tapetum_tracking_sessions", "Live tracking sessions.", registry=self.registry
        )
        self.streams = Gauge(
            "tapetum_streams_running", "Server-side streams running.", registry=self.registry
        )
        self.registry.register(BreakerCollector(breakers))


class MetricsMiddleware:
    """Counts every response by route *template* (bounded label set) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope.get("method", "")
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - start)


class ModelInfoCollector:
    """``tapetum_model_info{model, version}`` = 1 for every loaded model: its name and
    ``sha256:<first 12 hex>`` of its file (hashed once per file and modification time).
    Nothing while the default model is loading."""

    def __init__(self, service: DetectionService) -> None:
        self.service = service

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        from tapetum.errors import TapetumError

        family = GaugeMetricFamily(
            "tapetum_model_info",
            "Models loaded and serving (value 1).",
            labels=["model", "version"],
        )
        if self.service.ready:
            try:
                models = self.service.list_models(full_path=True).models
            except TapetumError:  # unloaded between the check and the list
                models = []
            for info in models:
                family.add_metric([info.name, _file_version(info.path)], 1.0)
        yield family


def _file_version(path: str) -> str:
    p = Path(path)
    try:
        stat = p.stat()
    except OSError:
        return p.name
    return _sha12(str(p), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _sha12(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:12]}"


def register_monitoring(
    metrics: Metrics, service: DetectionService, streams: StreamManager
) -> None:
    """Add to the app's registry what ``tapetum.monitor`` measures: process CPU and memory,
    GPUs through NVML (absent without one), the loaded models, and each server stream's
    pipeline metrics (FPS, frames, queues, latency histograms, confidences, tracks;
    labelled by stream id, merged into one family each)."""
    from prometheus_client import ProcessCollector

    from tapetum.monitor import CollectorGroup, GpuCollector

    ProcessCollector(registry=metrics.registry)
    metrics.registry.register(GpuCollector())
    metrics.registry.register(ModelInfoCollector(service))
    metrics.registry.register(CollectorGroup(streams.monitors))
