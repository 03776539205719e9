"""Budgets reserved before they are spent (issue 17): 20 concurrent runs of one tenant, each
needing an LLM patch, against a tenant budget too small for all of them. Real dev server, real
PostgreSQL (the conditional UPDATE under concurrency), real git and commands, the local fake
OpenAI server (which reports ``usage``)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from temporalio.client import Client

from metabuilder.adapters.llm import LlmSettings
from metabuilder.api.app import create_app
from metabuilder.api.config import ApiConfig
from metabuilder.domain.access import Role
from metabuilder.domain.budget_settings import BudgetSettings
from metabuilder.domain.models_catalogue import ModelSpec, Tier
from metabuilder.domain.payloads import RunView
from metabuilder.domain.policy import effective_settings
from metabuilder.domain.runs import RunStatus
from metabuilder.migrations import upgrade
from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.store import access
from metabuilder.store import budgets as ledgers
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.store.models import CostRecordRow
from metabuilder.store.tenants import ensure_tenant
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings
from tests.autofix.conftest import AUTOFIX
from tests.fakes.openai_server import fake_openai
from tests.workflows.test_build_run import record_history

RUNS = 20
FAILING = ("if grep -q good app.py; then echo '1 passed'; else echo \\\"E   assert 'bad' == 'good'\\\"; "
           "echo 'FAILED test_app.py::test_x - AssertionError'; exit 1; fi")
PLAN = f"name: budgeted\nwrite_scope: ['*.py']\nsteps:\n  - name: test\n    command: \"{FAILING}\"\n"
GOOD = "```diff\n--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-print('bad')\n+print('good')\n```"
MODEL = ModelSpec(name="fake-fixer", tier=Tier.STANDARD, price_in_per_million=1.0, price_out_per_million=2.0,
                  context_tokens=1 << 20)


@pytest.fixture
def pg_sessions(pg_url: str):  # type: ignore[no-untyped-def]
    upgrade(pg_url)
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


METRICS = (("metabuilder_llm_tokens_total", {"model": MODEL.name, "direction": "in"}),
           ("metabuilder_cost_usd_total", {"pool": "llm"}),
           ("metabuilder_budget_exceeded_total", {"dimension": "cost_usd"}))


def _metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _settled(client: Client, run_id: str) -> RunView:
    """The run once its LLM question is answered: passed, or paused at the escalation gate."""
    handle = client.get_workflow_handle(f"build-run-{run_id}")
    while True:
        view = await handle.query("status", result_type=RunView)
        if view.status in (RunStatus.SUCCEEDED, RunStatus.PAUSED_AWAITING_APPROVAL):
            return view
        assert not view.status.is_final, (view.status, view.error)
        await asyncio.sleep(0.2)


async def test_twenty_runs_of_one_tenant_overrun_their_budget_by_at_most_one_step(
        client: Client, settings: Settings, pg_url: str, pg_sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    tenant = f"budget-{uuid.uuid4().hex[:8]}"
    (user_repo / "app.py").write_text("print('bad')\n")
    # The fake reports a large usage so that each call costs a good part of its worst case
    # ($0.063 of a ~$0.104 reservation): the budget, not the reservation's margin, is what binds.
    llm = LlmSettings(url="", model=MODEL.name, max_tokens=2048)
    budgets = BudgetSettings(catalogue=(MODEL,))
    limit = 0.35
    with fake_openai() as (fake, url):
        fake.replies += [GOOD] * RUNS
        fake.usage = (60_000, 1_500)
        run_settings = replace(settings, database_url=pg_url, llm=replace(llm, url=url), budgets=budgets)
        with transaction(pg_sessions) as session:
            ensure_tenant(session, tenant)
            token = access.create_token(session, tenant, "boss", Role.ADMIN).token

        async def connect() -> Client:
            return client

        app = create_app(ApiConfig(sessions=pg_sessions, connect=connect, platform=settings.autofix,
                                   shared_repo=run_settings.shared_repo, budgets=budgets))
        api = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api",
                                headers={"Authorization": f"Bearer {token}"})
        put = await api.put(f"/api/meta/v4/tenants/{tenant}/budget", json={"cost_usd_per_day": limit})
        assert put.status_code == 200, put.text
        before = {name: _metric(name, labels) for name, labels in METRICS}
        async with running_workers(build_workers(client, run_settings, pg_sessions, POOLS, concurrency=6)):
            opts = SubmitOptions.of(run_settings, tenant=tenant, autofix=effective_settings(AUTOFIX, None, None),
                                    search_attributes=False)
            def one():  # type: ignore[no-untyped-def]
                return submit(client, PLAN, "plan.yaml", user_repo, opts, run_id=f"bud-{uuid.uuid4().hex[:10]}")

            first = await one()  # makes the shared repository; the other 19 then start at once
            runs = [first, *await asyncio.gather(*(one() for _ in range(RUNS - 1)))]
            views = await asyncio.wait_for(asyncio.gather(*(_settled(client, r.run_id) for r in runs)), 60)
            for run, view in zip(runs, views, strict=True):
                if view.status is not RunStatus.SUCCEEDED:
                    await run.handle.cancel()
            await asyncio.gather(*(r.handle.result() for r in runs), return_exceptions=True)
    # With METABUILDER_RECORD_HISTORIES=1: the shapes of a reserved-then-patched and a refused LLM call.
    shapes = (("budget_reserved", RunStatus.SUCCEEDED), ("budget_short", RunStatus.PAUSED_AWAITING_APPROVAL))
    for name, wanted in shapes:
        run_id = next(r.run_id for r, v in zip(runs, views, strict=True) if v.status is wanted)
        parent = client.get_workflow_handle(f"build-run-{run_id}")
        record_history(name, (await parent.fetch_history()).to_json())
        child = client.get_workflow_handle(f"build-run-{run_id}-repair-1")
        record_history(f"{name}_repair_1", (await child.fetch_history()).to_json())

    answer = await api.get(f"/api/meta/v4/tenants/{tenant}/budget")
    assert answer.status_code == 200, answer.text
    tenant_view = answer.json()
    run_budgets = [(await api.get(f"/api/meta/v4/runs/{r.run_id}/budget")).json() for r in runs]
    kinds = {}
    for r, v in zip(runs, views, strict=True):
        events = (await api.get(f"/api/meta/v4/runs/{r.run_id}/timeline")).json()["events"]
        kinds[v.status] = [(e["kind"], e["data"].get("outcome")) for e in events]
    await api.aclose()
    grown = {name: _metric(name, labels) - before[name] for name, labels in METRICS}
    with transaction(pg_sessions) as session:
        llm_records = session.query(CostRecordRow).filter_by(tenant_id=tenant, kind="llm").all()
        step_records = session.query(CostRecordRow).filter_by(tenant_id=tenant, kind="step").all()
    [today] = [p for key, p in tenant_view["periods"].items() if len(key) == 10]
    totals = tenant_view["records"]
    spent, reserved = today["cost_usd"]["spent"], today["cost_usd"]["reserved"]
    largest = max(r.cost_usd for r in llm_records)
    passed = sum(v.status is RunStatus.SUCCEEDED for v in views)
    refused = sum(any(e.outcome == "budget_exhausted" for e in v.timeline) for v in views)
    print(f"\nbudget: {RUNS} runs, tenant limit ${limit:.4f}/day; LLM calls made {len(llm_records)} "
          f"(runs passed {passed}, refused by the budget {refused}); spent ${spent:.6f}, still reserved "
          f"${reserved:.6f}; largest single call ${largest:.6f}; limit + largest ${limit + largest:.6f}; "
          f"API total ${totals['cost_usd']:.6f} = sum of {len(llm_records)} LLM and {len(step_records)} step "
          f"records ${sum(r.cost_usd for r in llm_records + step_records):.6f}; "
          f"tokens {totals['tokens_in']:.0f} in, {totals['tokens_out']:.0f} out")
    # Too small for all: some runs were refused, and each refusal is on its run's timeline.
    assert 0 < len(llm_records) < RUNS and refused == RUNS - len(llm_records) and passed == len(llm_records)
    # $0.35 holds 3 worst cases (~$0.104) at once, and at most 4 calls one after another.
    assert 3 <= len(llm_records) <= 4
    assert largest == pytest.approx(0.063)  # 60000 in at $1/M + 1500 out at $2/M, the catalogue's prices
    assert spent <= limit + largest + 1e-9
    assert spent <= limit + 1e-9  # the reservation is a true upper bound here: no overrun at all
    assert reserved == 0 and tenant_view["open_reservations"] == 0  # every run ended: nothing is held
    # The API's totals are the sums of the records, and the ledgers' spent equals them.
    assert tenant_view["records"]["cost_usd"] == pytest.approx(sum(r.cost_usd for r in llm_records + step_records))
    assert spent == pytest.approx(sum(r.cost_usd for r in llm_records + step_records))
    assert today["tokens"]["spent"] == sum(r.tokens_in + r.tokens_out for r in llm_records)
    assert sum(b["records"]["llm_calls"] for b in run_budgets) == len(llm_records) == len(fake.requests)
    assert all(r.model == "fake-fixer" and (r.tokens_in, r.tokens_out) == (60_000, 1_500) for r in llm_records)
    # Each run's timeline says what its budget did: the call and its cost, or the refusal.
    assert ("budget.llm_call", None) in kinds[RunStatus.SUCCEEDED]
    assert ("autofix.patch", "budget_exhausted") in kinds[RunStatus.PAUSED_AWAITING_APPROVAL]
    assert not any(k == "budget.llm_call" for k, _ in kinds[RunStatus.PAUSED_AWAITING_APPROVAL])
    # The counters grew by what the records say (the workers run in this process).
    assert grown["metabuilder_llm_tokens_total"] == sum(r.tokens_in for r in llm_records)
    assert grown["metabuilder_cost_usd_total"] == pytest.approx(sum(r.cost_usd for r in llm_records))
    assert grown["metabuilder_budget_exceeded_total"] == refused
    # Every step attempt was metered on its run: wall time, CPU time, one attempt each.
    for b in run_budgets:
        dims = b["dimensions"]
        assert dims["attempts"]["spent"] == b["records"]["step_attempts"] >= 2
        assert dims["time_seconds"]["spent"] == pytest.approx(b["records"]["wall_seconds"])
    assert all(r.wall_seconds > 0 for r in step_records) and sum(r.cpu_seconds for r in step_records) > 0
    with transaction(pg_sessions) as session:
        assert ledgers.open_reservations(session, tenant_id=tenant) == 0
