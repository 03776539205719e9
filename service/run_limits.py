"""A tenant's limit on concurrent runs (``META_BUILDER_TENANT_MAX_ACTIVE_RUNS``), checked when a
run is submitted or retried.

Counted by Temporal, the authority on which workflows run: the runs of the tenant on this
deployment's workflow task queue that are open (running, waiting on a gate, a breaker or a
backoff). The count and the start are two calls, so submissions that arrive at the same moment
may pass the limit together by their number; the limit bounds sustained load, not a burst.
It needs the deployment's search attributes (``MetaBuilderTenant``); without them there is no
count and no limit.
"""

from __future__ import annotations

from temporalio.client import Client

from metabuilder.service.errors import Conflict
from metabuilder.workflows import search_attributes as sa


class TenantRunLimit(Conflict):
    """The tenant has as many runs open as its limit allows (409, problem+json through the API)."""


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def active_runs(client: Client, tenant: str, workflow_queue: str) -> int:
    """How many of ``tenant``'s runs on ``workflow_queue`` Temporal has open."""
    query = (f"TaskQueue = {_quoted(workflow_queue)} AND ExecutionStatus = 'Running' "
             f"AND {sa.TENANT.name} = {_quoted(tenant)}")
    return (await client.count_workflows(query)).count


async def check_tenant_limit(client: Client, tenant: str, workflow_queue: str, limit: int) -> None:
    """``TenantRunLimit`` when ``tenant`` has ``limit`` runs open already (0: no limit)."""
    if limit <= 0:
        return
    active = await active_runs(client, tenant, workflow_queue)
    if active >= limit:
        raise TenantRunLimit(
            f"tenant {tenant!r} has {active} runs in progress, as many as it may have at once "
            f"(META_BUILDER_TENANT_MAX_ACTIVE_RUNS={limit}, or the tenant budget's concurrent_runs); "
            "submit again when one has ended")
