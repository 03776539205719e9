"""Metrics after real runs: a `metabuilder worker` process and the `metabuilder api` process are
scraped over HTTP before and after a run, and the differences must be exactly what the run wrote
to the DB projection (timeline entries, step attempts, gates, the run's status changes)."""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from store import repository
from store.db import transaction
from store.models import AutoFixRun, BuildRun
from tests.api.conftest import LiveApi, make_tenant, metabuilder, wait_status, workspace
from tests.autofix.test_retries import flaky_command
from worker.devserver import free_port

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


@pytest.fixture(scope="module")
def worker_process(live_api: LiveApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`metabuilder worker` for all pools of the API's deployment; yields its two metrics URLs."""
    port, sdk_port = free_port(), free_port()
    env = {**live_api.env, "META_BUILDER_METRICS_PORT": str(port), "META_BUILDER_SDK_METRICS_PORT": str(sdk_port),
           "META_BUILDER_LOG_FORMAT": "json"}
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with metabuilder(["worker"], env, port, log):
        yield f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{sdk_port}/metrics"


async def test_a_run_s_counts_appear_once_on_the_worker_and_the_api(
        live_api: LiveApi, worker_process: tuple[str, str], api_sessions, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker_url, sdk_url = worker_process
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
    ratio = value(api_after, "autofix_success_ratio")
    assert math.isclose(ratio, finished.count("succeeded") / len(finished)), (ratio, finished)

    # The SDK's own metrics, on their own endpoint.
    sdk = httpx.get(sdk_url, timeout=10).text
    assert "temporal_" in sdk and "temporal_activity_execution_latency" in sdk
