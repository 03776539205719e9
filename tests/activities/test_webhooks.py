"""Webhooks on the real dev server, against a local HTTP receiver that checks every signature:
a run waiting at a gate is announced to each subscribed webhook; a receiver that fails its first
deliveries gets them retried with backoff; one that always fails ends ``failed`` in the log while
the run waits on, untouched; one off the domain allowlist is never contacted (its refusal is
audited and on the run's timeline); a rejected run's failure is announced too."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from metabuilder.activities.notifications import delivery_workflow_id
from metabuilder.domain.access import Role
from metabuilder.domain.approvals import DecisionInput, GateView
from metabuilder.domain.notifications import WebhookSettings
from metabuilder.domain.payloads import RunView
from metabuilder.domain.privacy import parse_privacy
from metabuilder.domain.runs import RunStatus
from metabuilder.service import notifications as service
from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.service.timeline import run_timeline
from metabuilder.store import access, governance
from metabuilder.store import notifications as rows
from metabuilder.store.audit import audit_events
from metabuilder.store.db import transaction
from metabuilder.store.tenants import ensure_tenant
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings
from tests.fakes.webhook_receiver import Receiver
from tests.workflows.test_build_run import record_history

DEPLOY = """\
name: shipped
steps:
  - name: build
    command: echo built > built.txt
  - name: deploy
    command: echo deployed > deployed.txt
    requires_approval: true
