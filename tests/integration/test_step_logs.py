"""Step logs in the database while the step runs: followed live (service, CLI and API), capped with
a visible truncation marker, and read back whole."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import httpx
from temporalio.client import Client

from metabuilder.activities.step_watch import LogSettings
from metabuilder.service import step_logs
from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.store import hosts
from metabuilder.store.db import transaction
from metabuilder.store.hosts import AttemptKey
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings


async def test_a_running_steps_log_is_followed_live_and_kept_whole(
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    plan = ("name: live\nsteps:\n  - name: talk\n"
            "    command: for i in 1 2 3 4 5 6; do echo line $i; sleep 0.4; done\n")
    async with running_workers(build_workers(client, settings, sessions, POOLS)):
        run = await submit(client, plan, "plan.yaml", user_repo, SubmitOptions.of(settings))
        async with asyncio.timeout(30):
            while True:
                with transaction(sessions) as s:
                    if hosts.leases(s, run_id=run.run_id) or (await run.handle.describe()).close_time:
                        break
                await asyncio.sleep(0.05)
        key = AttemptKey(run.run_id, 0, 1)
        seen: list[tuple[float, str]] = []
        began = time.monotonic()
        async with asyncio.timeout(30):
            async for piece in step_logs.follow(sessions, key, poll_seconds=0.1):
                seen.append((time.monotonic() - began, piece.text))
        await run.handle.result()
    text = "".join(t for _, t in seen)
    assert text == "".join(f"line {i}\n" for i in range(1, 7))
    # Live: pieces arrived while the step ran (over about 2.4 s), not all at its end.
    assert len([t for _, t in seen if t]) >= 3
    first = next(at for at, t in seen if t)
    assert first < 1.5
    with transaction(sessions) as s:
        whole = step_logs.read_piece(s, key)
        assert whole.done and not whole.truncated and whole.text == text
        assert hosts.leases(s, run_id=run.run_id) == []  # released at its end


async def test_a_log_beyond_the_cap_ends_with_a_marker(
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    capped = replace(settings, step_logs=LogSettings(max_bytes=20_000))
    # About 6 MiB of output that compresses poorly (random hex).
    plan = ("name: loud\nsteps:\n  - name: flood\n"
            "    command: head -c 3000000 /dev/urandom | od -An -tx1 | head -c 6000000; echo; echo the end\n")
    async with running_workers(build_workers(client, capped, sessions, POOLS)):
        run = await submit(client, plan, "plan.yaml", user_repo, SubmitOptions.of(settings))
        async with asyncio.timeout(60):
            view = await run.handle.result()
    assert view.steps[0].exit_code == 0
    key = AttemptKey(run.run_id, 0, 1)
    with transaction(sessions) as s:
        piece = step_logs.read_piece(s, key)
        raw, stored = hosts.log_size(s, key)
    assert piece.done and piece.truncated
    assert "[metabuilder] log truncated here: the database keeps at most 20000 compressed bytes" in piece.text
    assert piece.text.rstrip().endswith("on worker " + client.identity)
    assert "the end" not in piece.text
    assert stored <= 20_000 + 1_000  # the cap, and the marker
    assert 0 < raw < 6_000_000


async def test_the_api_streams_a_log_as_server_sent_events(
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    from metabuilder.api.app import create_app
    from metabuilder.api.config import ApiConfig
    from metabuilder.domain.access import Role
    from metabuilder.store import access
    from metabuilder.store.tenants import ensure_tenant

    with transaction(sessions) as s:
        ensure_tenant(s, "default")
        token = access.create_token(s, "default", "viewer", Role.VIEWER).token

    async def connect() -> Client:
        return client

    app = create_app(ApiConfig(sessions=sessions, connect=connect, platform=settings.autofix,
                               shared_repo=settings.shared_repo, task_queue_prefix=settings.task_queue_prefix))
    plan = ("name: sse\nsteps:\n  - name: talk\n"
            "    command: echo one; sleep 1; echo two; sleep 1; echo three\n")
    async with running_workers(build_workers(client, settings, sessions, POOLS)):
        run = await submit(client, plan, "plan.yaml", user_repo, SubmitOptions.of(settings))
        async with asyncio.timeout(30):
            while True:
                with transaction(sessions) as s:
                    if hosts.leases(s, run_id=run.run_id):
                        break
                await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api",
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.stream("GET", f"/api/meta/v3/runs/{run.run_id}/steps/talk/log",
                                   params={"follow": "1"}) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                body = "".join([chunk async for chunk in resp.aiter_text()])
            plain = await http.get(f"/api/meta/v3/runs/{run.run_id}/steps/0/log")
            missing = await http.get(f"/api/meta/v3/runs/{run.run_id}/steps/nope/log")
        await run.handle.result()
    data = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
    assert [d for d in data if d] == ["one", "two", "three", "complete"]
    assert body.rstrip().endswith("event: end\ndata: complete")
    assert plain.text == "one\ntwo\nthree\n" and plain.headers["X-Metabuilder-Log-Complete"] == "true"
    assert missing.status_code == 404 and "has no step 'nope'" in missing.json()["detail"]
