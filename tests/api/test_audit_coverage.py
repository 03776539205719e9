"""Every state-changing operation of the API writes an audit event: the test walks the OpenAPI
document, sends each non-GET operation a request built for it (its path parameters from the
precondition it needs, its body from the table below, checked against the schema), with an
``X-Request-ID`` of its own, and looks for an audit event with that request id once it succeeded.
A new operation fails the test until it is in the table (or, if it changes nothing, in EXEMPT)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from metabuilder.domain.access import Role
from metabuilder.domain.runs import RunStatus
from metabuilder.store import audit as audit_rows
from metabuilder.store.db import transaction
from tests.api.conftest import LiveApi, make_tenant, wait_status, workspace
from tests.api.test_approval_flow import DEPLOY, api_workers  # noqa: F401 - the workers fixture

FINAL = tuple(s.value for s in RunStatus if s.is_final)

EXEMPT = {
    "classifyFailure": "classifies the posted log and stores nothing",
    "classifyFailureV2": "classifies the posted log and stores nothing",
}
"""Non-GET operations that change no state, and why."""

FAILING = ("name: broken\nsteps:\n  - name: build\n"
           "    command: \"echo 'ModuleNotFoundError: No module named yaml'; exit 1\"\n")
PASSING = "name: passing\nsteps:\n  - name: build\n    command: 'true'\n"
PATTERN = ("- id: acme.flaky-cache\n  class: TRANSIENT\n  pattern: 'cache server went away'\n"
           "  weight: 0.8\n  description: our cache restarts\n")

BODIES: dict[str, Any] = {
    "startRun": lambda ctx: {"plan_yaml": DEPLOY, "workspace": ctx["workspace"]},
    "cancelRun": None,
    "retryRun": None, "retryRunV2": None,
    "approveGate": {"reason": "ok"}, "approveGateV2": {"reason": "ok"},
    "rejectGate": {"reason": "no"}, "rejectGateV2": {"reason": "no"},
    "replaceTenantSettings": {"max_total_attempts": 5}, "updateTenantSettings": {"autofix_enabled": True},
    "replaceTenantSettingsV2": {"max_total_attempts": 4}, "updateTenantSettingsV2": {"autofix_enabled": False},
    "replaceRunSettings": {"max_total_attempts": 3}, "updateRunSettings": {"backoff_cap_seconds": 5},
    "replaceRunSettingsV2": {"max_total_attempts": 2}, "updateRunSettingsV2": {"backoff_cap_seconds": 6},
    "correctRunFailure": {"step": "build", "failure_type": "INFRA", "note": "a missing package"},
    "acceptTenantCorrection": None,
    "addTenantPatterns": {"yaml": PATTERN},
    "replaceTenantPattern": {"yaml": PATTERN.replace("0.8", "0.7")},
    "deleteTenantPattern": None,
    "createPlan": {"yaml": DEPLOY},
    "replaceTenantPrivacy": {"mode": "local", "llm_allowlist": ["llm.internal"]},
    "replaceTenantV4Settings": {"enabled": False},
    "replaceRunBudget": {"cost_usd": 2.0, "attempts": 30},
    "replaceTenantBudget": {"cost_usd_per_month": 100, "run": {"time_seconds": 900}},
    "createTenantWebhook": {"url": "http://127.0.0.1:9/hook", "events": ["run.failed"]},
    "deleteTenantWebhook": None,
    "overrideCircuitBreaker": {"failure_class": "TRANSIENT", "dependency": "cache.internal:6379", "action": "open"},
    "promoteRun": lambda ctx: {"target_branch": f"promoted/{ctx['tenant_id']}"},
}
"""The body each operation is sent (None: it takes none); a callable gets the preconditions."""

ORDER = ["createPlan", "startRun", "addTenantPatterns", "replaceTenantPattern", "correctRunFailure",
         "acceptTenantCorrection"]
"""Operations whose preconditions others create, first; deleting a pattern, last."""


def non_get_operations(doc: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    ops = [(op["operationId"], method.upper(), path, op) for path, item in doc["paths"].items()
           for method, op in item.items() if method.upper() != "GET"]
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(ops, key=lambda o: (rank.get(o[0], len(ORDER)), o[0] == "deleteTenantPattern", o[0]))


async def test_every_state_changing_operation_writes_an_audit_event(
        live_api: LiveApi, api_workers: None, api_sessions) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    tenant, tokens = make_tenant(api_sessions)
    admin, operator = live_api.client(tokens[Role.ADMIN]), live_api.client(tokens[Role.OPERATOR])
    doc = (await admin.get("/openapi.json")).json()
    operations = non_get_operations(doc)
    unlisted = sorted(name for name, *_ in operations if name not in BODIES and name not in EXEMPT)
    assert not unlisted, f"new state-changing operations: add them to BODIES (or EXEMPT, saying why): {unlisted}"
    for name, _, _, op in operations:
        if name in BODIES:
            takes_body = "requestBody" in op
            assert takes_body == (BODIES[name] is not None) or not op.get("requestBody", {}).get("required"), name

    ws = str(workspace(live_api, f"ws-{tenant}"))
    ctx: dict[str, Any] = {"workspace": ws, "tenant_id": tenant, "entry_id": "acme.flaky-cache"}
    gates = await _gated_runs(operator, ws, 5)
    failed = await _failed_runs(operator, ws, 2)
    passed = await operator.post("/api/meta/v3/runs", json={"plan_yaml": PASSING, "workspace": ws})
    assert passed.status_code == 202, passed.text
    await wait_status(operator, passed.json()["run_id"], "succeeded")
    params = {  # operation -> its path parameters
        "cancelRun": {"run_id": gates[0][0]},
        "approveGate": {"gate_id": gates[1][1]}, "approveGateV2": {"gate_id": gates[2][1]},
        "rejectGate": {"gate_id": gates[3][1]}, "rejectGateV2": {"gate_id": gates[4][1]},
        "retryRun": {"run_id": failed[0]}, "retryRunV2": {"run_id": failed[1]},
        "correctRunFailure": {"run_id": failed[0]},
        "promoteRun": {"run_id": passed.json()["run_id"]},
    }
    checked = []
    for name, method, path, _ in operations:
        if name in EXEMPT:
            continue
        values = {**ctx, "run_id": failed[0], **params.get(name, {})}
        if name == "acceptTenantCorrection":
            values["correction_id"] = ctx["correction_id"]
        url = path.format(**values)
        body = BODIES[name](ctx) if callable(BODIES[name]) else BODIES[name]
        request_id = f"cov-{name}-{uuid.uuid4().hex[:8]}"
        answer = await admin.request(method, url, json=body, headers={"X-Request-ID": request_id})
        assert answer.status_code < 300, f"{name} {method} {url}: {answer.status_code} {answer.text}"
        assert answer.headers["x-request-id"] == request_id
        if name == "createTenantWebhook":
            ctx["webhook_id"] = answer.json()["id"]
        if name == "correctRunFailure":
            ctx["correction_id"] = answer.json()["id"]
            assert answer.json()["proposed_pattern"], answer.json()
        events = _events(api_sessions, request_id)
        assert events, f"{name} ({method} {path}) succeeded but wrote no audit event"
        for e in events:
            assert e.actor == "admin-user" and e.tenant_id == tenant and e.target, (name, e.event, e.target)
        checked.append((name, [e.event for e in events]))
    assert len(checked) == len(operations) - len([o for o in operations if o[0] in EXEMPT])
    by_name = dict(checked)
    assert by_name["replaceTenantSettings"] == ["settings.tenant_changed"]
    assert by_name["approveGate"] == ["approval.granted"] and by_name["rejectGate"] == ["approval.rejected"]
    assert by_name["startRun"] == ["run.started"]
    with transaction(api_sessions) as session:
        [change] = audit_rows.audit_events(session, tenant=tenant, event="settings.tenant_changed",
                                           request_id=next(e.request_id for e in audit_rows.audit_events(
                                               session, tenant=tenant, event="settings.tenant_changed")))
        assert change.before == {} and change.after == {"max_total_attempts": 5}
    await _end_open_runs(admin)


async def _end_open_runs(admin: httpx.AsyncClient) -> None:
    """Cancel the runs the walk left going (approved, retried, started), while this module's workers
    still run, so that none is left on the shared task queues for a later test's worker to pick up."""
    runs = (await admin.get("/api/meta/v3/runs", params={"limit": 200})).json()
    open_ids = [r["run_id"] for r in runs if not RunStatus(r["status"]).is_final]
    for run_id in open_ids:
        await admin.post(f"/api/meta/v3/runs/{run_id}/cancel")
    await asyncio.gather(*(wait_status(admin, i, *FINAL) for i in open_ids))


