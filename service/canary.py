"""The canary between orchestrator versions as use cases: where Temporal routes new runs (the
Worker Deployment's current and ramping versions), the comparison of their samples, and the
operator's moves (ramp, promote, rollback), each audited; the decision-diff gate runs before a ramp.

New runs go to the deployment's current version, or, for the ramp's share, to the ramping one;
a run stays pinned to the version it started on (its workers poll with the PINNED behaviour).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentRampingVersionRequest,
)
from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from metabuilder.domain.canary import CanarySettings, Comparison, Recommendation, compare
from metabuilder.service.errors import BadRequest, Conflict, Unavailable
from metabuilder.store import canary as rows
from metabuilder.store.audit import write_audit
from metabuilder.store.db import transaction
from metabuilder.store.models import ReplayEntry

AUDIT_TENANT = "default"
"""The deployment is the platform's: its changes are audited under the default tenant."""


BUSY_BACKOFF = (0.2, 0.5, 1.0, 2.0)
"""Seconds between tries of a deployment read that Temporal refused as too many requests."""


@dataclass(frozen=True)
class Routing:
    """Where Temporal sends new runs of the deployment."""

    deployment: str
    current: str | None = None
    """Build id of the current version (None: unversioned workers get new runs)."""
    ramping: str | None = None
    ramp_percent: float = 0.0
    versions: list[str] = field(default_factory=list)
    """Build ids of the versions Temporal knows (ones whose workers have polled)."""
    conflict_token: bytes = b""


async def routing(client: Client, deployment: str) -> Routing:
    """The deployment's routing as Temporal has it (empty: no versioned worker has polled yet)."""
    request = DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment)
    for wait in (*BUSY_BACKOFF, None):
        try:
            resp = await client.workflow_service.describe_worker_deployment(request)
            break
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return Routing(deployment)
            if err.status is RPCStatusCode.RESOURCE_EXHAUSTED and wait is not None:
                await asyncio.sleep(wait)  # Temporal limits the calls per deployment: a read can wait
                continue
            raise Unavailable(f"Temporal could not describe the worker deployment {deployment!r}: "
                              f"{err.message}") from None
    info = resp.worker_deployment_info
    rc = info.routing_config
    current = rc.current_deployment_version.build_id or None
    ramping = rc.ramping_deployment_version.build_id or None
    return Routing(deployment, current=current, ramping=ramping,
                   ramp_percent=float(rc.ramping_version_percentage) if ramping else 0.0,
                   versions=[v.deployment_version.build_id for v in info.version_summaries],
                   conflict_token=resp.conflict_token)


async def _rpc(what: str, call: Callable[[], Awaitable[Any]]) -> None:
    for wait in (*BUSY_BACKOFF, None):
        try:
            await call()
            return
        except RPCError as err:
            if err.status is RPCStatusCode.RESOURCE_EXHAUSTED and wait is not None:
                await asyncio.sleep(wait)  # too many calls to this deployment just now
                continue
            if err.status in (RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.INVALID_ARGUMENT,
                              RPCStatusCode.NOT_FOUND, RPCStatusCode.ALREADY_EXISTS):
                raise Conflict(f"{what}: Temporal refused it: {err.message}") from None
            raise Unavailable(f"{what}: {err.message}") from None


async def set_current(client: Client, deployment: str, build_id: str, identity: str) -> None:
    await _rpc(f"setting {deployment}.{build_id} current", lambda: client.workflow_service.
               set_worker_deployment_current_version(SetWorkerDeploymentCurrentVersionRequest(
                   namespace=client.namespace, deployment_name=deployment, build_id=build_id, identity=identity)))


async def set_ramping(client: Client, deployment: str, build_id: str | None, percent: float, identity: str) -> None:
    """Ramp ``percent`` of new runs to ``build_id``; None (or 0 %) takes the ramp away."""
    await _rpc(f"ramping {deployment}.{build_id or '(none)'} to {percent:g}%", lambda: client.workflow_service.
               set_worker_deployment_ramping_version(SetWorkerDeploymentRampingVersionRequest(
                   namespace=client.namespace, deployment_name=deployment, build_id=build_id or "",
                   percentage=percent if build_id else 0.0, identity=identity)))


