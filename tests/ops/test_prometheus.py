"""The alert rules and the scrape config pass promtool (Debian's `prometheus` package), the rules'
own unit tests pass, and the dashboard holds the seed-004 panels on well-formed queries."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ops.promql import metric_names

OPS = Path(__file__).parent.parent.parent / "ops"
PROMETHEUS = OPS / "prometheus"
DASHBOARD = OPS / "grafana" / "meta_builder_v3_dashboard.json"
SEED_PANELS = {  # seed 004, with the panel type each is drawn as
    "Auto-Fix Attempts by Signal Type": "timeseries",
    "Auto-Fix Success Ratio": "gauge",
    "Backoff Delay Distribution": "bargauge",
    "Re-Plans Triggered": "stat",
    "Approval Requests": "timeseries",
    "Auto-Fix Outcomes": "piechart",
    "Processing Time by Operation": "barchart",
}


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `apt-get install prometheus` (scripts/ensure-test-tools.sh does it)"
    done = subprocess.run([tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_rules_and_config_are_valid() -> None:
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", "alerts.yml")
    assert "is valid prometheus config" in promtool("check", "config", "prometheus.yml")


def test_alert_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_each_seed_alert_has_a_rule_with_a_runbook_section() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    docs = (OPS.parent / "docs" / "observability.md").read_text().lower()
    assert {r["alert"] for r in rules} == {"AutofixSuccessRatioLow", "AutofixExcessiveReplans",
                                           "ApprovalRejectionRateHigh", "AutofixBackoffHigh"}
    for rule in rules:
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"### {anchor}" in docs, f"docs/observability.md has no section for {rule['alert']}"


def test_dashboard_has_the_seed_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = {p["title"]: p for p in dashboard["panels"]}
    for title, kind in SEED_PANELS.items():
        assert title in panels, f"missing panel {title!r}"
        assert panels[title]["type"] == kind
        assert all(t["expr"].strip() for t in panels[title]["targets"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    gauge = panels["Auto-Fix Success Ratio"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in gauge] == [None, 0.7, 0.8]


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (signal_type) (rate(autofix_attempts_total{strategy!="classify"}[5m]))', {"autofix_attempts_total"}),
    ("histogram_quantile(0.95, sum by (le, operation) (rate(x_bucket[$__range])))", {"x_bucket"}),
    ("a / b > 0.5 and on() sum(increase(c{s=~'x|y'}[1h])) >= 3", {"a", "b", "c"}),
])
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_breaker_alert_has_a_runbook_section() -> None:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    [rule] = [r for g in groups if g["name"] == "meta-builder-v4-breakers" for r in g["rules"]]
    anchor = rule["annotations"]["runbook"].split("#")[1]
    runbook = (OPS.parent / "docs" / "RUNBOOK_META_V4.md").read_text().lower()
    assert f"## {anchor}" in runbook


def test_the_sla_alert_has_a_runbook_section_and_a_counter_the_workers_serve() -> None:
    from metabuilder.telemetry import metrics

    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    [rule] = [r for g in groups if g["name"] == "meta-builder-v4-sla" for r in g["rules"]]
    assert metric_names(rule["expr"]) == {"metabuilder_sla_violations_total"}
    assert metrics.SLA_VIOLATIONS._name == "metabuilder_sla_violations"  # prometheus_client drops _total
    anchor = rule["annotations"]["runbook"].split("#")[1]
    assert f"## {anchor}" in (OPS.parent / "docs" / "RUNBOOK_META_V4.md").read_text().lower()
