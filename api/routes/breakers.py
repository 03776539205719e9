"""Circuit breakers (seed 002): ``GET`` lists the tenant's, ``POST`` lets an admin override one."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from metabuilder.api.deps import Admin, ConfigDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.domain.breakers import Breaker, BreakerState, Override
from metabuilder.service import breakers as service
from metabuilder.store import breakers as store

V4 = "/api/meta/v4"
router = APIRouter(tags=["circuit breakers"])


def _when(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


class WaitingRunOut(BaseModel):
    run_id: str
    step: str
    since: datetime


class BreakerOut(BaseModel):
    failure_class: str
    dependency: str
    state: BreakerState
    failures_in_window: int
    trips: int = Field(description="How many times it has opened.")
    forced: bool = Field(description="Forced open by an operator: no probes until closed or reset.")
    opened_at: datetime | None
    cooldown_seconds: float | None
    next_probe_at: datetime | None
    probe_run_id: str | None
    last_reason: str
    waiting_runs: list[WaitingRunOut]

    @classmethod
    def of(cls, b: Breaker, last_reason: str = "", waiting: list[tuple[str, str, datetime]] | None = None
           ) -> BreakerOut:
        return cls(failure_class=str(b.key.failure_class), dependency=b.key.dependency, state=b.state,
                   failures_in_window=len(b.failures), trips=b.trips, forced=b.forced,
                   opened_at=_when(b.opened_at), cooldown_seconds=b.cooldown_seconds,
                   next_probe_at=_when(b.next_probe_at), probe_run_id=b.probe_run, last_reason=last_reason,
                   waiting_runs=[WaitingRunOut(run_id=r, step=s, since=t) for r, s, t in waiting or []])


class BreakerOverrideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failure_class: str = Field(max_length=32, examples=["TRANSIENT"])
    dependency: str = Field(max_length=255, examples=["pypi.org:443"])
    action: Override = Field(description="open: until closed, with no probes; close: now; reset: forget "
                                         "the failures, the trips and the grown cooldown.")


@router.get(V4 + "/circuit-breakers", responses=responses(401, 403))
def list_breakers(principal: Viewer, config: ConfigDep) -> list[BreakerOut]:
    """The tenant's circuit breakers: state, counts, when it opened, the next probe and the waiting runs."""
    return [BreakerOut.of(r.breaker, r.last_reason, r.waiting) for r in store.list_breakers(config.sessions,
                                                                                          principal.tenant)]


@router.post(V4 + "/circuit-breakers", responses=responses(401, 403, 422))
def override_breaker(body: BreakerOverrideIn, principal: Admin, config: ConfigDep) -> BreakerOut:
    """Force a breaker open or closed, or reset it (admin; written to the audit log with before and after)."""
    key = service.breaker_key(principal.tenant, body.failure_class, body.dependency, config.breaker_policies)
    service.force(config.sessions, key, body.action, actor=principal.user, policies=config.breaker_policies)
    [row] = [r for r in store.list_breakers(config.sessions, principal.tenant) if r.breaker.key == key]
    return BreakerOut.of(row.breaker, row.last_reason, row.waiting)