async def adopt_if_first(client: Client, deployment: str, build_id: str, identity: str,
                         timeout: float = 30.0) -> bool:
    """A versioned worker's start: with no current version yet (a first deployment), make its own
    version current so that new runs have somewhere to go. Waits for Temporal to have seen the
    version's pollers; True when it made it current."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = "its pollers have not registered yet"
    while True:
        try:
            state = await routing(client, deployment)
            if state.current is not None:
                return False
            if build_id in state.versions:
                await set_current(client, deployment, build_id, identity)
                return True
        except (Conflict, Unavailable) as err:
            last = str(err)  # another worker did it first, or Temporal asks to slow down: look again
        if loop.time() > deadline:
            raise Unavailable(f"the version {deployment}.{build_id} could not be made current within {timeout:g}s "
                              f"({last}); do it with `metabuilder canary promote {build_id}`")
        await asyncio.sleep(0.5)


@dataclass
class CanaryView:
    routing: Routing
    candidate: str | None
    comparison: Comparison | None
    """None without a candidate (nothing ramps and no other version has samples)."""
    samples_by_version: dict[str, int]


def _counts(session: Session, deployment: str, tenant: str | None) -> dict[str, int]:
    from metabuilder.store.models import CanarySample

    q = select(CanarySample.version, func.count()).where(CanarySample.deployment == deployment,
                                                         CanarySample.outcome.notin_(rows.NOT_SAMPLES))
    if tenant is not None:
        q = q.where(CanarySample.tenant_id == tenant)
    return {v: int(n) for v, n in session.execute(q.group_by(CanarySample.version))}


def compare_versions(sessions: sessionmaker[Session], settings: CanarySettings, state: Routing, *,
                     candidate: str | None = None, tenant: str | None = None) -> CanaryView:
    """The candidate (the ramping version, else ``candidate``) against the current version."""
    with transaction(sessions) as session:
        counts = _counts(session, state.deployment, tenant)
        cand = candidate or state.ramping
        if cand is None or state.current is None or cand == state.current:
            return CanaryView(state, cand, None, counts)
        samples = rows.samples(session, state.deployment, [state.current, cand], tenant=tenant)
    cur = [s for s in samples if s.version == state.current]
    new = [s for s in samples if s.version == cand]
    return CanaryView(state, cand, compare(state.current, cur, cand, new, settings), counts)


async def stats(client: Client, sessions: sessionmaker[Session], settings: CanarySettings, deployment: str, *,
                candidate: str | None = None, tenant: str | None = None) -> CanaryView:
    state = await routing(client, deployment)
    return await asyncio.to_thread(compare_versions, sessions, settings, state, candidate=candidate, tenant=tenant)


def _audit(sessions: sessionmaker[Session], event: str, actor: str, deployment: str, before: Routing,
           after: dict[str, Any], data: dict[str, Any] | None = None) -> None:
    with transaction(sessions) as session:
        write_audit(session, event, tenant=AUDIT_TENANT, actor=actor, target=f"deployment:{deployment}",
                    before={"current": before.current, "ramping": before.ramping, "percent": before.ramp_percent},
                    after=after, data=data)


@dataclass
class GateReport:
    """What the decision-diff gate replayed on this process's code, and what blocks the ramp."""

    histories: int = 0
    bundles: int = 0
    decisions: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def recent_bundle_runs(session: Session, limit: int) -> list[str]:
    q = (select(ReplayEntry.run_id, func.max(ReplayEntry.id).label("last")).group_by(ReplayEntry.run_id)
         .order_by(func.max(ReplayEntry.id).desc()).limit(limit))
    return [r for r, _ in session.execute(q)]


async def recent_histories(client: Client, task_queue: str, limit: int) -> dict[str, WorkflowHistory]:
    """The histories of the last ``limit`` closed workflows of ``task_queue`` (runs and repairs)."""
    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus != 'Running'"
    out: dict[str, WorkflowHistory] = {}
    async for wf in client.list_workflows(query, limit=limit):
        out[wf.id] = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
    return out


def history_files(paths: Sequence[Path]) -> dict[str, WorkflowHistory]:
    """Recorded histories (``*.json``) in these files or directories; ``BadRequest`` for a bad one."""
    out: dict[str, WorkflowHistory] = {}
    for path in paths:
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        if not path.exists():
            raise BadRequest(f"--histories {path}: no such file or directory")
        for f in files:
            try:
                out[str(f)] = WorkflowHistory.from_json(f.stem, f.read_text())
            except (ValueError, KeyError, OSError) as err:
                raise BadRequest(f"{f}: not a Temporal history: {err}") from None
    return out


