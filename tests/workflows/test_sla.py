"""SLA classes on the real dev server (in-process workers, the local fake OpenAI server): the
class changes a run's Temporal priority, the model its LLM patch is asked of and how deep its
repair ladder climbs; Thorough makes N candidate patches, verifies each and applies the smallest
that passes; the SLA monitor warns at 80% of the time budget and records the violation at 100%."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

from prometheus_client import REGISTRY
from temporalio.client import Client

from metabuilder.domain.models_catalogue import parse_catalogue
from metabuilder.domain.payloads import RunView
from metabuilder.domain.policy import effective_settings
from metabuilder.domain.runs import RunStatus
from metabuilder.domain.sla import SlaClass, parse_sla_classes
from metabuilder.service import notifications as webhooks
from metabuilder.service.runs import SubmitOptions, Submitted, prepare_retry, submit
from metabuilder.service.scheduling import resolve_v4
from metabuilder.service.timeline import run_timeline
from metabuilder.store import repository
from metabuilder.store.db import transaction
from metabuilder.store.tenants import ensure_tenant
from metabuilder.worker.cli.follow import print_summary
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings
from tests.activities.test_webhooks import until
from tests.autofix.conftest import AUTOFIX, finish, with_llm
from tests.conftest import git
from tests.fakes.openai_server import fake_openai
from tests.fakes.webhook_receiver import Receiver
from tests.workflows.test_build_run import record_history

# A test that fails while app.py does not say 'good'; `setup` before it can be rolled back.
PLAN = """\
name: sla
approvals: {timeout: 1s, on_expiry: reject}
steps:
  - name: setup
    command: 'true'
    rollback: 'true'
  - name: test
    command: "if grep -q good app.py; then echo '1 passed'; else echo \\"E   assert 'bad' == 'good'\\"; \\
      echo 'FAILED test_app.py::test_x - AssertionError'; exit 1; fi"
