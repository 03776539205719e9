"""Canary samples (``mb_v4_canary_sample``): one per finished run, with the version it ran on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from metabuilder.domain.canary import Sample
from metabuilder.domain.runs import RunStatus
from metabuilder.store.models import BuildRun, BuildStep, CanarySample, RepairAttempt, utcnow
from metabuilder.store.rows import upsert


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


IN_FLIGHT = tuple(s.value for s in RunStatus if not s.is_final)
"""Outcomes of a run's row before it ends: it shows the run's version (the portal's badge), and
is no sample yet."""
NOT_SAMPLES = (*IN_FLIGHT, RunStatus.CANCELLED.value)
"""A cancelled run is a person's decision, not the version's doing: it is no sample either."""


def record_sample(session: Session, run_id: str, deployment: str, version: str, outcome: str) -> Sample | None:
    """Write the version a run is pinned to, and once it ended (``outcome`` a final status) its
    sample from its rows: duration from its start to now, step attempts, repair attempts, the LLM
    cost when every model call was priced. Idempotent: an ended run's sample is written once.
    None while the run goes on, or when it has no row."""
    run = session.get(BuildRun, run_id)
    if run is None:
        return None
    if outcome in NOT_SAMPLES:
        upsert(session, CanarySample, {
            "run_id": run_id, "tenant_id": run.tenant_id, "deployment": deployment, "version": version,
            "outcome": outcome, "duration_seconds": 0.0, "attempts": 0, "repairs": 0, "cost_usd": None,
            "finished_at": utcnow()}, ["run_id"], ["outcome"] if outcome not in IN_FLIGHT else [])
        return None
    existing = session.get(CanarySample, run_id)
    if existing is not None and existing.outcome not in NOT_SAMPLES:
        return None
    finished = utcnow()
    duration = max(0.0, (_aware(finished) - _aware(run.created_at)).total_seconds())
    attempts = session.scalar(select(func.count()).select_from(BuildStep).where(BuildStep.run_id == run_id)) or 0
    repairs = list(session.execute(select(RepairAttempt.model, RepairAttempt.cost_usd)
                                   .where(RepairAttempt.run_id == run_id)))
    unpriced = any(model and not cost for model, cost in repairs)
    cost = None if unpriced else float(sum(cost or 0.0 for _, cost in repairs))
    sample = Sample(version=version, outcome=outcome, duration_seconds=duration, attempts=int(attempts),
                    repairs=len(repairs), cost_usd=cost)
    values = {"run_id": run_id, "tenant_id": run.tenant_id, "deployment": deployment, "version": version,
              "outcome": outcome, "duration_seconds": duration, "attempts": sample.attempts,
              "repairs": sample.repairs, "cost_usd": cost, "finished_at": finished}
    upsert(session, CanarySample, values, ["run_id"], [k for k in values if k != "run_id"])
    return sample


def samples(session: Session, deployment: str, versions: Sequence[str] | None = None, *,
            tenant: str | None = None, since: datetime | None = None) -> list[Sample]:
    """The samples of ``deployment`` (of these versions, this tenant, since then), oldest first."""
    q = select(CanarySample).where(CanarySample.deployment == deployment, CanarySample.outcome.notin_(NOT_SAMPLES))
    if versions is not None:
        q = q.where(CanarySample.version.in_(list(versions)))
    if tenant is not None:
        q = q.where(CanarySample.tenant_id == tenant)
    if since is not None:
        q = q.where(CanarySample.finished_at >= since)
    return [Sample(version=r.version, outcome=r.outcome, duration_seconds=r.duration_seconds, attempts=r.attempts,
                   repairs=r.repairs, cost_usd=r.cost_usd)
            for r in session.scalars(q.order_by(CanarySample.finished_at, CanarySample.run_id))]


def run_version(session: Session, run_id: str) -> str | None:
    """The version a run is pinned to (None: an unversioned worker runs it, or it started before)."""
    return session.scalar(select(CanarySample.version).where(CanarySample.run_id == run_id))
