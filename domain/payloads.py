"""Inputs and results that cross Temporal: one dataclass each, JSON-encodable.

Histories keep the JSON of every input and result, and a run in flight when a new version is
deployed replays them. Temporal's converter ignores keys a dataclass does not have, so a smaller
type whose field names are a subset of an older, bigger one still reads the older JSON: that is
how :class:`RunContext`, :class:`LadderRules` and :class:`FailedStep` read the repair inputs that
carried a whole ``BuildRunInput``, ``Plan`` and ``StepResult``. A field added later has a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from metabuilder.domain.approvals import GateProposal, GateView
from metabuilder.domain.outcomes import EventOutcome, Fixer, RepairOutcome, Strategy
from metabuilder.domain.plans import Plan, Queue, RepairOptions, Step
from metabuilder.domain.policy import AttemptBudget, AutofixPolicy
from metabuilder.domain.pools import Scheduling
from metabuilder.domain.protected import ProtectedCheck
from metabuilder.domain.repair import PlanDelta
from metabuilder.domain.runs import RunStatus, StepStatus
from metabuilder.domain.sandbox import Verdict
from metabuilder.domain.signals import FailureSignal
from metabuilder.domain.sla import RunSla
from metabuilder.domain.taxonomy import FailureType

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
BREAKER_OPEN = "BreakerOpen"
"""A step held by an open circuit breaker on something it needs; details: :class:`BreakerWait`."""


@dataclass(frozen=True)
class WorkspaceRef:
    """Where a run's workspace lives: a branch of a repository every worker can reach."""

    repo_url: str
    branch: str
    base_commit: str
    source: str = ""
    """Where the workspace came from (the user's checkout), for display only."""
    source_branch: str = ""
    """The branch checked out there ('' for a detached HEAD): the target of ``promote``."""


@dataclass(frozen=True)
class RunRef:
    """The run an activity works for, and where its workspace lives: a branch every worker can reach."""

    run_id: str
    tenant: str
    repo_url: str
    branch: str


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
    scheduling: Scheduling | None = None
    """v4 priority and fairness of the run's steps and repair children; None (v4 off, and runs
    started before v4) schedules them without a Temporal ``Priority``, as before."""
    verify_approvers: bool = False
    """Accept a gate decision only from a user who holds a deciding role in the run's tenant when
    the decision arrives (asked by the ``approver_role`` local activity). Older inputs lack it and
    replay as they ran: any decision that passed the validator was taken."""
    sla: RunSla | None = None
    """The run's SLA class (``domain.sla``): its deadline, model tier, repair depth and candidates.
    None (no class named, v4 off, and runs started before SLA classes): no deadline, the whole ladder."""

    def context(self) -> RunContext:
        """What the run's steps and its repair children need of it (not the plan, nor its text)."""
        return RunContext(run_id=self.run_id, workspace=self.workspace, tenant=self.tenant,
                          task_queue_prefix=self.task_queue_prefix,
                          heartbeat_timeout_seconds=self.heartbeat_timeout_seconds, autofix=self.autofix,
                          scheduling=self.scheduling)

    def settings(self) -> dict[str, Any]:
        """The run's auto-fix settings as stored and shown (``enabled`` false without auto-fix)."""
        sla: dict[str, Any] = {"sla": self.sla.as_dict()} if self.sla else {}
        if self.scheduling is not None and self.scheduling.override:  # kept for the run's retries
            sla["priority"] = {"class": self.scheduling.priority.value, "source": "run"}
        if self.autofix is None:
            return {"enabled": False, **sla}
        p = self.autofix.policy
        return {**sla, "enabled": True, "max_total_attempts": p.max_total_attempts,
                "max_per_step_attempts": p.max_per_step_attempts, "backoff_cap_seconds": p.max_delay_seconds,
                "sources": dict(self.autofix.sources)}


