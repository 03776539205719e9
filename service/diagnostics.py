"""Is this deployment healthy? Each check green or red with a reason: versions, Temporal
(connection, namespace, search attributes, workers polling each pool), the database (reachable,
migrated to head), the LLM endpoint under the tenant's privacy mode, the tenant's circuit
breakers, the canary (routing and recommendation) when workers are versioned. One use case for
``metabuilder doctor`` and the portal's diagnostics page."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from metabuilder.adapters.llm import LlmSettings
from metabuilder.domain.canary import CanarySettings
from metabuilder.domain.plans import Queue
from metabuilder.domain.privacy import Privacy
from metabuilder.domain.runs import WORKFLOW_QUEUE

CHECK_TIMEOUT = 10.0
POOLS = (WORKFLOW_QUEUE, *(q.value for q in Queue))


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str


@dataclass(frozen=True)
class Deployment:
    """What the checks look at, from the caller's settings."""

    connect: Callable[[], Awaitable[Client]]
    address: str
    database_url: str
    sessions: Callable[[], sessionmaker[Session]]
    """Opened only for the tenant's checks (after the database's own)."""
    task_queue_prefix: str
    privacy: Privacy
    llm: LlmSettings | None
    version: str
    """The package's version string."""
    revisions: Callable[[], tuple[str | None, str]]
    """The database's migration revision and the migrations' head (raises when it cannot be reached)."""
    canary_deployment: str | None = None
    """The Worker Deployment the workers poll as (None: unversioned workers, no canary)."""
    canary: CanarySettings = field(default_factory=CanarySettings)


async def _temporal_checks(d: Deployment) -> list[Check]:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import (
        DescribeNamespaceRequest,
        DescribeTaskQueueRequest,
        GetSystemInfoRequest,
    )

    from metabuilder.domain.runs import task_queue
    from metabuilder.workflows import search_attributes

    try:
        client = await asyncio.wait_for(d.connect(), CHECK_TIMEOUT)
    except Exception as err:  # noqa: BLE001 - any failure to connect is the check's answer
        return [Check("temporal.connection", False, f"{d.address}: {err.__class__.__name__}: {err}")]
    checks = [Check("temporal.connection", True, f"connected to {d.address}")]
    svc = client.workflow_service
    info = await svc.get_system_info(GetSystemInfoRequest())
    checks.append(Check("version.temporal_server", bool(info.server_version), info.server_version or "not reported"))
    try:
        await svc.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace))
        checks.append(Check("temporal.namespace", True, f"{client.namespace!r} exists"))
    except Exception as err:  # noqa: BLE001
        checks.append(Check("temporal.namespace", False, f"{client.namespace!r}: {err}"))
        return checks
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace))
    missing = [k.name for k in search_attributes.ALL if k.name not in listed.custom_attributes]
    checks.append(Check("temporal.search_attributes", not missing,
                        f"missing {', '.join(missing)} (metabuilder worker registers them)" if missing
                        else ", ".join(k.name for k in search_attributes.ALL) + " registered"))
    for pool in POOLS:
        queue = task_queue(d.task_queue_prefix, pool)
        kind = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW if pool == WORKFLOW_QUEUE
                else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
        described = await svc.describe_task_queue(DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind))
        pollers = sorted({p.identity for p in described.pollers})
        checks.append(Check(f"temporal.pollers.{pool}", bool(pollers),
                            f"{len(pollers)} worker(s) polling {queue}: {', '.join(pollers)}" if pollers
                            else f"no worker polls {queue} (start one: metabuilder worker --queues {pool})"))
    checks.append(await _canary_check(d, client))
    return checks


async def _canary_check(d: Deployment, client: Client) -> Check:
    """Where new runs go and what the comparison recommends; red when it recommends a rollback."""
    from metabuilder.domain.canary import Recommendation
    from metabuilder.service import canary

    if d.canary_deployment is None:
        return Check("canary", True, "worker versioning is off: no canary (META_BUILDER_WORKER_VERSIONING)")
    view = await canary.stats(client, d.sessions(), d.canary, d.canary_deployment)
    r = view.routing
    if r.current is None:
        return Check("canary", True, f"deployment {r.deployment!r}: no version is current yet")
    where = f"deployment {r.deployment!r}: current {r.current}"
    if r.ramping:
        where += f", {r.ramp_percent:g}% ramped to {r.ramping}"
    c = view.comparison
    if c is None:
        return Check("canary", True, f"{where}; no candidate to compare")
    said = f"{where}; {view.candidate} against {r.current}: {c.recommendation} ({'; '.join(c.reasons)})"
    return Check("canary", c.recommendation is not Recommendation.ROLLBACK, said)


def _database_checks(d: Deployment) -> list[Check]:
    try:
        current, head = d.revisions()
    except Exception as err:  # noqa: BLE001
        return [Check("database.reachable", False, f"{redacted_url(d.database_url)}: {err}")]
    return [Check("database.reachable", True, redacted_url(d.database_url)),
            Check("database.migrations", current == head,
                  f"at head {head}" if current == head else f"at {current}, head is {head}: metabuilder db upgrade")]


def redacted_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _tenant_checks(d: Deployment, tenant: str) -> list[Check]:
    import httpx

    from metabuilder.domain.privacy import llm_refusal
    from metabuilder.store import breakers, governance
    from metabuilder.store.db import transaction

    sessions = d.sessions()
    with transaction(sessions) as session:
        privacy = governance.effective(session, d.privacy, tenant)
    checks = []
    llm = d.llm
    if llm is None:
        checks.append(Check("llm.endpoint", True, "no LLM endpoint configured: the deterministic fixers only"))
    elif refusal := llm_refusal(privacy, llm.url):
        checks.append(Check("llm.endpoint", True, f"not contacted under tenant {tenant!r}'s privacy: {refusal}"))
    else:
        try:
            answer = httpx.get(llm.url.rstrip("/") + "/models", timeout=5.0,
                               headers={"Authorization": f"Bearer {llm.api_key}"} if llm.api_key else {})
            checks.append(Check("llm.endpoint", answer.status_code not in (502, 503, 504),  # it answers
                                f"{llm.url} answered {answer.status_code} (privacy mode {privacy.mode})"))
        except httpx.HTTPError as err:
            checks.append(Check("llm.endpoint", False, f"{llm.url}: {err.__class__.__name__}: {err}"))
    rows = breakers.list_breakers(sessions, tenant)
    opened = [f"{r.breaker.key.failure_class}/{r.breaker.key.dependency}" for r in rows
              if str(r.breaker.state) != "closed"]
    checks.append(Check("breakers", not opened, f"{len(rows)} breaker(s), not closed: {', '.join(opened)}" if opened
                        else f"{len(rows)} breaker(s), all closed"))
    return checks


async def run_checks(d: Deployment, tenant: str) -> list[Check]:
    """Every check, in order; one that breaks is red, the others still run."""
    import temporalio

    checks = [Check("version.metabuilder", True, d.version),
              Check("version.temporal_sdk", True, f"temporalio {temporalio.__version__}")]
    steps: list[Callable[[], Awaitable[list[Check]]]] = [
        lambda: _temporal_checks(d),
        lambda: asyncio.to_thread(_database_checks, d),
        lambda: asyncio.to_thread(_tenant_checks, d, tenant)]
    for step in steps:
        try:
            checks += await step()
        except Exception as err:  # noqa: BLE001 - a check that breaks is red, the others still run
            checks.append(Check("doctor", False, f"{err.__class__.__name__}: {err}"))
    return checks
