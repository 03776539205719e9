"""Webhook notifications: queue a delivery for each webhook that wants a fact, and deliver one.

The run's bookkeeping activities call :class:`Notifier` when a gate opens or a run fails or is
rolled back: it logs one delivery per subscribed webhook and starts a ``WebhookDeliveryWorkflow``
for each, so that a slow or failing receiver never holds the run up. That workflow's activity,
:meth:`WebhookActivities.deliver_webhook`, makes one signed attempt; Temporal retries it with
backoff.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from metabuilder.domain.approvals import GateStatus, GateView
from metabuilder.domain.notifications import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryInput,
    GateWatch,
    NotificationEvent,
    WebhookFormat,
    WebhookSettings,
    body_of,
    signature,
    warning_at,
)
from metabuilder.domain.privacy import Privacy, egress_refusal, host_of
from metabuilder.store import approvals, governance, notifications
from metabuilder.store.audit import write_audit
from metabuilder.store.db import transaction
from metabuilder.store.rows import stable_id

log = structlog.get_logger(__name__)

DELIVERY_WORKFLOW = "WebhookDeliveryWorkflow"
GATE_WATCH_WORKFLOW = "GateExpiryWatchWorkflow"


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)  # SQLite hands timestamps back naive


def delivery_workflow_id(delivery_id: str) -> str:
    return f"webhook-{delivery_id}"


class Notifier:
    """Queues notifications (idempotent: a fact is logged and sent once per webhook)."""

    def __init__(self, client: Client, sessions: sessionmaker[Session], task_queue: str,
                 settings: WebhookSettings) -> None:
        self.client, self.sessions, self.task_queue, self.settings = client, sessions, task_queue, settings

    async def notify(self, tenant: str, event: NotificationEvent, key: str, run_id: str | None,
                     data: Mapping[str, Any]) -> list[str]:
        """Log and start a delivery of ``event`` (about ``key``: a gate, a run) to each webhook of
        ``tenant`` that wants it; the ids of the deliveries started now."""
        queued = await asyncio.to_thread(self._log, tenant, event, key, run_id, data)
        for delivery_id in queued:
            try:
                await self.client.start_workflow(
                    DELIVERY_WORKFLOW, DeliveryInput(delivery_id, self.settings.max_attempts,
                                                     self.settings.retry_seconds, self.settings.timeout_seconds),
                    id=delivery_workflow_id(delivery_id), task_queue=self.task_queue)
            except WorkflowAlreadyStartedError:
                pass
            except RPCError as err:
                # Never the run's problem: the delivery is logged as failed, with why.
                log.warning("webhook.not_queued", delivery_id=delivery_id, error=str(err))
                await asyncio.to_thread(self._attempt, delivery_id, 0, "failed", None,
                                        f"could not be queued: {err}")
        return queued

    async def watch_gate(self, gate: GateView, tenant: str) -> bool:
        """Start the gate's expiry watch when a webhook of the tenant wants ``gate.expiring``."""
        if not await asyncio.to_thread(self._wanted, tenant, NotificationEvent.GATE_EXPIRING):
            return False
        watch = GateWatch(tenant, gate.gate_id, warning_at(gate.opened_at, gate.expires_at,
                                                           self.settings.expiry_warning_seconds))
        try:
            await self.client.start_workflow(GATE_WATCH_WORKFLOW, watch, id=f"gate-watch-{gate.gate_id}",
                                             task_queue=self.task_queue)
        except WorkflowAlreadyStartedError:
            pass
        except RPCError as err:
            log.warning("webhook.gate_watch_not_started", gate_id=gate.gate_id, error=str(err))
            return False
        return True

    def _wanted(self, tenant: str, event: NotificationEvent) -> bool:
        with transaction(self.sessions) as session:
            return bool(notifications.subscribed(session, tenant, event.value))

    def _log(self, tenant: str, event: NotificationEvent, key: str, run_id: str | None,
             data: Mapping[str, Any]) -> list[str]:
        with transaction(self.sessions) as session:
            new = []
            for hook in notifications.subscribed(session, tenant, event.value):
                delivery_id = stable_id("webhook", hook.id, event.value, key)
                body = body_of(WebhookFormat(hook.format), event, tenant, delivery_id, data)
                if notifications.add_delivery(session, delivery_id, hook, event.value, run_id, body):
                    new.append(delivery_id)
            return new

    def _attempt(self, delivery_id: str, attempt: int, status: str, code: int | None, error: str | None) -> None:
        with transaction(self.sessions) as session:
            notifications.record_attempt(session, delivery_id, attempt=attempt, status=status, code=code, error=error)


@dataclass(frozen=True)
class _Loaded:
    url: str
    secret: str
    event: str
    tenant: str
    run_id: str | None
    payload: dict[str, Any]
    refusal: str | None


