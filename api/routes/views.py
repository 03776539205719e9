"""Row -> response body conversions."""

from __future__ import annotations

from metabuilder.api.config import ApiConfig
from metabuilder.api.schemas import GateOut, PlanOut, PlanStepOut, RunOut, StepAttemptOut
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import web_ui_link
from metabuilder.store.models import ApprovalGate, BuildRun, BuildStep, ScaffoldPlan
from metabuilder.store.views import gate_fields, run_fields, step_fields

LOG_TAIL_LINES = 40


def run_out(run: BuildRun, config: ApiConfig) -> RunOut:
    return RunOut(**run_fields(run), web_ui_url=web_ui_link(config.ui_url, config.namespace, run.id))


def step_out(step: BuildStep, lines: int | None = LOG_TAIL_LINES) -> StepAttemptOut:
    return StepAttemptOut(**step_fields(step, lines))


def gate_out(gate: ApprovalGate) -> GateOut:
    return GateOut(**gate_fields(gate))


def plan_out(plan: ScaffoldPlan) -> PlanOut:
    parsed = parse_plan(plan.source, source=f"plan {plan.id}")
    return PlanOut(
        id=plan.id, tenant=plan.tenant_id, name=plan.name, source=plan.source, created_at=plan.created_at,
        steps=[PlanStepOut(name=s.name, command=s.command, queue=s.queue.value, timeout_seconds=s.timeout_seconds,
                           requires_approval=s.requires_approval, optional=s.optional) for s in parsed.steps])
