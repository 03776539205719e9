"""The storm test: many runs of one tenant hit one loopback dependency that is down for a while.

With circuit breakers, the dependency gets the failures that open the breaker, the probes and
whatever was already in flight, and every run completes after it recovers. Without them, every
run retries on its own and the dependency gets about runs x attempts. Both counts are printed.
Everything is real: the dev server, in-process workers, SQLite, git, curl and an HTTP server.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from temporalio.client import Client

from metabuilder.activities.breakers import BreakerSettings
from metabuilder.domain.breakers import BreakerState, parse_policies
from metabuilder.domain.payloads import RunView
from metabuilder.domain.policy import effective_settings
from metabuilder.domain.runs import RunStatus
from metabuilder.service.runs import SubmitOptions, Submitted, submit
from metabuilder.store import breakers as store
from metabuilder.worker.devserver import DevServer, free_port
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings
from metabuilder.workflows.build_run import BuildRunWorkflow
from tests.fakes.flaky_service import FlakyService, flaky_service
from tests.fakes.webhook_receiver import Receiver
from tests.integration.conftest import start_worker
from tests.workflows.test_build_run import record_history

RUNS = 30
CONCURRENCY = 4
"""Steps a worker runs at a time: what is in flight when the breaker opens."""
POLICIES = ('{"TRANSIENT": {"threshold": 3, "window_seconds": 60, "cooldown_seconds": 1,'
            ' "max_cooldown_seconds": 2, "probe_timeout_seconds": 30, "max_wait_seconds": 300}}')
OUTAGE_SECONDS = 10.0


def plan(url: str) -> str:
    # curl's own -f message names no URL; the line below reads like `requests`' raise_for_status().
    fetch = (f"code=$(curl -s -o /dev/null -w '%{{http_code}}' {url}); [ \"$code\" = 200 ] || "
             f"{{ echo \"$code Server Error: Service Unavailable for url: {url}\" >&2; exit 1; }}")
    return f"name: storm\nsteps:\n  - name: fetch\n    command: |\n      {fetch}\n"


async def start(client: Client, settings: Settings, repo: Path, url: str, tenant: str, n: int) -> list[Submitted]:
    opts = SubmitOptions.of(settings, tenant=tenant, autofix=effective_settings(settings.autofix, None, None))
    return [await submit(client, plan(url), "plan.yaml", repo, opts) for _ in range(n)]


async def settle(runs: list[Submitted], timeout: float) -> list[RunView]:
    async def one(run: Submitted) -> RunView:
        while True:
            view = await run.handle.query("status", result_type=RunView)
            if view.status.is_final or view.status is RunStatus.PAUSED_AWAITING_APPROVAL:
                return view
            await asyncio.sleep(0.5)

    async with asyncio.timeout(timeout):
        return list(await asyncio.gather(*(one(r) for r in runs)))


async def storm(client: Client, settings: Settings, sessions, repo: Path,  # type: ignore[no-untyped-def]
                service: FlakyService, *, breakers: bool) -> tuple[list[RunView], float]:
    tuned = replace(settings, breakers=BreakerSettings(enabled=breakers, policies=parse_policies(POLICIES)))
    async with running_workers(build_workers(client, tuned, sessions, POOLS, concurrency=CONCURRENCY)):
        began = time.monotonic()
        runs = await start(client, tuned, repo, service.url, "acme", RUNS)
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - began)))
        service.recover()
        views = await settle(runs, timeout=240)
        return views, time.monotonic() - began


async def test_breakers_spare_a_failing_dependency_and_every_run_completes(
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    with flaky_service() as on:
        views_on, took_on = await storm(client, settings, sessions, user_repo, on, breakers=True)
    with flaky_service() as off:
        views_off, took_off = await storm(client, settings, sessions, user_repo, off, breakers=False)
    print(f"\nstorm of {RUNS} runs, dependency down {OUTAGE_SECONDS:g}s:"
          f"\n  breakers on:  {on.during_outage} requests during the outage, {on.after_recovery} after; "
          f"{sum(v.status is RunStatus.SUCCEEDED for v in views_on)}/{RUNS} succeeded in {took_on:.1f}s"
          f"\n  breakers off: {off.during_outage} requests during the outage, {off.after_recovery} after; "
          f"{sum(v.status is RunStatus.SUCCEEDED for v in views_off)}/{RUNS} succeeded in {took_off:.1f}s "
          f"({dict(Counter(str(v.status) for v in views_off))})")

    assert [v.status for v in views_on] == [RunStatus.SUCCEEDED] * RUNS
    # threshold (3) + what was in flight when it opened or already past its look at the breakers
    # (a worker's slots, twice) + probes (one per cooldown of 1-2 s over the outage)
    assert on.during_outage <= 3 + 2 * CONCURRENCY + int(OUTAGE_SECONDS), on.during_outage
    # every run tried by itself, and retried: at least twice what the breakers let through in the
    # same outage (on a loaded machine fewer retries fit into it, so no absolute count of retries)
    assert off.during_outage >= max(RUNS, 2 * on.during_outage), (off.during_outage, on.during_outage)
    [row] = store.list_breakers(sessions, "acme")
    assert row.breaker.state is BreakerState.CLOSED and row.breaker.trips >= 1 and row.waiting == []


async def test_another_tenants_breaker_on_the_same_dependency_is_its_own(  # type: ignore[no-untyped-def]
        client: Client, settings: Settings, sessions, user_repo: Path, receiver: Receiver) -> None:
    """...and acme's webhook subscribed to ``breaker.opened`` is told once, signed."""
    tuned = replace(settings, breakers=BreakerSettings(policies=parse_policies(POLICIES)))
    receiver.subscribe(sessions, "acme", "/br", ["breaker.opened"])
    with flaky_service() as service:
        async with running_workers(build_workers(client, tuned, sessions, POOLS, concurrency=CONCURRENCY)):
            acme = await start(client, tuned, user_repo, service.url, "acme", 5)
            async with asyncio.timeout(60):
                while not store.open_breakers(sessions, "acme", [service.url.split("/")[2]]):
                    await asyncio.sleep(0.2)
            assert store.open_breakers(sessions, "beta", [service.url.split("/")[2]]) == []
            service.recover()
            beta = await start(client, tuned, user_repo, service.url, "beta", 1)
            views = await settle(acme + beta, timeout=120)
            histories = [(await r.handle.fetch_history()).to_json() for r in acme]
    assert [v.status for v in views] == [RunStatus.SUCCEEDED] * 6
    # At least one of acme's runs was held by the open breaker and waited on a timer: the history
    # of that shape is kept for the replay tests.
    held = [h for h in histories if '"BreakerOpen"' in h]
    assert held, "no run of acme waited on its breaker"
    record_history("breaker_wait", held[0])
    beta_breakers = store.list_breakers(sessions, "beta")
    assert all(r.breaker.trips == 0 for r in beta_breakers)
    async with asyncio.timeout(30):
        while not receiver.on("/br"):
            await asyncio.sleep(0.1)
    [(headers, body, ok)] = receiver.on("/br")  # the opening, told once (the trips after it are not openings)
    assert ok and body["event"] == "breaker.opened" and body["tenant"] == "acme"
    assert service.url.split("/")[2] in body["summary"]