def _events(sessions, request_id: str) -> list:  # type: ignore[no-untyped-def, type-arg]
    with transaction(sessions) as session:
        rows = audit_rows.audit_events(session, tenant=None, request_id=request_id)
        session.expunge_all()
        return rows


async def _gated_runs(operator: httpx.AsyncClient, ws: str, n: int) -> list[tuple[str, str]]:
    """``n`` runs waiting at a gate: (run id, gate id)."""
    ids = []
    for _ in range(n):
        started = await operator.post("/api/meta/v3/runs", json={"plan_yaml": DEPLOY, "workspace": ws})
        assert started.status_code == 202, started.text
        ids.append(started.json()["run_id"])
    runs = await asyncio.gather(*(wait_status(operator, i, "paused_awaiting_approval") for i in ids))
    return [(r["run_id"], r["gates"][0]["gate_id"]) for r in runs]


async def _failed_runs(operator: httpx.AsyncClient, ws: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        started = await operator.post("/api/meta/v3/runs", json={"plan_yaml": FAILING, "workspace": ws,
                                                                 "settings": {"autofix_enabled": False}})
        assert started.status_code == 202, started.text
        ids.append(started.json()["run_id"])
    await asyncio.gather(*(wait_status(operator, i, "failed") for i in ids))
    return ids


async def test_the_audit_log_is_exported_by_time_range_as_json_lines(live_api: LiveApi, api_sessions) -> None:  # type: ignore[no-untyped-def]
    import json
    from datetime import UTC, datetime

    tenant, tokens = make_tenant(api_sessions)
    other, other_tokens = make_tenant(api_sessions)
    admin, viewer = live_api.client(tokens[Role.ADMIN]), live_api.client(tokens[Role.VIEWER])
    start = datetime.now(UTC).isoformat()
    for n in (2, 3):
        changed = await admin.put(f"/api/meta/v3/tenants/{tenant}/settings", json={"max_total_attempts": n})
        assert changed.status_code == 200, changed.text
    await live_api.client(other_tokens[Role.ADMIN]).put(f"/api/meta/v3/tenants/{other}/settings",
                                                        json={"max_total_attempts": 1})
    assert (await viewer.get("/api/meta/v4/audit")).status_code == 403
    answer = await admin.get("/api/meta/v4/audit", params={"since": start, "format": "jsonl"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert [(e["event"], e["tenant"], e["after"]) for e in lines] == [
        ("settings.tenant_changed", tenant, {"max_total_attempts": 2}),
        ("settings.tenant_changed", tenant, {"max_total_attempts": 3})]
    assert lines[1]["before"] == {"max_total_attempts": 2} and lines[0]["request_id"]
    until = lines[1]["created_at"]
    first = (await admin.get("/api/meta/v4/audit", params={"since": start, "until": until})).json()
    assert [e["after"] for e in first] == [{"max_total_attempts": 2}]
    bad = await admin.get("/api/meta/v4/audit", params={"since": until, "until": start})
    assert bad.status_code == 422 and "is not before until" in bad.json()["detail"]
    # An offset PostgreSQL refuses (past 15:59) is read in UTC (the fuzz test found the 500).
    far = await admin.get("/api/meta/v4/audit", params={"since": "0134-05-05T11:47:56-20:07"})
    assert far.status_code == 200 and far.json(), far.text  # every event of the tenant is later
    edge = await admin.get("/api/meta/v4/audit", params={"until": "0001-01-01T00:00:00+01:00"})
    assert edge.status_code == 422 and "until 0001-01-01T00:00:00+01:00: out of range once in UTC" in edge.text
