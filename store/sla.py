"""A run's SLA events (``mb_v4_run_sla_events``): deadline warnings and violations, model
choices, best-of-N candidates and rungs the repair depth skipped. Keyed by (run, kind, key), so
an activity retried writes each once."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from metabuilder.domain.payloads import SlaEvent
from metabuilder.store.models import RunSlaEventRow
from metabuilder.store.rows import upsert


def record_sla_events(session: Session, run_id: str, tenant: str, events: Iterable[SlaEvent]) -> list[SlaEvent]:
    """Write the events; return those that were new (a repeat writes and returns nothing)."""
    new: list[SlaEvent] = []
    for ev in events:
        if upsert(session, RunSlaEventRow,
                  {"run_id": run_id, "tenant_id": tenant, "kind": ev.kind, "key": ev.key[:128],
                   "step_name": ev.step, "summary": ev.summary, "data": dict(ev.data), "at": ev.at},
                  keys=("run_id", "kind", "key"), update=()):
            new.append(ev)
    return new


def run_sla_events(session: Session, run_id: str) -> list[RunSlaEventRow]:
    """The run's SLA events, oldest first."""
    return list(session.scalars(select(RunSlaEventRow).where(RunSlaEventRow.run_id == run_id)
                                .order_by(RunSlaEventRow.at, RunSlaEventRow.id)))


def run_sla_state(session: Session, run_id: str) -> str:
    """``violated``, ``warning`` or ``ok``: the worst deadline event the run has."""
    kinds = set(session.scalars(select(RunSlaEventRow.kind).where(
        RunSlaEventRow.run_id == run_id, RunSlaEventRow.kind.in_(("sla.warning", "sla.violated")))))
    return "violated" if "sla.violated" in kinds else "warning" if "sla.warning" in kinds else "ok"
