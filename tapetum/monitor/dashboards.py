"""The Grafana dashboard and the Prometheus alert rules, as code.

``scripts/gen_monitoring.py`` writes them to ``deploy/`` (a test checks the committed files
are what this module generates, and runs every panel query and alert probe against a real
Prometheus scraping ``tapetum run`` and ``tapetum serve``):

* :func:`grafana_dashboard` — one row per family (streams, latency, model, tracking, drift,
  serving, process and GPU); every query filters on the ``$source`` variable;
* :func:`alert_rules` — one rule per :data:`ALERTS` entry, each annotated with the
  ``runbook_url`` of its page in ``docs/runbooks/``.

Each :class:`Alert` also lists *probes*: the quantities its expression compares with a
threshold, without the comparison. On a healthy system the alert returns nothing, so the
integration test asks the probes instead, which must return series.

Example:
    >>> [a.name for a in ALERTS][:2]
    ['TapetumLatencySLOBreached', 'TapetumFpsBelowTarget']
    >>> alert_rules()["groups"][0]["rules"][0]["annotations"]["runbook_url"]
    'docs/runbooks/TapetumLatencySLOBreached.md'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALERTS", "PANELS", "Alert", "Panel", "alert_rules", "grafana_dashboard"]

#: Where ``runbook_url`` points by default (the repository's runbooks; the generator
#: script takes ``--runbook-base`` for a deployment's own URL).
RUNBOOK_BASE = "docs/runbooks/"


@dataclass(frozen=True, slots=True)
class Panel:
    """One dashboard panel.

    Attributes:
        title: the panel title; ``row`` the row (family) it sits in.
        queries: PromQL, with Grafana's ``$source`` and ``$__rate_interval``.
        kind: Grafana panel type.
        unit: Grafana unit id.
        legend: legend format of each query (``{{source}}``).
        gpu: the panel shows GPU series (empty by design where there is no GPU).
    """

    row: str
    title: str
    queries: tuple[str, ...]
    kind: str = "timeseries"
    unit: str = "short"
    legend: tuple[str, ...] = ()
    gpu: bool = False
    description: str = ""


_S = '{source=~"$source"}'
_E2E = '{source=~"$source",stage="end_to_end"}'

PANELS: tuple[Panel, ...] = (
    # ---------------------------------------------------------------- streams
    Panel("Streams", "Processed FPS", (
        f"sum by (source) (rate(tapetum_stream_frames_processed_total{_S}[$__rate_interval]))",
        f"max by (source) (tapetum_stream_target_fps{_S})",
    ), unit="fps", legend=("{{source}}", "{{source}} target")),
    Panel("Streams", "Dropped, corrupt and failed frames /s", (
        f"sum by (source) (rate(tapetum_stream_frames_dropped_total{_S}[$__rate_interval]))",
        f"sum by (source) (rate(tapetum_stream_frames_corrupt_total{_S}[$__rate_interval]))",
        f"sum by (source) (rate(tapetum_stream_frames_failed_total{_S}[$__rate_interval]))",
    ), legend=("{{source}} dropped", "{{source}} corrupt", "{{source}} failed")),
    Panel("Streams", "Stream state", (f"tapetum_stream_state{_S} == 1",),
          kind="table", legend=("{{source}} {{state}}",)),
    Panel("Streams", "Reconnects (1 h)", (
        f"sum by (source) (increase(tapetum_stream_reconnects_total{_S}[1h]))",
    ), kind="stat"),
    Panel("Streams", "Queue depth", (f"tapetum_queue_depth{_S}",),
          legend=("{{source}} {{queue}}",)),
    Panel("Streams", "Seconds since the last result", (
        f"tapetum_stream_last_frame_age_seconds{_S}",
    ), unit="s"),
    # ---------------------------------------------------------------- latency
    Panel("Latency", "End-to-end latency p50 / p99 (SLO 100 ms)", (
        "histogram_quantile(0.5, sum by (le, source) "
        f"(rate(tapetum_stage_latency_seconds_bucket{_E2E}[$__rate_interval])))",
        "histogram_quantile(0.99, sum by (le, source) "
        f"(rate(tapetum_stage_latency_seconds_bucket{_E2E}[$__rate_interval])))",
    ), unit="s", legend=("{{source}} p50", "{{source}} p99")),
    Panel("Latency", "p99 by stage", (
        "histogram_quantile(0.99, sum by (le, stage) "
        f"(rate(tapetum_stage_latency_seconds_bucket{_S}[$__rate_interval])))",
    ), unit="s", legend=("{{stage}}",)),
    Panel("Latency", "Frames within the 100 ms SLO", (
        'sum by (source) (rate(tapetum_stage_latency_seconds_bucket{source=~"$source",'
        'stage="end_to_end",le="0.1"}[5m])) / sum by (source) '
        f"(rate(tapetum_stage_latency_seconds_count{_E2E}[5m]))",
    ), unit="percentunit"),
    # ---------------------------------------------------------------- model
    Panel("Model", "Detections per frame", (
        f"sum by (source) (rate(tapetum_detections_per_frame_sum{_S}[$__rate_interval])) / "
        f"sum by (source) (rate(tapetum_detections_per_frame_count{_S}[$__rate_interval]))",
    )),
    Panel("Model", "Confidence histogram (5 min)", (
        f"sum by (le) (increase(tapetum_detection_confidence_bucket{_S}[5m]))",
    ), kind="bargauge", legend=("{{le}}",)),
    Panel("Model", "Median confidence by class", (
        "histogram_quantile(0.5, sum by (le, class) "
        f"(rate(tapetum_detection_confidence_bucket{_S}[5m])))",
    ), unit="percentunit", legend=("{{class}}",)),
    Panel("Model", "Model serving", ("tapetum_model_info",), kind="table",
          legend=("{{model}} {{version}}",)),
    Panel("Model", "Detector swaps (1 h)", ("sum(increase(tapetum_detector_swaps_total[1h]))",),
          kind="stat"),
    # ---------------------------------------------------------------- tracking
    Panel("Tracking", "Active tracks", (f"tapetum_active_tracks{_S}",)),
    Panel("Tracking", "Track births and re-births per minute", (
        f"60 * sum by (source) (rate(tapetum_track_births_total{_S}[$__rate_interval]))",
        f"60 * sum by (source) (rate(tapetum_track_rebirths_total{_S}[$__rate_interval]))",
    ), legend=("{{source}} births", "{{source}} re-births")),
    Panel("Tracking", "Track lifetime p50 / p90", (
        "histogram_quantile(0.5, sum by (le, source) "
        f"(rate(tapetum_track_lifetime_seconds_bucket{_S}[10m])))",
        "histogram_quantile(0.9, sum by (le, source) "
        f"(rate(tapetum_track_lifetime_seconds_bucket{_S}[10m])))",
    ), unit="s", legend=("{{source}} p50", "{{source}} p90")),
    # ---------------------------------------------------------------- drift
    Panel("Drift", "Drift score by signal (1 = threshold)", (
        f"max by (source, signal) (tapetum_drift_score{_S})",
    ), legend=("{{source}} {{signal}}",)),
    Panel("Drift", "Streams drifting", (f"tapetum_drift_active{_S}",), kind="stat"),
    Panel("Drift", "Drift onsets (24 h)", (
        f"sum by (source, signal) (increase(tapetum_drift_events_total{_S}[24h]))",
    ), kind="table", legend=("{{source}} {{signal}}",)),
    # ---------------------------------------------------------------- serving
    Panel("Serving", "HTTP requests /s by status", (
        "sum by (status) (rate(tapetum_http_requests_total[$__rate_interval]))",
    ), legend=("{{status}}",)),
    Panel("Serving", "HTTP latency p99 by route", (
        "histogram_quantile(0.99, sum by (le, route) "
        "(rate(tapetum_http_request_duration_seconds_bucket[5m])))",
    ), unit="s", legend=("{{route}}",)),
    Panel("Serving", "Inference latency p99", (
        "histogram_quantile(0.99, sum by (le) "
        "(rate(tapetum_inference_duration_seconds_bucket[5m])))",
    ), unit="s"),
    Panel("Serving", "Server streams running", ("sum(tapetum_streams_running)",), kind="stat"),
    # ---------------------------------------------------------------- process and GPU
    Panel("Process and GPU", "CPU (cores)", (
        'rate(process_cpu_seconds_total{job=~"tapetum.*"}[$__rate_interval])',
    ), legend=("{{job}}",)),
    Panel("Process and GPU", "Resident memory", (
        'process_resident_memory_bytes{job=~"tapetum.*"}',
    ), unit="bytes", legend=("{{job}}",)),
    Panel("Process and GPU", "GPUs measured", ("tapetum_gpu_available",), kind="stat",
          description="0: no NVML GPU; the GPU panels stay empty rather than show zeros."),
    Panel("Process and GPU", "GPU utilisation", ("tapetum_gpu_utilization_ratio",),
          unit="percentunit", legend=("{{job}} gpu {{gpu}}",), gpu=True),
    Panel("Process and GPU", "GPU memory used", (
        "tapetum_gpu_memory_used_bytes / tapetum_gpu_memory_total_bytes",
    ), unit="percentunit", legend=("{{job}} gpu {{gpu}}",), gpu=True),
    Panel("Process and GPU", "GPU temperature", ("tapetum_gpu_temperature_celsius",),
          unit="celsius", legend=("{{job}} gpu {{gpu}}",), gpu=True),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert rule.

    Attributes:
        name: the alert (and its runbook's file name).
        expr: PromQL that returns series only while the condition holds.
        for_: how long it must hold.
        severity: ``page`` (someone acts now) or ``ticket``.
        summary: one line, with ``{{ $labels.x }}`` templates.
        probes: the quantities ``expr`` compares, without the comparison.
        gpu: needs GPU series (absent by design without a GPU).
    """

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    probes: tuple[str, ...] = field(default=())
    gpu: bool = False


