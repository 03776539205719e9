"""Runs: start, list, read, cancel, retry; their auto-fix history, plan deltas, gates and logs."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.concurrency import run_in_threadpool

from metabuilder.api.deps import ConfigDep, Operator, PagerDep, SessionDep, TemporalDep, Viewer
from metabuilder.api.errors import ApiError, responses
from metabuilder.api.routes import V2, V3
from metabuilder.api.routes.views import gate_out, sla_out, step_out
from metabuilder.api.schemas import (
    AutofixOut,
    ConfidenceOut,
    GateOut,
    LogsOut,
    PlanDeltaOut,
    RepairAttemptOut,
    RetryStateOut,
    RunAccepted,
    RunDetailOut,
    RunIn,
    RunOut,
    TimelineEntry,
)
from metabuilder.api.settings_body import overrides_of
from metabuilder.domain.approvals import GateStatus
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.policy import EffectiveSettings
from metabuilder.domain.privacy import Privacy, privacy_fields
from metabuilder.domain.runs import RunStatus, new_run_id, web_ui_link, workflow_id
from metabuilder.service import idempotency
from metabuilder.service import privacy as privacy_service
from metabuilder.service import runs as service
from metabuilder.service.audit import audited
from metabuilder.service.budgets import tenant_concurrent_runs
from metabuilder.service.scheduling import V4Choice, resolve_v4
from metabuilder.service.tenancy import own_plan, own_run
from metabuilder.store import approvals
from metabuilder.store import autofix as autofix_rows
from metabuilder.store import runs as run_rows
from metabuilder.store import steps as step_rows
from metabuilder.store.db import transaction

router = APIRouter(tags=["runs"])
READ = responses(401, 403, 404, 422)
ACT = responses(401, 403, 404, 409, 422, 503)


def _workspace(config: ConfigDep, raw: str) -> Path:
    try:
        path = Path(raw).expanduser().resolve()
    except (ValueError, OSError) as err:  # a NUL byte, a lone surrogate: no such path can exist
        raise ApiError(422, f"workspace {raw!r} is not a usable path: {err}") from None
    if not any(path.is_relative_to(root.resolve()) for root in config.workspace_roots):
        roots = ", ".join(map(str, config.workspace_roots)) or "none (set META_BUILDER_WORKSPACE_ROOTS)"
        raise ApiError(422, f"workspace {raw!r} is outside the directories runs may start from: {roots}")
    return path


@router.post(V3 + "/runs", status_code=202, responses=ACT)
async def start_run(body: RunIn, principal: Operator, config: ConfigDep, temporal: TemporalDep, response: Response,
                    idempotency_key: Annotated[str | None, Header(
                        alias=idempotency.HEADER, max_length=idempotency.MAX_KEY_CHARS,
                        description="Repeat the request safely: a repeat gets the first answer (and the "
                                    "`Idempotent-Replayed: true` header); another body under the key is a 422."
                    )] = None) -> RunAccepted:
    """Start a run of a stored plan (``plan_id``) or of plan text (``plan_yaml``) on a workspace."""
    if (body.plan_id is None) == (body.plan_yaml is None):
        raise ApiError(422, "give exactly one of plan_id and plan_yaml")
    workspace = _workspace(config, body.workspace)
    overrides = overrides_of(body.settings)

    def load() -> tuple[str, str, EffectiveSettings, V4Choice, Privacy | None]:
        text, source = body.plan_yaml or "", "plan_yaml"
        if body.plan_id is not None:
            with transaction(config.sessions) as session:
                plan = own_plan(session, body.plan_id, principal.tenant)
                text, source = plan.source, f"plan {plan.id}"
        parse_plan(text, source=source)  # a bad plan is a 422 even when Temporal is down
        v4 = resolve_v4(config.v4, config.sessions, principal.tenant, run_enabled=body.v4_enabled,
                        priority=body.priority, sla=body.sla)
        run_privacy = None
        if body.privacy is not None:
            with transaction(config.sessions) as session:
                run_privacy = privacy_service.run_privacy(session, config.privacy, principal.tenant, body.privacy,
                                                          where="privacy")
        return text, source, service.resolve_autofix(config.platform, config.sessions, principal.tenant,
                                                     overrides), v4, run_privacy

    def keep_privacy(run_id: str, run_privacy: Privacy) -> None:
        with transaction(config.sessions) as session:
            privacy_service.keep_run_privacy(session, run_id, principal.tenant, run_privacy)

    async def start(run_id: str | None) -> dict[str, Any]:
        text, source, effective, v4, run_privacy = await run_in_threadpool(load)
        opts = service.SubmitOptions.of(config, tenant=principal.tenant, autofix=effective,
                                        search_attributes=config.search_attributes, v4=v4)
        opts = replace(opts, tenant_max_active_runs=await run_in_threadpool(
            tenant_concurrent_runs, config.sessions, principal.tenant, opts.tenant_max_active_runs))
        if run_privacy is not None:
            run_id = run_id or new_run_id()
            await run_in_threadpool(keep_privacy, run_id, run_privacy)
        submitted = await service.submit(await temporal.client(), text, source, workspace, opts, run_id=run_id)
        await audited(config.sessions, "run.started", tenant=principal.tenant, actor=principal.user,
                      target=f"run:{submitted.run_id}", run_id=submitted.run_id,
                      after={"plan": submitted.plan.name, "source": source, "workspace": str(workspace),
                             "base_commit": submitted.workspace.base_commit, "overrides": overrides,
                             "idempotency_key": idempotency_key,
                             **({"privacy": privacy_fields(run_privacy)} if run_privacy is not None else {})})
        return accepted(submitted.run_id)

    def accepted(run_id: str) -> dict[str, Any]:
        return RunAccepted(run_id=run_id, workflow_id=workflow_id(run_id), status=RunStatus.PENDING).model_dump()

    if idempotency_key is None:
        return RunAccepted(**await start(None))

    async def adopt(run_id: str) -> dict[str, Any] | None:
        return accepted(run_id) if await idempotency.run_started(await temporal.client(), run_id) else None

    answer = await idempotency.once(config.sessions, principal.tenant, idempotency_key,
                                    idempotency.body_hash(_hashed(body)), start, adopt=adopt)
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return RunAccepted(**answer.response)


def _hashed(body: RunIn) -> dict[str, Any]:
    """The body an idempotency key is held to; ``sla`` left out when unset, so a key stored before
    SLA classes existed still matches its repeat."""
    return body.model_dump(mode="json", exclude={"sla"} if body.sla is None else None)


@router.get(V3 + "/runs", responses=READ)
def list_runs(principal: Viewer, session: SessionDep, config: ConfigDep, pager: PagerDep,
              status: RunStatus | None = None, plan: Annotated[str | None, Query(max_length=200)] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[RunOut]:
    """The tenant's runs, newest first, optionally in one status or of one plan name (a ``Link``
    header points to the next page)."""
    rows = run_rows.run_summaries(session, tenant=principal.tenant, status=status.value if status else None,
                                  plan=plan, limit=limit + 1, offset=offset)
    return [RunOut(**r, web_ui_url=web_ui_link(config.ui_url, config.namespace, r["run_id"]))
            for r in pager.page(rows, limit, offset)]


@router.get(V3 + "/runs/{run_id}", responses=READ)
def get_run(run_id: str, principal: Viewer, session: SessionDep, config: ConfigDep) -> RunDetailOut:
    """A run with every step attempt and its approval gates."""
    detail = service.run_detail_rows(session, run_id, principal.tenant)
    settings, run = detail.run.pop("settings"), detail.run
    return RunDetailOut(**run, web_ui_url=web_ui_link(config.ui_url, config.namespace, run_id),
                        steps=[step_out(s) for s in detail.steps], gates=[gate_out(g) for g in detail.gates],
                        waiting_on=detail.waiting_on,
                        confidence=ConfidenceOut(**asdict(detail.confidence)) if detail.confidence else None,
                        sla=sla_out(session, run_id, settings, run["created_at"]))


@router.post(V3 + "/runs/{run_id}/cancel", status_code=202, responses=ACT)
async def cancel_run(run_id: str, principal: Operator, config: ConfigDep, temporal: TemporalDep) -> RunAccepted:
    """Ask a run to stop: the running step is cancelled and the run ends ``cancelled``."""
    asked = await service.cancel(temporal.client, config.sessions, run_id, tenant=principal.tenant)
    await audited(config.sessions, "run.cancel_requested", tenant=principal.tenant, actor=principal.user,
                  target=f"run:{run_id}", run_id=run_id, before={"status": asked.status},
                  after={"status": "cancelling"})
    return RunAccepted(run_id=run_id, workflow_id=workflow_id(run_id), status=asked.status, iteration=asked.iteration)


@router.post(V2 + "/runs/{run_id}/retry", status_code=202, responses=ACT)
@router.post(V3 + "/runs/{run_id}/retry", status_code=202, responses=ACT)
async def retry_run(run_id: str, principal: Operator, config: ConfigDep, temporal: TemporalDep) -> RunAccepted:
    """Start the next iteration of a failed run: the steps that did not succeed, from its last good commit."""
    v4 = await run_in_threadpool(resolve_v4, config.v4, config.sessions, principal.tenant)
    opts = service.SubmitOptions.of(config, search_attributes=config.search_attributes, v4=v4)
    inp = await service.prepare_retry(config.sessions, run_id, opts, config.platform, tenant=principal.tenant)
    limit = await run_in_threadpool(tenant_concurrent_runs, config.sessions, inp.tenant, opts.tenant_max_active_runs)
    submitted = await service.start(await temporal.client(), inp, tenant_max_active_runs=limit)
    await audited(config.sessions, "run.retried", tenant=principal.tenant, actor=principal.user,
                  target=f"run:{run_id}", run_id=submitted.run_id,
                  after={"run_id": submitted.run_id, "iteration": submitted.iteration, "retry_of": run_id,
                         "base_commit": inp.workspace.base_commit})
    return RunAccepted(run_id=submitted.run_id, workflow_id=workflow_id(submitted.run_id), status=RunStatus.PENDING,
                       iteration=submitted.iteration, retry_of=run_id)


@router.get(V2 + "/runs/{run_id}/autofix", responses=READ)
@router.get(V3 + "/runs/{run_id}/autofix", responses=READ)
def autofix_history(run_id: str, principal: Viewer, session: SessionDep) -> AutofixOut:
    """The run's auto-fix history: retry state, every attempt with its signal, strategy, outcome and backoff."""
    run = own_run(session, run_id, principal.tenant)
    state = autofix_rows.retry_state(session, run_id)
    return AutofixOut(
        run_id=run_id, status=run.status,
        retry_state=RetryStateOut.model_validate(state, from_attributes=True) if state else None,
        timeline=[TimelineEntry(seq=e.seq, step=e.step_name, signal_type=e.signal_type, confidence=e.confidence,
                                strategy=e.strategy, outcome=e.outcome, attempt=e.attempt, backoff=e.backoff,
                                detail=e.detail, commit=e.commit, evidence=list(e.evidence), created_at=e.created_at)
                  for e in autofix_rows.autofix_timeline(session, run_id)],
        repair_attempts=[RepairAttemptOut(
            seq=a.seq, step=a.step_name, signal_type=a.signal_type, fixer=a.fixer, outcome=a.outcome,
            reason=a.reason, files=list(a.files), diff=a.diff, commit_before=a.commit_before,
            commit_after=a.commit_after, model=a.model, tokens_in=a.tokens_in, tokens_out=a.tokens_out,
            cost_usd=a.cost_usd) for a in autofix_rows.repair_attempts(session, run_id)])


