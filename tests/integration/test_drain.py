"""Graceful drain: a worker process told to stop (SIGTERM) stops polling and lets the steps it runs
finish within ``META_BUILDER_WORKER_GRACE_SECONDS``; a step that outlives the grace is cancelled
and Temporal runs it again on another worker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from metabuilder.domain.runs import RunStatus
from metabuilder.service.runs import SubmitOptions, Submitted, submit
from metabuilder.store import repository
from metabuilder.store.db import transaction
from metabuilder.worker.devserver import DevServer
from metabuilder.worker.settings import Settings
from tests.integration.conftest import start_worker, wait_for_file


async def _exits(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """The process's exit code and how long it took to exit."""
    began = time.monotonic()
    async with asyncio.timeout(timeout):
        while proc.poll() is None:
            await asyncio.sleep(0.05)
    return proc.returncode, time.monotonic() - began


async def _drained(client: Client, dev_server: DevServer, settings: Settings, user_repo: Path, tmp_path: Path,
                   procs: list[subprocess.Popen[bytes]], plan: str, marker: Path, grace: str
                   ) -> tuple[Submitted, subprocess.Popen[bytes], int, float]:
    """Start a worker with ``grace`` seconds to drain, submit ``plan``, SIGTERM the worker once its
    step has written ``marker``; the run, the worker, its exit code and how long it took to exit."""
    a = start_worker(settings, dev_server.address, tmp_path / "worker-a.log",
                     {"META_BUILDER_WORKER_GRACE_SECONDS": grace})
    procs.append(a)
    run = await submit(client, plan, "plan.yaml", user_repo, SubmitOptions.of(settings, heartbeat_timeout_seconds=5))
    await wait_for_file(marker)
    a.send_signal(signal.SIGTERM)
    code, seconds = await _exits(a, 20)
    return run, a, code, seconds


def _rows(sessions, run_id: str) -> list[tuple[str, int, str, str]]:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        return [(r.name, r.attempt, r.status, r.worker) for r in repository.run_steps(s, run_id)]


async def test_sigterm_lets_the_running_step_finish(
        client: Client, dev_server: DevServer, settings: Settings, sessions, user_repo: Path,
        tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "marker"
    plan = (f"name: drain\nsteps:\n  - name: slow\n    command: touch {marker}; sleep 2; echo ok > slow.txt\n"
            "  - name: after\n    command: test -f slow.txt\n")
    run, a, code, seconds = await _drained(client, dev_server, settings, user_repo, tmp_path, procs, plan, marker, "20")
    assert code == 0
    assert 0.5 < seconds < 15  # it waited for the step (2 s), not for the whole grace
    rows = _rows(sessions, run.run_id)
    assert [(n, at, st) for n, at, st, _ in rows] == [("slow", 1, "succeeded")]
    assert rows[0][3].endswith(f":{a.pid}")

    procs.append(start_worker(settings, dev_server.address, tmp_path / "worker-b.log"))
    async with asyncio.timeout(60):
        view = await run.handle.result()
    assert view.status is RunStatus.SUCCEEDED
    assert [(n, at, st) for n, at, st, _ in _rows(sessions, run.run_id)] == [
        ("slow", 1, "succeeded"), ("after", 1, "succeeded")]


async def test_a_step_that_outlives_the_grace_is_cancelled_and_run_again_elsewhere(
        client: Client, dev_server: DevServer, settings: Settings, sessions, user_repo: Path,
        tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "marker"
    plan = (f"name: drain-late\nsteps:\n  - name: long\n    command: echo $METABUILDER_ATTEMPT >> {marker};"
            " [ $METABUILDER_ATTEMPT = 1 ] && sleep 60; echo ok > long.txt\n")
    run, _, code, seconds = await _drained(client, dev_server, settings, user_repo, tmp_path, procs, plan, marker, "1")
    assert code == 0
    assert seconds < 10  # the grace (1 s), then its command's SIGTERM
    assert [(n, at, st) for n, at, st, _ in _rows(sessions, run.run_id)] == [("long", 1, "cancelled")]

    procs.append(start_worker(settings, dev_server.address, tmp_path / "worker-b.log"))
    async with asyncio.timeout(60):
        view = await run.handle.result()
    assert view.status is RunStatus.SUCCEEDED
    assert [(n, at, st) for n, at, st, _ in _rows(sessions, run.run_id)] == [
        ("long", 1, "cancelled"), ("long", 2, "succeeded")]
    assert marker.read_text().split() == ["1", "2"]  # the first command was killed, not left running
    # What Temporal saw: the attempt on the stopped worker failed (worker shutdown) and was retried.
    events = [e async for e in run.handle.fetch_history_events()]
    started = [e.activity_task_started_event_attributes for e in events
               if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    assert len(started) == 1 and started[0].attempt == 2
    assert started[0].last_failure.application_failure_info.type == "WorkerShutdown"
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED not in [e.event_type for e in events]
