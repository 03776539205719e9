"""Request and response bodies. Field names follow the seeds (``autofix_enabled``, ``signal_type``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from metabuilder.domain.access import Role
from metabuilder.domain.approvals import GateKind, GateStatus
from metabuilder.domain.limits import MAX_PLAN_BYTES
from metabuilder.domain.pools import PriorityClass
from metabuilder.domain.runs import RunStatus
from metabuilder.domain.sla import SlaClass


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- plans --------------------------------------------------------------------------------------

class PlanIn(Strict):
    yaml: str = Field(min_length=1, max_length=MAX_PLAN_BYTES, description="The plan file's text (YAML).")


class PlanStepOut(BaseModel):
    name: str
    command: str
    queue: str
    timeout_seconds: float
    requires_approval: bool
    optional: bool


class PlanOut(BaseModel):
    id: str
    tenant: str
    name: str
    steps: list[PlanStepOut]
    source: str
    created_at: datetime


# --- settings -----------------------------------------------------------------------------------

class SettingsIn(Strict):
    """Auto-fix overrides; a field left out keeps the level below it (platform, then tenant)."""

    autofix_enabled: bool | None = None
    max_total_attempts: int | None = Field(default=None, ge=0, le=100)
    max_per_step_attempts: int | None = Field(default=None, ge=0, le=50)
    backoff_cap_seconds: float | None = Field(default=None, gt=0, le=86400)


class SettingsValues(BaseModel):
    autofix_enabled: bool
    max_total_attempts: int
    max_per_step_attempts: int
    backoff_cap_seconds: float


class TenantSettingsOut(BaseModel):
    tenant: str
    effective: SettingsValues
    sources: dict[str, str] = Field(description="Setting -> the level its value comes from: platform or tenant.")
    overrides: dict[str, Any] = Field(description="What the tenant sets; the rest comes from the platform.")


class RunSettingsOut(BaseModel):
    run_id: str
    effective: dict[str, Any] = Field(description="The settings the run runs with, fixed when it started.")
    sources: dict[str, str]
    next_overrides: dict[str, Any] = Field(description="Run-level overrides for the run's retries.")


# --- runs ---------------------------------------------------------------------------------------

class RunIn(Strict):
    plan_id: str | None = Field(default=None, max_length=64, description="A plan created with POST /plans.")
    plan_yaml: str | None = Field(default=None, max_length=MAX_PLAN_BYTES, description="Or the plan's text itself.")
    workspace: str = Field(min_length=1, max_length=4096,
                           description="A git working tree on the API's host, inside the allowed roots.")
    settings: SettingsIn | None = None
    """Run-level auto-fix overrides."""
    priority: PriorityClass | None = Field(
        default=None, description="high, normal or low: the run's Temporal priority, over the plan's and steps' "
                                  "own (with v4 on).")
    v4_enabled: bool | None = Field(
        default=None, description="Run-level FEATURE_META_V4_ENABLED: priority and fairness keys for this run.")
    sla: SlaClass | None = Field(
        default=None, description="fast, normal or thorough: the run's SLA class, over the plan's `sla:` (its "
                                  "priority, time budget, model tier and repair depth; with v4 on).")
    privacy: dict[str, Any] | None = Field(
        default=None, description="The run's own privacy settings (mode, llm_allowlist, domain_allowlist, "
                                  "redact_patterns): they may only tighten the tenant's.")


class StepAttemptOut(BaseModel):
    index: int
    attempt: int
    name: str
    queue: str
    status: str
    exit_code: int | None
    duration_seconds: float | None
    commit_before: str
    commit_after: str | None
    signal_type: str | None
    log_tail: str


class RunOut(BaseModel):
    run_id: str
    tenant: str
    plan: str
    status: RunStatus
    iteration: int
    retry_of: str | None
    workflow_id: str
    branch: str
    base_commit: str
    head_commit: str
    failed_step: str | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    web_ui_url: str | None = None


class RiskSignalOut(BaseModel):
    name: str
    detail: str
    severe: bool


class ConfidenceOut(BaseModel):
    """How far to trust a repaired run: its weakest repair's score, level, parts and risk signals."""

    score: float
    level: str
    step: str
    parts: dict[str, float]
    risks: list[RiskSignalOut]


class SlaOut(BaseModel):
    """A run's SLA class, what it means, and how the run stands against its deadline."""

    sla_class: SlaClass
    priority: str
    time_budget_seconds: float
    model_tier: str
    repair_depth: int
    candidates: int
    source: str = Field(description="run (the API's or CLI's sla) or plan (its sla:).")
    deadline: datetime | None = Field(default=None, description="The run's start plus its time budget.")
    state: str = Field(description="ok, warning (past 80% of the time budget) or violated (past the deadline).")


