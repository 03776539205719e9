"""Submit a plan as a build run, retry one, read one back, cancel one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import yaml
from sqlalchemy import Row
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from metabuilder.adapters.git import (
    GitError,
    NotAGitRepository,
    branch_at,
    branch_exists,
    checked_out_branch,
    delete_branch,
    publish,
    snapshot,
)
from metabuilder.domain import limits
from metabuilder.domain.confidence import Confidence
from metabuilder.domain.payloads import AutofixConfig, BuildRunInput, RunView, WorkspaceRef
from metabuilder.domain.plans import Plan, parse_plan, plan_to_dict
from metabuilder.domain.policy import AutofixSettings, EffectiveSettings, effective_settings
from metabuilder.domain.pools import PriorityClass
from metabuilder.domain.runs import (
    WORKFLOW_QUEUE,
    RunStatus,
    StepStatus,
    new_run_id,
    run_branch,
    task_queue,
    validate_run_id,
    workflow_id,
)
from metabuilder.domain.sla import SlaClass
from metabuilder.service.confidence import confidence_of
from metabuilder.service.errors import BadRequest, Conflict, NotFound
from metabuilder.service.run_limits import TenantRunLimit, check_tenant_limit
from metabuilder.service.scheduling import V4Choice
from metabuilder.service.tenancy import own_run
from metabuilder.store import approvals, breakers
from metabuilder.store import autofix as autofix_rows
from metabuilder.store import plans as plan_rows
from metabuilder.store import runs as run_rows
from metabuilder.store import steps as step_rows
from metabuilder.store import tenants as tenant_rows
from metabuilder.store.db import transaction
from metabuilder.store.models import ApprovalGate, BuildRun, BuildStep
from metabuilder.workflows import search_attributes as sa
from metabuilder.workflows.build_run import BuildRunWorkflow
from metabuilder.workflows.priority import temporal_priority

RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.ESCALATED, RunStatus.ROLLED_BACK, RunStatus.CANCELLED})


class RunExistsError(Conflict):
    """A run with that id was started before; run ids are never reused."""


class Deployment(Protocol):
    """Where runs go: what the worker's ``Settings`` and the API's ``ApiConfig`` both carry."""

    @property
    def shared_repo(self) -> str: ...

    @property
    def task_queue_prefix(self) -> str: ...

    @property
    def heartbeat_timeout_seconds(self) -> float: ...


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
    v4: V4Choice | None = None
    """v4 on or off for the run, and its priority (see ``service.scheduling.resolve_v4``); None: off."""
    tenant_max_active_runs: int = 0
    """Runs a tenant may have open at once (0: no limit); see ``service.run_limits``."""

    @classmethod
    def of(cls, deployment: Deployment, *, tenant: str = "default", autofix: EffectiveSettings | None = None,
           search_attributes: bool = True, heartbeat_timeout_seconds: float | None = None,
           v4: V4Choice | None = None) -> SubmitOptions:
        """The options of runs submitted to ``deployment`` (its shared repository, task queues and
        heartbeat timeout, unless ``heartbeat_timeout_seconds`` says otherwise)."""
        heartbeat = (deployment.heartbeat_timeout_seconds if heartbeat_timeout_seconds is None
                     else heartbeat_timeout_seconds)
        return cls(shared_repo=deployment.shared_repo, task_queue_prefix=deployment.task_queue_prefix, tenant=tenant,
                   heartbeat_timeout_seconds=heartbeat, autofix=autofix, search_attributes=search_attributes, v4=v4,
                   tenant_max_active_runs=getattr(deployment, "tenant_max_active_runs", 0))


def resolve_autofix(platform: AutofixSettings, sessions: sessionmaker[Session], tenant: str,
                    run_overrides: Mapping[str, object] | None = None) -> EffectiveSettings:
    """A run's auto-fix settings: platform (environment), then the tenant's (DB), then the run's."""
    with transaction(sessions) as session:
        tenant_overrides = tenant_rows.tenant_autofix(session, tenant)
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
    iteration: int = 1