_P99 = (
    "histogram_quantile(0.99, sum by (le, source) "
    '(rate(tapetum_stage_latency_seconds_bucket{stage="end_to_end"}[5m])))'
)
_RATE = "sum by (source) (rate(tapetum_stream_frames_processed_total[2m]))"
_LIVE_RUNNING = (
    "and on (source) (tapetum_stream_live == 1) and on (source) "
    '(tapetum_stream_state{state="running"} == 1)'
)
_DROP_SHARE = (
    "sum by (source) (rate(tapetum_stream_frames_dropped_total[5m])) / "
    "sum by (source) (rate(tapetum_stream_frames_read_total[5m]))"
)
_FAIL_SHARE = (
    "sum by (job, source) (rate(tapetum_stream_frames_failed_total[5m])) / "
    "sum by (job, source) (rate(tapetum_stream_frames_read_total[5m]))"
)
# ``or ... * 0``: a server that never answered 5xx has no such series; its share is 0,
# not absent (so the probe, and a panel of it, show the server)
_HTTP_5XX = (
    '(sum by (job) (rate(tapetum_http_requests_total{status=~"5.."}[5m])) '
    "or sum by (job) (rate(tapetum_http_requests_total[5m])) * 0) / "
    "sum by (job) (rate(tapetum_http_requests_total[5m]))"
)

