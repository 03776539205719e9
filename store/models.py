"""SQLAlchemy 2.0 models. Table names follow the seeds (``scaffold_plans``, ``build_runs``...)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScaffoldPlan(Base):
    """A plan as submitted; identical plan text of a tenant is stored once."""

    __tablename__ = "scaffold_plans"
    __table_args__ = (UniqueConstraint("tenant_id", "content_hash", name="uq_scaffold_plans_tenant_hash"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BuildRun(Base):
    __tablename__ = "build_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("scaffold_plans.id"), index=True)
    workflow_id: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    repo_url: Mapped[str] = mapped_column(Text)
    branch: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(Text, default="")
    source_branch: Mapped[str] = mapped_column(String(200), default="", server_default="")
    """The branch checked out in the user's workspace when the run started ('' for a detached
    HEAD or a retry of a run from before it was recorded): where ``promote`` moves the run's head."""
    base_commit: Mapped[str] = mapped_column(String(64))
    head_commit: Mapped[str] = mapped_column(String(64))
    failed_step: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    iteration: Mapped[int] = mapped_column(Integer, default=1)
    """1 for a new run; a retry of a run (``POST .../retry``) is the next iteration."""
    retry_of: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The run's effective auto-fix settings and where each came from."""
    next_overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Run-level overrides set through the API after the start: used by the run's retries."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    plan: Mapped[ScaffoldPlan] = relationship(lazy="joined")