async def submit(client: Client, plan_text: str, plan_source: str, workspace: Path, opts: SubmitOptions,
                 *, run_id: str | None = None) -> Submitted:
    """Validate the plan, snapshot ``workspace`` onto a new run branch of the shared repository,
    and start the run's workflow. The user's branch, index and files are left as they are."""
    plan = parse_plan(plan_text, source=plan_source)
    run_id = validate_run_id(run_id) if run_id else new_run_id()
    branch = run_branch(run_id)

    def run_input(ref: WorkspaceRef) -> BuildRunInput:
        return BuildRunInput(
            run_id=run_id, plan=plan, workspace=ref, tenant=opts.tenant, task_queue_prefix=opts.task_queue_prefix,
            plan_source=plan_text, heartbeat_timeout_seconds=opts.heartbeat_timeout_seconds,
            autofix=autofix_config(opts.autofix), search_attributes=opts.search_attributes, approval_gates=True,
            scheduling=opts.v4.scheduling(opts.tenant, plan) if opts.v4 else None, verify_approvers=True,
            sla=opts.v4.run_sla(plan) if opts.v4 else None)

    # Before anything is pushed: a run Temporal would refuse leaves no branch behind.
    await check_payload(client, run_input(WorkspaceRef(opts.shared_repo, branch, "0" * 40, str(workspace))))
    try:
        top, commit = await snapshot(workspace)
    except NotAGitRepository as err:
        raise BadRequest(str(err)) from None
    if await branch_exists(opts.shared_repo, branch):
        raise RunExistsError(f"run {run_id} exists already; run ids are never reused")
    source_branch = await checked_out_branch(top)  # where promote takes the healed head
    await publish(top, commit, opts.shared_repo, branch)
    return await start(client, run_input(WorkspaceRef(opts.shared_repo, branch, commit, str(top), source_branch)),
                       tenant_max_active_runs=opts.tenant_max_active_runs)


async def check_payload(client: Client, inp: BuildRunInput) -> None:
    """Refuse, naming the limit, a run whose workflow input or search attributes Temporal would
    refuse, or that would leave its bookkeeping payloads (which carry the plan again) too little room."""
    encoded = sum(p.ByteSize() for p in await client.data_converter.encode([inp]))
    if encoded > limits.MAX_RUN_INPUT_BYTES:
        raise BadRequest(
            f"the run's input would be {limits.size(encoded)} (the plan, parsed and as text); at most "
            f"{limits.size(limits.MAX_RUN_INPUT_BYTES)} is accepted, half of Temporal's payload limit "
            f"({limits.size(limits.BLOB_ERROR_BYTES)}, limit.blobSize.error)")
    values = [inp.tenant, inp.plan.name, RunStatus.PENDING.value] if inp.search_attributes else []
    for value in values:
        if len(value.encode()) > limits.SEARCH_ATTRIBUTE_VALUE_BYTES:
            raise BadRequest(f"{value[:40]!r}... is {limits.size(len(value.encode()))}; Temporal takes search "
                             f"attribute values of at most {limits.size(limits.SEARCH_ATTRIBUTE_VALUE_BYTES)}")