class WebhookActivities:
    def __init__(self, sessions: sessionmaker[Session], privacy: Privacy, notifier: Notifier | None = None) -> None:
        self.sessions, self.privacy, self.notifier = sessions, privacy, notifier

    @activity.defn(name="warn_gate_expiring")
    async def warn_gate_expiring(self, watch: GateWatch) -> bool:
        """Queue ``gate.expiring`` if the gate is still pending; whether it was. Idempotent (the
        deliveries' ids are stable); a read and a few inserts."""

        def pending() -> dict[str, Any] | None:
            with transaction(self.sessions) as session:
                gate = approvals.get_gate(session, watch.gate_id)
                if gate is None or gate.status != GateStatus.PENDING.value:
                    return None
                return {"run_id": gate.run_id, "gate_id": gate.id, "step": gate.step_name, "kind": gate.kind,
                        "reason": gate.reason, "expires_at": _utc(gate.expires_at).isoformat(),
                        "on_expiry": gate.on_expiry}

        data = await asyncio.to_thread(pending)
        if data is None or self.notifier is None:
            return False
        await self.notifier.notify(watch.tenant, NotificationEvent.GATE_EXPIRING, watch.gate_id, data["run_id"], data)
        return True

    @activity.defn(name="deliver_webhook")
    async def deliver_webhook(self, inp: DeliveryInput) -> str:
        """One signed attempt of a logged delivery; its outcome goes to the delivery log.

        Returns ``delivered``, ``refused`` (the domain allowlist: not sent, audited and on the
        run's timeline), ``gone`` (the webhook was deleted) or, on the last attempt, ``failed``;
        raises to be retried otherwise. Receivers deduplicate on the delivery id (a retry after a
        lost answer sends it again). At most ``timeout_seconds``."""
        attempt = activity.info().attempt
        loaded = await asyncio.to_thread(self._load, inp.delivery_id)
        if loaded is None:
            return "gone"
        if loaded.refusal is not None:
            await asyncio.to_thread(self._refused, inp.delivery_id, attempt, loaded)
            return "refused"
        body = json.dumps(loaded.payload, sort_keys=True, separators=(",", ":")).encode()
        stamp = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "metabuilder-webhooks",
                   EVENT_HEADER: loaded.event, DELIVERY_HEADER: inp.delivery_id, TIMESTAMP_HEADER: str(stamp),
                   SIGNATURE_HEADER: signature(loaded.secret, stamp, body)}
        code: int | None = None
        try:
            # No redirects: a receiver may not send the payload on to a host off the allowlist.
            async with httpx.AsyncClient(timeout=inp.timeout_seconds, follow_redirects=False) as http:
                answer = await http.post(loaded.url, content=body, headers=headers)
            code = answer.status_code
            error = None if 200 <= code < 300 else f"HTTP {code}"
        except httpx.HTTPError as err:
            error = f"{type(err).__name__}: {err}"[:500]
        if error is None:
            await asyncio.to_thread(self._attempt, inp.delivery_id, attempt, "delivered", code, None)
            return "delivered"
        final = attempt >= inp.max_attempts
        await asyncio.to_thread(self._attempt, inp.delivery_id, attempt, "failed" if final else "retrying",
                                code, error)
        if final:
            return "failed"
        raise ApplicationError(f"webhook delivery {inp.delivery_id} attempt {attempt}: {error}",
                               type="WebhookDeliveryFailed")

    def _load(self, delivery_id: str) -> _Loaded | None:
        with transaction(self.sessions) as session:
            row = notifications.get_delivery(session, delivery_id)
            hook = notifications.get_webhook(session, row.webhook_id) if row is not None else None
            if row is None or hook is None:
                return None
            privacy = governance.effective(session, self.privacy, row.tenant_id, row.run_id)
            return _Loaded(url=hook.url, secret=hook.secret, event=row.event, tenant=row.tenant_id,
                           run_id=row.run_id, payload=dict(row.payload), refusal=egress_refusal(privacy, hook.url))

    def _attempt(self, delivery_id: str, attempt: int, status: str, code: int | None, error: str | None) -> None:
        with transaction(self.sessions) as session:
            notifications.record_attempt(session, delivery_id, attempt=attempt, status=status, code=code, error=error)

    def _refused(self, delivery_id: str, attempt: int, loaded: _Loaded) -> None:
        """An outbound call refused: in the delivery log and the audit log (which the run's timeline shows)."""
        with transaction(self.sessions) as session:
            notifications.record_attempt(session, delivery_id, attempt=attempt, status="refused", code=None,
                                         error=loaded.refusal)
            write_audit(session, "egress.refused", tenant=loaded.tenant, actor="metabuilder",
                        target=f"webhook:{host_of(loaded.url)}", run_id=loaded.run_id,
                        data={"url": loaded.url, "reason": loaded.refusal, "purpose": f"webhook {loaded.event}",
                              "delivery_id": delivery_id})