ALERTS: tuple[Alert, ...] = (
    Alert(
        "TapetumLatencySLOBreached",
        f"{_P99} > 0.1",
        "5m",
        "page",
        "p99 end-to-end latency of {{ $labels.source }} is {{ $value | humanizeDuration }}, "
        "over the 100 ms SLO",
        (_P99,),
    ),
    Alert(
        "TapetumFpsBelowTarget",
        f"({_RATE} < 0.9 * max by (source) (tapetum_stream_target_fps)) {_LIVE_RUNNING}",
        "5m",
        "page",
        '{{ $labels.source }} processes {{ $value | printf "%.1f" }} frames/s, under 90 % '
        "of its camera's rate",
        (_RATE, "max by (source) (tapetum_stream_target_fps)"),
    ),
    Alert(
        "TapetumFramesDropped",
        f"{_DROP_SHARE} > 0.01",
        "5m",
        "ticket",
        "{{ $labels.source }} drops {{ $value | humanizePercentage }} of its frames",
        (_DROP_SHARE,),
    ),
    Alert(
        "TapetumStreamDown",
        '(tapetum_stream_state{state="failed"} == 1) or ((tapetum_stream_last_frame_age_seconds '
        f"> 30) {_LIVE_RUNNING})",
        "1m",
        "page",
        "stream {{ $labels.source }} failed or sent no frame for 30 s",
        ('tapetum_stream_state{state="failed"}', "tapetum_stream_last_frame_age_seconds"),
    ),
    Alert(
        "TapetumTargetDown",
        'up{job=~"tapetum.*"} == 0',
        "2m",
        "page",
        "Prometheus cannot scrape {{ $labels.instance }} ({{ $labels.job }})",
        ('up{job=~"tapetum.*"}',),
    ),
    Alert(
        "TapetumDataDrift",
        "max by (source, signal) (tapetum_drift_state) == 1",
        "2m",
        "ticket",
        "{{ $labels.source }}: drift in {{ $labels.signal }} (see the drift dashboard row)",
        ("max by (source, signal) (tapetum_drift_state)", "tapetum_drift_score"),
    ),
    Alert(
        "TapetumGpuSaturated",
        "(avg_over_time(tapetum_gpu_utilization_ratio[10m]) > 0.95) or "
        "(tapetum_gpu_memory_used_bytes / tapetum_gpu_memory_total_bytes > 0.95)",
        "10m",
        "ticket",
        "GPU {{ $labels.gpu }} of {{ $labels.instance }} is saturated",
        (
            "avg_over_time(tapetum_gpu_utilization_ratio[10m])",
            "tapetum_gpu_memory_used_bytes / tapetum_gpu_memory_total_bytes",
        ),
        gpu=True,
    ),
    Alert(
        "TapetumErrorRate",
        f"({_FAIL_SHARE} > 0.01) or ({_HTTP_5XX} > 0.05)",
        "5m",
        "page",
        "{{ $labels.job }}: {{ $value | humanizePercentage }} of frames or requests fail",
        (_FAIL_SHARE, _HTTP_5XX),
    ),
)


