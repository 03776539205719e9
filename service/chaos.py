"""Chaos as operators steer and read it: turning a scope on or off (audited), and the statistics."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.chaos import ChaosScope, ChaosSettings, ChaosStats, FaultType, format_weights, summarize
from metabuilder.service.errors import BadRequest, Conflict, NotFound
from metabuilder.store import chaos as store
from metabuilder.store.db import transaction
from metabuilder.store.models import AuditEvent, utcnow
from metabuilder.store.models import ChaosScope as ScopeRow
from metabuilder.store.tenants import ensure_tenant


@dataclass(frozen=True)
class ScopeRequest:
    """What ``chaos enable`` asks for; None leaves a value to the workers' ``META_V4_CHAOS_*``."""

    tenant: str
    run_id: str = ""
    probability: float | None = None
    weights: Mapping[FaultType, float] | None = None
    seed: int | None = None
    steps: Sequence[str] = ()
    max_attempt: int | None = None
    for_seconds: float | None = None
    """The scope switches itself off after this long (None: until disabled)."""


@dataclass(frozen=True)
class Enabled:
    scope: ChaosScope
    replaced: bool


def _describe(row: ScopeRow | None) -> dict[str, object] | None:
    if row is None:
        return None
    return {"run_id": row.run_id or None, "probability": row.probability, "weights": row.weights,
            "seed": row.seed, "steps": list(row.steps or []), "max_attempt": row.max_attempt,
            "expires_at": store.aware(row.expires_at).isoformat() if row.expires_at else None}


def _audit(session: Session, tenant: str, run_id: str, event: str, actor: str, data: dict[str, object]) -> None:
    ensure_tenant(session, tenant)
    session.add(AuditEvent(id=str(uuid.uuid4()), tenant_id=tenant, run_id=run_id or None, event=event, actor=actor,
                           created_at=utcnow(), data=data))


def check_allowed(settings: ChaosSettings, *, production: bool, force: bool = False) -> None:
    """``Conflict`` in the production environment unless forced (here or by ``META_V4_CHAOS_FORCE``)."""
    if production and not (force or settings.forced):
        raise Conflict("chaos is refused in the production environment (META_BUILDER_ENV=production); "
                       "force it with --force or META_V4_CHAOS_FORCE=true")


def enable(sessions: sessionmaker[Session], settings: ChaosSettings, req: ScopeRequest, actor: str, *,
           production: bool, force: bool = False) -> Enabled:
    """Turn chaos on for a tenant or a run (an admin's act, written to the audit log with the
    scope before and after). Refused in the production environment unless forced, here or in
    the settings (``META_V4_CHAOS_FORCE``). ``BadRequest`` naming a bad value."""
    check_allowed(settings, production=production, force=force)
    if not req.tenant.strip():
        raise BadRequest("tenant: required")
    if req.for_seconds is not None and req.for_seconds <= 0:
        raise BadRequest(f"for: {req.for_seconds!r}: expected a positive duration")
    expires = utcnow() + timedelta(seconds=req.for_seconds) if req.for_seconds else None
    try:
        scope = ChaosScope(
            tenant=req.tenant, run_id=req.run_id,
            probability=settings.probability if req.probability is None else req.probability,
            weights=dict(settings.weights if req.weights is None else req.weights),
            seed=settings.seed if req.seed is None else req.seed, steps=tuple(req.steps),
            max_attempt=req.max_attempt, expires_at=expires.timestamp() if expires else None)
    except ValueError as err:
        raise BadRequest(str(err)) from None
    row = ScopeRow(tenant_id=req.tenant, run_id=req.run_id, probability=req.probability,
                   weights={str(k): v for k, v in req.weights.items()} if req.weights is not None else None,
                   seed=req.seed, steps=list(req.steps), max_attempt=req.max_attempt, expires_at=expires,
                   created_by=actor, created_at=utcnow())
    with transaction(sessions) as session:
        before, after = store.put_scope(session, row)
        _audit(session, req.tenant, req.run_id, "chaos.enabled", actor,
               {"before": _describe(before), "after": _describe(after), "forced": production,
                "effective": {"probability": scope.probability, "weights": format_weights(scope.weights),
                              "seed": scope.seed}})
    return Enabled(scope, replaced=before is not None)


def disable(sessions: sessionmaker[Session], tenant: str, actor: str, run_id: str = "") -> None:
    """Turn a tenant's or a run's chaos scope off (audited); ``NotFound`` when it has none."""
    with transaction(sessions) as session:
        old = store.delete_scope(session, tenant, run_id)
        if old is None:
            where = f"run {run_id}" if run_id else f"tenant {tenant!r}"
            raise NotFound(f"no chaos scope for {where}")
        _audit(session, tenant, run_id, "chaos.disabled", actor, {"before": _describe(old)})


@dataclass(frozen=True)
class StatsView:
    """The statistics over the retention window, and the scopes that are on."""

    stats: ChaosStats
    since: datetime
    retention_days: float
    scopes: list[ChaosScope] = field(default_factory=list)


def stats(sessions: sessionmaker[Session], settings: ChaosSettings, tenant: str | None = None,
          run_id: str | None = None) -> StatsView:
    """Injections by type, recovery rate, mean and p95 recovery time, over the events kept
    (``META_V4_CHAOS_RETENTION_DAYS``; older ones are never counted, even before their cleanup).
    Injections of runs that have ended without the step passing are settled as unrecovered first."""
    since = datetime.now(UTC) - timedelta(days=settings.retention_days)
    with transaction(sessions) as session:
        store.settle_ended_runs(session, tenant)
        rows = store.events(session, tenant=tenant, run_id=run_id, since=since)
        facts = store.facts(rows)
        now = datetime.now(UTC).timestamp()
        scopes = [s for s in (store.to_scope(r, settings) for r in store.scopes(session, tenant))
                  if s.active(now)]
    return StatsView(summarize(facts), since, settings.retention_days, scopes)
