"""The role matrix: every API endpoint x every role x the caller's own tenant or another's.
Too low a role: 403. Another tenant's id: 404, as if it did not exist. No or a bad token: 401."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.api.config import ApiConfig
from metabuilder.domain.access import Role
from metabuilder.domain.approvals import GateView
from metabuilder.domain.notifications import WebhookSpec
from metabuilder.domain.payloads import RunRecord
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import RunStatus
from metabuilder.store import approvals, notifications, repository
from metabuilder.store.db import transaction
from tests.api.conftest import LiveApi, make_tenant

PLAN = "name: matrix\nsteps:\n  - name: build\n    command: 'true'\n"
V2, V3, V4 = "/api/meta/v2", "/api/meta/v3", "/api/meta/v4"
R = "{run}"
G = "{gate}"
T = "{tenant}"
P = "{plan}"
E = "{entry}"
W = "{webhook}"
C = "{correction}"
X = "{gone}"
PATTERN = "- {id: team.matrix, class: LINT, pattern: 'matrix lint', weight: 0.5}\n"
SETTINGS = {"max_total_attempts": 8}

# (method, path, least role, body, status for an allowed caller on its own tenant's ids)
ENDPOINTS: list[tuple[str, str, Role, Any, int]] = [
    ("GET", f"{V3}/me", Role.VIEWER, None, 200),
    ("GET", f"{V3}/runs", Role.VIEWER, None, 200),
    ("POST", f"{V3}/runs", Role.OPERATOR, {"plan_yaml": PLAN, "workspace": "/"}, 422),  # outside the roots
    ("GET", f"{V3}/runs/{R}", Role.VIEWER, None, 200),
    ("POST", f"{V3}/runs/{R}/cancel", Role.OPERATOR, None, 409),  # it has finished
    ("POST", f"{V2}/runs/{R}/retry", Role.OPERATOR, None, 409),  # it succeeded
    ("POST", f"{V3}/runs/{R}/retry", Role.OPERATOR, None, 409),
    ("GET", f"{V2}/runs/{R}/autofix", Role.VIEWER, None, 200),
    ("GET", f"{V3}/runs/{R}/autofix", Role.VIEWER, None, 200),
    ("GET", f"{V2}/runs/{R}/escalation", Role.VIEWER, None, 200),
    ("GET", f"{V3}/runs/{R}/escalations", Role.VIEWER, None, 200),
    ("GET", f"{V2}/runs/{R}/plan-delta", Role.VIEWER, None, 200),
    ("GET", f"{V3}/runs/{R}/plan-deltas", Role.VIEWER, None, 200),
    ("GET", f"{V2}/runs/{R}/logs", Role.VIEWER, None, 200),
    ("GET", f"{V3}/runs/{R}/logs", Role.VIEWER, None, 200),
    *[(m, f"{v}/runs/{R}/settings", role, body, 200) for v in (V2, V3)
      for m, role, body in (("GET", Role.VIEWER, None), ("PUT", Role.ADMIN, SETTINGS), ("POST", Role.ADMIN, SETTINGS))],
    *[(m, f"{v}/tenants/{T}/settings", role, body, 200) for v in (V2, V3)
      for m, role, body in (("GET", Role.VIEWER, None), ("PUT", Role.ADMIN, SETTINGS), ("POST", Role.ADMIN, SETTINGS))],
    ("GET", f"{V3}/approvals", Role.VIEWER, None, 200),
    ("GET", f"{V3}/approvals/{G}", Role.VIEWER, None, 200),
    # The gate is recorded but its run has no workflow (seeded rows): the decision reaches the
    # service layer, which answers that the run is not running any more.
    *[("POST", f"{v}/approvals/{G}/{d}", Role.ADMIN, {"reason": "matrix"}, 409)
      for v in (V2, V3) for d in ("approve", "reject")],
    ("POST", f"{V2}/classify-failure", Role.VIEWER, {"step_name": "test", "logs": "E   assert 1 == 2"}, 200),
    ("POST", f"{V3}/classify-failure", Role.VIEWER, {"step_name": "test", "logs": "E   assert 1 == 2"}, 200),
    ("POST", f"{V3}/plans", Role.OPERATOR, {"yaml": PLAN}, 201),
    ("GET", f"{V3}/plans", Role.VIEWER, None, 200),
    ("GET", f"{V3}/plans/{P}", Role.VIEWER, None, 200),
    ("GET", f"{V3}/audit", Role.ADMIN, None, 200),
    ("GET", f"{V3}/audit?run_id={R}&event=approval.*", Role.ADMIN, None, 200),
    ("GET", f"{V3}/tenants/{T}/patterns", Role.VIEWER, None, 200),
    ("POST", f"{V3}/tenants/{T}/patterns", Role.ADMIN, {"yaml": PATTERN}, 200),
    ("PUT", f"{V3}/tenants/{T}/patterns/{E}", Role.ADMIN, {"yaml": PATTERN}, 200),
    ("DELETE", f"{V3}/tenants/{T}/patterns/{X}", Role.ADMIN, None, 404),  # never added
    ("POST", f"{V3}/runs/{R}/corrections", Role.OPERATOR, {"step": "build", "failure_type": "POLICY"}, 409),
    ("GET", f"{V3}/tenants/{T}/corrections", Role.VIEWER, None, 200),
    ("POST", f"{V3}/tenants/{T}/corrections/{C}/accept", Role.ADMIN, None, 404),  # no such correction
    ("GET", f"{V4}/circuit-breakers", Role.VIEWER, None, 200),
    ("POST", f"{V4}/circuit-breakers", Role.ADMIN,
     {"failure_class": "TRANSIENT", "dependency": "matrix.example:443", "action": "reset"}, 200),
    ("GET", f"{V4}/stats", Role.VIEWER, None, 200),
    ("GET", f"{V4}/tenants/{T}/settings", Role.VIEWER, None, 200),
    ("PUT", f"{V4}/tenants/{T}/settings", Role.ADMIN, {"enabled": True}, 200),
    ("GET", f"{V4}/chaos/stats", Role.VIEWER, None, 200),
    ("GET", f"{V4}/runs/{R}/timeline", Role.VIEWER, None, 200),
    ("GET", f"{V4}/workers", Role.VIEWER, None, 200),
    ("GET", f"{V4}/leases", Role.VIEWER, None, 200),
    ("GET", f"{V3}/runs/{R}/steps/build/log", Role.VIEWER, None, 404),  # the seeded run has no attempt to show
    ("GET", f"{V4}/audit", Role.ADMIN, None, 200),
    ("GET", f"{V4}/tenants/{T}/privacy", Role.VIEWER, None, 200),
    ("PUT", f"{V4}/tenants/{T}/privacy", Role.ADMIN, {"mode": "redacted"}, 200),
    ("GET", f"{V4}/runs/{R}/budget", Role.VIEWER, None, 200),
    ("PUT", f"{V4}/runs/{R}/budget", Role.ADMIN, {"cost_usd": 1.5}, 200),
    ("GET", f"{V4}/tenants/{T}/budget", Role.VIEWER, None, 200),
    ("PUT", f"{V4}/tenants/{T}/budget", Role.ADMIN, {"cost_usd_per_day": 10, "concurrent_runs": 4}, 200),
    ("POST", f"{V4}/runs/{R}/promote", Role.ADMIN, {"target_branch": "main"}, 409),  # no such shared repository
    ("GET", f"{V4}/canary/stats", Role.VIEWER, None, 200),
    ("GET", f"{V4}/tenants/{T}/webhooks", Role.VIEWER, None, 200),
    ("POST", f"{V4}/tenants/{T}/webhooks", Role.ADMIN, {"url": "http://127.0.0.1:9/hook"}, 201),
    ("DELETE", f"{V4}/tenants/{T}/webhooks/wh-none", Role.ADMIN, None, 404),  # a deletion happens once
    ("GET", f"{V4}/tenants/{T}/webhooks/{W}/deliveries", Role.VIEWER, None, 200),
]


WHY = {422: "outside the directories runs may start from", 409: "run-"}
"""What an allowed caller's 4xx says: the refusal is the endpoint's own, not the access check's."""