"""


async def until(check: Any, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.1)


async def test_webhooks_deliver_signed_retried_and_logged(
        client: Client, settings: Settings, sessions, user_repo: Path, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    base = f"http://127.0.0.1:{receiver.port}"
    hooks = {}
    with transaction(sessions) as session:
        ensure_tenant(session, "default")
        access.create_token(session, "default", "ann", Role.ADMIN)
        for path, fmt, events in (("/ok", "json", ["gate.opened", "run.failed"]), ("/flaky", "slack", None),
                                  ("/down", "json", ["gate.opened"])):
            made = service.create_webhook(session, "default", {"url": base + path, "format": fmt,
                                                               **({"events": events} if events else {})},
                                          where="test", tenant=None, actor="test")
            hooks[path], receiver.secrets[path] = made.id, made.secret or ""
        # localhost is this very receiver: only the allowlist keeps the call from being made.
        off = service.create_webhook(session, "default", {"url": f"http://localhost:{receiver.port}/off"},
                                     where="test", tenant=None, actor="test")
        hooks["/off"] = off.id
        governance.set_tenant_privacy(session, "default", parse_privacy({"domain_allowlist": ["127.0.0.1"]}, "test"))
        with pytest.raises(Exception, match=r"body.url: 'ftp://x' is not an http"):
            service.create_webhook(session, "default", {"url": "ftp://x"}, where="body", tenant=None, actor="t")

    fast = replace(settings, webhooks=WebhookSettings(max_attempts=3, retry_seconds=0.2, timeout_seconds=5))
    async with running_workers(build_workers(client, fast, sessions, POOLS)):
        run = await submit(client, DEPLOY, "plan.yaml", user_repo, SubmitOptions.of(settings, search_attributes=False))

        def log() -> dict[str, list[Any]]:
            with transaction(sessions) as session:
                return {p: [(d.event, d.status, d.attempts, d.last_status_code, d.last_error)
                            for d in rows.deliveries(session, "default", webhook_id=h)] for p, h in hooks.items()}

        settled = ("delivered", "failed", "refused")
        await until(lambda: all(entries and entries[0][1] in settled for entries in log().values()))
        view = await run.handle.query("status", result_type=RunView)
        assert view.status is RunStatus.PAUSED_AWAITING_APPROVAL  # the failing receivers changed nothing
        gate = view.gates[0]
        delivered = log()
        assert delivered["/ok"] == [("gate.opened", "delivered", 1, 200, None)]
        assert delivered["/flaky"] == [("gate.opened", "delivered", 3, 200, None)]
        assert delivered["/down"] == [("gate.opened", "failed", 3, 500, "HTTP 500")]
        [(event, status, _, code, why)] = delivered["/off"]
        assert (event, status, code) == ("gate.opened", "refused", None) and "not on the tenant's domain" in why

        assert receiver.on("/off") == []  # never contacted
        [(headers, body, ok)] = receiver.on("/ok")
        assert ok and headers["x-metabuilder-event"] == "gate.opened"
        assert body["event"] == "gate.opened" and body["data"]["gate_id"] == gate.gate_id
        assert body["data"]["step"] == "deploy" and body["tenant"] == "default"
        flaky = receiver.on("/flaky")
        assert len(flaky) == 3 and all(ok for _, _, ok in flaky)
        assert len({h["x-metabuilder-delivery"] for h, _, _ in flaky}) == 1  # one delivery, retried
        assert gate.gate_id in flaky[0][1]["text"] and flaky[0][1]["blocks"]
        assert len(receiver.on("/down")) == 3
        with transaction(sessions) as session:  # a delivery retried twice: its workflow's history replays
            [retried] = rows.deliveries(session, "default", webhook_id=hooks["/flaky"])
        record_history("webhook_delivery_retried", (await client.get_workflow_handle(
            delivery_workflow_id(retried.id)).fetch_history()).to_json())

        with transaction(sessions) as session:
            refused = audit_events(session, tenant="default", run_id=run.run_id, event="egress.refused")
            assert [(e.target, e.data["purpose"]) for e in refused] == [("webhook:localhost", "webhook gate.opened")]
            shown = [e for e in run_timeline(session, run.run_id, None) if e.kind == "egress.refused"]
            assert len(shown) == 1 and "localhost" in shown[0].summary

        await run.handle.execute_update("reject", DecisionInput(gate_id=gate.gate_id, by="ann", reason="freeze"),
                                        result_type=GateView)
        await until(lambda: len(log()["/ok"]) == 2 and log()["/ok"][0][1] == "delivered")
        failed = receiver.on("/ok")[-1][1]
        assert failed["event"] == "run.failed" and "freeze" in failed["summary"]
        assert len(receiver.on("/down")) == 3  # it wants gate.opened only


async def test_a_gate_nobody_decides_is_announced_before_it_expires(
        client: Client, settings: Settings, sessions, user_repo: Path, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        ensure_tenant(session, "default")
        made = service.create_webhook(session, "default", {"url": f"http://127.0.0.1:{receiver.port}/ok",
                                                           "events": ["gate.expiring", "run.failed"]},
                                      where="test", tenant=None, actor="test")
        receiver.secrets["/ok"] = made.secret or ""
    plan = DEPLOY.replace("steps:", "approvals:\n  timeout: 8s\n  on_expiry: reject\nsteps:")
    fast = replace(settings, webhooks=WebhookSettings(max_attempts=3, retry_seconds=0.2, timeout_seconds=5,
                                                      expiry_warning_seconds=3))
    async with running_workers(build_workers(client, fast, sessions, POOLS)):
        run = await submit(client, plan, "plan.yaml", user_repo, SubmitOptions.of(settings, search_attributes=False))
        await until(lambda: len(receiver.on("/ok")) >= 1, timeout=20)
        received = time.time()
        view = await run.handle.query("status", result_type=RunView)
        gate = view.gates[0]
        assert view.status is RunStatus.PAUSED_AWAITING_APPROVAL and received < gate.expires_at.timestamp()
        assert received >= gate.expires_at.timestamp() - 3 - 1  # not at once: about 3 s before the expiry
        [(headers, body, ok)] = receiver.on("/ok")
        assert ok and body["event"] == "gate.expiring" and body["data"]["gate_id"] == gate.gate_id
        assert "undecided; then it will reject" in body["summary"]
        await until(lambda: len(receiver.on("/ok")) == 2, timeout=20)  # then it expired: the run failed
        assert receiver.on("/ok")[1][1]["event"] == "run.failed"
    record_history("gate_expiry_watch", (await client.get_workflow_handle(
        f"gate-watch-{gate.gate_id}").fetch_history()).to_json())


async def test_a_rolled_back_run_is_announced(
        client: Client, settings: Settings, sessions, user_repo: Path, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    """A patch that changes nothing of the failure is rolled back: the run ends ``rolled_back`` and
    the webhook subscribed to ``run.rolled_back`` (only) is told, signed, once."""
    from metabuilder.domain.policy import effective_settings
    from tests.autofix.conftest import AUTOFIX, finish
    from tests.autofix.test_ladder import LINT

    hook = receiver.subscribe(sessions, "default", "/rb", ["run.rolled_back"])
    (user_repo / "app.py").write_text("print('app')   \n")
    useless = LINT.replace("sed -i 's/ *$//' app.py", "echo '# touched' >> README.txt")
    opts = SubmitOptions.of(settings, autofix=effective_settings(AUTOFIX, None, None), search_attributes=False)
    async with running_workers(build_workers(client, settings, sessions, POOLS)):
        run = await submit(client, f"name: rb\nsteps:\n{useless}", "plan.yaml", user_repo, opts)
        view = await finish(run.handle)
        assert view.status is RunStatus.ROLLED_BACK, view.error
        await until(lambda: len(receiver.on("/rb")) == 1)
    [(headers, body, ok)] = receiver.on("/rb")
    assert ok and headers["x-metabuilder-event"] == "run.rolled_back"
    assert (body["event"], body["data"]["run_id"], body["tenant"]) == ("run.rolled_back", run.run_id, "default")
    with transaction(sessions) as session:
        [told] = rows.deliveries(session, "default", webhook_id=hook)
    assert (told.event, told.status, told.attempts) == ("run.rolled_back", "delivered", 1)
