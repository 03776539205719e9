"""``GET /api/meta/v4/chaos/stats`` against the real API process and PostgreSQL."""

from __future__ import annotations

import httpx
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.access import Role
from metabuilder.domain.chaos import Fault, FaultType
from metabuilder.store import chaos
from metabuilder.store.db import transaction
from metabuilder.store.models import ChaosScope
from tests.api.conftest import LiveApi, make_tenant

URL = "/api/meta/v4/chaos/stats"


def test_a_viewer_reads_the_tenants_injections_and_recoveries(
        live_api: LiveApi, api_sessions: sessionmaker[Session]) -> None:
    tenant, tokens = make_tenant(api_sessions)
    _, other_tokens = make_tenant(api_sessions)
    with transaction(api_sessions) as s:
        for n, fault in enumerate((FaultType.RATE_LIMIT, FaultType.RATE_LIMIT, FaultType.DISK_FULL)):
            chaos.record_injection(s, tenant=tenant, run_id=f"{tenant}-r{n}", step_index=0, step_name="build",
                                   attempt=1, fault=Fault(fault, 2.0), worker="w")
        chaos.mark_recovered(s, f"{tenant}-r0", "build", 2)
        chaos.put_scope(s, ChaosScope(tenant_id=tenant, run_id="", probability=0.25, weights={"latency": 1.0},
                                      seed=3, steps=[], created_by="test"))
    viewer = {"Authorization": f"Bearer {tokens[Role.VIEWER]}"}
    res = httpx.get(live_api.url + URL, headers=viewer)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["total"]["injections"] == 3 and body["retention_days"] == 7.0
    rate = body["by_type"]["rate_limit"]
    assert (rate["injections"], rate["recovered"], rate["pending"], rate["recovery_rate"]) == (2, 1, 1, 1.0)
    assert rate["mean_recovery_seconds"] is not None and rate["p95_recovery_seconds"] is not None
    assert body["by_type"]["disk_full"]["recovery_rate"] is None
    assert body["scopes"] == [{"run_id": None, "probability": 0.25, "weights": {"latency": 1.0}, "seed": 3,
                               "steps": [], "max_attempt": None, "expires_at": None}]
    one = httpx.get(live_api.url + URL, params={"run_id": f"{tenant}-r2"}, headers=viewer).json()
    assert one["total"]["injections"] == 1
    other = httpx.get(live_api.url + URL, headers={"Authorization": f"Bearer {other_tokens[Role.ADMIN]}"}).json()
    assert other["total"]["injections"] == 0 and other["scopes"] == []
    anonymous = httpx.get(live_api.url + URL)
    assert anonymous.status_code == 401 and anonymous.headers["content-type"].startswith("application/problem+json")
