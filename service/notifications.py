"""A tenant's webhooks: create (the secret is shown once), list, delete (audited), and the delivery log."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from metabuilder.domain.notifications import MAX_WEBHOOKS, parse_webhook
from metabuilder.service.errors import BadRequest, Conflict, NotFound
from metabuilder.service.tenancy import own_tenant
from metabuilder.store import notifications
from metabuilder.store.audit import write_audit
from metabuilder.store.models import Webhook, WebhookDelivery


@dataclass(frozen=True)
class WebhookView:
    id: str
    tenant: str
    url: str
    format: str
    events: list[str]
    enabled: bool
    created_by: str
    created_at: datetime
    secret: str | None = None
    """Only in the answer that created it."""


@dataclass(frozen=True)
class DeliveryView:
    id: str
    webhook_id: str
    run_id: str | None
    event: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


def _view(row: Webhook, *, secret: bool = False) -> WebhookView:
    return WebhookView(id=row.id, tenant=row.tenant_id, url=row.url, format=row.format, events=list(row.events),
                       enabled=row.enabled, created_by=row.created_by, created_at=row.created_at,
                       secret=row.secret if secret else None)


def _fields(row: Webhook) -> dict[str, Any]:
    return {"url": row.url, "format": row.format, "events": list(row.events), "enabled": row.enabled}


def list_webhooks(session: Session, tenant_id: str, *, tenant: str | None) -> list[WebhookView]:
    return [_view(w) for w in notifications.webhooks(session, own_tenant(tenant_id, tenant))]


def create_webhook(session: Session, tenant_id: str, raw: Mapping[str, Any], *, where: str, tenant: str | None,
                   actor: str) -> WebhookView:
    """A new webhook of the tenant, with its secret; ``BadRequest`` naming ``where`` and the field."""
    tenant_id = own_tenant(tenant_id, tenant)
    try:
        spec = parse_webhook(raw, where)
    except ValueError as err:
        raise BadRequest(str(err)) from None
    if len(notifications.webhooks(session, tenant_id)) >= MAX_WEBHOOKS:
        raise Conflict(f"tenant {tenant_id!r} has {MAX_WEBHOOKS} webhooks already; delete one first")
    row = notifications.create_webhook(session, tenant_id, spec, by=actor)
    write_audit(session, "webhook.created", tenant=tenant_id, actor=actor, target=f"webhook:{row.id}",
                before=None, after=_fields(row))
    return _view(row, secret=True)


def _own(session: Session, tenant_id: str, webhook_id: str, tenant: str | None) -> Webhook:
    tenant_id = own_tenant(tenant_id, tenant)
    row = notifications.get_webhook(session, webhook_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"unknown webhook {webhook_id!r}")
    return row


def delete_webhook(session: Session, tenant_id: str, webhook_id: str, *, tenant: str | None, actor: str) -> None:
    """Delete a webhook; deliveries still being retried end (``gone``)."""
    row = _own(session, tenant_id, webhook_id, tenant)
    before = _fields(row)
    notifications.delete_webhook(session, row)
    write_audit(session, "webhook.deleted", tenant=row.tenant_id, actor=actor, target=f"webhook:{webhook_id}",
                before=before, after=None)


def delivery_log(session: Session, tenant_id: str, webhook_id: str, *, tenant: str | None,
                 limit: int = 100) -> list[DeliveryView]:
    """A webhook's deliveries, newest first."""
    row = _own(session, tenant_id, webhook_id, tenant)
    return [_delivery(d) for d in notifications.deliveries(session, row.tenant_id, webhook_id=webhook_id, limit=limit)]


def _delivery(d: WebhookDelivery) -> DeliveryView:
    return DeliveryView(id=d.id, webhook_id=d.webhook_id, run_id=d.run_id, event=d.event, status=d.status,
                        attempts=d.attempts, last_status_code=d.last_status_code, last_error=d.last_error,
                        created_at=d.created_at, updated_at=d.updated_at)
