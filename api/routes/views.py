"""Row -> response body conversions, and the tenant check every lookup goes through."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.config import ApiConfig
from api.schemas import GateOut, PlanOut, PlanStepOut, RunOut, StepAttemptOut
from domain.access import Principal
from domain.plans import parse_plan
from domain.runs import web_ui_link
from service.errors import NotFound
from store import repository
from store.models import ApprovalGate, BuildRun, BuildStep, ScaffoldPlan

LOG_TAIL_LINES = 40


def own_run(session: Session, run_id: str, principal: Principal) -> BuildRun:
    """The caller's tenant's run; another tenant's run is as unknown as a missing one."""
    run = repository.get_run(session, run_id)
    if run is None or run.tenant_id != principal.tenant:
        raise NotFound(f"unknown run id {run_id!r}")
    return run


def run_out(run: BuildRun, config: ApiConfig) -> RunOut:
    return RunOut(
        run_id=run.id, tenant=run.tenant_id, plan=run.plan.name, status=run.status, iteration=run.iteration,
        retry_of=run.retry_of, workflow_id=run.workflow_id, branch=run.branch, base_commit=run.base_commit,
        head_commit=run.head_commit, failed_step=run.failed_step, error=run.error, created_at=run.created_at,
        finished_at=run.finished_at, web_ui_url=web_ui_link(config.ui_url, config.namespace, run.id))


def step_out(step: BuildStep, lines: int | None = LOG_TAIL_LINES) -> StepAttemptOut:
    return StepAttemptOut(
        index=step.step_index, attempt=step.attempt, name=step.name, queue=step.queue, status=step.status,
        exit_code=step.exit_code, duration_seconds=step.duration_seconds, commit_before=step.commit_before,
        commit_after=step.commit_after, signal_type=step.signal_type,
        log_tail=step.log_tail if lines is None else "\n".join(step.log_tail.splitlines()[-lines:]))


def gate_out(gate: ApprovalGate) -> GateOut:
    return GateOut(
        gate_id=gate.id, run_id=gate.run_id, step=gate.step_name, kind=gate.kind, action=gate.action,
        status=gate.status, reason=gate.reason, signal_type=gate.signal_type, evidence=list(gate.evidence),
        deciders=list(gate.deciders), on_expiry=gate.on_expiry, opened_at=gate.opened_at,
        expires_at=gate.expires_at, decided_by=gate.decided_by, decided_at=gate.decided_at,
        decision_reason=gate.decision_reason, proposal=gate.proposal)


def plan_out(plan: ScaffoldPlan) -> PlanOut:
    parsed = parse_plan(plan.source, source=f"plan {plan.id}")
    return PlanOut(
        id=plan.id, tenant=plan.tenant_id, name=plan.name, source=plan.source, created_at=plan.created_at,
        steps=[PlanStepOut(name=s.name, command=s.command, queue=s.queue.value, timeout_seconds=s.timeout_seconds,
                           requires_approval=s.requires_approval, optional=s.optional) for s in parsed.steps])