def seed(sessions: sessionmaker[Session], tenant: str) -> dict[str, str]:
    """A finished run, a pending gate and a plan of ``tenant``, written as the workers would."""
    run_id = f"run-{tenant}"
    plan = parse_plan(PLAN)
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        repository.record_run(session, RunRecord(
            run_id=run_id, tenant=tenant, status=RunStatus.SUCCEEDED, plan=plan, plan_source=PLAN,
            workflow_id=f"build-run-{run_id}", repo_url="/nowhere.git", branch="b", base_commit="a" * 40,
            head_commit="a" * 40))
        approvals.record_gate(session, tenant, GateView(
            gate_id=f"{run_id}-gate-1", run_id=run_id, step="build", kind="escalation", action="rerun",
            reason="seeded", opened_at=now, expires_at=now + timedelta(hours=1)))
        plan_id = repository.ensure_plan(session, tenant, "matrix", PLAN, {})
        hook = notifications.create_webhook(session, tenant, WebhookSpec(url="http://127.0.0.1:9/hook"), by="seed")
    return {"run": run_id, "gate": f"{run_id}-gate-1", "tenant": tenant, "plan": plan_id, "webhook": hook.id}


@pytest.fixture(scope="module")
def tenants(api_sessions: sessionmaker[Session]) -> dict[str, Any]:
    own, tokens = make_tenant(api_sessions)
    other, _ = make_tenant(api_sessions)
    extra = {"entry": "team.matrix", "gone": "team.never-added", "correction": "no-such-correction"}
    return {"tokens": tokens, "own": {**seed(api_sessions, own), **extra},
            "other": {**seed(api_sessions, other), **extra}}


