"""The one tenant check every lookup goes through: another tenant's row is as unknown as a missing one."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.service.errors import NotFound
from metabuilder.service.tenancy import own_gate, own_plan, own_run, own_tenant
from metabuilder.store import plans
from metabuilder.store.db import transaction


@pytest.mark.parametrize(("run_id", "tenant", "found"), [
    ("acme-1", "acme", True),
    ("acme-1", None, True),  # the CLI: every tenant
    ("acme-1", "globex", False),
    ("no-such", "acme", False),
    ("no-such", None, False),
])
def test_own_run(seeded: sessionmaker[Session], run_id: str, tenant: str | None, found: bool) -> None:
    with transaction(seeded) as session:
        if found:
            assert own_run(session, run_id, tenant).id == run_id
        else:
            with pytest.raises(NotFound, match=f"^unknown run id '{run_id}'$"):
                own_run(session, run_id, tenant)


@pytest.mark.parametrize(("tenant", "found"), [("acme", True), (None, True), ("globex", False)])
def test_own_gate_and_plan(seeded: sessionmaker[Session], tenant: str | None, found: bool) -> None:
    with transaction(seeded) as session:
        (plan,) = plans.list_plans(session, "acme")
        if found:
            assert own_gate(session, "acme-1-gate-1", tenant).run_id == "acme-1"
            assert own_plan(session, plan.id, tenant).name == "svc"
        else:
            with pytest.raises(NotFound, match="^unknown gate 'acme-1-gate-1'$"):
                own_gate(session, "acme-1-gate-1", tenant)
            with pytest.raises(NotFound, match=f"^unknown plan id '{plan.id}'$"):
                own_plan(session, plan.id, tenant)


@pytest.mark.parametrize(("tenant_id", "tenant", "found"), [
    ("acme", "acme", True), ("acme", None, True), ("acme", "globex", False)])
def test_own_tenant(tenant_id: str, tenant: str | None, found: bool) -> None:
    if found:
        assert own_tenant(tenant_id, tenant) == tenant_id
    else:
        with pytest.raises(NotFound, match="^unknown tenant 'acme'$"):
            own_tenant(tenant_id, tenant)
