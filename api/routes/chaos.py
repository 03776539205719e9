"""Chaos (seed 002 section 6): ``GET /api/meta/v4/chaos/stats``, the tenant's injections and recoveries."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from metabuilder.api.deps import ConfigDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.domain.chaos import ChaosScope, FaultType, TypeStats
from metabuilder.service import chaos as service

V4 = "/api/meta/v4"
router = APIRouter(tags=["chaos"])


class TypeStatsOut(BaseModel):
    injections: int
    recovered: int
    unrecovered: int = Field(description="The run ended before the step passed again.")
    pending: int = Field(description="The step has not passed since, and its run goes on.")
    recovery_rate: float | None = Field(description="Recovered over settled; null while none has settled.")
    mean_recovery_seconds: float | None
    p95_recovery_seconds: float | None

    @classmethod
    def of(cls, t: TypeStats) -> TypeStatsOut:
        return cls(injections=t.injections, recovered=t.recovered, unrecovered=t.unrecovered, pending=t.pending,
                   recovery_rate=t.recovery_rate, mean_recovery_seconds=t.mean_recovery_seconds,
                   p95_recovery_seconds=t.p95_recovery_seconds)


class ScopeOut(BaseModel):
    run_id: str | None = Field(description="null: every run of the tenant.")
    probability: float
    weights: dict[FaultType, float]
    seed: int
    steps: list[str]
    max_attempt: int | None
    expires_at: datetime | None

    @classmethod
    def of(cls, s: ChaosScope) -> ScopeOut:
        return cls(run_id=s.run_id or None, probability=s.probability,
                   weights={k: v for k, v in s.weights.items() if v > 0}, seed=s.seed, steps=list(s.steps),
                   max_attempt=s.max_attempt,
                   expires_at=datetime.fromtimestamp(s.expires_at, UTC) if s.expires_at else None)


class ChaosStatsOut(BaseModel):
    since: datetime = Field(description="Start of the window: older injections are cleaned and never counted.")
    retention_days: float
    total: TypeStatsOut
    by_type: dict[FaultType, TypeStatsOut]
    scopes: list[ScopeOut] = Field(description="The tenant's chaos scopes that are on.")


@router.get(V4 + "/chaos/stats", responses=responses(401, 403, 422))
def chaos_stats(principal: Viewer, config: ConfigDep,
                run_id: str | None = Query(default=None, max_length=64, description="One run only.")
                ) -> ChaosStatsOut:
    """Chaos injections by fault type, recovery rate, mean and p95 recovery time, and the scopes that are on."""
    view = service.stats(config.sessions, config.chaos, tenant=principal.tenant, run_id=run_id)
    return ChaosStatsOut(since=view.since, retention_days=view.retention_days, total=TypeStatsOut.of(view.stats.total),
                         by_type={k: TypeStatsOut.of(v) for k, v in view.stats.by_type.items()},
                         scopes=[ScopeOut.of(s) for s in view.scopes])
