"""v4 scheduling of a run: whether v4 is on for it (platform -> tenant -> run), and its priority
and fairness; and a tenant's v4 overrides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.plans import Plan
from metabuilder.domain.pools import PriorityClass, Scheduling, run_scheduling
from metabuilder.domain.sla import DEFAULT_SLA, RunSla, SlaClass, SlaProfile
from metabuilder.domain.v4 import EffectiveFlag, V4Settings, effective_enabled, parse_flag
from metabuilder.service.errors import BadRequest
from metabuilder.service.tenancy import own_tenant
from metabuilder.store import v4 as v4_rows
from metabuilder.store.audit import write_audit
from metabuilder.store.db import transaction

TENANT_KEYS = ("enabled",)
"""What a tenant may override of the v4 group (``FEATURE_META_V4_ENABLED``)."""


@dataclass(frozen=True)
class V4Choice:
    """What a submission decided about v4: on or off (and from which level), the run's priority."""

    flag: EffectiveFlag
    priority: PriorityClass | None = None
    """The API's or CLI's ``priority`` for the run (None: the plan's and steps' own)."""
    weights: Mapping[str, float] = field(default_factory=dict)
    sla: SlaClass | None = None
    """The API's or CLI's SLA class for the run (None: the plan's ``sla:``, else none)."""
    sla_classes: Mapping[SlaClass, SlaProfile] = field(default_factory=lambda: dict(DEFAULT_SLA))

    def run_sla(self, plan: Plan) -> RunSla | None:
        """The run's SLA class (the run's over the plan's) and what it means; None with v4 off or none named."""
        if not self.flag.enabled:
            return None
        if self.sla is not None:
            return RunSla.of(self.sla, dict(self.sla_classes), "run")
        if plan.sla is not None:
            return RunSla.of(plan.sla, dict(self.sla_classes), "plan")
        return None

    def scheduling(self, tenant: str, plan: Plan) -> Scheduling | None:
        """The run's priority and fairness, or None with v4 off (the run schedules as before v4).
        The priority: the run's ``priority``, else the plan's, else its SLA class's, else normal."""
        if not self.flag.enabled:
            return None
        sla = self.run_sla(plan)
        plan_priority = plan.priority or (PriorityClass(sla.priority) if sla else None)
        return run_scheduling(tenant=tenant, plan_priority=plan_priority, override=self.priority,
                              weights=self.weights)


def parse_tenant_v4(data: Mapping[str, object], where: str) -> dict[str, Any]:
    """Validate a tenant's v4 overrides (``{"enabled": false}``); ``BadRequest`` naming ``where``."""
    unknown = sorted(set(data) - set(TENANT_KEYS))
    if unknown:
        raise BadRequest(f"{where}: unknown v4 setting {', '.join(map(repr, unknown))}; "
                         f"expected {', '.join(TENANT_KEYS)}")
    try:
        return {key: parse_flag(value, f"{where}.{key}") for key, value in data.items()}
    except ValueError as err:
        raise BadRequest(str(err)) from None


def resolve_v4(platform: V4Settings, sessions: sessionmaker[Session], tenant: str, *,
               run_enabled: bool | None = None, priority: PriorityClass | None = None,
               sla: SlaClass | None = None) -> V4Choice:
    """A run's v4 choice: the platform's flag, then the tenant's (DB), then the run's."""
    with transaction(sessions) as session:
        overrides = v4_rows.tenant_v4(session, tenant)
    tenant_enabled = overrides.get("enabled")
    flag = effective_enabled(platform.enabled, tenant_enabled if isinstance(tenant_enabled, bool) else None,
                             run_enabled)
    if sla is not None and not flag.enabled:
        raise BadRequest(f"sla={sla.value!r}: SLA classes are part of v4, which is off for this run "
                         f"({flag.source}); turn v4 on for the run or drop the SLA class")
    return V4Choice(flag=flag, priority=priority, weights=platform.fairness_weights, sla=sla,
                    sla_classes=platform.sla_classes)


def tenant_v4(session: Session, platform: V4Settings, tenant_id: str, *, tenant: str | None) -> dict[str, Any]:
    """The tenant's v4 overrides and the flag its runs get: ``{"overrides", "enabled", "source"}``."""
    overrides = v4_rows.tenant_v4(session, own_tenant(tenant_id, tenant))
    flag = effective_enabled(platform.enabled, overrides.get("enabled"))
    return {"tenant": tenant_id, "overrides": overrides, "enabled": flag.enabled, "source": flag.source}


def change_tenant_v4(session: Session, platform: V4Settings, tenant_id: str, changes: Mapping[str, object], *,
                     merge: bool, where: str, tenant: str | None, actor: str) -> dict[str, Any]:
    """Set (or with ``merge`` change) the tenant's v4 overrides; ``{}`` resets to the platform's."""
    tenant_id = own_tenant(tenant_id, tenant)
    parsed = parse_tenant_v4(changes, where)
    before = v4_rows.tenant_v4(session, tenant_id)
    overrides = {**before, **parsed} if merge else parsed
    v4_rows.set_tenant_v4(session, tenant_id, overrides)
    write_audit(session, "settings.tenant_v4_changed", tenant=tenant_id, actor=actor,
                target=f"tenant:{tenant_id}/v4", before=before, after=overrides)
    return tenant_v4(session, platform, tenant_id, tenant=tenant_id)
