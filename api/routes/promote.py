"""``POST /api/meta/v4/runs/{run_id}/promote``: fast-forward a succeeded run's target branch to its head."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from pydantic import BaseModel, Field

from metabuilder.api.deps import Admin, ConfigDep
from metabuilder.api.errors import responses
from metabuilder.api.schemas import ConfidenceOut
from metabuilder.service.promote import promote

V4 = "/api/meta/v4"
router = APIRouter(tags=["runs"])


class PromoteIn(BaseModel):
    target_branch: str | None = Field(default=None, max_length=200, description=(
        "The branch of the shared repository to fast-forward; by default the branch the run's workspace "
        "had checked out when it started."))
    approve_risks: bool = Field(default=False, description=(
        "Approve the risks of a run whose confidence is low or that has risk signals (with a reason). A risky "
        "run is promoted by an admin other than one who approved its risks: the approval is recorded, and the "
        "promotion goes ahead only if another admin approved them before."))
    reason: str = Field(default="", max_length=2000, description="Why; kept in the audit event.")


class PromotedOut(BaseModel):
    run_id: str
    target_branch: str
    commit: str = Field(description="Where the target branch is now: the run's head.")
    previous: str | None = Field(description="Where it was (null: promote created it).")
    risks_approved: list[str] = Field(description="The reasons the run needed an approval.")
    approved_by: list[str] = Field(default_factory=list, description=(
        "The admins who approved those risks (never the one who promoted)."))
    confidence: ConfidenceOut | None


@router.post(V4 + "/runs/{run_id}/promote", responses=responses(401, 403, 404, 409, 422))
async def promote_run(run_id: str, principal: Admin, config: ConfigDep, body: PromoteIn | None = None) -> PromotedOut:
    """Fast-forward the run's target branch in the shared repository to the run's healed head (admins;
    fast-forward only: 409 if the target moved; a low-confidence or risky run needs its risks approved by
    another admin first, ``approve_risks``)."""
    body = body or PromoteIn()
    done = await promote(config.sessions, run_id, tenant=principal.tenant, actor=principal.user,
                         target_branch=body.target_branch, approve_risks=body.approve_risks, reason=body.reason)
    c = done.confidence
    return PromotedOut(run_id=done.run_id, target_branch=done.target_branch, commit=done.commit,
                       previous=done.previous, risks_approved=done.risks, approved_by=done.approved_by,
                       confidence=ConfidenceOut(**asdict(c)) if c else None)
