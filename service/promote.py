"""Promote a succeeded run (seed 002 ``POST .../promote``): fast-forward the branch its workspace
had checked out, in the shared repository, to the run's healed head.

Fast-forward only: a target that holds a commit the run's head does not (someone pushed since the
run started) is a conflict, never merged or overwritten. A run auto-fix repaired with a low
confidence, or with risk signals, is promoted only by two people: one admin approves its risks
with a reason (``approve_risks``, kept in ``mb_v4_promotion_approvals`` and the audit log), and an
admin other than the approver promotes it. A tenant with one admin cannot promote a risky run this
way; its admin merges by hand, outside Meta-Builder.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.adapters.git import GitError, TargetMoved, fast_forward, git
from metabuilder.domain.confidence import Confidence, Level
from metabuilder.domain.runs import RunStatus
from metabuilder.service.audit import audited
from metabuilder.service.confidence import confidence_of
from metabuilder.service.errors import BadRequest, Conflict
from metabuilder.service.tenancy import own_run
from metabuilder.store.audit import write_audit
from metabuilder.store.db import transaction
from metabuilder.store.models import PromotionApproval, utcnow
from metabuilder.store.rows import upsert

RUN_BRANCHES = "metabuilder/"
"""Branches of the shared repository Meta-Builder keeps for itself: never a promotion's target."""


@dataclass(frozen=True)
class Promoted:
    run_id: str
    target_branch: str
    commit: str
    """Where the target is now: the run's head."""
    previous: str | None
    """Where it was (None: promote created it)."""
    confidence: Confidence | None
    risks_approved: bool = False
    risks: list[str] = field(default_factory=list)
    approved_by: list[str] = field(default_factory=list)
    """The admins whose approval of the risks the promotion rests on (none of them the promoter)."""


def needs_approval(confidence: Confidence | None) -> list[str]:
    """Why promoting a run with ``confidence`` needs its risks approved ([]: it does not)."""
    if confidence is None:
        return []
    why = [f"{r.name} ({r.detail})" for r in confidence.risks]
    if confidence.level == Level.LOW:
        why.insert(0, f"confidence is low ({confidence.score:.2f})")
    return why


async def promote(sessions: sessionmaker[Session], run_id: str, *, tenant: str | None, actor: str,
                  target_branch: str | None = None, approve_risks: bool = False, reason: str = "") -> Promoted:
    """Fast-forward the run's target branch (``target_branch``, or the branch it started from) to
    its head; audited as ``run.promoted`` with the branch's commit before and after.

    A risky run needs the approval of an admin other than ``actor``: ``approve_risks`` (with a
    ``reason``) records ``actor``'s approval first, which lets another admin promote it.

    ``NotFound`` for a run of another tenant; ``Conflict`` for a run that has not succeeded, one
    whose risks have no approval by another admin, or a target that moved; ``BadRequest`` for a
    target that is not a branch name, or none known, or an approval without a reason."""

    def load() -> tuple[str, str, str, str, Confidence | None]:
        with transaction(sessions) as session:
            run = own_run(session, run_id, tenant)
            if run.status != RunStatus.SUCCEEDED:
                raise Conflict(f"run {run_id} is {run.status}; only a succeeded run can be promoted")
            return run.tenant_id, run.repo_url, run.head_commit, run.source_branch, confidence_of(session, run)

    run_tenant, repo_url, head, source_branch, confidence = await asyncio.to_thread(load)
    target = (target_branch or source_branch).strip()
    if not target:
        raise BadRequest(f"run {run_id} started from a detached HEAD (or before its branch was recorded): "
                         "name the branch to promote it to (target_branch)")
    await _check_branch_name(target)
    why = needs_approval(confidence)
    if why and approve_risks:
        await approve(sessions, run_id, run_tenant, actor, reason, why)
    approvers = await asyncio.to_thread(_approvers, sessions, run_id, actor) if why else []
    if why and not approvers:
        mine = "your approval is recorded; " if approve_risks else ""
        raise Conflict(f"run {run_id} needs its risks approved before it is promoted: {'; '.join(why)} "
                       f"({mine}a risky run is promoted by an admin other than the one who approves its risks: "
                       "one admin approves them with a reason (approve_risks), another promotes)")
    try:
        previous = await fast_forward(repo_url, target, head)
    except TargetMoved as err:
        raise Conflict(f"cannot promote run {run_id}: {err}") from None
    except GitError as err:
        raise Conflict(f"cannot promote run {run_id} to {target}: {err}") from None
    if previous == head:
        raise Conflict(f"branch {target} is at run {run_id}'s head {head[:12]} already: promoted before")
    done = Promoted(run_id, target, head, previous, confidence, risks_approved=bool(why), risks=why,
                    approved_by=approvers)
    await audited(sessions, "run.promoted", tenant=run_tenant, actor=actor, target=run_id, run_id=run_id,
                  before={"branch": target, "commit": previous},
                  after={"branch": target, "commit": head},
                  data={"confidence": confidence.score if confidence else None,
                        "level": confidence.level.value if confidence else None,
                        "risks_approved": why, "approved_by": approvers, "reason": reason.strip()})
    return done


async def approve(sessions: sessionmaker[Session], run_id: str, tenant: str, actor: str, reason: str,
                  risks: list[str]) -> None:
    """Record ``actor``'s approval of the run's ``risks`` (a second approval by the same admin
    replaces the first); audited as ``run.promotion_approved``."""
    if not reason.strip():
        raise BadRequest("approve_risks needs a reason, kept in the audit log")

    def write() -> None:
        with transaction(sessions) as session:
            upsert(session, PromotionApproval, {"run_id": run_id, "approver": actor, "tenant_id": tenant,
                                                "reason": reason.strip(), "risks": risks, "approved_at": utcnow()},
                   ["run_id", "approver"], ["reason", "risks", "approved_at"])
            write_audit(session, "run.promotion_approved", tenant=tenant, actor=actor, target=run_id, run_id=run_id,
                        after={"risks": risks, "reason": reason.strip()})

    await asyncio.to_thread(write)


def approvals(session: Session, run_id: str) -> list[PromotionApproval]:
    """The admins' approvals of a run's risks, oldest first."""
    return list(session.scalars(select(PromotionApproval).where(PromotionApproval.run_id == run_id)
                                .order_by(PromotionApproval.approved_at)))


def _approvers(sessions: sessionmaker[Session], run_id: str, promoter: str) -> list[str]:
    with transaction(sessions) as session:
        return [a.approver for a in approvals(session, run_id) if a.approver != promoter]


async def _check_branch_name(name: str) -> None:
    try:
        name.encode()
    except UnicodeEncodeError:
        raise BadRequest("target_branch is not valid UTF-8 text") from None
    if not name.isprintable():
        raise BadRequest(f"target_branch {name!r} has a control character; git branch names cannot")
    if name.startswith(RUN_BRANCHES) or name.startswith("refs/") or name.startswith("-"):
        raise BadRequest(f"target_branch {name!r}: branches under {RUN_BRANCHES} are Meta-Builder's own; "
                         "name a plain branch such as main")
    proc_out = await git("check-ref-format", "--branch", name, check=False)
    if not proc_out.strip():
        raise BadRequest(f"target_branch {name!r} is not a valid git branch name")
