"""Runs survive a SIGKILLed worker and a restarted Temporal server (real processes throughout)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from temporalio.client import Client

from metabuilder.domain.runs import RunStatus, StepStatus
from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.store import repository
from metabuilder.store.db import transaction
from metabuilder.worker.devserver import DevServer, free_port
from metabuilder.worker.settings import Settings
from metabuilder.workflows.build_run import BuildRunWorkflow
from tests.integration.conftest import start_worker, wait_for_file
from tests.workflows.test_build_run import wait_for_step


async def test_sigkilled_worker_step_is_rerun_by_another_worker(
        client: Client, dev_server: DevServer, settings: Settings, sessions, user_repo: Path,
        tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "marker"
    # Attempt 1 is still running when the retry takes over (a command that had finished would be
    # adopted, not re-run: see test_step_state).
    steps = (f"  - name: prep\n    command: echo prep > prep.txt\n"
             f"  - name: long\n    command: echo started >> {marker}; [ $METABUILDER_ATTEMPT = 1 ] && sleep 60;"
             f" echo finished >> {marker};"
             f" echo done > long.txt\n"
             f"  - name: after\n    command: test -f prep.txt && test -f long.txt\n")
    procs.append(start_worker(settings, dev_server.address, tmp_path / "worker-a.log"))
    run = await submit(client, f"name: resilient\nsteps:\n{steps}", "plan.yaml", user_repo,
                       SubmitOptions.of(settings, heartbeat_timeout_seconds=3))
    await wait_for_file(marker)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    procs.append(start_worker(settings, dev_server.address, tmp_path / "worker-b.log"))

    async with asyncio.timeout(60):
        view = await run.handle.result()
    assert view.status is RunStatus.SUCCEEDED
    assert view.steps[1].status is StepStatus.SUCCEEDED and view.steps[1].attempt == 2
    # The killed attempt's command did not go on behind the new one's back.
    assert marker.read_text().split() == ["started", "started", "finished"]
    with transaction(sessions) as s:
        rows = [(r.name, r.attempt, r.status) for r in repository.run_steps(s, run.run_id)]
    assert rows == [("prep", 1, "succeeded"), ("long", 1, "lost"), ("long", 2, "succeeded"),
                    ("after", 1, "succeeded")]


async def test_run_completes_across_a_server_restart(
        settings: Settings, sessions, user_repo: Path, tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    server = DevServer(tmp_path / "temporal", port=free_port(), ui=False)
    server.start(detach=False)
    try:
        client = await server.client()
        marker = tmp_path / "marker"
        steps = (f"  - name: first\n    command: touch {marker}; sleep 4; echo one > one.txt\n"
                 f"  - name: second\n    command: sleep 1; test -f one.txt\n")
        procs.append(start_worker(settings, server.address, tmp_path / "worker.log"))
        run = await submit(client, f"name: restart\nsteps:\n{steps}", "plan.yaml", user_repo,
                           SubmitOptions.of(settings, heartbeat_timeout_seconds=10))
        await wait_for_file(marker)
        await wait_for_step(client, run.run_id, 0, StepStatus.RUNNING)
        server.stop()
        await asyncio.sleep(2)
        server.start(detach=False)  # same port, same data file
        client = await server.client()
        handle = client.get_workflow_handle_for(BuildRunWorkflow.run, run.handle.id)
        async with asyncio.timeout(90):
            view = await handle.result()
        assert view.status is RunStatus.SUCCEEDED
        assert [s.status for s in view.steps] == [StepStatus.SUCCEEDED, StepStatus.SUCCEEDED]
        with transaction(sessions) as s:
            row = repository.get_run(s, run.run_id)
            assert row is not None and row.status == "succeeded"
    finally:
        server.stop()
