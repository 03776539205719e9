"""Plans: store a plan from its YAML (validated), list and read them; and who the caller is."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from metabuilder.api.deps import Operator, PagerDep, SessionDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.api.routes import V3
from metabuilder.api.routes.views import plan_out
from metabuilder.api.schemas import PlanIn, PlanOut, WhoAmI
from metabuilder.domain.plans import parse_plan, plan_to_dict
from metabuilder.service.tenancy import own_plan
from metabuilder.store import plans as plan_rows
from metabuilder.store.audit import write_audit

router = APIRouter(tags=["plans"])


@router.post(V3 + "/plans", status_code=201, responses=responses(401, 403, 422))
def create_plan(body: PlanIn, principal: Operator, session: SessionDep) -> PlanOut:
    """Validate and store a plan; the same text stored twice is one plan."""
    plan = parse_plan(body.yaml, source="plan")
    plan_id = plan_rows.ensure_plan(session, principal.tenant, plan.name, body.yaml, plan_to_dict(plan))
    write_audit(session, "plan.created", tenant=principal.tenant, actor=principal.user, target=f"plan:{plan_id}",
                after={"name": plan.name, "steps": len(plan.steps)})
    stored = plan_rows.get_plan(session, plan_id)
    assert stored is not None
    return plan_out(stored)


@router.get(V3 + "/plans", responses=responses(401, 403, 422))
def list_plans(principal: Viewer, session: SessionDep, pager: PagerDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
               offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[PlanOut]:
    """The tenant's plans, newest first (a ``Link`` header points to the next page)."""
    rows = plan_rows.list_plans(session, principal.tenant, limit=limit + 1, offset=offset)
    return [plan_out(p) for p in pager.page(rows, limit, offset)]


@router.get(V3 + "/plans/{plan_id}", responses=responses(401, 403, 404, 422))
def get_plan(plan_id: str, principal: Viewer, session: SessionDep) -> PlanOut:
    """One plan with its steps and its text."""
    return plan_out(own_plan(session, plan_id, principal.tenant))


@router.get(V3 + "/me", responses=responses(401))
def whoami(principal: Viewer) -> WhoAmI:
    """The caller's tenant, user name and role."""
    return WhoAmI(tenant=principal.tenant, user=principal.user, role=principal.role)
