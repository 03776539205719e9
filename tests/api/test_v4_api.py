"""v4 through the API: an ``Idempotency-Key`` on run submissions, a run's priority, and the
queue statistics (the live API process over PostgreSQL and the session's dev server)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import httpx
from temporalio.client import Client
from temporalio.service import RPCError

from metabuilder.domain.runs import workflow_id
from tests.api.conftest import LiveApi, make_tenant, wait_status, workspace

PLAN = "name: p\nsteps:\n  - name: s\n    command: 'true'\n"


async def test_a_repeated_submission_with_an_idempotency_key_gets_the_same_run(  # type: ignore[no-untyped-def]
        live_api: LiveApi, api_sessions, client: Client) -> None:
    tenant, tokens = make_tenant(api_sessions)
    _, others = make_tenant(api_sessions)
    operator, stranger = live_api.client(tokens["operator"]), live_api.client(others["operator"])  # type: ignore[index]
    body = {"plan_yaml": PLAN, "workspace": str(workspace(live_api, f"ws-{tenant}")), "priority": "high"}
    key = {"Idempotency-Key": f"deploy-{uuid.uuid4().hex[:8]}"}
    first = await operator.post("/api/meta/v3/runs", json=body, headers=key)
    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = await operator.post("/api/meta/v3/runs", json=body, headers=key)
    assert (again.status_code, again.json()) == (202, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"

    other = await operator.post("/api/meta/v3/runs", json={**body, "priority": "low"}, headers=key)
    assert other.status_code == 422 and other.headers["content-type"].startswith("application/problem+json")
    assert key["Idempotency-Key"] in other.json()["detail"] and first.json()["run_id"] in other.json()["detail"]
    # Keys are per tenant: another tenant's same key is its own.
    theirs = await stranger.post("/api/meta/v3/runs", json={**body, "workspace": str(workspace(
        live_api, f"ws-other-{tenant}"))}, headers=key)
    assert theirs.status_code == 202 and theirs.json()["run_id"] != first.json()["run_id"]
    # Without a key, each POST is a new run.
    runs = {(await operator.post("/api/meta/v3/runs", json=body)).json()["run_id"] for _ in range(2)}
    assert len(runs) == 2 and first.json()["run_id"] not in runs

    bad = await operator.post("/api/meta/v3/runs", json=body, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["detail"]
    # A refused request (a bad plan) leaves its key free for the corrected request.
    fresh = {"Idempotency-Key": f"k-{uuid.uuid4().hex[:8]}"}
    refused = await operator.post("/api/meta/v3/runs", json={**body, "plan_yaml": "name: p\n"}, headers=fresh)
    assert refused.status_code == 422
    corrected = await operator.post("/api/meta/v3/runs", json=body, headers=fresh)
    assert corrected.status_code == 202

    # The body's priority is the run's Temporal priority (staging: v4 on by default).
    described = await client.get_workflow_handle(workflow_id(first.json()["run_id"])).describe()
    priority = described.raw_description.workflow_execution_info.priority
    assert (priority.priority_key, priority.fairness_key) == (1, tenant)
    for run_id in {first.json()["run_id"], theirs.json()["run_id"], corrected.json()["run_id"], *runs}:
        with contextlib.suppress(RPCError):  # a worker of the API's queues may have run it already
            await client.get_workflow_handle(workflow_id(run_id)).terminate("test over")


async def test_queue_statistics_are_served_to_any_user_and_on_metrics(live_api: LiveApi, api_sessions) -> None:  # type: ignore[no-untyped-def]
    _, tokens = make_tenant(api_sessions)
    async with live_api.client() as anonymous:
        assert (await anonymous.get("/api/meta/v4/stats")).status_code == 401
    got = await live_api.client(tokens["viewer"]).get("/api/meta/v4/stats")  # type: ignore[index]
    assert got.status_code == 200, got.text
    queues = got.json()["queues"]
    prefix = live_api.settings.task_queue_prefix
    assert (queues["task_queue_prefix"], queues["shared"]) == (prefix, True)
    assert [(p["pool"], p["task_queue"], p["kind"]) for p in queues["pools"]] == [
        ("workflow", f"{prefix}-workflow", "workflow"), ("cpu", f"{prefix}-cpu", "activity"),
        ("io", f"{prefix}-io", "activity"), ("llm", f"{prefix}-llm", "activity")]
    for pool in queues["pools"]:
        assert set(pool["total"]) == {"backlog_count", "backlog_age_seconds", "add_rate", "dispatch_rate"}
        assert pool["pollers"] >= 0 and pool["total"]["backlog_count"] >= 0
        assert set(pool["by_priority"]) <= {"high", "normal", "low"}

    async with live_api.client() as scraper:
        page = (await scraper.get("/metrics")).text
    assert "metabuilder_queue_stats_up 1.0" in page
    assert 'metabuilder_queue_pollers{pool="cpu"}' in page
    assert 'metabuilder_queue_backlog_tasks{pool="workflow",priority="all"}' in page


async def test_a_tenant_turns_v4_off_and_a_run_turns_it_back_on(  # type: ignore[no-untyped-def]
        live_api: LiveApi, api_sessions, client: Client) -> None:
    tenant, tokens = make_tenant(api_sessions)
    admin, viewer = live_api.client(tokens["admin"]), live_api.client(tokens["viewer"])  # type: ignore[index]
    path = f"/api/meta/v4/tenants/{tenant}/settings"
    assert (await viewer.get(path)).json() == {"tenant": tenant, "enabled": True, "source": "platform",
                                               "overrides": {}}  # staging: on
    assert (await viewer.put(path, json={"enabled": False})).status_code == 403
    off = await admin.put(path, json={"enabled": False})
    assert off.json() == {"tenant": tenant, "enabled": False, "source": "tenant", "overrides": {"enabled": False}}
    assert (await admin.put(path, json={"enabled": "maybe"})).status_code == 422
    body = {"plan_yaml": PLAN, "workspace": str(workspace(live_api, f"ws-{tenant}"))}
    keys = []
    for extra in ({}, {"v4_enabled": True}):
        started = await admin.post("/api/meta/v3/runs", json={**body, **extra})
        assert started.status_code == 202, started.text
        handle = client.get_workflow_handle(workflow_id(started.json()["run_id"]))
        priority = (await handle.describe()).raw_description.workflow_execution_info.priority
        keys.append((priority.priority_key, priority.fairness_key))
        with contextlib.suppress(RPCError):
            await handle.terminate("test over")
    assert keys == [(0, ""), (3, tenant)]  # the tenant's off, then the run's on
    back = await admin.put(path, json={})
    assert back.json()["source"] == "platform"


async def test_a_run_started_with_an_sla_class_gets_its_priority_and_shows_it(  # type: ignore[no-untyped-def]
        live_api: LiveApi, api_sessions, client: Client, settings) -> None:
    from dataclasses import replace

    from metabuilder.worker.runtime import POOLS, build_workers, running_workers

    tenant, tokens = make_tenant(api_sessions)
    operator = live_api.client(tokens["operator"])  # type: ignore[index]
    body = {"plan_yaml": PLAN, "workspace": str(workspace(live_api, f"ws-{tenant}"))}
    bad = await operator.post("/api/meta/v3/runs", json={**body, "sla": "urgent"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    assert "sla" in bad.text
    off = await operator.post("/api/meta/v3/runs", json={**body, "sla": "fast", "v4_enabled": False})
    assert off.status_code == 422 and "SLA classes are part of v4" in off.json()["detail"], off.text
    worker_settings = replace(settings, task_queue_prefix=live_api.settings.task_queue_prefix,
                              shared_repo=live_api.settings.shared_repo)
    async with running_workers(build_workers(client, worker_settings, api_sessions, POOLS)):
        started = await operator.post("/api/meta/v3/runs", json={**body, "sla": "thorough"})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        handle = client.get_workflow_handle(workflow_id(run_id))
        await handle.result()
    priority = (await handle.describe()).raw_description.workflow_execution_info.priority
    assert (priority.priority_key, priority.fairness_key) == (5, tenant)  # Thorough: low
    detail = (await operator.get(f"/api/meta/v3/runs/{run_id}")).json()
    sla = detail["sla"]
    assert (sla["sla_class"], sla["priority"], sla["model_tier"], sla["candidates"], sla["source"], sla["state"]) == (
        "thorough", "low", "premium", 3, "run", "ok")
    assert sla["time_budget_seconds"] == 7200 and sla["deadline"]
    # The portal's run page says it too.
    async with httpx.AsyncClient(base_url=live_api.url, timeout=30) as http:
        signed = await http.post("/portal/login", data={"token": tokens["viewer"]})  # type: ignore[index]
        http.cookies.set("mb_portal", signed.cookies["mb_portal"], path="/portal")
        page = (await http.get(f"/portal/runs/{run_id}")).text
    sla_line = " ".join(page.split('id="run-sla">', 1)[1].split("</div>", 1)[0].split())
    assert sla_line.startswith("thorough ·") and "ok</span>" in sla_line and "best of 3" in sla_line, sla_line


async def test_a_run_tightens_its_tenants_privacy_and_may_not_loosen_it(  # type: ignore[no-untyped-def]
        live_api: LiveApi, api_sessions, client: Client) -> None:
    from metabuilder.store import governance
    from metabuilder.store.db import transaction

    tenant, tokens = make_tenant(api_sessions)
    operator = live_api.client(tokens["operator"])  # type: ignore[index]
    body = {"plan_yaml": PLAN, "workspace": str(workspace(live_api, f"ws-{tenant}"))}
    looser = await operator.post("/api/meta/v3/runs", json={**body, "privacy": {"mode": "open"}})
    assert looser.status_code == 422
    assert "privacy.mode: privacy mode 'open' would loosen the tenant's 'redacted'" in looser.json()["detail"]
    bad = await operator.post("/api/meta/v3/runs", json={**body, "privacy": {"domain_allowlist": ["not a host"]}})
    assert bad.status_code == 422 and "privacy.domain_allowlist[0]" in bad.json()["detail"]
    started = await operator.post("/api/meta/v3/runs", json={**body, "privacy": {"mode": "none"}})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(workflow_id(run_id)).terminate("test over")
    with transaction(api_sessions) as session:
        kept = governance.effective(session, live_api.settings.privacy, tenant, run_id)
    assert (kept.mode.value, kept.sources["mode"]) == ("none", "run")


async def test_workers_and_leases_say_who_holds_a_running_step_to_its_tenant_only(  # type: ignore[no-untyped-def]
        live_api: LiveApi, live_worker, api_sessions, tmp_path) -> None:
    """GET /api/meta/v4/workers and /leases while a step runs: the live worker with its pools and
    slots, polling through Temporal, and the lease of the step it holds; another tenant sees the
    worker but not the lease."""
    tenant, tokens = make_tenant(api_sessions)
    _, others = make_tenant(api_sessions)
    marker = tmp_path / "go"
    plan = f"name: held\nsteps:\n  - name: hold\n    command: while [ ! -f {marker} ]; do sleep 0.05; done\n"
    async with live_api.client(tokens["operator"]) as http:
        started = await http.post("/api/meta/v3/runs", json={
            "plan_yaml": plan, "workspace": str(workspace(live_api, f"ws-{tenant}"))})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        try:
            for _ in range(300):
                leases = (await http.get("/api/meta/v4/leases", params={"run_id": run_id})).json()
                if leases:
                    break
                await asyncio.sleep(0.1)
            assert [(x["step"], x["step_index"], x["attempt"], x["status"], x["queue"]) for x in leases] == [
                ("hold", 0, 1, "held", "cpu")], leases
            lease = leases[0]
            assert lease["acquired_at"] <= lease["last_heartbeat_at"] < lease["expires_at"]
            seen = (await http.get("/api/meta/v4/workers")).json()
            assert seen["temporal"] is True
            holder = [w for w in seen["workers"] if w["identity"] == lease["worker"]]
            assert len(holder) == 1, (lease["worker"], [w["identity"] for w in seen["workers"]])
            assert holder[0]["state"] == "running" and holder[0]["leases"] >= 1
            assert holder[0]["pools"].get("cpu", 0) > 0 and holder[0]["polling"], holder[0]
            assert any(x["run_id"] == run_id for x in seen["leases"])
            async with live_api.client(others["viewer"]) as stranger:
                assert (await stranger.get("/api/meta/v4/leases", params={"run_id": run_id})).json() == []
                theirs = (await stranger.get("/api/meta/v4/workers")).json()
                assert lease["worker"] in {w["identity"] for w in theirs["workers"]}
                assert all(x["run_id"] != run_id for x in theirs["leases"])
        finally:
            marker.write_text("go")
        assert (await wait_status(http, run_id, "succeeded", "failed"))["status"] == "succeeded"
        after = (await http.get("/api/meta/v4/leases", params={"run_id": run_id})).json()
        assert "held" not in {x["status"] for x in after}, after  # the step's end released it
