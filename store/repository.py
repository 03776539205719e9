"""The run projection in one namespace, for callers that use many of its aggregates.

The queries and writes live by aggregate: ``rows`` (upserts keyed by natural ids, stable ids),
``tenants``, ``plans``, ``runs``, ``steps``, ``autofix`` and ``audit`` (and ``approvals``,
``access``, ``knowledge``). New code imports the aggregate's module."""

from metabuilder.store.audit import audit_events
from metabuilder.store.autofix import (
    FlakeRate,
    RepairRecord,
    autofix_outcomes,
    autofix_timeline,
    flake_rates,
    has_autofix,
    plan_deltas,
    record_autofix,
    record_repair_attempt,
    repair_attempts,
    retry_state,
)
from metabuilder.store.plans import ensure_plan, ensure_plan_of, get_plan, list_plans, run_plan_source
from metabuilder.store.rows import stable_id, upsert
from metabuilder.store.runs import get_run, list_runs, record_run, run_counts, run_summaries
from metabuilder.store.steps import (
    AttemptSignal,
    StepAttempt,
    close_attempt,
    close_open_attempts,
    run_steps,
    step_attempts,
    step_finished,
    step_started,
)
from metabuilder.store.tenants import ensure_tenant, set_tenant_autofix, tenant_autofix

__all__ = [
    "AttemptSignal", "FlakeRate", "RepairRecord", "StepAttempt", "audit_events", "autofix_outcomes",
    "autofix_timeline", "close_attempt", "close_open_attempts", "ensure_plan", "ensure_plan_of", "ensure_tenant",
    "flake_rates", "get_plan", "get_run", "has_autofix", "list_plans", "list_runs", "plan_deltas", "record_autofix",
    "record_repair_attempt", "record_run", "repair_attempts", "retry_state", "run_counts", "run_plan_source",
    "run_steps", "run_summaries", "set_tenant_autofix", "stable_id", "step_attempts", "step_finished", "step_started",
    "tenant_autofix", "upsert",
]