def call(api: LiveApi, token: str | None, method: str, path: str, body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=api.url, headers=headers, timeout=30) as http:
        return http.request(method, path, json=body)


def test_the_matrix_covers_every_endpoint(live_api: LiveApi) -> None:
    spec = httpx.get(f"{live_api.url}/openapi.json").json()
    served = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if p.startswith("/api/")}
    named = {(m, p.split("?")[0].replace(R, "{run_id}").replace(G, "{gate_id}").replace(T, "{tenant_id}")
              .replace(P, "{plan_id}").replace(E, "{entry_id}").replace(X, "{entry_id}")
              .replace(C, "{correction_id}")
              .replace(W, "{webhook_id}").replace("wh-none", "{webhook_id}").replace("/steps/build/", "/steps/{step}/"))
             for m, p, *_ in ENDPOINTS}
    assert served == named


@pytest.mark.parametrize(("method", "path", "least", "body", "ok"), ENDPOINTS,
                         ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS])
def test_role_matrix(live_api: LiveApi, tenants: dict[str, Any], method: str, path: str, least: Role,
                     body: Any, ok: int) -> None:
    has_ids = "{" in path
    for role, whose in itertools.product(Role, ("own", "other")):
        if whose == "other" and not has_ids:
            continue
        url = path.format(**tenants[whose])
        got = call(live_api, tenants["tokens"][role], method, url, body)
        if not role.allows(least):
            want = 403
        else:
            want = ok if whose == "own" else 404
        assert got.status_code == want, f"{role} on {whose} tenant's {method} {url}: {got.status_code} {got.text}"
        if got.status_code >= 400:  # RFC 9457 problem details, keeping ``detail``
            assert got.headers["content-type"] == "application/problem+json", got.headers
            problem = got.json()
            assert problem["detail"] and problem["status"] == got.status_code and problem["title"], got.text
            assert problem["type"] == "about:blank" and problem["instance"] == url.split("?")[0]
        else:
            assert got.headers["content-type"].startswith("application/json")
        if got.status_code in WHY and whose == "own":
            assert WHY[got.status_code] in got.json()["detail"], got.text
    own = path.format(**tenants["own"])
    assert call(live_api, None, method, own, body).status_code == 401
    assert call(live_api, "mb_not-a-token", method, own, body).status_code == 401


def test_lists_show_only_the_callers_tenant(live_api: LiveApi, tenants: dict[str, Any]) -> None:
    token = tenants["tokens"][Role.VIEWER]
    runs = call(live_api, token, "GET", f"{V3}/runs", None).json()
    assert [r["run_id"] for r in runs] == [tenants["own"]["run"]]
    gates = call(live_api, token, "GET", f"{V3}/approvals", None).json()
    assert [g["gate_id"] for g in gates] == [tenants["own"]["gate"]]
    plans = call(live_api, token, "GET", f"{V3}/plans", None).json()
    assert [p["id"] for p in plans] == [tenants["own"]["plan"]]
    audit = call(live_api, tenants["tokens"][Role.ADMIN], "GET", f"{V3}/audit", None).json()
    assert audit and {a["run_id"] for a in audit if a["run_id"] is not None} == {tenants["own"]["run"]}
    # besides the matrix's own breaker overrides on this tenant
    # (the other tenant's changes, made by the matrix, are its own)
    assert [a["event"] for a in audit if a["event"].startswith("approval.")] == ["approval.requested"]
    assert call(live_api, tenants["tokens"][Role.ADMIN], "GET", f"{V3}/audit?event=autofix.*", None).json() == []
    bad = call(live_api, tenants["tokens"][Role.ADMIN], "GET", f"{V3}/audit?event=DROP TABLE", None)
    assert bad.status_code == 422 and "event" in bad.json()["detail"]
    assert runs[0]["web_ui_url"] == f"http://ui.example/namespaces/default/workflows/build-run-{runs[0]['run_id']}"


def test_a_revoked_token_is_refused(live_api: LiveApi, api_sessions: sessionmaker[Session]) -> None:
    from metabuilder.store import access

    tenant, tokens = make_tenant(api_sessions)
    assert call(live_api, tokens[Role.OWNER], "GET", f"{V3}/me", None).json() == {
        "tenant": tenant, "user": "owner-user", "role": "owner"}
    with transaction(api_sessions) as session:
        [(row, _)] = [(t, u) for t, u in access.list_tokens(session, tenant) if u.role == "owner"]
        assert row.token_hash != tokens[Role.OWNER] and len(row.token_hash) == 64  # only the hash is stored
        assert access.revoke_token(session, row.id)
    # The API keeps who a token stands for for ApiConfig.token_cache_seconds (2 s) after a lookup.
    deadline = time.monotonic() + ApiConfig.token_cache_seconds + 1
    while (status := call(live_api, tokens[Role.OWNER], "GET", f"{V3}/me", None).status_code) == 200:
        assert time.monotonic() < deadline, "the revoked token is still let in"
        time.sleep(0.1)
    assert status == 401