async def prepare_retry(sessions: sessionmaker[Session], run_id: str, opts: SubmitOptions,
                        platform: AutofixSettings, *, tenant: str | None = None) -> BuildRunInput:
    """The next iteration of a finished, unsuccessful run, ready for :func:`start`: the steps that
    did not succeed, on a new branch at the run's last good commit, with the run's settings (and
    any set for its retries since)."""
    with transaction(sessions) as session:
        run = own_run(session, run_id, tenant)
        if run.status not in RETRYABLE:
            raise Conflict(f"run {run_id} is {run.status}; only a {', '.join(sorted(RETRYABLE))} run can be retried")
        plan = parse_plan(plan_rows.run_plan_source(session, run), source=f"run {run_id}")
        done = {s.name for s in step_rows.run_steps(session, run_id) if s.status == StepStatus.SUCCEEDED}
        overrides = {k: v for k, v in run.settings.items() if run.settings.get("sources", {}).get(k) == "run"}
        overrides.update(run.next_overrides)
        head, tenant_id, iteration, source_branch = run.head_commit, run.tenant_id, run.iteration, run.source_branch
        run_sla = run.settings.get("sla") if isinstance(run.settings.get("sla"), dict) else None
        run_priority = run.settings.get("priority") if isinstance(run.settings.get("priority"), dict) else None
    if opts.v4 is not None and run_sla is not None and run_sla.get("source") == "run":
        opts = replace(opts, v4=replace(opts.v4, sla=SlaClass(run_sla["class"])))  # the retry keeps the run's class
    if opts.v4 is not None and opts.v4.priority is None and run_priority is not None:
        # and the priority given for the run (``--priority``), unless the retry gives its own
        opts = replace(opts, v4=replace(opts.v4, priority=PriorityClass(run_priority["class"])))
    remaining = [s for s in plan.steps if s.name not in done]
    if not remaining:
        raise Conflict(f"every step of run {run_id} succeeded already; there is nothing to retry")
    retry_plan = replace(plan, steps=remaining)
    new_id = new_run_id()
    branch = run_branch(new_id)
    await branch_at(opts.shared_repo, branch, head)
    effective = resolve_autofix(platform, sessions, tenant_id, overrides)
    plan_text = yaml.safe_dump(plan_to_dict(retry_plan), sort_keys=False)
    return BuildRunInput(
        run_id=new_id, plan=retry_plan, workspace=WorkspaceRef(opts.shared_repo, branch, head, source=f"run {run_id}",
                                                        source_branch=source_branch),
        tenant=tenant_id, task_queue_prefix=opts.task_queue_prefix, plan_source=plan_text,
        heartbeat_timeout_seconds=opts.heartbeat_timeout_seconds, autofix=autofix_config(effective),
        search_attributes=opts.search_attributes, iteration=iteration + 1, retry_of=run_id, approval_gates=True,
        scheduling=opts.v4.scheduling(tenant_id, retry_plan) if opts.v4 else None, verify_approvers=True,
        sla=opts.v4.run_sla(retry_plan) if opts.v4 else None)


async def start(client: Client, inp: BuildRunInput, *, tenant_max_active_runs: int = 0) -> Submitted:
    """Start the workflow of a run whose workspace branch is in place; returns once it is accepted.
    If Temporal refuses the run, or its tenant has ``tenant_max_active_runs`` open already
    (``TenantRunLimit``), the branch made for it is deleted: no branch is left without a run."""
    try:
        if inp.search_attributes:
            await check_tenant_limit(client, inp.tenant, task_queue(inp.task_queue_prefix, WORKFLOW_QUEUE),
                                     tenant_max_active_runs)
        return await _start(client, inp)
    except (RunExistsError, TenantRunLimit):
        await _drop_branch(inp.workspace)  # made for this submission: the run under that id has its own
        raise
    except Exception:
        if not await _accepted(client, inp.run_id):
            await _drop_branch(inp.workspace)
        raise


async def _accepted(client: Client, run_id: str) -> bool:
    """Whether the run's workflow exists after all (an error such as a timeout may hide a start
    that went through); in doubt (Temporal unreachable) yes: a stray branch is better than a run
    without its branch."""
    try:
        await client.get_workflow_handle(workflow_id(run_id)).describe()
    except RPCError as err:
        return err.status != RPCStatusCode.NOT_FOUND
    return True


async def _drop_branch(ref: WorkspaceRef) -> None:
    with contextlib.suppress(GitError):  # the refusal is what the caller must hear about
        await delete_branch(ref.repo_url, ref.branch, ref.base_commit)


async def _start(client: Client, inp: BuildRunInput) -> Submitted:
    plan, run_id = inp.plan, inp.run_id
    await check_payload(client, inp)
    try:
        handle = await client.start_workflow(
            BuildRunWorkflow.run, inp, id=workflow_id(run_id),
            task_queue=task_queue(inp.task_queue_prefix, WORKFLOW_QUEUE),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(sa.TENANT, inp.tenant), SearchAttributePair(sa.PLAN, plan.name),
                SearchAttributePair(sa.RUN_STATUS, RunStatus.PENDING.value),
            ]) if inp.search_attributes else None,
            priority=temporal_priority(inp.scheduling),
        )
    except WorkflowAlreadyStartedError:
        raise RunExistsError(f"run {run_id} exists already; run ids are never reused") from None
    return Submitted(run_id=run_id, plan=plan, workspace=inp.workspace, handle=handle, iteration=inp.iteration)


