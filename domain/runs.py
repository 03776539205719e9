"""Run and step states, identifiers and the names derived from them."""

from __future__ import annotations

import re
import uuid
from enum import StrEnum


class RunStatus(StrEnum):
    """Lifecycle of a build run, as stored, queried and shown in search attributes."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"
    """Auto-fix gave up and undid the run: branch reset to the last good commit, rollbacks run."""
    ESCALATED = "escalated"
    """Auto-fix gave up and handed the failure to a person (runs from before approval gates)."""
    PAUSED_AWAITING_APPROVAL = "paused_awaiting_approval"
    """Waiting at an approval gate for a person's decision (or the gate's expiry)."""
    WAITING_ON_BREAKER = "waiting_on_breaker"
    """A step waits for a circuit breaker on something it needs to close (``RunView.waiting_on``)."""

    @property
    def is_final(self) -> bool:
        return self not in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED_AWAITING_APPROVAL,
                            RunStatus.WAITING_ON_BREAKER)


class StepStatus(StrEnum):
    """Lifecycle of one step of a run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    """An optional step that failed and that a re-plan skipped."""
    OVERRIDDEN = "overridden"
    """A step that failed and whose failure a person accepted at an approval gate."""


class AttemptStatus(StrEnum):
    """How one attempt of a step ended, as its ``build_steps`` row records it."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """The command ran and exited non-zero (or timed out)."""
    CANCELLED = "cancelled"
    LOST = "lost"
    """Its worker died, or stopped reporting, with the command's end unknown."""
    ADOPTED = "adopted"
    """Took over the recorded result of an earlier attempt whose worker died after its command
    finished, instead of running the command again."""
    ERROR = "error"
    """Ended without a result of the command: it could not start, the checkout or push failed, or
    it was refused after an uncertain end of a step that is not idempotent."""


WORKFLOW_ID_PREFIX = "build-run-"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")


def new_run_id() -> str:
    return str(uuid.uuid4())


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if usable in workflow ids and git refs, else ``ValueError``."""
    if not _RUN_ID.match(run_id):
        raise ValueError(
            f"invalid run id {run_id!r}: 3 to 64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return run_id


def workflow_id(run_id: str) -> str:
    """Temporal workflow id of a run: one workflow per run id."""
    return WORKFLOW_ID_PREFIX + run_id


def web_ui_link(ui_url: str | None, namespace: str, run_id: str) -> str | None:
    """The run's workflow in the Temporal Web UI at ``ui_url`` (None without a UI)."""
    return f"{ui_url}/namespaces/{namespace}/workflows/{workflow_id(run_id)}" if ui_url else None


def run_id_from_workflow_id(wf_id: str) -> str | None:
    return wf_id[len(WORKFLOW_ID_PREFIX):] if wf_id.startswith(WORKFLOW_ID_PREFIX) else None


def run_branch(run_id: str) -> str:
    """Branch of the shared repository that holds a run's commits."""
    return f"metabuilder/runs/{run_id}"


def attempt_key(run_id: str, step_index: int, attempt: int) -> str:
    """The idempotency key of one step attempt, ``<run>/<step index>/<attempt>``: the attempt's DB
    row is upserted by it, its log, result file and commit ref are named from the same three parts,
    and the command sees it as ``METABUILDER_ATTEMPT_KEY`` (to make its own side effects idempotent).
    Attempt numbers go on across Temporal retries and re-executions, so no two attempts share one."""
    return f"{run_id}/{step_index:03d}/{attempt}"


def attempt_ref(run_id: str, step_index: int, attempt: int) -> str:
    """Ref that keeps the commit of one step attempt reachable (and inspectable) forever."""
    return f"refs/metabuilder/{run_id}/step-{step_index:03d}/attempt-{attempt}"


WORKFLOW_QUEUE = "workflow"
"""Pool name of the queue that carries workflow tasks (the other pools carry steps)."""


def task_queue(prefix: str, pool: str) -> str:
    """Temporal task queue of a pool (``cpu``, ``io``, ``llm`` or ``workflow``)."""
    return f"{prefix}-{pool}"