def alert_rules(runbook_base: str = RUNBOOK_BASE) -> dict[str, Any]:
    """The Prometheus rule file (one group), as a dict ready for YAML."""
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.for_,
            "labels": {"severity": a.severity, "service": "tapetum"},
            "annotations": {
                "summary": a.summary,
                "runbook_url": f"{runbook_base}{a.name}.md",
            },
        }
        for a in ALERTS
    ]
    return {"groups": [{"name": "tapetum", "rules": rules}]}


def grafana_dashboard() -> dict[str, Any]:
    """The dashboard JSON (Grafana 10+/11 schema), provisioned from a file."""
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    rows: list[str] = []
    for p in PANELS:
        if p.row not in rows:
            rows.append(p.row)
    for row in rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        in_row = [p for p in PANELS if p.row == row]
        for i, panel in enumerate(in_row):
            x = (i % 3) * 8
            if i and i % 3 == 0:
                y += 8
            panels.append(_panel_json(panel, next_id, x, y))
            next_id += 1
        y += 8
    return {
        "uid": "tapetum-overview",
        "title": "Tapetum",
        "description": "Streams, latency, model, tracking, drift, serving, process and GPU.",
        "tags": ["tapetum"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": _variables()},
        "annotations": {"list": []},
        "panels": panels,
    }


_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel_json(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "refId": chr(ord("A") + i),
            "datasource": _DATASOURCE,
            "expr": q,
            "legendFormat": p.legend[i] if i < len(p.legend) else "{{source}}",
            "instant": p.kind in ("table", "stat", "bargauge"),
            "range": p.kind not in ("table", "stat", "bargauge"),
        }
        for i, q in enumerate(p.queries)
    ]
    panel: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "datasource": _DATASOURCE,
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": {},
        "targets": targets,
    }
    if p.description:
        panel["description"] = p.description
    if p.kind == "bargauge":
        panel["options"] = {"displayMode": "basic", "orientation": "vertical"}
    return panel


def _variables() -> list[dict[str, Any]]:
    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        {
            "name": "source",
            "label": "Stream",
            "type": "query",
            "datasource": _DATASOURCE,
            "query": {"query": "label_values(tapetum_stream_frames_read_total, source)"},
            "definition": "label_values(tapetum_stream_frames_read_total, source)",
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "hide": 0,
        },
    ]
