"""Notifications: which facts a tenant's webhooks are told, what they receive, and how it is signed.

A delivery is a JSON body (the generic payload, or a Slack-compatible message) sent with:

- ``X-MetaBuilder-Event``: the event (``gate.opened``...);
- ``X-MetaBuilder-Delivery``: the delivery's id (the same on every retry: receivers deduplicate on it);
- ``X-MetaBuilder-Timestamp``: Unix seconds when the attempt was signed;
- ``X-MetaBuilder-Signature``: ``sha256=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>`` with
  the webhook's secret. A receiver recomputes it and refuses a stale timestamp (replays).

Pure rules; the activities deliver.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit


class NotificationEvent(StrEnum):
    GATE_OPENED = "gate.opened"
    """A run waits at an approval gate."""
    GATE_EXPIRING = "gate.expiring"
    """A gate is still undecided shortly before it expires (and takes its default action)."""
    RUN_FAILED = "run.failed"
    RUN_ROLLED_BACK = "run.rolled_back"
    BREAKER_OPENED = "breaker.opened"
    """A circuit breaker opened: the tenant's steps that need that dependency wait."""
    BUDGET_EXCEEDED = "budget.exceeded"
    """An LLM call did not fit a run's or the tenant's budget (what the run did instead is said)."""
    SLA_VIOLATED = "sla.violated"
    """A run passed its SLA class's deadline (it goes on; the violation is on its record)."""


class WebhookFormat(StrEnum):
    JSON = "json"
    SLACK = "slack"


SIGNATURE_HEADER = "X-MetaBuilder-Signature"
TIMESTAMP_HEADER = "X-MetaBuilder-Timestamp"
EVENT_HEADER = "X-MetaBuilder-Event"
DELIVERY_HEADER = "X-MetaBuilder-Delivery"
MAX_WEBHOOKS = 20
"""Webhooks one tenant may have."""


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    format: WebhookFormat = WebhookFormat.JSON
    events: tuple[NotificationEvent, ...] = tuple(NotificationEvent)
    enabled: bool = True


def parse_webhook(raw: Mapping[str, Any], where: str) -> WebhookSpec:
    """A webhook from JSON (a body, a CLI's flags); ``ValueError`` naming ``where`` and the field."""
    unknown = sorted(set(raw) - {"url", "format", "events", "enabled"})
    if unknown:
        raise ValueError(f"{where}: unknown webhook field(s) {', '.join(unknown)} "
                         "(expected url, format, events, enabled)")
    url = raw.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{where}.url: required, an http:// or https:// URL")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where}.url: {url!r} is not an http:// or https:// URL with a host")
    if len(url) > 2000:
        raise ValueError(f"{where}.url: at most 2000 characters")
    fmt = raw.get("format", WebhookFormat.JSON.value)
    if fmt not in set(WebhookFormat):
        raise ValueError(f"{where}.format: {fmt!r} is not one of json, slack")
    events = raw.get("events")
    if events is None:
        chosen = tuple(NotificationEvent)
    else:
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            raise ValueError(f"{where}.events: expected a non-empty list of event names")
        bad = [e for e in events if e not in set(NotificationEvent)]
        if bad:
            raise ValueError(f"{where}.events: {', '.join(map(repr, bad))} not one of "
                             f"{', '.join(e.value for e in NotificationEvent)}")
        chosen = tuple(NotificationEvent(e) for e in dict.fromkeys(events))
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError(f"{where}.enabled: expected true or false")
    return WebhookSpec(url=url.strip(), format=WebhookFormat(fmt), events=chosen, enabled=enabled)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-MetaBuilder-Signature`` of ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: int, body: bytes, signed: str, *, now: float, tolerance: float = 300) -> bool:
    """What a receiver checks: the signature matches and the timestamp is within ``tolerance`` seconds."""
    return abs(now - timestamp) <= tolerance and hmac.compare_digest(signature(secret, timestamp, body), signed)


def summary(event: NotificationEvent, data: Mapping[str, Any]) -> str:
    """One line a person reads (the Slack message's text)."""
    run = data.get("run_id", "?")
    match event:
        case NotificationEvent.GATE_OPENED:
            return (f"Run {run} waits for approval at step {data.get('step')!r} (gate {data.get('gate_id')}): "
                    f"{data.get('reason', '')}; expires {data.get('expires_at')}")
        case NotificationEvent.GATE_EXPIRING:
            return (f"Gate {data.get('gate_id')} of run {run} (step {data.get('step')!r}) expires at "
                    f"{data.get('expires_at')} undecided; then it will {data.get('on_expiry', 'reject')}")
        case NotificationEvent.RUN_FAILED:
            return f"Run {run} failed" + (f" at step {data['failed_step']!r}" if data.get("failed_step") else "") + (
                f": {data['error']}" if data.get("error") else "")
        case NotificationEvent.RUN_ROLLED_BACK:
            return f"Run {run} was rolled back" + (f": {data['error']}" if data.get("error") else "")
        case NotificationEvent.BREAKER_OPENED:
            return (f"Circuit breaker {data.get('breaker')} opened (run {run}, {data.get('reason', '')}): the "
                    "tenant's steps that need it wait for it to close")
        case NotificationEvent.BUDGET_EXCEEDED:
            return (f"Run {run}, step {data.get('step')!r}: an LLM call did not fit the budget "
                    f"({data.get('shortfall')}); the run goes on with {data.get('action')}")
        case NotificationEvent.SLA_VIOLATED:
            return (f"Run {run} passed its {data.get('sla')} SLA deadline ({data.get('deadline')}); it goes on, "
                    "the violation is on its record")


def body_of(fmt: WebhookFormat, event: NotificationEvent, tenant: str, delivery_id: str,
            data: Mapping[str, Any]) -> dict[str, Any]:
    """What a webhook of ``fmt`` receives."""
    text = summary(event, data)
    if fmt is WebhookFormat.SLACK:
        return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}
    return {"event": event.value, "tenant": tenant, "delivery_id": delivery_id, "summary": text, "data": dict(data)}


@dataclass(frozen=True)
class WebhookSettings:
    """The platform's delivery policy (``META_V4_WEBHOOK_*``)."""

    max_attempts: int = 8
    """Attempts of one delivery before it is logged ``failed``."""
    retry_seconds: float = 5.0
    """The first retry's delay; each next one doubles, up to :data:`MAX_RETRY_INTERVAL_SECONDS`."""
    timeout_seconds: float = 10.0
    """How long one attempt may take."""
    expiry_warning_seconds: float = 3600.0
    """How long before a gate expires ``gate.expiring`` is sent (at most half the gate's timeout)."""


def warning_at(opened_at: datetime, expires_at: datetime, lead_seconds: float) -> datetime:
    """When a gate still pending is announced as expiring: ``lead_seconds`` before it expires, but
    not before half its time has passed (a short gate is not announced as expiring at once)."""
    return expires_at - min(timedelta(seconds=lead_seconds), (expires_at - opened_at) / 2)


@dataclass(frozen=True)
class GateWatch:
    """A gate to announce as expiring at ``warn_at`` if it is still pending then."""

    tenant: str
    gate_id: str
    warn_at: datetime


MAX_RETRY_INTERVAL_SECONDS = 600.0


@dataclass(frozen=True)
class DeliveryInput:
    """What a delivery's workflow and activity carry: the logged delivery, and the policy it was queued with."""

    delivery_id: str
    max_attempts: int = 8
    retry_seconds: float = 5.0
    timeout_seconds: float = 10.0
