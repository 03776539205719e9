"""Submit a plan as a build run, and read a run's state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.git import publish, snapshot
from domain.payloads import AutofixConfig, BuildRunInput, RunView, WorkspaceRef
from domain.plans import Plan, parse_plan
from domain.policy import AutofixSettings, EffectiveSettings, effective_settings
from domain.runs import WORKFLOW_QUEUE, RunStatus, new_run_id, run_branch, task_queue, validate_run_id, workflow_id
from store import repository
from store.db import transaction
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
    autofix: EffectiveSettings | None = None
    """The run's resolved auto-fix settings (see ``resolve_autofix``); None or disabled: off."""
    search_attributes: bool = True
    """Index runs by status, tenant and plan; off for a server without them (Temporal's test server)."""


def resolve_autofix(platform: AutofixSettings, sessions: sessionmaker[Session], tenant: str,
                    run_overrides: Mapping[str, object] | None = None) -> EffectiveSettings:
    """A run's auto-fix settings: platform (environment), then the tenant's (DB), then the run's."""
    with transaction(sessions) as session:
        tenant_overrides = repository.tenant_autofix(session, tenant)
    return effective_settings(platform, tenant_overrides, run_overrides)


def autofix_config(effective: EffectiveSettings | None) -> AutofixConfig | None:
    if effective is None or not effective.settings.enabled:
        return None
    return AutofixConfig(policy=effective.policy(), sources=dict(effective.sources))


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
                        heartbeat_timeout_seconds=opts.heartbeat_timeout_seconds,
                        autofix=autofix_config(opts.autofix), search_attributes=opts.search_attributes)
    try:
        handle = await client.start_workflow(
            BuildRunWorkflow.run, inp, id=workflow_id(run_id),
            task_queue=task_queue(opts.task_queue_prefix, WORKFLOW_QUEUE),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(sa.TENANT, opts.tenant), SearchAttributePair(sa.PLAN, plan.name),
                SearchAttributePair(sa.RUN_STATUS, RunStatus.PENDING.value),
            ]) if opts.search_attributes else None,
        )
    except WorkflowAlreadyStartedError:
        raise RunExistsError(f"run {run_id} exists already; run ids are never reused") from None
    return Submitted(run_id=run_id, plan=plan, workspace=ref, handle=handle)
