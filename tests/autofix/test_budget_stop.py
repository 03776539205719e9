"""A run whose attempts budget is used up is not given an LLM call: it stops at a person
(``budget_exceeded``), and says so on its timeline. Time-skipping server, real git and commands."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from metabuilder.domain.payloads import RunView
from metabuilder.domain.policy import effective_settings
from metabuilder.domain.runs import RunStatus
from metabuilder.service import notifications as webhooks
from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.store import budgets
from metabuilder.store import notifications as notification_rows
from metabuilder.store.db import transaction
from metabuilder.store.models import BudgetReservationRow
from metabuilder.store.tenants import ensure_tenant
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings
from tests.autofix.conftest import AUTOFIX, finish, with_llm
from tests.autofix.test_ladder import TEST, keep_histories
from tests.fakes.openai_server import fake_openai


async def test_a_used_up_attempts_budget_stops_the_run_before_the_llm(
        ts_env: WorkflowEnvironment, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    (user_repo / "app.py").write_text("print('bad')\n")
    run_id = f"af-{uuid.uuid4().hex[:12]}"
    with transaction(sessions) as session:  # the run's own level, set before it starts
        budgets.set_budget_settings(session, "run", run_id, "default", {"attempts": 2})
        ensure_tenant(session, "default")
        hook = webhooks.create_webhook(session, "default", {"url": "http://127.0.0.1:9/budget",
                                                             "events": ["budget.exceeded"]},
                                       where="test", tenant=None, actor="test")
    with fake_openai() as (fake, url):
        async with running_workers(build_workers(ts_env.client, with_llm(settings, url), sessions, POOLS)):
            opts = SubmitOptions.of(settings, autofix=effective_settings(AUTOFIX, None, None), search_attributes=False)
            run = await submit(ts_env.client, f"name: t\nwrite_scope: ['*.py']\nsteps:\n{TEST}", "plan.yaml",
                               user_repo, opts, run_id=run_id)
            view = await finish(run.handle)
    assert not fake.requests, "no LLM call once the budget is used up"
    assert view.status is RunStatus.FAILED  # the escalation gate expired unseen
    short = [e for e in view.timeline if e.outcome == "budget_exhausted"]
    assert len(short) == 1 and "run budget for attempts: 2 of 2 used" in short[0].detail, short
    assert "the run stops (budget_exceeded)" in short[0].detail
    [escalated] = [e for e in view.timeline if e.strategy == "escalate"]
    assert escalated.detail.startswith("budget_exceeded: run budget for attempts")
    with transaction(sessions) as session:
        assert budgets.ledger_views(session, "run", run_id)[budgets.Dimension.ATTEMPTS].spent == 2
        # the tenant's webhook was told (its delivery logged; nothing listens on port 9)
        [told] = notification_rows.deliveries(session, "default", webhook_id=hook.id)
        assert (told.event, told.run_id, told.payload["data"]["dimension"]) == ("budget.exceeded", run_id, "attempts")
    await keep_histories(ts_env.client, "budget_exceeded", run_id, 1)


async def test_a_call_the_endpoint_refuses_gives_its_reservation_back_before_the_run_ends(
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    (user_repo / "app.py").write_text("print('bad')\n")
    with fake_openai() as (fake, url):
        fake.errors.append((400, {}))  # a bad request: not asked again
        async with running_workers(build_workers(client, with_llm(settings, url), sessions, POOLS)):
            opts = SubmitOptions.of(settings, autofix=effective_settings(AUTOFIX, None, None), search_attributes=False)
            run = await submit(client, f"name: t\nwrite_scope: ['*.py']\nsteps:\n{TEST}", "plan.yaml", user_repo,
                               opts, run_id=f"af-{uuid.uuid4().hex[:12]}")
            while (view := await run.handle.query("status", result_type=RunView)).status \
                    is not RunStatus.PAUSED_AWAITING_APPROVAL:
                assert not view.status.is_final, view.error
                await asyncio.sleep(0.2)
            with transaction(sessions) as session:  # the run is still going: only the release gave it back
                [held] = session.query(BudgetReservationRow).filter_by(run_id=run.run_id).all()
                left = budgets.ledger_views(session, "run", run.run_id)
            await run.handle.cancel()
    assert len(fake.requests) == 1
    assert (held.state, held.actual) == ("settled", {})
    assert left[budgets.Dimension.COST].reserved == 0 and left[budgets.Dimension.COST].spent == 0
    assert any("the fixer failed" in e.detail and "answered 400" in e.detail for e in view.timeline)
