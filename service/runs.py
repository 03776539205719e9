"""Submit a plan as a build run, and read a run's state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.git import publish, snapshot
from domain.payloads import BuildRunInput, RunView, WorkspaceRef
from domain.plans import Plan, parse_plan
from domain.runs import WORKFLOW_QUEUE, RunStatus, new_run_id, run_branch, task_queue, validate_run_id, workflow_id
from workflows import search_attributes as sa
from workflows.build_run import BuildRunWorkflow


class RunExistsError(ValueError):
    """A run with that id was started before; run ids are never reused."""


@dataclass(frozen=True)
class SubmitOptions:
    shared_repo: str
    task_queue_prefix: str = "metabuilder"
    tenant: str = "default"
    heartbeat_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class Submitted:
    run_id: str
    plan: Plan
    workspace: WorkspaceRef
    handle: WorkflowHandle[BuildRunWorkflow, RunView]


async def submit(client: Client, plan_text: str, plan_source: str, workspace: Path, opts: SubmitOptions,
                 *, run_id: str | None = None) -> Submitted:
    """Validate the plan, snapshot ``workspace`` onto a new run branch of the shared repository,
    and start the run's workflow. The user's branch, index and files are left as they are."""
    plan = parse_plan(plan_text, source=plan_source)
    run_id = validate_run_id(run_id) if run_id else new_run_id()
    top, commit = await snapshot(workspace)
    branch = run_branch(run_id)
    await publish(top, commit, opts.shared_repo, branch)
    ref = WorkspaceRef(repo_url=opts.shared_repo, branch=branch, base_commit=commit, source=str(top))
    inp = BuildRunInput(run_id=run_id, plan=plan, workspace=ref, tenant=opts.tenant,
                        task_queue_prefix=opts.task_queue_prefix, plan_source=plan_text,
                        heartbeat_timeout_seconds=opts.heartbeat_timeout_seconds)
    try:
        handle = await client.start_workflow(
            BuildRunWorkflow.run, inp, id=workflow_id(run_id),
            task_queue=task_queue(opts.task_queue_prefix, WORKFLOW_QUEUE),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(sa.TENANT, opts.tenant), SearchAttributePair(sa.PLAN, plan.name),
                SearchAttributePair(sa.RUN_STATUS, RunStatus.PENDING.value),
            ]),
        )
    except WorkflowAlreadyStartedError:
        raise RunExistsError(f"run {run_id} exists already; run ids are never reused") from None
    return Submitted(run_id=run_id, plan=plan, workspace=ref, handle=handle)