async def decision_gate(sessions: sessionmaker[Session], histories: dict[str, WorkflowHistory], *,
                        bundles: int,
                        replay: Callable[[dict[str, WorkflowHistory]], Awaitable[dict[str, str | None]]]
                        ) -> GateReport:
    """Replay ``histories`` on this code (``replay`` gives each one's error, None if it replayed) and
    re-drive the replay bundles of the last ``bundles`` runs: each nondeterminism or changed
    decision is a problem that blocks the ramp."""
    from metabuilder.service.replay import redrive

    report = GateReport(histories=len(histories))
    for wf_id, error in (await replay(histories)).items():
        if error is not None:
            report.problems.append(f"history {wf_id}: does not replay: {error}")
    run_ids = await asyncio.to_thread(lambda: _in_tx(sessions, lambda s: recent_bundle_runs(s, bundles)))
    for run_id in run_ids:
        r = await asyncio.to_thread(redrive, sessions, run_id)
        report.bundles += 1
        report.decisions += r.redriven
        report.problems += [f"run {run_id}: decision changed: {d}" for d in r.differences]
    return report


def _in_tx(sessions: sessionmaker[Session], fn: Callable[[Session], Any]) -> Any:
    with transaction(sessions) as session:
        return fn(session)


async def ramp(client: Client, sessions: sessionmaker[Session], deployment: str, build_id: str, percent: float,
               actor: str, gate: GateReport | None) -> Routing:
    """Ramp ``percent`` of new runs to ``build_id`` once the gate passed (``Conflict`` listing what
    blocks it; ``gate`` None: skipped by the operator, which the audit says)."""
    if not 0 <= percent <= 100:
        raise BadRequest(f"--percent {percent:g}: expected 0 to 100")
    before = await routing(client, deployment)
    if before.current is None:
        raise Conflict(f"the deployment {deployment!r} has no current version to compare with: "
                       f"promote one first (`metabuilder canary promote BUILD_ID`)")
    if build_id == before.current:
        raise Conflict(f"{build_id} is the current version already: ramp another build")
    data = {"gate": "skipped"} if gate is None else {
        "gate": "passed" if gate.passed else "blocked", "histories": gate.histories, "bundles": gate.bundles,
        "decisions": gate.decisions, "problems": gate.problems[:50]}
    if gate is not None and not gate.passed:
        await asyncio.to_thread(_audit, sessions, "canary.ramp_blocked", actor, deployment, before,
                                {"ramping": build_id, "percent": percent}, data)
        raise Conflict(f"the decision-diff gate blocks the ramp of {build_id}: {len(gate.problems)} problem(s):\n  "
                       + "\n  ".join(gate.problems))
    await set_ramping(client, deployment, build_id, percent, actor)
    await asyncio.to_thread(_audit, sessions, "canary.ramped", actor, deployment, before,
                            {"current": before.current, "ramping": build_id, "percent": percent}, data)
    return await routing(client, deployment)


async def promote(client: Client, sessions: sessionmaker[Session], deployment: str, build_id: str | None,
                  actor: str) -> Routing:
    """Make ``build_id`` (default: the ramping version) current: every new run goes to it."""
    before = await routing(client, deployment)
    target = build_id or before.ramping
    if target is None:
        raise BadRequest("nothing ramps: name the build id to promote")
    await set_current(client, deployment, target, actor)
    await asyncio.to_thread(_audit, sessions, "canary.promoted", actor, deployment, before,
                            {"current": target, "ramping": None, "percent": 0.0})
    return await routing(client, deployment)


async def rollback(client: Client, sessions: sessionmaker[Session], deployment: str, actor: str) -> Routing:
    """Take the ramp away: every new run goes to the current version; runs pinned to the candidate
    finish on it (its workers must keep running until they have)."""
    before = await routing(client, deployment)
    if before.ramping is None:
        raise Conflict(f"nothing ramps in the deployment {deployment!r}: nothing to roll back")
    await set_ramping(client, deployment, None, 0.0, actor)
    await asyncio.to_thread(_audit, sessions, "canary.rolled_back", actor, deployment, before,
                            {"current": before.current, "ramping": None, "percent": 0.0})
    return await routing(client, deployment)


async def act(client: Client, sessions: sessionmaker[Session], view: CanaryView, actor: str) -> Routing | None:
    """Act on the recommendation (``META_V4_CANARY_AUTO_ACT``): promote the candidate, or ramp it
    to 0. None when it says continue (or there is nothing to compare)."""
    if view.comparison is None or view.routing.ramping is None:
        return None
    match view.comparison.recommendation:
        case Recommendation.PROMOTE:
            return await promote(client, sessions, view.routing.deployment, view.routing.ramping, actor)
        case Recommendation.ROLLBACK:
            return await rollback(client, sessions, view.routing.deployment, actor)
    return None
