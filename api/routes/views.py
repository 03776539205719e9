"""Row -> response body conversions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from metabuilder.api.config import ApiConfig
from metabuilder.api.schemas import GateOut, PlanOut, PlanStepOut, RunOut, SlaOut, StepAttemptOut
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import web_ui_link
from metabuilder.store import sla as sla_rows
from metabuilder.store.models import ApprovalGate, BuildRun, BuildStep, ScaffoldPlan
from metabuilder.store.views import gate_fields, run_fields, step_fields

LOG_TAIL_LINES = 40


def run_out(run: BuildRun, config: ApiConfig) -> RunOut:
    return RunOut(**run_fields(run), web_ui_url=web_ui_link(config.ui_url, config.namespace, run.id))


def step_out(step: BuildStep | Row[Any], lines: int | None = LOG_TAIL_LINES) -> StepAttemptOut:
    return StepAttemptOut(**step_fields(step, lines))


def gate_out(gate: ApprovalGate | Row[Any]) -> GateOut:
    return GateOut(**gate_fields(gate))


def plan_out(plan: ScaffoldPlan) -> PlanOut:
    parsed = parse_plan(plan.source, source=f"plan {plan.id}")
    return PlanOut(
        id=plan.id, tenant=plan.tenant_id, name=plan.name, source=plan.source, created_at=plan.created_at,
        steps=[PlanStepOut(name=s.name, command=s.command, queue=s.queue.value, timeout_seconds=s.timeout_seconds,
                           requires_approval=s.requires_approval, optional=s.optional) for s in parsed.steps])


def sla_out(session: Session, run_id: str, settings: dict[str, Any] | None, created_at: datetime) -> SlaOut | None:
    """The run's SLA class as submitted (its settings), its deadline and how it stands (its SLA events)."""
    sla = (settings or {}).get("sla")
    if not isinstance(sla, dict):
        return None
    created = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    return SlaOut(sla_class=sla["class"], priority=sla["priority"], time_budget_seconds=sla["time_budget_seconds"],
                  model_tier=sla["model_tier"], repair_depth=sla["repair_depth"], candidates=sla["candidates"],
                  source=sla.get("source", "run"), deadline=created + timedelta(seconds=sla["time_budget_seconds"]),
                  state=sla_rows.run_sla_state(session, run_id))