@dataclass(frozen=True)
class AutofixConfig:
    """A run's effective auto-fix settings, resolved when it was submitted."""

    policy: AutofixPolicy
    sources: dict[str, str] = field(default_factory=dict)
    """Setting -> the level it came from (platform, tenant, run)."""


@dataclass(frozen=True)
class RunContext:
    """A run as its steps and its repair children see it: who it is, where its workspace lives,
    where its steps are scheduled, and its auto-fix policy. The field names are
    :class:`BuildRunInput`'s, so the whole input that older repair children got reads as one."""

    run_id: str
    workspace: WorkspaceRef
    tenant: str = "default"
    task_queue_prefix: str = "metabuilder"
    heartbeat_timeout_seconds: float = 10.0
    autofix: AutofixConfig | None = None
    scheduling: Scheduling | None = None
    """v4 priority and fairness (None: no Temporal ``Priority``, as before v4)."""

    @property
    def ref(self) -> RunRef:
        return RunRef(run_id=self.run_id, tenant=self.tenant, repo_url=self.workspace.repo_url,
                      branch=self.workspace.branch)


@dataclass(frozen=True)
class StepInput:
    run: RunRef
    step_index: int
    step: Step
    commit: str
    """Commit the step starts from; the workflow carries it from step to step."""
    attempt_base: int = 0
    """Executions of this step earlier in the run: Temporal's attempt n is the step's attempt base+n."""
    policy: AutofixPolicy | None = None
    """With auto-fix: how a classified failure is retried (the retry rung, inside the activity)."""
    retry_budget: int = 0
    """Retries this execution may spend (the run's remaining budget for the step)."""


@dataclass(frozen=True)
class RetryRecord:
    """One failed attempt that was retried by Temporal, as the step activity recorded it."""

    attempt: int
    signal_type: FailureType
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
    queue: Queue
    status: StepStatus = StepStatus.PENDING
    exit_code: int | None = None
    duration_seconds: float | None = None
    commit: str | None = None
    attempt: int = 0
    log_tail: str = ""
    signal_type: FailureType | None = None
    flaky: bool = False
    skipped: bool = False


@dataclass
class AutofixEvent:
    """One entry of a run's auto-fix timeline (a row of ``auto_fix_runs``)."""

    seq: int
    at: datetime
    step: str
    strategy: Strategy
    outcome: EventOutcome
    signal_type: FailureType | None = None
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
    retry_state: AttemptBudget | None = None
    """The run's attempt budgets and spending (None without auto-fix)."""
    plan_deltas: list[PlanDelta] = field(default_factory=list)
    gates: list[GateView] = field(default_factory=list)
    """Approval gates opened so far, pending or decided."""
    waiting_on: str | None = None
    """While the status is ``waiting_on_breaker``: the breaker (``tenant/CLASS/dependency``)."""
    sla: RunSla | None = None
    """The run's SLA class and what it means (None: none)."""
    sla_deadline: datetime | None = None
    """When the run's time budget ends (its start plus the class's ``time_budget_seconds``)."""
    sla_state: str = "ok"
    """``ok``, ``warning`` (past 80% of the time budget) or ``violated`` (past the deadline)."""


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
    source_branch: str = ""


@dataclass(frozen=True)
class AutofixRecord:
    """What the workflows write about auto-fix: timeline rows, audit events, the retry state, deltas."""

    run_id: str
    tenant: str
    events: list[AutofixEvent] = field(default_factory=list)
    retry_state: AttemptBudget | None = None
    delta: PlanDelta | None = None
    delta_seq: int = 0
    plan_before: Plan | None = None
    plan_after: Plan | None = None


@dataclass(frozen=True)
class PatchProposal:
    """A patch a fixer proposes, as a unified diff against the commit it was made on."""

    fixer: Fixer
    diff: str
    summary: str = ""
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    context: list[str] = field(default_factory=list)
    """What the fixer was shown: ``path (why)`` per file sent to the LLM."""
    model_reason: str = ""
    """Why this model was chosen (the run's SLA tier and the money left; ``domain.models_catalogue``)."""


