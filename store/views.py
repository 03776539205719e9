"""Plain mappings of stored rows, in the API's field names: the API's response models and the
CLI's ``--json`` output are both built from them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from metabuilder.store.models import ApprovalGate, BuildRun, BuildStep


def run_fields(run: BuildRun) -> dict[str, Any]:
    return {"run_id": run.id, "tenant": run.tenant_id, "plan": run.plan.name, "status": run.status,
            "iteration": run.iteration, "retry_of": run.retry_of, "workflow_id": run.workflow_id,
            "branch": run.branch, "base_commit": run.base_commit, "head_commit": run.head_commit,
            "failed_step": run.failed_step, "error": run.error, "created_at": run.created_at,
            "finished_at": run.finished_at}


def step_fields(step: BuildStep | Row[Any], lines: int | None = None) -> dict[str, Any]:
    """One step attempt (or a row of ``steps.STEP_VIEW``); ``lines`` keeps only the last lines of its log tail."""
    tail = step.log_tail if lines is None else "\n".join(step.log_tail.splitlines()[-lines:])
    return {"index": step.step_index, "attempt": step.attempt, "name": step.name, "queue": step.queue,
            "status": step.status, "exit_code": step.exit_code, "duration_seconds": step.duration_seconds,
            "commit_before": step.commit_before, "commit_after": step.commit_after,
            "signal_type": step.signal_type, "log_tail": tail}


def gate_fields(gate: ApprovalGate | Row[Any]) -> dict[str, Any]:
    """One approval gate (or a row of ``approvals.GATE_VIEW``)."""
    return {"gate_id": gate.id, "run_id": gate.run_id, "step": gate.step_name, "kind": gate.kind,
            "action": gate.action, "status": gate.status, "reason": gate.reason, "signal_type": gate.signal_type,
            "evidence": list(gate.evidence), "deciders": list(gate.deciders), "on_expiry": gate.on_expiry,
            "opened_at": gate.opened_at, "expires_at": gate.expires_at, "decided_by": gate.decided_by,
            "decided_at": gate.decided_at, "decision_reason": gate.decision_reason, "proposal": gate.proposal}
