"""The canary between versions (seed 002 section 5): ``GET /api/meta/v4/canary/stats``, where
Temporal sends new runs and how the candidate version compares with the current one."""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from metabuilder.api.deps import ConfigDep, TemporalDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.domain.canary import Comparison, Recommendation, VersionStats
from metabuilder.service import canary as service

V4 = "/api/meta/v4"
router = APIRouter(tags=["canary"])


class RoutingOut(BaseModel):
    deployment: str = Field(description="The Worker Deployment of Meta-Builder's workers.")
    current: str | None = Field(description="Build id new runs go to; null: no versioned worker has been made current.")
    ramping: str | None = Field(description="The candidate's build id, while it ramps.")
    ramp_percent: float = Field(description="Share of new runs Temporal sends to the candidate.")
    versions: list[str] = Field(description="Build ids Temporal knows in the deployment.")


class VersionOut(BaseModel):
    version: str
    runs: int
    succeeded: int
    success_rate: float | None
    median_duration_seconds: float | None
    mean_attempts: float | None
    mean_repairs: float | None
    mean_cost_usd: float | None = Field(description="Over the runs whose cost is known.")
    costed_runs: int

    @classmethod
    def of(cls, v: VersionStats) -> VersionOut:
        return cls(**v.__dict__)


class ComparisonOut(BaseModel):
    recommendation: Recommendation
    reasons: list[str] = Field(description="The numbers behind the recommendation, one line each.")
    checks: dict[str, str] = Field(description="success_rate, duration, cost: ok, regressed, not enough samples or "
                                               "unknown.")
    success_p_value: float | None = Field(description="Fisher's exact test, two-sided.")
    duration_p_value: float | None = Field(description="Mann-Whitney U test, two-sided.")
    cost_p_value: float | None
    min_samples: int
    alpha: float
    current: VersionOut
    candidate: VersionOut

    @classmethod
    def of(cls, c: Comparison) -> ComparisonOut:
        return cls(recommendation=c.recommendation, reasons=c.reasons, checks=c.checks,
                   success_p_value=c.success_p_value, duration_p_value=c.duration_p_value,
                   cost_p_value=c.cost_p_value, min_samples=c.min_samples, alpha=c.alpha,
                   current=VersionOut.of(c.current), candidate=VersionOut.of(c.candidate))


class CanaryStatsOut(BaseModel):
    routing: RoutingOut
    candidate: str | None = Field(description="The version compared with the current one.")
    samples_by_version: dict[str, int] = Field(description="Finished runs recorded per build id.")
    comparison: ComparisonOut | None = Field(description="null: no candidate to compare.")


@router.get(V4 + "/canary/stats", responses=responses(401, 403, 422, 503))
async def canary_stats(principal: Viewer, config: ConfigDep, temporal: TemporalDep,
                       candidate: str | None = Query(default=None, max_length=200,
                                                     description="Compare this build id (default: the ramping one).")
                       ) -> CanaryStatsOut:
    """Where new runs go (current and ramping versions), each version's runs, and the comparison:
    success rate (Fisher), duration (Mann-Whitney), cost, with a promote/rollback/continue recommendation."""
    client = await temporal.client()
    view = await service.stats(client, config.sessions, config.v4.canary, config.deployment_name,
                               candidate=candidate, tenant=principal.tenant)
    r = view.routing
    return CanaryStatsOut(
        routing=RoutingOut(deployment=r.deployment, current=r.current, ramping=r.ramping, ramp_percent=r.ramp_percent,
                           versions=r.versions),
        candidate=view.candidate, samples_by_version=view.samples_by_version,
        comparison=ComparisonOut.of(view.comparison) if view.comparison else None)
