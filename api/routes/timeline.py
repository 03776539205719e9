"""``GET /api/meta/v4/runs/{run_id}/timeline``: everything that happened in a run, in order."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from metabuilder.api.deps import SessionDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.service.timeline import run_timeline

V4 = "/api/meta/v4"
router = APIRouter(tags=["runs"])


class TimelineEventOut(BaseModel):
    at: datetime
    kind: str = Field(description="run.started, step.started, step.finished, autofix.<strategy>, plan.changed, "
                                  "gate.opened, gate.decided, breaker.waiting, budget.llm_call, run.finished")
    summary: str
    step: str | None
    data: dict[str, Any]


class TimelineOut(BaseModel):
    run_id: str
    events: list[TimelineEventOut]


@router.get(V4 + "/runs/{run_id}/timeline", responses=responses(401, 403, 404, 422))
def get_run_timeline(run_id: str, principal: Viewer, session: SessionDep) -> TimelineOut:
    """One ordered timeline of a run: steps and attempts, auto-fix decisions, plan changes, gates, breaker waits."""
    events = run_timeline(session, run_id, principal.tenant)
    return TimelineOut(run_id=run_id, events=[TimelineEventOut(**asdict(e)) for e in events])