class BuildStep(Base):
    """One attempt of one step; a retried activity upserts the same row."""

    __tablename__ = "build_steps"
    __table_args__ = (UniqueConstraint("run_id", "step_index", "attempt", name="uq_build_steps_attempt"),
                      UniqueConstraint("idempotency_key", name="uq_build_steps_idempotency_key"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("build_runs.id", ondelete="CASCADE"), index=True)
    step_index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(16))
    command: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    commit_before: Mapped[str] = mapped_column(String(64))
    commit_after: Mapped[str | None] = mapped_column(String(64), nullable=True)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    log_path: Mapped[str] = mapped_column(Text, default="")
    worker: Mapped[str] = mapped_column(String(200), default="")
    signal_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """Class of a failed attempt, from the classifier."""
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    backoff_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Delay before the retry that followed this attempt (None: not retried by Temporal)."""
    retry_after_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    evidence: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """``<run>/<step index>/<attempt>`` (``domain.runs.attempt_key``); None on rows of older versions."""


class AutoFixRun(Base):
    """One entry of a run's auto-fix timeline (seed 001 ``auto_fix_runs``)."""

    __tablename__ = "auto_fix_runs"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_auto_fix_runs_seq"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("build_runs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    step_name: Mapped[str] = mapped_column(String(64))
    signal_type: Mapped[str | None] = mapped_column(String(50), nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    strategy: Mapped[str] = mapped_column(String(50))
    outcome: Mapped[str] = mapped_column(String(50))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    backoff: Mapped[float | None] = mapped_column(Float, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    evidence: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class RetryStateRow(Base):
    """A run's retry budgets and spending (seed 001 ``retry_states``)."""

    __tablename__ = "retry_states"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("build_runs.id", ondelete="CASCADE"), unique=True)
    attempt_counter: Mapped[int] = mapped_column(Integer, default=0)
    per_step_attempts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    total_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_backoff_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_total_attempts: Mapped[int] = mapped_column(Integer, default=6)
    max_per_step_attempts: Mapped[int] = mapped_column(Integer, default=3)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class RepairAttempt(Base):
    """A patch proposed for a failed step: applied (a commit on the run branch) or rejected."""

    __tablename__ = "repair_attempts"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_repair_attempts_seq"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("build_runs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int] = mapped_column(Integer)
    step_name: Mapped[str] = mapped_column(String(64))
    signal_type: Mapped[str] = mapped_column(String(50))
    fixer: Mapped[str] = mapped_column(String(50))
    outcome: Mapped[str] = mapped_column(String(50))
    """``applied`` or ``rejected``."""
    reason: Mapped[str] = mapped_column(Text, default="")
    diff: Mapped[str] = mapped_column(Text, default="")
    files: Mapped[list[str]] = mapped_column(JSON, default=list)
    commit_before: Mapped[str] = mapped_column(String(64))
    commit_after: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PlanDeltaRow(Base):
    """A re-plan (seed 001 ``plan_deltas``): the plan before and after, and what triggered it."""

    __tablename__ = "plan_deltas"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    original_plan_id: Mapped[str] = mapped_column(ForeignKey("scaffold_plans.id"))
    new_plan_id: Mapped[str] = mapped_column(ForeignKey("scaffold_plans.id"))
    run_id: Mapped[str] = mapped_column(ForeignKey("build_runs.id", ondelete="CASCADE"), index=True)
    delta_data: Mapped[dict[str, Any]] = mapped_column(JSON)
    triggered_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    """Something a compliance review wants to see (``autofix.retry``, ``approval.granted``...)."""

    __tablename__ = "audit_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    run_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(200), default="metabuilder")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """What was changed: ``run:<id>``, ``tenant:<id>/settings``, ``token:<id>``..."""
    request_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    """The API request (``X-Request-ID``) or CLI invocation that made the change."""
    before: Mapped[Any] = mapped_column(JSON, nullable=True)
    after: Mapped[Any] = mapped_column(JSON, nullable=True)


class TenantGovernance(Base):
    """A tenant's privacy mode, allowlists and redaction patterns (``domain.privacy``)."""

    __tablename__ = "mb_v4_tenant_governance"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    privacy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TenantSettings(Base):
    """A tenant's overrides of the platform's auto-fix settings (the middle level of precedence)."""

    __tablename__ = "tenant_settings"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    autofix: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ApprovalGate(Base):
    """A point where a run waits for a person: what failed, the proposed action, the decision."""

    __tablename__ = "approval_gates"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("build_runs.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    step_name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    signal_type: Mapped[str | None] = mapped_column(String(50), nullable=True)
    evidence: Mapped[list[str]] = mapped_column(JSON, default=list)
    deciders: Mapped[list[str]] = mapped_column(JSON, default=list)
    on_expiry: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    proposal: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The patch approving applies (``GateProposal``: fixer, diff, files, high_risk, findings)."""


class User(Base):
    """A person (or a service) of a tenant, with one role: viewer, operator, admin or owner."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_users_tenant_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """An API token of a user; only its SHA-256 is kept (the token is shown once, at creation)."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    """The token's first characters, to tell tokens apart in listings."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# --- Classifier knowledge of a tenant (issue 21) ------------------------------------------------


class TenantPattern(Base):
    """A knowledge-base entry of a tenant's own, added to the bundled ones in its runs."""

    __tablename__ = "tenant_patterns"
    __table_args__ = (UniqueConstraint("tenant_id", "entry_id", name="uq_tenant_patterns_entry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    entry_id: Mapped[str] = mapped_column(String(80))
    failure_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    pattern: Mapped[str] = mapped_column(Text)
    weight: Mapped[float] = mapped_column(Float)
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16), default="cause")
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Correction(Base):
    """A person's "this failure was X": a labelled example, with the pattern proposed from it."""

    __tablename__ = "classification_corrections"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    step_name: Mapped[str] = mapped_column(String(64), default="")
    predicted: Mapped[str] = mapped_column(String(32))
    corrected: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text, default="")
    log_window: Mapped[str] = mapped_column(Text)
    """The failure window of the step's log (its last lines up to the failure point)."""
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    proposed_pattern: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    """``open``, or ``accepted`` once its proposed pattern became a tenant pattern."""
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CircuitBreakerState(Base):
    """One circuit breaker (seed 002's ``mb_v4_circuit_breaker_state``): the durable state that
    ``domain.breakers`` computes, changed only by compare-and-set on ``version``."""

    __tablename__ = "mb_v4_circuit_breaker_state"
    __table_args__ = (UniqueConstraint("tenant_id", "failure_class", "dependency", name="uq_mb_v4_breaker_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    failure_class: Mapped[str] = mapped_column(String(32))
    dependency: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="closed")
    failures: Mapped[list[float]] = mapped_column(JSON, default=list)
    """Epoch seconds of the failures in the current window."""
    opened_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cooldown_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    next_probe_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    probe_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    probe_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    trips: Mapped[int] = mapped_column(Integer, default=0)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    last_reason: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CircuitBreakerWait(Base):
    """A run waiting on an open breaker, for the breakers list and the run page."""

    __tablename__ = "mb_v4_circuit_breaker_waits"
    __table_args__ = (UniqueConstraint("breaker_id", "run_id", name="uq_mb_v4_breaker_wait"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    breaker_id: Mapped[int] = mapped_column(ForeignKey("mb_v4_circuit_breaker_state.id", ondelete="CASCADE"),
                                            index=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    step_name: Mapped[str] = mapped_column(String(64))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BudgetLedgerRow(Base):
    """One dimension of a run's or a tenant's budget (seed 002's ``mb_v4_run_budget``): its
    limit, what work in flight has reserved, and what was spent (``domain.budgets.Ledger``)."""

    __tablename__ = "mb_v4_run_budget"
    __table_args__ = (UniqueConstraint("scope", "scope_id", "period", "dimension", name="uq_mb_v4_run_budget_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(8))
    """``run`` or ``tenant``."""
    scope_id: Mapped[str] = mapped_column(String(64), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    period: Mapped[str] = mapped_column(String(16), default="")
    """Empty for a run; ``2026-12-02`` (a day) or ``2026-12`` (a month) for a tenant."""
    dimension: Mapped[str] = mapped_column(String(16))
    limit_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    """None: metered only."""
    reserved: Mapped[float] = mapped_column(Float, default=0.0)
    spent: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BudgetReservationRow(Base):
    """A reservation against budget ledgers, keyed by the caller's idempotency key, until settled."""

    __tablename__ = "mb_v4_budget_reservations"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    ledger_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    amounts: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    actual: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="reserved")
    """``reserved``, then ``settled``."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CostRecordRow(Base):
    """What one LLM call or one step attempt used and cost (the metering records that the
    ledgers' ``spent`` sums), keyed by the caller's idempotency key."""

    __tablename__ = "mb_v4_cost_records"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    """``llm`` or ``step``."""
    step_name: Mapped[str] = mapped_column(String(200), default="")
    pool: Mapped[str] = mapped_column(String(16), default="")
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    wall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    reservation_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BudgetSettingsRow(Base):
    """A tenant's budgets (``scope`` tenant) or a run's (``scope`` run), as set through the API or CLI."""

    __tablename__ = "mb_v4_budget_settings"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReplayBlob(Base):
    """A blob of a replay bundle (a log, a prompt, an answer, a diff), stored once by its sha256."""

    __tablename__ = "mb_v4_replay_blob"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReplayEntry(Base):
    """One entry of a run's replay bundle (seed 002 ``mb_v4_replay_bundle``): a step's tool I/O
    with its classification and the decision taken, an LLM exchange, or a patch's review. Its
    blobs are named by sha256 in ``blobs``; ``key`` makes the write idempotent per run."""

    __tablename__ = "mb_v4_replay_bundle"
    __table_args__ = (UniqueConstraint("run_id", "key", name="uq_mb_v4_replay_bundle_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    step_name: Mapped[str] = mapped_column(String(64))
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    blobs: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdempotencyKey(Base):
    """A run submission's ``Idempotency-Key``: the body it came with and the run it started."""

    __tablename__ = "mb_v4_idempotency_key"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the request body's canonical JSON."""
    run_id: Mapped[str] = mapped_column(String(64))
    """The run the submission starts (chosen before it is started, so a retry starts no other)."""
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The first answer, repeated to a retry of the same request (None while it is being started)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class V4TenantSettings(Base):
    """A tenant's overrides of the platform's v4 settings (``{"enabled": false}``)."""

    __tablename__ = "mb_v4_tenant_settings"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ChaosScope(Base):
    """Where chaos is on (``metabuilder chaos enable``): a tenant's runs (``run_id`` "") or one run.
    Columns left NULL take the worker's ``META_V4_CHAOS_*`` settings."""

    __tablename__ = "mb_v4_chaos_scope"
    __table_args__ = (UniqueConstraint("tenant_id", "run_id", name="uq_mb_v4_chaos_scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str] = mapped_column(String(64), default="")
    probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    weights: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    steps: Mapped[list[str]] = mapped_column(JSON, default=list)
    max_attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChaosEvent(Base):
    """One chaos injection (seed 002's ``mb_v4_chaos_event``) and how the step came out of it."""

    __tablename__ = "mb_v4_chaos_event"
    __table_args__ = (UniqueConstraint("run_id", "step_index", "attempt", name="uq_mb_v4_chaos_event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    step_index: Mapped[int] = mapped_column(Integer)
    step_name: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    fault_type: Mapped[str] = mapped_column(String(32))
    expected_class: Mapped[str | None] = mapped_column(String(32), nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    roll: Mapped[float] = mapped_column(Float, default=0.0)
    worker: Mapped[str] = mapped_column(String(200), default="")
    injected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="pending")
    """``pending``, ``recovered`` or ``unrecovered`` (``domain.chaos.EventOutcome``)."""
    recovered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    recovery_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    recovered_attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    """How it settled: the attempt that passed, or the status the run ended with."""


# Workers, leases and step logs (v4, issue 16 part B): store/hosts.py reads and writes them.
class WorkerRow(Base):
    """A worker process as it reports itself: written at start, refreshed while it runs."""

    __tablename__ = "mb_v4_worker"

    identity: Mapped[str] = mapped_column(String(255), primary_key=True)
    """Its Temporal identity (``pid@host``), as Temporal lists it among a task queue's pollers."""
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    task_queue_prefix: Mapped[str] = mapped_column(String(64))
    pools: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Pool -> slots."""
    version: Mapped[str] = mapped_column(String(64))
    grace_seconds: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class QueueLease(Base):
    """Which worker holds which step attempt (seed 002's ``mb_v4_queue_lease``): a projection for
    people; Temporal's heartbeat timeout is the authority."""

    __tablename__ = "mb_v4_queue_lease"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_name: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(16))
    """``held`` while the attempt runs; ``lost`` once a later attempt found its worker gone."""
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """Last heartbeat + the step's heartbeat timeout: past it, Temporal gives the step to another worker."""


class StepLogChunk(Base):
    """A piece of a step attempt's log, zlib-compressed, in order (``seq``)."""

    __tablename__ = "mb_v4_step_log_chunk"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    """Where its bytes start in the log."""
    raw_bytes: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    final: Mapped[bool] = mapped_column(Boolean)
    """The last chunk of the attempt: its log is complete (or was truncated)."""
    truncated: Mapped[bool] = mapped_column(Boolean)
    """This chunk is the truncation marker: the cap was reached, later output is not stored."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RunSlaEventRow(Base):
    """One SLA entry of a run's timeline (``mb_v4_run_sla_events``): a deadline warning or
    violation, a model choice, a best-of-N patch's candidates, a rung the repair depth skipped."""

    __tablename__ = "mb_v4_run_sla_events"
    __table_args__ = (UniqueConstraint("run_id", "kind", "key", name="uq_mb_v4_run_sla_events_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(128))
    step_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CanarySample(Base):
    """One finished run on one Worker Deployment version (seed 002's ``mb_v4_canary_sample``):
    what the canary compares between versions (``domain.canary``)."""

    __tablename__ = "mb_v4_canary_sample"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    deployment: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(200), index=True)
    """The build id the run was pinned to (the worker that ran its workflow)."""
    outcome: Mapped[str] = mapped_column(String(32))
    duration_seconds: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer)
    repairs: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    """What its LLM calls cost, when any was priced (None: not known)."""
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Webhook(Base):
    """A tenant's webhook: where its notifications go, signed with its secret (``domain.notifications``)."""

    __tablename__ = "mb_v4_webhooks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(16))
    """``json`` (the generic payload) or ``slack`` (a Slack-compatible message)."""
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PromotionApproval(Base):
    """An admin's approval of a risky run's promotion (``service.promote``): the run is promoted
    only by an admin other than one who approved it, so two people stand behind it."""

    __tablename__ = "mb_v4_promotion_approvals"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    approver: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    risks: Mapped[list[str]] = mapped_column(JSON, default=list)
    """What was approved: the risks the run had (``service.promote.needs_approval``)."""
    approved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One notification to one webhook, and how its delivery went (the delivery log)."""

    __tablename__ = "mb_v4_webhook_deliveries"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    """Stable: the webhook and the fact notified (a gate, a run's end), so a fact is sent once."""
    webhook_id: Mapped[str] = mapped_column(String(64), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    """``pending``, ``retrying``, ``delivered``, ``failed`` (attempts spent) or ``refused`` (off the allowlist)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RunPrivacy(Base):
    """A run's own privacy settings: they may only tighten its tenant's (``domain.privacy.tighten``)."""

    __tablename__ = "mb_v4_run_privacy"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    privacy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