@dataclass(frozen=True)
class FixInput:
    run: RunRef
    step_index: int
    step: Step
    commit: str
    fixer: Fixer
    command: str | None = None
    signal: FailureSignal | None = None
    log_tail: str = ""
    label: str = ""
    """Distinguishes this proposal's log and records (``fix-1``...)."""
    model_tier: str | None = None
    """The strongest model tier the run's SLA class allows (None: no SLA class, the platform's model)."""
    candidate: int = 0
    """Best of N: which of the candidates this is (0 for a single proposal)."""
    reservation: str = ""
    """The budget reservation the LLM call's cost settles (``reserve_budget``); empty: none."""
    model: str = ""
    """The catalogue model the reservation was priced at (an SLA tier's choice); empty: chosen by the fixer."""
    model_reason: str = ""
    """Why that model (the money left, a step down)."""


@dataclass(frozen=True)
class ReserveInput:
    """Reserve the worst case of an LLM call against the run's and its tenant's budgets."""

    run_id: str
    tenant: str
    reservation: str
    """Its idempotency key: ``<run>/<repair label>``."""
    step: str
    prompt_chars: int
    """The characters of the log tail and command the prompt carries (the reservation adds the
    most the context files may add)."""
    model_tier: str | None = None
    """The run's SLA tier: the reservation chooses the catalogue model and is priced at it."""


@dataclass(frozen=True)
class ReserveResult:
    reserved: bool
    """False: a budget is short (``shortfall`` says which); the call must not be made."""
    reservation: str = ""
    """The reservation to settle; empty when nothing needed reserving (no LLM, no price)."""
    model: str = ""
    cost_usd: float = 0.0
    tokens: int = 0
    shortfall: str = ""
    dimension: str = ""
    action: str = ""
    """``domain.budgets.ShortAction`` when short: what the run does instead."""
    model_reason: str = ""
    """With an SLA tier: why ``model`` was chosen (empty: the platform's model)."""


@dataclass(frozen=True)
class ApplyInput:
    run: RunRef
    step_index: int
    step_name: str
    commit: str
    proposal: PatchProposal
    write_scope: list[str]
    seq: int
    signal_type: FailureType
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
    verdict: Verdict | None = None
    """None in results recorded before verdicts existed (the key is missing there)."""


@dataclass(frozen=True)
class RollbackInput:
    run: RunRef
    last_good_commit: str
    commands: list[Step]
    """Rollback commands of completed steps, in the order they run (reverse of the plan)."""


@dataclass(frozen=True)
class RollbackResult:
    ok: bool
    ran: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class LadderRules:
    """What the repair ladder needs of the plan: where patches may write, the checks they may not
    weaken, and what a re-plan may add. The field names are :class:`Plan`'s."""

    write_scope: list[str] = field(default_factory=list)
    protected_checks: list[ProtectedCheck] = field(default_factory=list)
    repair: RepairOptions = field(default_factory=RepairOptions)

    @classmethod
    def of(cls, plan: Plan) -> LadderRules:
        return cls(write_scope=list(plan.write_scope), protected_checks=list(plan.protected_checks),
                   repair=plan.repair)


@dataclass(frozen=True)
class FailedStep:
    """What the ladder reads of the failed execution (the field names are :class:`StepResult`'s)."""

    signal: FailureSignal
    log_tail: str = ""


@dataclass(frozen=True)
class RepairInput:
    """What a ``RepairWorkflow`` child gets: the failure, the run's budget and what the ladder needs."""

    run: RunContext
    step_index: int
    step: Step
    commit: str
    """The commit the failed step started from: the last good commit."""
    failed: FailedStep
    plan: LadderRules
    retry_state: AttemptBudget
    attempt_base: int
    seq: int
    """Next timeline sequence number."""
    applied_deltas: list[str] = field(default_factory=list)
    rollback_steps: list[Step] = field(default_factory=list)
    sla: RunSla | None = None
    """The run's SLA class: the ladder's depth, the model tier, best of N (None: the whole ladder)."""

    @property
    def signal(self) -> FailureSignal:
        return self.failed.signal


