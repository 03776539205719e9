"""Plans, stored once per tenant and content."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from metabuilder.domain.plans import Plan, plan_to_dict
from metabuilder.store.models import BuildRun, ScaffoldPlan, utcnow
from metabuilder.store.rows import stable_id, upsert


def ensure_plan(session: Session, tenant_id: str, name: str, source: str, spec: dict[str, Any]) -> str:
    """Store a plan once per (tenant, content); return its id."""
    content_hash = hashlib.sha256(source.encode()).hexdigest()
    plan_id = stable_id(tenant_id, content_hash)
    upsert(session, ScaffoldPlan,
            {"id": plan_id, "tenant_id": tenant_id, "name": name, "content_hash": content_hash,
             "source": source, "spec": spec, "created_at": utcnow()},
            keys=["tenant_id", "content_hash"], update=[])
    return plan_id


def ensure_plan_of(session: Session, tenant_id: str, plan: Plan, source: str = "") -> str:
    """Store ``plan`` (with its YAML text, or a YAML rendering of it); return its id."""
    spec = plan_to_dict(plan)
    return ensure_plan(session, tenant_id, plan.name, source or yaml.safe_dump(spec, sort_keys=False), spec)


def get_plan(session: Session, plan_id: str) -> ScaffoldPlan | None:
    return session.get(ScaffoldPlan, plan_id)


def list_plans(session: Session, tenant: str, *, limit: int = 50, offset: int = 0) -> list[ScaffoldPlan]:
    stmt = (select(ScaffoldPlan).where(ScaffoldPlan.tenant_id == tenant)
            .order_by(ScaffoldPlan.created_at.desc(), ScaffoldPlan.id).limit(limit).offset(offset))
    return list(session.scalars(stmt))


def run_plan_source(session: Session, run: BuildRun) -> str:
    """The YAML text of the plan a run was started with."""
    plan = session.get(ScaffoldPlan, run.plan_id)
    assert plan is not None  # a foreign key
    return plan.source
