"""The Grafana dashboard and alert rules under ``deploy/``: generated from code, valid for
``promtool``, alert unit tests passing, one runbook per alert."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tapetum.monitor.dashboards import ALERTS, PANELS, alert_rules, grafana_dashboard

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
RUNBOOKS = REPO / "docs" / "runbooks"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)


def _generator() -> ModuleType:
    path = REPO / "scripts" / "gen_monitoring.py"
    spec = importlib.util.spec_from_file_location("gen_monitoring", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_monitoring"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_files_are_what_the_code_generates() -> None:
    for rel, text in _generator().render().items():
        committed = (DEPLOY / rel).read_text(encoding="utf-8")
        assert committed == text, f"deploy/{rel} is stale: run python scripts/gen_monitoring.py"


def test_every_family_has_panels_and_every_stream_panel_filters_on_the_variable() -> None:
    rows = {p.row for p in PANELS}
    families = {"Streams", "Latency", "Model", "Tracking", "Drift", "Serving", "Process and GPU"}
    assert rows == families
    dashboard = grafana_dashboard()
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert names == {"datasource", "source"}
    for panel in PANELS:
        for query in panel.queries:
            per_stream = ("tapetum_stream_", "tapetum_stage_", "tapetum_drift_")
            if any(name in query for name in per_stream):
                assert '$source"' in query, (panel.title, query)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    json.dumps(dashboard)  # serialisable


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in grafana_dashboard()["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_every_alert_has_a_runbook_with_the_four_parts() -> None:
    rules = alert_rules()["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [a.name for a in ALERTS]
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        page = REPO / url
        assert page.is_file(), url
        text = page.read_text(encoding="utf-8")
        assert text.startswith(f"# {rule['alert']}\n")
        for part in ("## Symptom", "## Checks", "## Fixes", "## Escalation"):
            assert part in text, (url, part)
        assert "promql:" in text or "curl" in text  # checks give exact queries or commands
        assert rule["labels"]["severity"] in ("page", "ticket")
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    assert all(f"({a.name}.md)" in index for a in ALERTS)


def test_runbook_base_is_configurable() -> None:
    rules = alert_rules("https://wiki.example/rb/")["groups"][0]["rules"]
    assert rules[0]["annotations"]["runbook_url"] == (
        "https://wiki.example/rb/TapetumLatencySLOBreached.md"
    )


def test_each_alert_has_probes_that_are_its_comparisons() -> None:
    for alert in ALERTS:
        assert alert.probes, alert.name
        assert re.search(r"(>|<|==)\s*[\d.]+", alert.expr), alert.name
        for probe in alert.probes:
            assert not re.search(r"\s(>|<|==)\s*[\d.]+\s*$", probe), (alert.name, probe)


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    rules = DEPLOY / "prometheus" / "tapetum-alerts.yml"
    done = subprocess.run(
        [PROMTOOL or "promtool", "check", "rules", str(rules)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    tests = DEPLOY / "prometheus" / "tapetum-alerts.test.yml"
    covered = {
        t["alertname"]
        for case in yaml.safe_load(tests.read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    assert covered == {a.name for a in ALERTS}  # every alert has a synthetic-series test
    done = subprocess.run(
        [PROMTOOL or "promtool", "test", "rules", tests.name],
        check=False,
        capture_output=True,
        text=True,
        cwd=tests.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