"""
GOOD = "```diff\n--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-print('bad')\n+print('good')\n```"
BAD = "```diff\n--- a/app.py\n+++ b/app.py\n@@ -1 +1,2 @@\n-print('bad')\n+print('worse')\n+print('still bad')\n```"
ROOMY = replace(AUTOFIX, max_total_attempts=12, max_per_step_attempts=8)


def sla_settings(settings: Settings, url: str, classes: dict[str, dict[str, object]]) -> Settings:
    """v4 on, the given SLA classes, and a catalogue of three tiers, all served by the fake."""
    catalogue = parse_catalogue(json.dumps([
        {"name": "eco-model", "tier": "economy", "price_in": 0.1, "price_out": 0.2, "context_tokens": 128000},
        {"name": "std-model", "tier": "standard", "price_in": 1, "price_out": 2, "context_tokens": 128000},
        {"name": "big-model", "tier": "premium", "price_in": 5, "price_out": 10, "context_tokens": 128000,
         "endpoint": url},
    ]), "catalogue")
    v4 = replace(settings.v4, enabled=True, sla_classes=parse_sla_classes(json.dumps(classes), "classes"))
    base = with_llm(settings, url)
    return replace(base, v4=v4, budgets=replace(base.budgets, catalogue=tuple(catalogue)))


async def start(client: Client, settings: Settings, sessions, repo: Path, sla: SlaClass | None,  # type: ignore[no-untyped-def]
                plan: str = PLAN) -> Submitted:
    v4 = resolve_v4(settings.v4, sessions, "default", run_enabled=True, sla=sla)
    opts = SubmitOptions.of(settings, autofix=effective_settings(ROOMY), v4=v4)
    return await submit(client, plan, "plan.yaml", repo, opts)


def counts() -> tuple[float, float]:
    """The SLA counters of the Fast class, as ``/metrics`` serves them."""
    return tuple(REGISTRY.get_sample_value(f"metabuilder_sla_{name}_total", {"sla": "fast"}) or 0.0  # type: ignore[return-value]
                 for name in ("warnings", "violations"))


def strategies(view: RunView) -> list[tuple[str, str]]:
    return [(e.strategy, e.outcome) for e in view.timeline]


def sla_events(sessions, run_id: str) -> list[tuple[str, str, dict]]:  # type: ignore[no-untyped-def,type-arg]
    with transaction(sessions) as session:
        return [(e.kind, e.summary, e.data) for e in run_timeline(session, run_id, None)
                if e.kind.startswith(("sla.", "model.", "patch."))]


async def test_the_sla_class_sets_the_priority_the_model_and_the_depth_of_a_run(  # type: ignore[no-untyped-def]
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:
    (user_repo / "app.py").write_text("print('bad')\n")
    with fake_openai() as (fake, url):
        ours = sla_settings(settings, url, {})
        async with running_workers(build_workers(client, ours, sessions, POOLS)):
            fast = await start(client, ours, sessions, user_repo, SlaClass.FAST)
            fast_view = await finish(fast.handle)
            normal = await start(client, ours, sessions, user_repo, SlaClass.NORMAL)
            normal_view = await finish(normal.handle)
    # Priority: the class's, on the run's workflow (fast high = 1, normal = 3).
    for run, key in ((fast, 1), (normal, 3)):
        started = (await run.handle.fetch_history()).events[0].workflow_execution_started_event_attributes
        assert started.priority.priority_key == key
    # Model: the strongest the class's tier allows (the fake answers NO_PATCH to both).
    assert [r["model"] for r in fake.requests] == ["eco-model", "std-model"]
    fast_events, normal_events = sla_events(sessions, fast.run_id), sla_events(sessions, normal.run_id)
    [chosen] = [d for k, _, d in fast_events if k == "model.chosen"]
    assert (chosen["model"], chosen["max_tier"], chosen["remaining_usd"]) == ("eco-model", "economy", None)
    assert "eco-model (economy)" in chosen["reason"] and "no cost limit" in chosen["reason"]
    assert [d["model"] for k, _, d in normal_events if k == "model.chosen"] == ["std-model"]
    # Depth: Fast climbs the patch rung only, then escalates; Normal goes on to the rollback.
    assert strategies(fast_view)[-3:] == [("flake_check", "failed_again"), ("patch", "no_patch"),
                                          ("escalate", "escalated")], strategies(fast_view)
    assert fast_view.status is RunStatus.FAILED and fast_view.gates[0].status == "expired"
    [depth] = [(s, d) for k, s, d in fast_events if k == "sla.depth"]
    assert depth[1]["skipped"] == ["replan", "rollback"] and "repair depth 1" in depth[0]
    assert normal_view.status is RunStatus.ROLLED_BACK, strategies(normal_view)
    assert ("rollback", "rolled_back") in strategies(normal_view)
    assert not [k for k, _, _ in normal_events if k == "sla.depth"]
    # Recorded on the run: its status query and its stored settings.
    assert fast_view.sla is not None and fast_view.sla.sla_class is SlaClass.FAST
    assert (fast_view.sla.priority, fast_view.sla.repair_depth, fast_view.sla_state) == ("high", 1, "ok")
    with transaction(sessions) as session:
        stored = repository.get_run(session, fast.run_id).settings["sla"]
    assert stored["class"] == "fast" and stored["source"] == "run"
    # A retry keeps the class the run was given (a plan's class comes with the plan).
    retry_opts = SubmitOptions.of(ours, v4=resolve_v4(ours.v4, sessions, "default", run_enabled=True))
    retry = await prepare_retry(sessions, fast.run_id, retry_opts, ours.autofix)
    assert retry.sla is not None and (retry.sla.sla_class, retry.sla.source) == (SlaClass.FAST, "run")
    assert retry.scheduling is not None and retry.scheduling.priority == "high"
    record_history("sla_fast", (await fast.handle.fetch_history()).to_json())
    record_history("sla_fast_repair_1", (await client.get_workflow_handle(
        f"{fast.handle.id}-repair-1").fetch_history()).to_json())


async def test_thorough_verifies_n_candidates_and_applies_the_smallest_that_passes(  # type: ignore[no-untyped-def]
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:
    (user_repo / "app.py").write_text("print('bad')\n")
    plan = PLAN.replace("name: sla\n", "name: sla\nsla: thorough\nwrite_scope: ['*.py']\n")
    with fake_openai() as (fake, url):
        fake.replies += [BAD, GOOD]  # one candidate each, in whichever order they ask
        ours = sla_settings(settings, url, {"thorough": {"candidates": 2}})
        async with running_workers(build_workers(client, ours, sessions, POOLS)):
            run = await start(client, ours, sessions, user_repo, None, plan)
            view = await finish(run.handle)
    assert view.status is RunStatus.SUCCEEDED, strategies(view)
    assert view.sla is not None and (view.sla.sla_class, view.sla.source) == (SlaClass.THOROUGH, "plan")
    assert [r["model"] for r in fake.requests] == ["big-model", "big-model"]
    assert sorted(r["temperature"] for r in fake.requests) == [0, 0.8]  # the second candidate is sampled
    assert git(Path(ours.shared_repo), "show", f"{view.head_commit}:app.py") == "print('good')"
    [(summary, data)] = [(s, d) for k, s, d in sla_events(sessions, run.run_id) if k == "patch.candidates"]
    assert (data["made"], data["with_diff"], data["passed"]) == (2, 2, 1), summary
    by_lines = {c["changed_lines"]: c for c in data["candidates"]}
    assert by_lines[2]["passed"] and not by_lines[3]["passed"] and data["chosen"] == by_lines[2]["candidate"]
    # Each candidate: 1000 tokens in and 200 out at $5 and $10 per million.
    assert data["cost_usd"] == 2 * 0.007
    with transaction(sessions) as session:
        [applied] = [a for a in repository.repair_attempts(session, run.run_id) if a.outcome == "applied"]
    assert (applied.model, applied.cost_usd) == ("big-model", 0.014)
    assert "best of 2" in applied.reason and "big-model (premium)" in applied.reason
    assert strategies(view)[-2:] == [("patch", "applied"), ("patch", "fixed")]
    record_history("sla_thorough", (await run.handle.fetch_history()).to_json())
    record_history("sla_thorough_repair_1", (await client.get_workflow_handle(
        f"{run.handle.id}-repair-1").fetch_history()).to_json())


async def test_the_monitor_warns_at_80_percent_records_the_violation_and_the_run_goes_on(  # type: ignore[no-untyped-def]
        client: Client, settings: Settings, sessions, user_repo: Path, receiver: Receiver) -> None:
    plan = "name: slow\nsteps:\n  - name: slow\n    command: sleep 3\n"
    with fake_openai() as (_, url):
        ours = sla_settings(settings, url, {"fast": {"time_budget_seconds": 2}})
    with transaction(sessions) as session:  # a webhook told of violations (not of warnings)
        ensure_tenant(session, "default")
        hook = webhooks.create_webhook(session, "default", {"url": f"http://127.0.0.1:{receiver.port}/sla",
                                                             "events": ["sla.violated"]},
                                       where="test", tenant=None, actor="test")
        receiver.secrets["/sla"] = hook.secret or ""
    before = counts()
    async with running_workers(build_workers(client, ours, sessions, POOLS)):
        run = await start(client, ours, sessions, user_repo, SlaClass.FAST, plan)
        view = await run.handle.result()
    # The run goes on past its deadline and ends as its steps decide; the violation stays recorded.
    assert view.status is RunStatus.SUCCEEDED
    assert view.sla_state == "violated" and view.sla_deadline is not None
    events = sla_events(sessions, run.run_id)
    assert [k for k, _, _ in events] == ["sla.warning", "sla.violated"]
    assert "80%" in events[0][1] and "passed its 2s time budget" in events[1][1]
    assert events[1][2]["sla"] == "fast"
    after = counts()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    with transaction(sessions) as session:
        from metabuilder.store import sla as sla_rows
        assert sla_rows.run_sla_state(session, run.run_id) == "violated"
    out = io.StringIO()
    print_summary(view, repo=ours.shared_repo, ui_link=None, out=out)
    assert "  SLA:         fast (violated, deadline " in out.getvalue()
    await until(lambda: receiver.on("/sla"))
    [(headers, body, signed)] = receiver.on("/sla")
    assert signed and headers["x-metabuilder-event"] == "sla.violated"
    assert body["data"]["run_id"] == run.run_id and "passed its fast SLA deadline" in body["summary"]
    record_history("sla_monitor", (await run.handle.fetch_history()).to_json())


async def test_a_run_without_an_sla_class_has_no_deadline_and_the_whole_ladder(  # type: ignore[no-untyped-def]
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:
    plan = "name: plain\nsteps:\n  - name: ok\n    command: 'true'\n"
    with fake_openai() as (_, url):
        ours = sla_settings(settings, url, {})
    async with running_workers(build_workers(client, ours, sessions, POOLS)):
        run = await start(client, ours, sessions, user_repo, None, plan)
        view = await run.handle.result()
    assert view.status is RunStatus.SUCCEEDED
    assert (view.sla, view.sla_deadline, view.sla_state) == (None, None, "ok")
    history = await run.handle.fetch_history()
    assert not [e for e in history.events if e.HasField("timer_started_event_attributes")]


async def test_the_model_steps_down_when_money_runs_low_and_none_is_asked_without_enough(  # type: ignore[no-untyped-def]
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:
    import uuid

    from metabuilder.store import budgets
    from metabuilder.store.tenants import ensure_tenant

    (user_repo / "app.py").write_text("print('bad')\n")
    plan = PLAN.replace("name: sla\n", "name: sla\nsla: thorough\n")
    views = {}
    with fake_openai() as (fake, url):
        fake.replies += [GOOD]
        ours = sla_settings(settings, url, {"thorough": {"candidates": 1}})
        async with running_workers(build_workers(client, ours, sessions, POOLS)):
            # $0.01 left: a premium or standard worst case (~26,500 tokens in, 4,096 out) does not fit.
            for limit in (0.01, 0.001):
                run_id = f"sla-{uuid.uuid4().hex[:12]}"
                with transaction(sessions) as s:  # the run's own cost budget, set before it starts
                    ensure_tenant(s, "default")
                    budgets.set_budget_settings(s, "run", run_id, "default", {"cost_usd": limit})
                v4 = resolve_v4(ours.v4, sessions, "default", run_enabled=True)
                opts = SubmitOptions.of(ours, autofix=effective_settings(ROOMY), v4=v4)
                run = await submit(client, plan, "plan.yaml", user_repo, opts, run_id=run_id)
                views[limit] = (run_id, await finish(run.handle))
    assert [r["model"] for r in fake.requests] == ["eco-model"]  # the second run asked no model
    run_id, view = views[0.01]
    assert view.status is RunStatus.SUCCEEDED, strategies(view)
    [chosen] = [d for k, _, d in sla_events(sessions, run_id) if k == "model.chosen"]
    assert (chosen["model"], chosen["max_tier"], chosen["remaining_usd"]) == ("eco-model", "premium", 0.01)
    assert "stepped down" in chosen["reason"]
    with transaction(sessions) as session:
        [applied] = [a for a in repository.repair_attempts(session, run_id) if a.outcome == "applied"]
    assert applied.model == "eco-model" and "stepped down" in applied.reason
    run_id, view = views[0.001]
    [chosen] = [d for k, _, d in sla_events(sessions, run_id) if k == "model.chosen"]
    assert chosen["model"] is None and "no model's worst case fits the $0.0010 left" in chosen["reason"]
    [no_patch] = [e for e in view.timeline if e.outcome == "no_patch"]
    assert "no model chosen" in no_patch.detail