@dataclass(frozen=True)
class RunDetail:
    """A run from the DB projection, with every step attempt and its approval gates."""

    run: BuildRun
    steps: list[BuildStep]
    """Every attempt of every step, by step, then attempt."""
    gates: list[ApprovalGate]
    waiting_on: list[str] = field(default_factory=list)
    """The circuit breakers it waits on (``tenant/CLASS/dependency``), while ``waiting_on_breaker``."""


def run_detail(session: Session, run_id: str, tenant: str | None) -> RunDetail:
    """The run ``run_id`` of ``tenant`` (``NotFound`` otherwise) with its attempts and gates."""
    run = own_run(session, run_id, tenant)
    return RunDetail(run, step_rows.run_steps(session, run_id),
                     approvals.list_gates(session, tenant=run.tenant_id, run_id=run_id),
                     breakers.waits_of(session, run_id) if run.status == RunStatus.WAITING_ON_BREAKER else [])


@dataclass(frozen=True)
class RunDetailRows:
    """``RunDetail`` as the API shows it, read as plain rows (building ORM objects for a run, its
    plan and its attempts was most of the CPU of a ``GET /runs/{id}``)."""

    run: dict[str, Any]
    """``store.views.run_fields``'s keys, and the run's ``settings``."""
    steps: list[Row[Any]]
    """``store.steps.STEP_VIEW`` of every attempt of every step, by step, then attempt."""
    gates: list[Row[Any]]
    """``store.approvals.GATE_VIEW`` of its gates."""
    waiting_on: list[str]
    confidence: Confidence | None
    """For a run auto-fix acted in (``service.confidence.confidence_of``)."""


def run_detail_rows(session: Session, run_id: str, tenant: str | None) -> RunDetailRows:
    """``run_detail`` in plain rows, with the run's confidence; ``NotFound`` as ``own_run``."""
    run = run_rows.run_summary(session, run_id)
    if run is None or (tenant is not None and run["tenant"] != tenant):
        raise NotFound(f"unknown run id {run_id!r}")
    steps = step_rows.run_step_rows(session, run_id)
    return RunDetailRows(
        run, steps, approvals.run_gate_rows(session, tenant=run["tenant"], run_id=run_id),
        breakers.waits_of(session, run_id) if run["status"] == RunStatus.WAITING_ON_BREAKER else [],
        confidence_of(session, own_run(session, run_id, tenant), steps)
        if autofix_rows.has_autofix(session, run_id) else None)


@dataclass(frozen=True)
class CancelRequested:
    run_id: str
    status: RunStatus
    """The run's status when it was asked to stop (``pending`` when the projection had no row yet)."""
    iteration: int


async def cancel(connect: Callable[[], Awaitable[Client]], sessions: sessionmaker[Session], run_id: str,
                 *, tenant: str | None) -> CancelRequested:
    """Ask a run's workflow to stop: the running step is cancelled and the run ends ``cancelled``.

    ``NotFound`` for an unknown run (or one of another tenant), ``Conflict`` for a finished run or
    one without a running workflow. Without a tenant (the CLI), a run the projection does not show
    yet (its workflow has not been picked up by a worker) is cancelled through Temporal all the
    same. ``connect`` is called only once the run is known to the projection, or may be.
    """

    def load() -> tuple[RunStatus, int] | None:
        with transaction(sessions) as session:
            try:
                run = own_run(session, run_id, tenant)
            except NotFound:
                if tenant is not None:
                    raise
                return None
            return RunStatus(run.status), run.iteration

    found = await asyncio.to_thread(load)
    if found is not None and found[0].is_final:
        raise Conflict(f"run {run_id} has finished ({found[0]}); there is nothing to cancel")
    client = await connect()
    try:
        await client.get_workflow_handle(workflow_id(run_id)).cancel()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        if found is None:
            raise NotFound(f"unknown run id {run_id!r} (no workflow {workflow_id(run_id)})") from None
        raise Conflict(f"run {run_id} has no running workflow") from None
    status, iteration = found or (RunStatus.PENDING, 1)
    return CancelRequested(run_id, status, iteration)
