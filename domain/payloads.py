"""Inputs and results that cross Temporal: one dataclass each, JSON-encodable."""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.plans import Plan, Step
from domain.runs import RunStatus, StepStatus

STEP_FAILED = "StepFailed"
"""``ApplicationError.type`` of a step whose command exited non-zero or timed out."""
RUN_FAILED = "BuildRunFailed"
"""``ApplicationError.type`` with which a run's workflow fails on purpose."""


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
