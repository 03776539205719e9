"""The tenant's audit log (seed 001 events and the approval events), for compliance reviews."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from metabuilder.api.deps import Admin, PagerDep, SessionDep
from metabuilder.api.errors import responses
from metabuilder.api.routes import V3
from metabuilder.api.schemas import AuditEventOut
from metabuilder.service.tenancy import own_run
from metabuilder.store import audit as audit_rows

router = APIRouter(tags=["audit"])

EVENT_PATTERN = r"^[a-z_]+(\.([a-z_]+|\*))?$"


@router.get(V3 + "/audit", responses=responses(401, 403, 404, 422))
def audit_log(principal: Admin, session: SessionDep, pager: PagerDep, run_id: str | None = None,
              event: Annotated[str | None, Query(pattern=EVENT_PATTERN, max_length=64,
                                                 description="An event name, or a family: `approval.*`")] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 200,
              offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[AuditEventOut]:
    """The caller's tenant's audit events, oldest first; of one run and one event or family if asked
    (admin or owner: the log names who decided what). A ``Link`` header points to the next page."""
    if run_id is not None:
        own_run(session, run_id, principal.tenant)
    rows = audit_rows.audit_events(session, tenant=principal.tenant, run_id=run_id, event=event,
                                   limit=limit + 1, offset=offset)
    return [AuditEventOut(id=a.id, event=a.event, actor=a.actor, run_id=a.run_id, data=dict(a.data),
                          created_at=a.created_at) for a in pager.page(rows, limit, offset)]
