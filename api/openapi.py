"""The OpenAPI document's stable parts: an explicit operation id for every endpoint, and error
bodies under the media type they are sent with.

FastAPI's generated ids (``list_runs_api_meta_v3_runs_get``) change whenever a function is
renamed or a path moves; clients generated from the document name their methods after them. So
every operation's id is written here, by method and path; a route missing from the table stops
the app from being made (the test names it), and ``tests/api/operation_ids.txt`` holds the
published set, so that changing an id is a deliberate edit.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.utils import generate_unique_id

from metabuilder.api.errors import problem_media_type

V2, V3 = "/api/meta/v2", "/api/meta/v3"

_V3 = {
    ("POST", "/runs"): "startRun",
    ("GET", "/runs"): "listRuns",
    ("GET", "/runs/{run_id}"): "getRun",
    ("POST", "/runs/{run_id}/cancel"): "cancelRun",
    ("POST", "/runs/{run_id}/retry"): "retryRun",
    ("GET", "/runs/{run_id}/autofix"): "getRunAutofix",
    ("GET", "/runs/{run_id}/escalations"): "listRunEscalations",
    ("GET", "/runs/{run_id}/plan-deltas"): "listRunPlanDeltas",
    ("GET", "/runs/{run_id}/logs"): "getRunLogs",
    ("GET", "/runs/{run_id}/settings"): "getRunSettings",
    ("PUT", "/runs/{run_id}/settings"): "replaceRunSettings",
    ("POST", "/runs/{run_id}/settings"): "updateRunSettings",
    ("POST", "/runs/{run_id}/corrections"): "correctRunFailure",
    ("GET", "/approvals"): "listApprovals",
    ("GET", "/approvals/{gate_id}"): "getApproval",
    ("POST", "/approvals/{gate_id}/approve"): "approveGate",
    ("POST", "/approvals/{gate_id}/reject"): "rejectGate",
    ("GET", "/tenants/{tenant_id}/settings"): "getTenantSettings",
    ("PUT", "/tenants/{tenant_id}/settings"): "replaceTenantSettings",
    ("POST", "/tenants/{tenant_id}/settings"): "updateTenantSettings",
    ("GET", "/tenants/{tenant_id}/patterns"): "listTenantPatterns",
    ("POST", "/tenants/{tenant_id}/patterns"): "addTenantPatterns",
    ("PUT", "/tenants/{tenant_id}/patterns/{entry_id}"): "replaceTenantPattern",
    ("DELETE", "/tenants/{tenant_id}/patterns/{entry_id}"): "deleteTenantPattern",
    ("GET", "/tenants/{tenant_id}/corrections"): "listTenantCorrections",
    ("POST", "/tenants/{tenant_id}/corrections/{correction_id}/accept"): "acceptTenantCorrection",
    ("POST", "/plans"): "createPlan",
    ("GET", "/plans"): "listPlans",
    ("GET", "/plans/{plan_id}"): "getPlan",
    ("GET", "/me"): "whoAmI",
    ("POST", "/classify-failure"): "classifyFailure",
    ("GET", "/audit"): "listAuditEvents",
}
_V2 = {  # seed v2's paths, served by the v3 handlers: the v3 id with a ``V2`` suffix
    ("POST", "/runs/{run_id}/retry"): "retryRun",
    ("GET", "/runs/{run_id}/autofix"): "getRunAutofix",
    ("GET", "/runs/{run_id}/escalation"): "listRunEscalations",
    ("GET", "/runs/{run_id}/plan-delta"): "listRunPlanDeltas",
    ("GET", "/runs/{run_id}/logs"): "getRunLogs",
    ("GET", "/runs/{run_id}/settings"): "getRunSettings",
    ("PUT", "/runs/{run_id}/settings"): "replaceRunSettings",
    ("POST", "/runs/{run_id}/settings"): "updateRunSettings",
    ("POST", "/approvals/{gate_id}/approve"): "approveGate",
    ("POST", "/approvals/{gate_id}/reject"): "rejectGate",
    ("GET", "/tenants/{tenant_id}/settings"): "getTenantSettings",
    ("PUT", "/tenants/{tenant_id}/settings"): "replaceTenantSettings",
    ("POST", "/tenants/{tenant_id}/settings"): "updateTenantSettings",
    ("POST", "/classify-failure"): "classifyFailure",
}

OPERATION_IDS: dict[tuple[str, str], str] = {
    **{(method, V3 + path): name for (method, path), name in _V3.items()},
    **{(method, V2 + path): name + "V2" for (method, path), name in _V2.items()},
    ("GET", "/api/meta/v4/circuit-breakers"): "listCircuitBreakers",
    ("GET", "/api/meta/v4/stats"): "getV4Stats",
    ("GET", "/api/meta/v4/tenants/{tenant_id}/settings"): "getTenantV4Settings",
    ("PUT", "/api/meta/v4/tenants/{tenant_id}/settings"): "replaceTenantV4Settings",
    ("POST", "/api/meta/v4/circuit-breakers"): "overrideCircuitBreaker",
    ("GET", "/api/meta/v4/runs/{run_id}/timeline"): "getRunTimeline",
    ("GET", "/api/meta/v4/chaos/stats"): "getChaosStats",
    ("GET", "/api/meta/v4/workers"): "listWorkers",
    ("GET", "/api/meta/v4/leases"): "listLeases",
    ("GET", "/api/meta/v3/runs/{run_id}/steps/{step}/log"): "getStepLog",
    ("GET", "/api/meta/v4/audit"): "exportAuditEvents",
    ("GET", "/api/meta/v4/tenants/{tenant_id}/privacy"): "getTenantPrivacy",
    ("PUT", "/api/meta/v4/tenants/{tenant_id}/privacy"): "replaceTenantPrivacy",
    ("GET", "/api/meta/v4/runs/{run_id}/budget"): "getRunBudget",
    ("PUT", "/api/meta/v4/runs/{run_id}/budget"): "replaceRunBudget",
    ("GET", "/api/meta/v4/tenants/{tenant_id}/budget"): "getTenantBudget",
    ("PUT", "/api/meta/v4/tenants/{tenant_id}/budget"): "replaceTenantBudget",
    ("POST", "/api/meta/v4/runs/{run_id}/promote"): "promoteRun",
    ("GET", "/api/meta/v4/canary/stats"): "getCanaryStats",
    ("GET", "/api/meta/v4/tenants/{tenant_id}/webhooks"): "listTenantWebhooks",
    ("POST", "/api/meta/v4/tenants/{tenant_id}/webhooks"): "createTenantWebhook",
    ("DELETE", "/api/meta/v4/tenants/{tenant_id}/webhooks/{webhook_id}"): "deleteTenantWebhook",
    ("GET", "/api/meta/v4/tenants/{tenant_id}/webhooks/{webhook_id}/deliveries"): "listWebhookDeliveries",
    ("GET", "/healthz"): "healthz",
    ("GET", "/readyz"): "readyz",
    ("GET", "/metrics"): "metrics",
}


def operation_id(route: APIRoute) -> str:
    """The route's id from the table (``generate_unique_id_function`` of the app)."""
    if not route.include_in_schema:  # the portal's pages: not in the document, any unique id will do
        return generate_unique_id(route)
    [method] = route.methods or {"GET"}
    try:
        return OPERATION_IDS[(method, route.path_format)]
    except KeyError:
        raise LookupError(f"no operation id for {method} {route.path_format}: add one to "
                          "metabuilder.api.openapi.OPERATION_IDS") from None


def install(app: FastAPI) -> None:
    """Serve the document with the problem+json media type on error responses."""

    generated = app.openapi

    def openapi() -> dict[str, Any]:
        return problem_media_type(generated())  # FastAPI keeps the document; the change is idempotent

    app.openapi = openapi  # type: ignore[method-assign]
