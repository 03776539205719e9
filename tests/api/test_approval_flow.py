"""The whole approval path on the real dev server: a run started through the API stops at a gate,
which is decided once through the API and once with the `temporal` CLI binary's plain signal;
a rejected run is retried as its next iteration from its last good commit."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from temporalio.client import Client

from metabuilder.domain.access import Role
from metabuilder.store import access, repository
from metabuilder.store.db import transaction
from metabuilder.worker.devserver import DevServer, temporal_cli
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings
from tests.api.conftest import LiveApi, make_tenant, wait_status, workspace

SECURITY = """\
name: audited
steps:
  - name: audit
    command: "echo 'Found 1 known vulnerability in 1 package'; echo 'urllib3 1.0 GHSA-v845-jxx5-vc9f'; exit 1"
  - name: build
    command: echo built > built.txt
"""
DEPLOY = """\
name: shipped
steps:
  - name: build
    command: echo built > built.txt
  - name: deploy
    command: echo deployed > deployed.txt
    requires_approval: true
"""


@pytest.fixture
async def api_workers(live_api: LiveApi, client: Client, settings: Settings, api_sessions) -> AsyncIterator[None]:  # type: ignore[no-untyped-def]
    """Workers on the API's task queues, writing to the API's database."""
    worker_settings = replace(settings, task_queue_prefix=live_api.settings.task_queue_prefix,
                              shared_repo=live_api.settings.shared_repo)
    async with running_workers(build_workers(client, worker_settings, api_sessions, POOLS)):
        yield


async def test_gate_decided_through_the_api(live_api: LiveApi, api_workers: None, api_sessions) -> None:  # type: ignore[no-untyped-def]
    tenant, tokens = make_tenant(api_sessions)
    _, strangers = make_tenant(api_sessions)
    viewer, operator, admin = (live_api.client(tokens[r]) for r in ("viewer", "operator", "admin"))  # type: ignore[index]
    body = {"plan_yaml": SECURITY, "workspace": str(workspace(live_api, f"ws-{tenant}"))}
    assert (await viewer.post("/api/meta/v3/runs", json=body)).status_code == 403
    started = await operator.post("/api/meta/v3/runs", json=body)
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]

    run = await wait_status(viewer, run_id, "paused_awaiting_approval")
    [gate] = (await viewer.get(f"/api/meta/v2/runs/{run_id}/escalation")).json()
    assert (await viewer.get(f"/api/meta/v3/runs/{run_id}/escalations")).json() == [gate]
    assert (gate["status"], gate["signal_type"], gate["action"], gate["step"]) == (
        "pending", "SECURITY", "override", "audit")
    assert any("GHSA-v845-jxx5-vc9f" in line for line in gate["evidence"])
    assert [g["gate_id"] for g in (await viewer.get("/api/meta/v3/approvals")).json()] == [gate["gate_id"]]
    assert run["gates"][0]["gate_id"] == gate["gate_id"]

    approve = f"/api/meta/v2/approvals/{gate['gate_id']}/approve"
    assert (await viewer.post(approve, json={"reason": "ok"})).status_code == 403
    assert (await operator.post(approve, json={"reason": "ok"})).status_code == 403
    assert (await live_api.client(strangers["admin"]).post(approve, json={"reason": "ok"})).status_code == 404
    refused = await admin.post(approve)
    assert refused.status_code == 409 and "needs a reason" in refused.json()["detail"]
    decided = await admin.post(approve, json={"reason": "not reachable from our code"})
    assert decided.status_code == 200, decided.text
    assert (decided.json()["status"], decided.json()["decided_by"]) == ("approved", "admin-user")
    again = await admin.post(f"/api/meta/v3/approvals/{gate['gate_id']}/reject", json={"reason": "changed my mind"})
    assert again.status_code == 409 and "already decided" in again.json()["detail"]

    run = await wait_status(viewer, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded", run["error"]
    first_attempts = {s["name"]: s["status"] for s in run["steps"] if s["attempt"] == 1}
    assert first_attempts == {"audit": "failed", "build": "succeeded"}
    assert run["gates"][0]["status"] == "approved"
    autofix = (await viewer.get(f"/api/meta/v3/runs/{run_id}/autofix")).json()
    assert [e["signal_type"] for e in autofix["timeline"]][0] == "SECURITY"
    with transaction(api_sessions) as session:
        events = [(a.event, a.actor) for a in repository.audit_events(session, tenant=tenant, run_id=run_id)]
    assert ("approval.requested", "metabuilder") in events and ("approval.granted", "admin-user") in events


def signal(dev_server: DevServer, run_id: str, name: str, body: dict[str, str]) -> None:
    """Decide as an operator would with nothing but the `temporal` CLI."""
    subprocess.run([temporal_cli(), "workflow", "signal", "--address", dev_server.address, "--namespace", "default",
                    "--workflow-id", f"build-run-{run_id}", "--name", name, "--input", json.dumps(body)],
                   check=True, capture_output=True, text=True, timeout=60)


async def test_gate_decided_with_the_temporal_cli_then_the_run_is_retried(
        live_api: LiveApi, api_workers: None, api_sessions, dev_server: DevServer) -> None:  # type: ignore[no-untyped-def]
    tenant, tokens = make_tenant(api_sessions)
    viewer, operator = live_api.client(tokens["viewer"]), live_api.client(tokens["operator"])  # type: ignore[index]
    body = {"plan_yaml": DEPLOY, "workspace": str(workspace(live_api, f"ws-{tenant}")),
            "settings": {"autofix_enabled": True}}
    started = await operator.post("/api/meta/v3/runs", json=body)
    assert started.status_code == 202, started.text
    first = started.json()["run_id"]
    run = await wait_status(viewer, first, "paused_awaiting_approval")
    gate_id = run["gates"][0]["gate_id"]
    assert (run["gates"][0]["kind"], run["gates"][0]["step"]) == ("step_approval", "deploy")

    with transaction(api_sessions) as session:
        access.create_token(session, tenant, "ops-oncall", Role.ADMIN)
    signal(dev_server, first, "reject", {"gate_id": gate_id, "by": "ops-oncall", "reason": "change freeze"})
    run = await wait_status(viewer, first, "failed")
    assert run["error"] == f"gate {gate_id} rejected by ops-oncall: change freeze"
    build_commit = next(s["commit_after"] for s in run["steps"] if s["name"] == "build")
    assert run["head_commit"] == build_commit

    assert (await viewer.post(f"/api/meta/v2/runs/{first}/retry")).status_code == 403
    retried = await operator.post(f"/api/meta/v2/runs/{first}/retry")
    assert retried.status_code == 202, retried.text
    assert (retried.json()["iteration"], retried.json()["retry_of"]) == (2, first)
    second = retried.json()["run_id"]
    run = await wait_status(viewer, second, "paused_awaiting_approval")
    assert (run["iteration"], run["retry_of"], run["base_commit"]) == (2, first, build_commit)
    signal(dev_server, second, "approve", {"gate_id": run["gates"][0]["gate_id"], "by": "ops-oncall"})
    run = await wait_status(viewer, second, "succeeded", "failed")
    assert run["status"] == "succeeded", run["error"]
    assert [s["name"] for s in run["steps"]] == ["deploy"]  # build succeeded in iteration 1
    assert run["gates"][0]["decided_by"] == "ops-oncall"
    # A finished run cannot be retried again.
    assert (await operator.post(f"/api/meta/v3/runs/{second}/retry")).status_code == 409


def update(dev_server: DevServer, run_id: str, name: str, body: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`temporal workflow update execute`: the caller gets the run's answer."""
    return subprocess.run([temporal_cli(), "workflow", "update", "execute", "--address", dev_server.address,
                           "--namespace", "default", "--workflow-id", f"build-run-{run_id}", "--name", name,
                           "--input", json.dumps(body)], capture_output=True, text=True, timeout=60)