async def test_breaker_state_and_waiting_runs_survive_a_server_restart_mid_storm(
        settings: Settings, sessions, user_repo: Path, tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    server = DevServer(tmp_path / "temporal", port=free_port(), ui=False)
    server.start(detach=False)
    try:
        client = await server.client()
        with flaky_service() as service:
            dependency = service.url.split("/")[2]
            procs.append(start_worker(settings, server.address, tmp_path / "worker.log",
                                      extra_env={"META_V4_BREAKER_POLICIES": POLICIES}))
            runs = await start(client, settings, user_repo, service.url, "acme", 8)
            async with asyncio.timeout(90):
                while not store.open_breakers(sessions, "acme", [dependency]):
                    await asyncio.sleep(0.2)
            server.stop()
            await asyncio.sleep(2)
            server.start(detach=False)  # same port, same data file
            client = await server.client()
            assert store.open_breakers(sessions, "acme", [dependency]), "the breaker's state is in the DB"
            service.recover()
            handles = [client.get_workflow_handle_for(BuildRunWorkflow.run, r.handle.id) for r in runs]
            async with asyncio.timeout(180):
                views = await asyncio.gather(*(h.result() for h in handles))
        assert [v.status for v in views] == [RunStatus.SUCCEEDED] * len(runs)
        [row] = store.list_breakers(sessions, "acme")
        assert row.breaker.state is BreakerState.CLOSED and row.breaker.trips >= 1 and row.waiting == []
    finally:
        server.stop()