@router.get(V2 + "/runs/{run_id}/escalation", responses=READ)
@router.get(V3 + "/runs/{run_id}/escalations", responses=READ)
def escalations(run_id: str, principal: Viewer, session: SessionDep,
                status: GateStatus | None = None) -> list[GateOut]:
    """The run's approval gates (escalations and steps awaiting approval), pending or decided."""
    own_run(session, run_id, principal.tenant)
    return [gate_out(g) for g in approvals.list_gates(session, tenant=principal.tenant, run_id=run_id,
                                                      status=status.value if status else None)]


@router.get(V2 + "/runs/{run_id}/plan-delta", responses=READ)
@router.get(V3 + "/runs/{run_id}/plan-deltas", responses=READ)
def plan_deltas(run_id: str, principal: Viewer, session: SessionDep) -> list[PlanDeltaOut]:
    """The run's re-plans: what changed in the plan, why, and the plans before and after."""
    own_run(session, run_id, principal.tenant)
    return [PlanDeltaOut(id=d.id, kind=d.delta_data["kind"], step=d.delta_data["step"],
                         reason=d.delta_data.get("reason", ""), command=d.delta_data.get("command"),
                         new_step=d.delta_data.get("new_step"), triggered_by=d.triggered_by,
                         original_plan_id=d.original_plan_id, new_plan_id=d.new_plan_id, created_at=d.created_at)
            for d in autofix_rows.plan_deltas(session, run_id)]


@router.get(V2 + "/runs/{run_id}/logs", responses=READ)
@router.get(V3 + "/runs/{run_id}/logs", responses=READ)
def logs(run_id: str, principal: Viewer, session: SessionDep) -> LogsOut:
    """Every step attempt of the run with the tail of its log."""
    own_run(session, run_id, principal.tenant)
    return LogsOut(run_id=run_id, steps=[step_out(s, lines=None) for s in step_rows.run_steps(session, run_id)])
