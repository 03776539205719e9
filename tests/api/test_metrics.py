"""Metrics after real runs: a `metabuilder worker` process and the `metabuilder api` process are
scraped over HTTP before and after a run, and the differences must be exactly what the run wrote
to the DB projection (timeline entries, step attempts, gates, the run's status changes)."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from metabuilder.store import repository
from metabuilder.store.db import transaction
from metabuilder.store.models import AutoFixRun, BuildRun
from tests.api.conftest import LiveApi, LiveWorker, make_tenant, wait_status, workspace
from tests.autofix.test_retries import flaky_command
from tests.ops.promql import metric_names
from tests.ops.test_prometheus import DASHBOARD, PROMETHEUS

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def test_a_run_s_counts_appear_once_on_the_worker_and_the_api(
        live_api: LiveApi, live_worker: LiveWorker, api_sessions, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker_url, sdk_url = live_worker.metrics_url, live_worker.sdk_metrics_url
    tenant, tokens = make_tenant(api_sessions)
    operator, admin = live_api.client(tokens["operator"]), live_api.client(tokens["admin"])  # type: ignore[index]
    fetch = flaky_command(tmp_path / "n", 2, "curl: (56) Recv failure: Connection reset by peer")
    plan = (f"name: metered\nsteps:\n  - name: fetch\n    command: \"{fetch}\"\n"
            "  - name: deploy\n    command: echo deployed\n    requires_approval: true\n")
    before, api_before = scrape(worker_url), scrape(f"{live_api.url}/metrics")

    started = await operator.post("/api/meta/v3/runs", json={
        "plan_yaml": plan, "workspace": str(workspace(live_api, f"ws-{tenant}"))})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    run = await wait_status(operator, run_id, "paused_awaiting_approval")
    decided = await admin.post(f"/api/meta/v3/approvals/{run['gates'][0]['gate_id']}/approve", json={})
    assert decided.status_code == 200, decided.text
    run = await wait_status(operator, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded", run["error"]
    after = scrape(worker_url)

    # Auto-fix: one count per timeline row, by the row's labels; the backoffs the rows hold.
    with transaction(api_sessions) as session:
        rows = repository.autofix_timeline(session, run_id)
        attempts = repository.run_steps(session, run_id)
    expected = collections.Counter((r.signal_type or "none", r.strategy, r.outcome) for r in rows)
    assert expected[("TRANSIENT", "retry", "retried")] == 2
    for (signal_type, strategy, outcome), n in expected.items():
        assert delta(after, before, "autofix_attempts_total", signal_type=signal_type, strategy=strategy,
                     outcome=outcome) == n, (signal_type, strategy, outcome)
    assert sum(series(after, "autofix_attempts_total").values()) - sum(
        series(before, "autofix_attempts_total").values()) == len(rows)
    backoffs = [r.backoff for r in rows if r.strategy == "retry"]
    assert backoffs == [1.0, 2.0]
    assert delta(after, before, "autofix_backoff_seconds_count", signal_type="TRANSIENT") == 2
    assert delta(after, before, "autofix_backoff_seconds_sum", signal_type="TRANSIENT") == pytest.approx(3.0)
    assert delta(after, before, "autofix_backoff_seconds_bucket", signal_type="TRANSIENT", le="1.0") == 1
    assert delta(after, before, "autofix_backoff_seconds_bucket", signal_type="TRANSIENT", le="2.0") == 2
    assert delta(after, before, "autofix_runs_total", status="succeeded") == 1

    # Steps and runs by status; the gate's request and approval.
    by_status = collections.Counter((a.queue, a.status) for a in attempts)
    assert by_status == {("cpu", "failed"): 2, ("cpu", "succeeded"): 2}
    for (queue, status), n in by_status.items():
        assert delta(after, before, "metabuilder_step_attempts_total", queue=queue, status=status) == n
    for status in ("running", "paused_awaiting_approval", "succeeded"):
        assert delta(after, before, "metabuilder_runs_total", status=status) >= 1, status
    assert delta(after, before, "metabuilder_runs_total", status="failed") == 0
    assert delta(after, before, "approval_requests_total", status="requested", kind="step_approval") == 1
    assert delta(after, before, "approval_requests_total", status="approved", kind="step_approval") == 1
    assert delta(after, before, "metabuilder_operation_seconds_count", operation="step") == 4
    assert delta(after, before, "metabuilder_operation_seconds_count", operation="classify") == 2

    # The API: its requests by route template (never an id), and the gauges read from the DB.
    api_after = scrape(f"{live_api.url}/metrics")
    approve_route = {"method": "POST", "route": "/api/meta/v3/approvals/{gate_id}/approve", "status": "2xx"}
    assert delta(api_after, api_before, "metabuilder_http_request_seconds_count", **approve_route) == 1
    assert not any(run_id in str(labels) for (_, labels) in api_after)
    assert value(api_after, "metabuilder_projection_up") == 1
    with transaction(api_sessions) as session:
        counts = repository.run_counts(session)
        finished = list(session.scalars(select(BuildRun.status).where(
            BuildRun.finished_at.is_not(None),
            select(AutoFixRun.id).where(AutoFixRun.run_id == BuildRun.id).exists())))
    for status, n in counts.items():
        assert value(api_after, "metabuilder_runs_by_status", status=status) == n
    # The live worker of the session reports itself (and any other of this deployment's too).
    assert value(api_after, "metabuilder_workers", state="running") >= 1
    ratio = value(api_after, "autofix_success_ratio")
    assert math.isclose(ratio, finished.count("succeeded") / len(finished)), (ratio, finished)

    # The worker's JSON log: each event about the run carries the seed-001 fields that apply.
    logged = [json.loads(line) for line in live_worker.log.read_text().splitlines() if run_id in line]
    retries = [e for e in logged if e["event"] == "autofix.retry"]
    assert [(e["step_id"], e["signal_type"], e["strategy"], e["outcome"], e["attempt"]) for e in retries] == [
        ("fetch", "TRANSIENT", "retry", "retried", 1), ("fetch", "TRANSIENT", "retry", "retried", 2)]
    assert {e["event"] for e in logged} >= {"run.status", "step.finished", "approval.requested", "approval.approved"}
    assert all(e["run_id"] == run_id for e in logged if e["logger"] == "metabuilder.events")

    # The SDK's own metrics, on their own endpoint.
    sdk = httpx.get(sdk_url, timeout=10).text
    assert "temporal_" in sdk and "temporal_activity_execution_latency" in sdk


def exported_names(url: str) -> set[str]:
    """Every series name the page at ``url`` may hold, even for metrics with no samples yet."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "untyped": ("",)}
    names = set()
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    return names


def test_every_dashboard_and_alert_query_reads_metrics_the_processes_export(
        live_api: LiveApi, live_worker: LiveWorker) -> None:
    exported = exported_names(live_worker.metrics_url) | exported_names(f"{live_api.url}/metrics")
    dashboard = json.loads(DASHBOARD.read_text())
    rules = [r for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    queries += [(r["alert"], r["expr"]) for r in rules]
    assert len(queries) >= 13
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= exported, f"{where}: {sorted(names - exported)} not exported by the worker or the API"
