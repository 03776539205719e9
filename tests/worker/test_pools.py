"""A worker's pools and slots (``--queues cpu=4,io=16,llm=2``), parsed and in a real worker process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import Client

from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.store import repository
from metabuilder.store.db import transaction
from metabuilder.worker.devserver import DevServer
from metabuilder.worker.pools import describe, parse_queues
from metabuilder.worker.settings import Settings
from tests.integration.conftest import start_worker
from tests.worker.test_cli import metabuilder


@pytest.mark.parametrize(("text", "expected"), [
    ("cpu=4,io=16,llm=2", {"cpu": 4, "io": 16, "llm": 2}),
    ("workflow, cpu=8", {"workflow": 3, "cpu": 8}),
    ("io", {"io": 3}),
    (None, {"workflow": 3, "cpu": 3, "io": 3, "llm": 3}),
    (" cpu = 2 ,", {"cpu": 2}),
])
def test_queues_with_slots(text: str | None, expected: dict[str, int]) -> None:
    assert parse_queues(text, 3) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("cpu=4,gpu=2", "--queues 'cpu=4,gpu=2': unknown pool 'gpu' in 'gpu=2'"),
    ("cpu=four", "--queues 'cpu=four': 'cpu=four': slots must be a whole number"),
    ("cpu=0", "--queues 'cpu=0': 'cpu=0': slots must be from 1 to 1000"),
    ("io=3,io=4", "pool 'io' is named twice"),
    (",", "no pool named"),
])
def test_bad_queues_name_the_flag_and_the_part(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_queues(text, 4)
    assert message in str(err.value)


def test_describe_is_the_flag_again() -> None:
    assert describe(parse_queues("cpu=4,io=16", 1)) == "cpu=4,io=16"


def test_the_worker_command_refuses_a_bad_spec(settings: Settings) -> None:
    res = metabuilder("worker", "--queues", "cpu=4,io=lots", env={"META_BUILDER_HOME": str(settings.home)})
    assert res.returncode == 2, res.stderr
    assert "--queues 'cpu=4,io=lots': 'io=lots': slots must be a whole number" in res.stderr
    assert "Traceback" not in res.stderr


async def test_a_pools_slots_bound_the_steps_a_worker_runs_at_once(
        client: Client, dev_server: DevServer, settings: Settings, sessions, user_repo: Path,
        tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker(settings, dev_server.address, tmp_path / "worker.log", args=["--queues", "workflow=4,cpu=2"])
    try:
        plan = "name: slots\nsteps:\n  - name: busy\n    command: sleep 1.5\n"
        runs = [await submit(client, plan, "plan.yaml", user_repo, SubmitOptions.of(settings)) for _ in range(5)]
        async with asyncio.timeout(90):
            await asyncio.gather(*(r.handle.result() for r in runs))
    finally:
        worker.terminate()
        worker.wait(30)
    with transaction(sessions) as s:
        spans = [(r.started_at, r.finished_at) for run in runs for r in repository.run_steps(s, run.run_id)]
    assert len(spans) == 5
    at_once = max(sum(1 for a, b in spans if a <= start < b) for start, _ in spans)
    assert at_once == 2  # never more than the cpu pool's slots, and the slots are used