async def test_a_raw_signal_or_update_from_a_non_approver_is_refused(
        live_api: LiveApi, api_workers: None, api_sessions, dev_server: DevServer) -> None:  # type: ignore[no-untyped-def]
    tenant, tokens = make_tenant(api_sessions)
    other, _ = make_tenant(api_sessions)
    viewer, operator, admin = (live_api.client(tokens[r]) for r in (Role.VIEWER, Role.OPERATOR, Role.ADMIN))
    with transaction(api_sessions) as session:
        access.create_token(session, other, "outsider", Role.OWNER)  # an owner, of another tenant
    body = {"plan_yaml": DEPLOY, "workspace": str(workspace(live_api, f"ws-{tenant}"))}
    started = await operator.post("/api/meta/v3/runs", json=body)
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    run = await wait_status(viewer, run_id, "paused_awaiting_approval")
    gate_id = run["gates"][0]["gate_id"]

    # Signals from a viewer, an operator, a stranger and another tenant's owner: dropped, recorded.
    # (In threads: the workers share this test's event loop.)
    for by in ("viewer-user", "operator-user", "nobody", "outsider"):
        await asyncio.to_thread(signal, dev_server, run_id, "approve", {"gate_id": gate_id, "by": by})
    refused = await asyncio.to_thread(update, dev_server, run_id, "approve",
                                      {"gate_id": gate_id, "by": "operator-user"})
    assert refused.returncode != 0
    assert "'operator-user' is operator in tenant" in refused.stdout + refused.stderr
    events: list[dict] = []  # type: ignore[type-arg]
    for _ in range(100):
        events = (await admin.get("/api/meta/v3/audit", params={"run_id": run_id, "event": "approval.refused"})).json()
        if len(events) == 5:
            break
        await asyncio.sleep(0.1)
    details = [e["data"]["detail"] for e in events]
    assert len(details) == 5, details
    assert "'viewer-user' is viewer" in details[0] and "'operator-user' is operator" in details[1]
    assert "no user 'nobody'" in details[2] and f"no user 'outsider' in tenant {tenant!r}" in details[3]
    run = (await viewer.get(f"/api/meta/v3/runs/{run_id}")).json()
    assert run["status"] == "paused_awaiting_approval" and run["gates"][0]["status"] == "pending"
    timeline = (await viewer.get(f"/api/meta/v3/runs/{run_id}/autofix")).json()
    assert sum("refused" in str(entry) for entry in timeline["timeline"]) == 5, timeline

    accepted = await asyncio.to_thread(update, dev_server, run_id, "approve", {"gate_id": gate_id, "by": "admin-user"})
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    run = await wait_status(viewer, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded", run["error"]
    assert run["gates"][0]["decided_by"] == "admin-user"


async def test_metabuilder_approve_with_a_token_decides_through_the_api(
        live_api: LiveApi, api_workers: None, api_sessions) -> None:  # type: ignore[no-untyped-def]
    tenant, tokens = make_tenant(api_sessions)
    viewer, operator = live_api.client(tokens[Role.VIEWER]), live_api.client(tokens[Role.OPERATOR])
    body = {"plan_yaml": DEPLOY, "workspace": str(workspace(live_api, f"ws-{tenant}"))}
    run_id = (await operator.post("/api/meta/v3/runs", json=body)).json()["run_id"]
    run = await wait_status(viewer, run_id, "paused_awaiting_approval")
    gate_id = run["gates"][0]["gate_id"]

    def approve(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**live_api.env, "META_BUILDER_API_URL": live_api.url, "META_BUILDER_API_TOKEN": token}
        return subprocess.run([sys.executable, "-m", "metabuilder.worker.cli", "approve", gate_id, *args],
                              env=env, capture_output=True, text=True, timeout=60)

    as_operator = await asyncio.to_thread(approve, tokens[Role.OPERATOR])
    assert as_operator.returncode == 2
    assert "refused (403)" in as_operator.stderr and "operator-user" in as_operator.stderr, as_operator.stderr
    as_someone = await asyncio.to_thread(approve, tokens[Role.ADMIN], "--by", "someone-else")
    assert as_someone.returncode == 2 and "--by cannot be used" in as_someone.stderr
    as_admin = await asyncio.to_thread(approve, tokens[Role.ADMIN])
    assert as_admin.returncode == 0, as_admin.stderr
    assert f"gate {gate_id} approved by admin-user" in as_admin.stdout
    run = await wait_status(viewer, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded", run["error"]
