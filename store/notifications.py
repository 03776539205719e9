"""Webhooks (``mb_v4_webhooks``) and their delivery log (``mb_v4_webhook_deliveries``)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metabuilder.domain.notifications import WebhookSpec
from metabuilder.store.models import Webhook, WebhookDelivery, utcnow
from metabuilder.store.rows import upsert
from metabuilder.store.tenants import ensure_tenant


def create_webhook(session: Session, tenant: str, spec: WebhookSpec, *, by: str) -> Webhook:
    """A new webhook with a fresh secret (shown once, at creation)."""
    ensure_tenant(session, tenant)
    row = Webhook(id=f"wh-{uuid.uuid4().hex[:12]}", tenant_id=tenant, url=spec.url,
                  secret=secrets.token_urlsafe(32), format=spec.format.value,
                  events=[e.value for e in spec.events], enabled=spec.enabled, created_by=by, created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def webhooks(session: Session, tenant: str) -> list[Webhook]:
    return list(session.scalars(select(Webhook).where(Webhook.tenant_id == tenant)
                                .order_by(Webhook.created_at, Webhook.id)))


def get_webhook(session: Session, webhook_id: str) -> Webhook | None:
    return session.get(Webhook, webhook_id)


def delete_webhook(session: Session, row: Webhook) -> None:
    session.delete(row)


def subscribed(session: Session, tenant: str, event: str) -> list[Webhook]:
    """The tenant's enabled webhooks that want ``event``."""
    return [w for w in webhooks(session, tenant) if w.enabled and event in (w.events or [])]


def add_delivery(session: Session, delivery_id: str, webhook: Webhook, event: str, run_id: str | None,
                 payload: dict[str, Any]) -> bool:
    """Log a delivery as ``pending``; False when it was logged already (the same fact again)."""
    now = utcnow()
    return upsert(session, WebhookDelivery,
                  {"id": delivery_id, "webhook_id": webhook.id, "tenant_id": webhook.tenant_id, "run_id": run_id,
                   "event": event, "payload": payload, "status": "pending", "attempts": 0,
                   "created_at": now, "updated_at": now}, keys=["id"], update=[])


def get_delivery(session: Session, delivery_id: str) -> WebhookDelivery | None:
    return session.get(WebhookDelivery, delivery_id)


def record_attempt(session: Session, delivery_id: str, *, attempt: int, status: str, code: int | None,
                   error: str | None) -> None:
    row = session.get(WebhookDelivery, delivery_id)
    if row is None:
        return
    row.attempts = max(row.attempts, attempt)
    row.status, row.last_status_code, row.last_error, row.updated_at = status, code, error, utcnow()


def deliveries(session: Session, tenant: str, *, webhook_id: str | None = None, run_id: str | None = None,
               limit: int = 100) -> list[WebhookDelivery]:
    """The tenant's delivery log, newest first."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant)
    if webhook_id is not None:
        stmt = stmt.where(WebhookDelivery.webhook_id == webhook_id)
    if run_id is not None:
        stmt = stmt.where(WebhookDelivery.run_id == run_id)
    return list(session.scalars(stmt.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit)))
