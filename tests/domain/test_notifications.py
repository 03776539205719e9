"""Webhook rules: what a webhook may be, and the signature a receiver checks."""

from __future__ import annotations

import pytest

from metabuilder.domain.notifications import (
    NotificationEvent,
    WebhookFormat,
    body_of,
    parse_webhook,
    signature,
    verify,
)


@pytest.mark.parametrize(("raw", "error"), [
    ({}, "hook.url: required"),
    ({"url": "ftp://files.example/x"}, "hook.url: 'ftp://files.example/x' is not an http"),
    ({"url": "http:///nohost"}, "is not an http:// or https:// URL with a host"),
    ({"url": "https://h.example", "format": "xml"}, "hook.format: 'xml' is not one of json, slack"),
    ({"url": "https://h.example", "events": ["run.exploded"]}, "hook.events: 'run.exploded' not one of"),
    ({"url": "https://h.example", "events": []}, "hook.events: expected a non-empty list"),
    ({"url": "https://h.example", "enabled": "yes"}, "hook.enabled: expected true or false"),
    ({"url": "https://h.example", "secret": "s"}, "hook: unknown webhook field(s) secret"),
])
def test_bad_webhooks_are_refused_naming_the_field(raw: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_webhook(raw, "hook")
    assert error in str(err.value)


def test_a_webhook_defaults_to_json_and_every_event() -> None:
    spec = parse_webhook({"url": " https://hooks.example/x "}, "hook")
    assert (spec.url, spec.format, spec.events, spec.enabled) == (
        "https://hooks.example/x", WebhookFormat.JSON, tuple(NotificationEvent), True)
    assert parse_webhook({"url": "http://h", "events": ["run.failed", "run.failed"]}, "h").events == (
        NotificationEvent.RUN_FAILED,)


def test_the_signature_covers_the_timestamp_and_the_body() -> None:
    body = b'{"event":"gate.opened"}'
    signed = signature("s3cret", 1_700_000_000, body)
    assert signed.startswith("sha256=") and len(signed) == 7 + 64
    assert verify("s3cret", 1_700_000_000, body, signed, now=1_700_000_010)
    assert not verify("other", 1_700_000_000, body, signed, now=1_700_000_010)
    assert not verify("s3cret", 1_700_000_000, body + b" ", signed, now=1_700_000_010)
    assert not verify("s3cret", 1_700_000_001, body, signed, now=1_700_000_010)
    assert not verify("s3cret", 1_700_000_000, body, signed, now=1_700_000_000 + 301)  # a replay, too late


def test_slack_gets_a_message_and_json_the_facts() -> None:
    data = {"run_id": "r1", "gate_id": "r1-gate-1", "step": "deploy", "reason": "needs approval",
            "expires_at": "2026-12-04T07:00:00+00:00"}
    slack = body_of(WebhookFormat.SLACK, NotificationEvent.GATE_OPENED, "acme", "d1", data)
    assert "r1-gate-1" in slack["text"] and "'deploy'" in slack["text"] and slack["blocks"]
    generic = body_of(WebhookFormat.JSON, NotificationEvent.RUN_FAILED, "acme", "d1",
                      {"run_id": "r1", "failed_step": "build", "error": "exit 1"})
    assert generic == {"event": "run.failed", "tenant": "acme", "delivery_id": "d1",
                       "summary": "Run r1 failed at step 'build': exit 1",
                       "data": {"run_id": "r1", "failed_step": "build", "error": "exit 1"}}
