"""Circuit breakers as people see and steer them: the list, and an operator's override (audited)."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping

from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.breakers import (
    DEFAULT_POLICIES,
    Breaker,
    BreakerKey,
    BreakerPolicy,
    Override,
    override,
    policy_for,
)
from metabuilder.domain.taxonomy import FailureType
from metabuilder.service.errors import BadRequest
from metabuilder.store import breakers
from metabuilder.store.audit import write_audit


def breaker_key(tenant: str, failure_class: str, dependency: str,
                policies: Mapping[FailureType, BreakerPolicy] = DEFAULT_POLICIES) -> BreakerKey:
    """A breaker's key from user input, or ``BadRequest`` naming what is wrong."""
    try:
        cls = FailureType(failure_class.upper())
    except ValueError:
        raise BadRequest(f"failure_class: {failure_class!r} is not a failure class") from None
    if policy_for(cls, policies) is None:
        classes = ", ".join(sorted(policies))
        raise BadRequest(f"failure_class: {cls} has no circuit breaker (the classes that do: {classes})")
    dependency = dependency.strip()
    if not dependency or len(dependency) > 255 or any(c.isspace() for c in dependency):
        raise BadRequest("dependency: a host:port or service name, without spaces, at most 255 characters")
    return BreakerKey(tenant, cls, dependency)


def _state(b: Breaker) -> dict[str, object]:
    return {"state": str(b.state), "trips": b.trips, "forced": b.forced, "cooldown_seconds": b.cooldown_seconds}


def force(sessions: sessionmaker[Session], key: BreakerKey, action: Override, actor: str,
          policies: Mapping[FailureType, BreakerPolicy] = DEFAULT_POLICIES) -> Breaker:
    """An operator opens, closes or resets a breaker; the audit log records before and after."""
    policy = policy_for(key.failure_class, policies)
    assert policy is not None  # breaker_key checked it

    def audit(session: Session, before: Breaker, after: Breaker) -> None:
        write_audit(session, f"breaker.{action}", tenant=key.tenant, actor=actor,
                    target=f"breaker:{key.failure_class}/{key.dependency}", before=_state(before), after=_state(after),
                    data={"failure_class": str(key.failure_class), "dependency": key.dependency,
                          "before": _state(before), "after": _state(after)})

    after, _ = breakers.change(sessions, key, functools.partial(override, action=action, now=time.time(),
                                                                policy=policy), audit=audit)
    return after
