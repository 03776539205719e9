"""Inputs and results that cross Temporal: one dataclass each, JSON-encodable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metabuilder.domain.approvals import GateProposal, GateView
from metabuilder.domain.plans import Plan, Step
from metabuilder.domain.policy import RetryPolicy, RetryState
from metabuilder.domain.protected import ProtectedCheck
from metabuilder.domain.repair import PlanDelta
from metabuilder.domain.runs import RunStatus, StepStatus
from metabuilder.domain.signals import FailureSignal

STEP_FAILED = "StepFailed"
"""``ApplicationError.type`` of a failed step of a run without auto-fix (and of older runs);
with auto-fix the type is the failure class (``TRANSIENT``, ``LINT``...)."""
RUN_FAILED = "BuildRunFailed"
"""``ApplicationError.type`` with which a run's workflow fails on purpose."""
STEP_CANNOT_START = "StepCannotStart"
"""``ApplicationError.type`` of a step whose command cannot be started at all (not retried)."""
STEP_OUTCOME_UNKNOWN = "StepOutcomeUnknown"
"""``ApplicationError.type`` of an ``idempotent: false`` step not run again after an attempt whose
end is unknown."""


@dataclass(frozen=True)
class WorkspaceRef:
    """Where a run's workspace lives: a branch of a repository every worker can reach."""

    repo_url: str
    branch: str
    base_commit: str
    source: str = ""
    """Where the workspace came from (the user's checkout), for display only."""


@dataclass(frozen=True)
class BuildRunInput:
    run_id: str
    plan: Plan
    workspace: WorkspaceRef
    tenant: str = "default"
    task_queue_prefix: str = "metabuilder"
    plan_source: str = ""
    """The plan file's text, recorded in the DB as submitted."""
    heartbeat_timeout_seconds: float = 10.0
    autofix: AutofixConfig | None = None
    """None (and runs started before auto-fix existed): stop at the first failure."""
    search_attributes: bool = True
    """Keep the run's status search attribute up to date (the server must define it)."""
    iteration: int = 1
    """1 for a new run; a retry of a finished run (``POST .../retry``) is the next iteration."""
    retry_of: str | None = None
    """The run this one retries, from its last good commit."""
    approval_gates: bool = False
    """Wait at approval gates (escalations, ``requires_approval`` steps). Runs started before gates
    existed lack it in their input and replay as they ran: escalated, ``requires_approval``
    ignored. An input flag, not ``workflow.patched``: a patch marker recorded right after a local
    activity that outlived its workflow task failed to replay (seen with temporalio 1.35)."""

    def settings(self) -> dict[str, Any]:
        """The run's auto-fix settings as stored and shown (``enabled`` false without auto-fix)."""
        if self.autofix is None:
            return {"enabled": False}
        p = self.autofix.policy
        return {"enabled": True, "max_total_attempts": p.max_total_attempts,
                "max_per_step_attempts": p.max_per_step_attempts, "backoff_cap_seconds": p.max_delay_seconds,
                "sources": dict(self.autofix.sources)}


@dataclass(frozen=True)
class AutofixConfig:
    """A run's effective auto-fix settings, resolved when it was submitted."""

    policy: RetryPolicy
    sources: dict[str, str] = field(default_factory=dict)
    """Setting -> the level it came from (platform, tenant, run)."""


@dataclass(frozen=True)
class StepInput:
    run_id: str
    tenant: str
    step_index: int
    step: Step
    repo_url: str
    branch: str
    commit: str
    """Commit the step starts from; the workflow carries it from step to step."""
    attempt_base: int = 0
    """Executions of this step earlier in the run: Temporal's attempt n is the step's attempt base+n."""
    policy: RetryPolicy | None = None
    """With auto-fix: how a classified failure is retried."""
    retry_budget: int = 0
    """Retries this execution may spend (the run's remaining budget for the step)."""


@dataclass(frozen=True)
class RetryRecord:
    """One failed attempt that was retried by Temporal, as the step activity recorded it."""

    attempt: int
    signal_type: str
    confidence: float
    fingerprint: str
    backoff_seconds: float
    retry_after: float | None = None
    evidence: str = ""


@dataclass(frozen=True)
class StepResult:
    exit_code: int
    duration_seconds: float
    commit: str
    """Commit after the step: a new commit on the run branch if it changed files, else the input commit."""
    changed_files: list[str] = field(default_factory=list)
    log_tail: str = ""
    log_path: str = ""
    timed_out: bool = False
    attempt: int = 1
    signal: FailureSignal | None = None
    """For a failed step: what the classifier made of its log."""
    retries: list[RetryRecord] = field(default_factory=list)
    """Earlier attempts of this execution that failed and were retried."""
    temporal_attempts: int = 1
    """Temporal's attempt number of this execution (retries + 1)."""


@dataclass
class StepView:
    """A step as the ``status`` query shows it."""

    name: str
    queue: str
    status: StepStatus = StepStatus.PENDING
    exit_code: int | None = None
    duration_seconds: float | None = None
    commit: str | None = None
    attempt: int = 0
    log_tail: str = ""
    signal_type: str | None = None
    flaky: bool = False
    skipped: bool = False


