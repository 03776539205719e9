"""The circuit-breaker endpoints against the real API process and PostgreSQL."""

from __future__ import annotations

import functools

import httpx
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.access import Role
from metabuilder.domain.breakers import BreakerKey, BreakerPolicy, record_failure
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import breakers, repository
from metabuilder.store.db import transaction
from tests.api.conftest import LiveApi, make_tenant

URL = "/api/meta/v4/circuit-breakers"


def test_breakers_are_listed_per_tenant_and_an_admin_override_is_audited(
        live_api: LiveApi, api_sessions: sessionmaker[Session]) -> None:
    tenant, tokens = make_tenant(api_sessions)
    other, other_tokens = make_tenant(api_sessions)
    key = BreakerKey(tenant, FailureType.TRANSIENT, "127.0.0.1:9")
    policy = BreakerPolicy(threshold=2)
    for t in (1.0, 2.0):
        breakers.change(api_sessions, key, functools.partial(record_failure, now=t, policy=policy, run_id="r"))
    breakers.set_waiting(api_sessions, key, "run-x", "install")

    viewer = {"Authorization": f"Bearer {tokens[Role.VIEWER]}"}
    [b] = httpx.get(live_api.url + URL, headers=viewer).json()
    assert (b["state"], b["trips"], b["dependency"], b["failure_class"]) == ("open", 1, "127.0.0.1:9", "TRANSIENT")
    assert b["last_reason"] == "2 failures within 60s" and b["next_probe_at"]
    assert [w["run_id"] for w in b["waiting_runs"]] == ["run-x"]
    assert httpx.get(live_api.url + URL, headers={"Authorization": f"Bearer {other_tokens[Role.ADMIN]}"}).json() == []

    admin = {"Authorization": f"Bearer {tokens[Role.ADMIN]}"}
    body = {"failure_class": "transient", "dependency": "127.0.0.1:9", "action": "close"}
    assert httpx.post(live_api.url + URL, json=body, headers=viewer).status_code == 403
    res = httpx.post(live_api.url + URL, json=body, headers=admin)
    assert res.status_code == 200, res.text
    assert (res.json()["state"], res.json()["last_reason"]) == ("closed", "closed by an operator")
    with transaction(api_sessions) as s:
        [event] = repository.audit_events(s, tenant=tenant, event="breaker.*")
        assert (event.event, event.actor) == ("breaker.close", "admin-user")
        assert event.data["before"]["state"] == "open" and event.data["after"]["state"] == "closed"


def test_a_bad_override_names_what_is_wrong(live_api: LiveApi, api_sessions: sessionmaker[Session]) -> None:
    _, tokens = make_tenant(api_sessions)
    admin = {"Authorization": f"Bearer {tokens[Role.ADMIN]}"}
    cases = {
        ("NOPE", "pypi.org:443", "open"): "'NOPE' is not a failure class",
        ("LINT", "pypi.org:443", "open"): "LINT has no circuit breaker",
        ("TRANSIENT", "two words", "open"): "dependency: ",
        ("TRANSIENT", "pypi.org:443", "explode"): "action",
    }
    for (cls, dep, action), why in cases.items():
        res = httpx.post(live_api.url + URL, headers=admin,
                         json={"failure_class": cls, "dependency": dep, "action": action})
        assert res.status_code == 422 and why in res.text, res.text