@dataclass(frozen=True)
class RepairResult:
    outcome: RepairOutcome
    retry_state: AttemptBudget
    attempt_base: int
    seq: int
    events: list[AutofixEvent] = field(default_factory=list)
    result: StepResult | None = None
    """For ``fixed`` and ``flaky``: the execution that passed."""
    delta: PlanDelta | None = None
    """For ``replan``: the change the parent makes to its plan."""
    reason: str = ""
    proposal: GateProposal | None = None
    """For ``escalated``: a patch the person may apply by approving the gate."""


@dataclass(frozen=True)
class GateRecord:
    """What the run's workflow writes when a gate opens and when it is decided."""

    tenant: str
    gate: GateView


FIRST_SHAPE_RUN_KEYS = ("run_id", "tenant", "repo_url", "branch")
"""What activity inputs of the first shape carried at their top level instead of one ``run``."""


def nest_run_ref(data: dict[str, Any], *, tenant: str = "default") -> dict[str, Any]:
    """An activity input of the first shape (``run_id``, ``tenant``, ``repo_url``, ``branch`` at the
    top; ``FixInput`` and ``RollbackInput`` had no tenant) in today's, with one ``run``. For an
    activity scheduled by the previous version and retried on this one."""
    if "run" in data or not {"run_id", "repo_url", "branch"} <= data.keys():
        raise TypeError(f"not an activity input of the first shape (keys: {', '.join(sorted(data))})")
    rest = {k: v for k, v in data.items() if k not in FIRST_SHAPE_RUN_KEYS}
    run = {"run_id": data["run_id"], "tenant": data.get("tenant", tenant), "repo_url": data["repo_url"],
           "branch": data["branch"]}
    return {"run": run, **rest}


@dataclass(frozen=True)
class BreakerWait:
    """What ``run_step`` reports when a circuit breaker holds the step (``BREAKER_OPEN`` details)."""

    breaker: str
    """``tenant/CLASS/dependency``."""
    until: float
    """When to try again (epoch seconds): the breaker's next probe, or the next look while another run probes."""
    max_wait_seconds: float
    """How long the breaker's policy lets a run wait before a person decides."""
    attempt: int
    """The last attempt number this execution of the step used (0: it was held before its first)."""
    result: StepResult | None = None
    """The failed attempt's result, when the failure itself opened (or met) the breaker."""


@dataclass(frozen=True)
class SlaEvent:
    """One SLA entry of a run's timeline (``mb_v4_run_sla_events``): a deadline warning or
    violation, a model choice, the candidates of a best-of-N patch, a rung the depth skipped."""

    kind: str
    """``sla.warning``, ``sla.violated``, ``sla.depth``, ``model.chosen``, ``patch.candidates``."""
    key: str
    """Unique within the run and kind (a retried write records nothing twice)."""
    at: datetime
    summary: str
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SlaRecord:
    run_id: str
    tenant: str
    events: list[SlaEvent] = field(default_factory=list)


@dataclass(frozen=True)
class VerifyInput:
    """Best of N: re-run the failed step with one candidate patch, in a checkout of its own."""

    run: RunRef
    step_index: int
    step: Step
    commit: str
    proposal: PatchProposal
    candidate: int
    write_scope: list[str] = field(default_factory=list)
    protected_checks: list[ProtectedCheck] = field(default_factory=list)
    signal_type: str = ""


@dataclass(frozen=True)
class VerifyResult:
    candidate: int
    passed: bool
    changed_lines: int = 0
    exit_code: int | None = None
    reason: str = ""