@dataclass
class AutofixEvent:
    """One entry of a run's auto-fix timeline (a row of ``auto_fix_runs``)."""

    seq: int
    at: str
    step: str
    strategy: str
    """``classify``, ``retry``, ``flake_check``, ``patch``, ``replan``, ``rollback`` or ``escalate``."""
    outcome: str
    signal_type: str | None = None
    confidence: float | None = None
    attempt: int = 0
    backoff_seconds: float | None = None
    detail: str = ""
    commit: str | None = None
    fingerprint: str | None = None
    evidence: list[str] = field(default_factory=list)
    audit: str | None = None
    """Audit event written with it (``autofix.retry``...)."""


@dataclass
class RunView:
    """The whole run as the ``status`` query and the run result show it."""

    run_id: str
    plan_name: str
    tenant: str
    status: RunStatus
    steps: list[StepView]
    base_commit: str
    head_commit: str
    branch: str
    failed_step: str | None = None
    error: str | None = None
    timeline: list[AutofixEvent] = field(default_factory=list)
    retry_state: RetryState | None = None
    plan_deltas: list[PlanDelta] = field(default_factory=list)
    gates: list[GateView] = field(default_factory=list)
    """Approval gates opened so far, pending or decided."""


@dataclass(frozen=True)
class RunRecord:
    """What the run's bookkeeping activity writes to the DB projection."""

    run_id: str
    tenant: str
    status: RunStatus
    plan: Plan
    plan_source: str
    workflow_id: str
    repo_url: str
    branch: str
    base_commit: str
    head_commit: str
    source: str = ""
    failed_step: str | None = None
    error: str | None = None
    iteration: int = 1
    retry_of: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AutofixRecord:
    """What the workflows write about auto-fix: timeline rows, audit events, the retry state, deltas."""

    run_id: str
    tenant: str
    events: list[AutofixEvent] = field(default_factory=list)
    retry_state: RetryState | None = None
    delta: PlanDelta | None = None
    delta_seq: int = 0
    plan_before: Plan | None = None
    plan_after: Plan | None = None


@dataclass(frozen=True)
class PatchProposal:
    """A patch a fixer proposes, as a unified diff against the commit it was made on."""

    fixer: str
    diff: str
    summary: str = ""
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    context: list[str] = field(default_factory=list)
    """What the fixer was shown: ``path (why)`` per file sent to the LLM."""


@dataclass(frozen=True)
class FixInput:
    run_id: str
    step_index: int
    step: Step
    repo_url: str
    branch: str
    commit: str
    fixer: str
    command: str | None = None
    signal: FailureSignal | None = None
    log_tail: str = ""
    label: str = ""
    """Distinguishes this proposal's log and records (``fix-1``...)."""


@dataclass(frozen=True)
class ApplyInput:
    run_id: str
    tenant: str
    step_index: int
    step_name: str
    repo_url: str
    branch: str
    commit: str
    proposal: PatchProposal
    write_scope: list[str]
    seq: int
    signal_type: str
    protected_checks: list[ProtectedCheck] = field(default_factory=list)
    """The plan's own protected checks (the bundled ones are the worker's)."""
    propose_only: bool = False
    """Check it and record it as proposed, but never apply it (a patch for an UNKNOWN failure)."""
    approved_by: str = ""
    """Who approved it at a gate: a high-risk patch may then be applied (a refused one never)."""


@dataclass(frozen=True)
class ApplyResult:
    applied: bool
    commit: str
    """The new commit on the run branch, or the input commit when not applied."""
    problems: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    verdict: str = ""
    """A :class:`domain.sandbox.Verdict` (empty in results recorded before verdicts existed)."""


@dataclass(frozen=True)
class RollbackInput:
    run_id: str
    repo_url: str
    branch: str
    last_good_commit: str
    commands: list[Step]
    """Rollback commands of completed steps, in the order they run (reverse of the plan)."""


@dataclass(frozen=True)
class RollbackResult:
    ok: bool
    ran: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class RepairInput:
    """What a ``RepairWorkflow`` child gets: the failure, the run's state and what it may spend."""

    run: BuildRunInput
    step_index: int
    step: Step
    plan: Plan
    commit: str
    """The commit the failed step started from: the last good commit."""
    signal: FailureSignal
    failed: StepResult
    retry_state: RetryState
    attempt_base: int
    seq: int
    """Next timeline sequence number."""
    applied_deltas: list[str] = field(default_factory=list)
    rollback_steps: list[Step] = field(default_factory=list)


@dataclass(frozen=True)
class RepairResult:
    outcome: str
    """``fixed``, ``flaky``, ``replan``, ``rolled_back`` or ``escalated``."""
    retry_state: RetryState
    attempt_base: int
    seq: int
    events: list[AutofixEvent] = field(default_factory=list)
    result: StepResult | None = None
    delta: PlanDelta | None = None
    reason: str = ""
    proposal: GateProposal | None = None
    """For ``escalated``: a patch the person may apply by approving the gate."""


@dataclass(frozen=True)
class GateRecord:
    """What the run's workflow writes when a gate opens and when it is decided."""

    tenant: str
    gate: GateView
