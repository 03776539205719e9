"""A tenant's webhooks (v4): where notifications of gates and failed runs go, and their delivery log."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from metabuilder.api.deps import Admin, SessionDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.api.routes import V4
from metabuilder.domain.notifications import NotificationEvent, WebhookFormat
from metabuilder.service import notifications as service

router = APIRouter(tags=["governance"])


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="http:// or https:// URL; its host must be on the domain allowlist")
    format: WebhookFormat = Field(default=WebhookFormat.JSON, description="json (generic) or slack")
    events: list[NotificationEvent] | None = Field(default=None, min_length=1,
                                                   description="the events it wants (default: all)")
    enabled: bool = True


class WebhookOut(BaseModel):
    id: str
    tenant: str
    url: str
    format: str
    events: list[str]
    enabled: bool
    created_by: str
    created_at: datetime
    secret: str | None = Field(default=None, description="the signing secret: in the creating answer only")


class DeliveryOut(BaseModel):
    id: str
    webhook_id: str
    run_id: str | None
    event: str
    status: str = Field(description="pending, retrying, delivered, failed or refused")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@router.get(V4 + "/tenants/{tenant_id}/webhooks", responses=responses(401, 403, 404, 422))
def list_webhooks(tenant_id: str, principal: Viewer, session: SessionDep) -> list[WebhookOut]:
    """The tenant's webhooks (without their secrets)."""
    return [WebhookOut(**asdict(w)) for w in service.list_webhooks(session, tenant_id, tenant=principal.tenant)]


@router.post(V4 + "/tenants/{tenant_id}/webhooks", status_code=201, responses=responses(401, 403, 404, 409, 422))
def create_webhook(tenant_id: str, body: WebhookIn, principal: Admin, session: SessionDep) -> WebhookOut:
    """Add a webhook; the answer carries its signing secret, shown this once. Audited as ``webhook.created``."""
    created = service.create_webhook(session, tenant_id, body.model_dump(mode="json", exclude_none=True),
                                     where="body", tenant=principal.tenant, actor=principal.user)
    return WebhookOut(**asdict(created))


@router.delete(V4 + "/tenants/{tenant_id}/webhooks/{webhook_id}", status_code=204,
               responses=responses(401, 403, 404, 422))
def delete_webhook(tenant_id: str, webhook_id: str, principal: Admin, session: SessionDep) -> None:
    """Delete a webhook (its deliveries being retried stop). Audited as ``webhook.deleted``."""
    service.delete_webhook(session, tenant_id, webhook_id, tenant=principal.tenant, actor=principal.user)


@router.get(V4 + "/tenants/{tenant_id}/webhooks/{webhook_id}/deliveries", responses=responses(401, 403, 404, 422))
def list_deliveries(tenant_id: str, webhook_id: str, principal: Viewer, session: SessionDep,
                    limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[DeliveryOut]:
    """The webhook's delivery log, newest first: each notification's status, attempts and last error."""
    return [DeliveryOut(**asdict(d)) for d in service.delivery_log(session, tenant_id, webhook_id,
                                                                   tenant=principal.tenant, limit=limit)]
