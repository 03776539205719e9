"""``metabuilder workers``, ``leases`` and ``logs`` against a real worker process and dev server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from temporalio.client import Client

from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.store import hosts
from metabuilder.store.db import transaction
from metabuilder.worker.devserver import DevServer
from metabuilder.worker.settings import Settings
from tests.integration.conftest import start_worker
from tests.worker.test_cli import metabuilder


async def test_workers_leases_and_logs_from_the_command_line(
        client: Client, dev_server: DevServer, settings: Settings, sessions, user_repo: Path,
        tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"TEMPORAL_ADDRESS": dev_server.address, "META_BUILDER_HOME": str(settings.home),
           "META_BUILDER_TASK_QUEUE_PREFIX": settings.task_queue_prefix}
    worker = start_worker(settings, dev_server.address, tmp_path / "worker.log",
                          args=["--queues", "workflow=2,cpu=3,io=5"])
    try:
        plan = "name: cli-logs\nsteps:\n  - name: talk\n    command: echo hello; sleep 20; echo bye\n"
        run = await submit(client, plan, "plan.yaml", user_repo, SubmitOptions.of(settings))
        async with asyncio.timeout(30):
            while True:
                with transaction(sessions) as s:
                    if hosts.leases(s, run_id=run.run_id):
                        break
                await asyncio.sleep(0.1)
        leases = await asyncio.to_thread(metabuilder, "leases", "--json", env=env)
        held = json.loads(leases.stdout)
        assert [(x["step_name"], x["attempt"], x["status"]) for x in held] == [("talk", 1, "held")]
        async with asyncio.timeout(20):  # a loaded machine may renew the lease late: it shows lost a moment
            while True:
                shown = await asyncio.to_thread(metabuilder, "workers", "--json", env=env)
                assert shown.returncode == 0, shown.stderr
                document = json.loads(shown.stdout)
                [me] = [w for w in document["workers"] if w["pid"] == worker.pid]
                if me["leases"] == 1:
                    break
                await asyncio.sleep(0.5)
        assert me["pools"] == {"workflow": 2, "cpu": 3, "io": 5} and me["state"] == "running"
        assert set(me["polling"]) <= {"workflow", "cpu", "io"} and me["polling"]
        assert me["leases"] == 1 and me["version"] and document["temporal"] is True
        text = await asyncio.to_thread(metabuilder, "workers", env=env)
        assert f"{worker.pid}@" in text.stdout and "pools workflow=2,cpu=3,io=5" in text.stdout
        followed = await asyncio.to_thread(metabuilder, "logs", run.run_id, "talk", "--follow", env=env)
        assert followed.returncode == 0, followed.stderr
        assert followed.stdout == "hello\nbye\n"
        await run.handle.result()
        whole = await asyncio.to_thread(metabuilder, "logs", run.run_id, env=env)
        assert whole.stdout == "hello\nbye\n"
        missing = await asyncio.to_thread(metabuilder, "logs", run.run_id, "nope", env=env)
        assert missing.returncode == 2 and "has no step 'nope' (its steps so far: talk)" in missing.stderr
    finally:
        worker.terminate()
        assert worker.wait(30) == 0
    stopped = json.loads((await asyncio.to_thread(metabuilder, "workers", "--json", env=env)).stdout)
    [me] = [w for w in stopped["workers"] if w["pid"] == worker.pid]
    assert me["state"] == "stopped" and me["stopped_at"]