class RunDetailOut(RunOut):
    steps: list[StepAttemptOut]
    gates: list[GateOut]
    waiting_on: list[str] = Field(default_factory=list, description=(
        "While the status is waiting_on_breaker: the circuit breakers it waits on (tenant/CLASS/dependency)."))
    confidence: ConfidenceOut | None = Field(default=None, description=(
        "For a run auto-fix repaired: confidence 0..1, level (high, medium, low), its parts and risk signals."))
    sla: SlaOut | None = Field(default=None, description="The run's SLA class (v4), or null for none.")


class RunAccepted(BaseModel):
    run_id: str
    workflow_id: str
    status: RunStatus
    iteration: int = 1
    retry_of: str | None = None


class LogsOut(BaseModel):
    run_id: str
    steps: list[StepAttemptOut]


# --- auto-fix -----------------------------------------------------------------------------------

class TimelineEntry(BaseModel):
    seq: int
    step: str
    signal_type: str | None
    confidence: float | None
    strategy: str
    outcome: str
    attempt: int
    backoff: float | None
    detail: str
    commit: str | None
    evidence: list[str]
    created_at: datetime


class RetryStateOut(BaseModel):
    attempt_counter: int
    per_step_attempts: dict[str, int]
    total_attempts: int
    last_backoff_seconds: float | None
    max_total_attempts: int
    max_per_step_attempts: int


class RepairAttemptOut(BaseModel):
    seq: int
    step: str
    signal_type: str
    fixer: str
    outcome: str
    reason: str
    files: list[str]
    diff: str
    commit_before: str
    commit_after: str | None
    model: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float


class AutofixOut(BaseModel):
    run_id: str
    status: RunStatus
    retry_state: RetryStateOut | None
    timeline: list[TimelineEntry]
    repair_attempts: list[RepairAttemptOut]


class PlanDeltaOut(BaseModel):
    id: str
    kind: str
    step: str
    reason: str
    command: str | None
    new_step: dict[str, Any] | None
    triggered_by: str
    original_plan_id: str
    new_plan_id: str
    created_at: datetime


# --- audit --------------------------------------------------------------------------------------

class AuditEventOut(BaseModel):
    id: str
    event: str = Field(description="``autofix.classified``, ``autofix.retry``, ``approval.granted``...")
    actor: str = Field(description="Who did it: a user for decisions, ``metabuilder`` for the orchestrator.")
    run_id: str | None
    data: dict[str, Any]
    created_at: datetime
    target: str | None = Field(default=None, description="What changed: ``run:<id>``, ``tenant:<id>/autofix``...")
    request_id: str | None = Field(default=None, description="The request (``X-Request-ID``) or CLI call that did it.")
    before: Any = None
    after: Any = None


# --- approvals ----------------------------------------------------------------------------------

class ProposalOut(BaseModel):
    seq: int = Field(description="The proposal's repair attempt (GET /runs/{id}/autofix lists it).")
    fixer: str
    diff: str = Field(description="The unified diff approving applies.")
    base_commit: str
    files: list[str]
    high_risk: bool = Field(description="It would weaken a protected check; approving needs a reason.")
    findings: list[str]


class GateOut(BaseModel):
    gate_id: str
    run_id: str
    step: str
    kind: GateKind
    action: str = Field(description="What approving does: run_step, rerun, override or apply_patch.")
    status: GateStatus
    reason: str
    signal_type: str | None
    evidence: list[str]
    deciders: list[str]
    on_expiry: str
    opened_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    proposal: ProposalOut | None = None


class DecisionIn(Strict):
    reason: str = Field(default="", max_length=2000,
                        description="Why; required to reject, and to accept a security or policy finding.")


# --- classification -----------------------------------------------------------------------------

class ClassifyIn(Strict):
    step_name: str = Field(default="", max_length=200)
    logs: str = Field(max_length=5_000_000, description="The failed step's log text.")
    artifacts: list[str] = Field(default_factory=list, max_length=20,
                                 description="Further report texts (not paths), read after the log.")
    exit_code: int | None = Field(default=None, ge=-255, le=255)


class EvidenceOut(BaseModel):
    line: int | None
    text: str
    pattern: str


class ClassifyOut(BaseModel):
    signal_type: str
    confidence: float
    can_retry: bool
    requires_replan: bool
    requires_approval: bool
    retry_after_seconds: float | None
    fingerprint: str
    evidence: list[EvidenceOut]
    best_guess: str | None
    reason: str


# --- access -------------------------------------------------------------------------------------

class WhoAmI(BaseModel):
    tenant: str
    user: str
    role: Role


RunDetailOut.model_rebuild()
