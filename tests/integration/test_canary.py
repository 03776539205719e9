"""The canary, shown end to end: two worker processes on different build ids of one Worker
Deployment, the candidate with a deliberate regression (its patch rung fails). The candidate is
ramped to 50 % through the CLI (after the decision-diff gate), runs are split by Temporal, the
comparison recommends rollback and acts on it; afterwards every new run goes to the current
version, and runs in flight on the candidate finish on it.

Bounded: batches of 16 quick runs until each version has 4 (one batch but for a rare split), and
a test-lowered minimum sample size (4 per version, --min-samples) instead of the issue's ~40 runs
and the default of 20."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowHandle

from metabuilder.domain.payloads import RunView
from metabuilder.domain.policy import effective_settings
from metabuilder.domain.runs import RunStatus
from metabuilder.service import canary as service
from metabuilder.service.runs import SubmitOptions, Submitted, submit
from metabuilder.store import canary as rows
from metabuilder.store.audit import audit_events
from metabuilder.store.db import transaction
from metabuilder.worker.devserver import DevServer
from metabuilder.worker.settings import Settings
from tests.autofix.conftest import AUTOFIX, finish
from tests.autofix.test_ladder import LINT
from tests.integration.conftest import ROOT, start_worker

CURRENT, CANDIDATE = "1.0.0+gaaaa", "1.1.0+gbbbb"
CONCURRENCY = ["--concurrency", "12"]
MIN_SAMPLES = 4


def plan(wait_for: Path | None = None) -> str:
    """A setup step (with a rollback command), then a lint failure the fix command patches.

    A slow run's setup waits for ``wait_for`` in the io pool: the quick runs' steps are in the cpu
    pool, whose few slots (4 a worker: 12 shared out over three pools) the slow runs would
    otherwise fill when enough of them land on one version, so that its quick runs could not start
    before the marker, which comes after them (a deadlock the CI met)."""
    if wait_for is None:
        return f"name: canary\nsteps:\n  - name: setup\n    command: \"echo ready\"\n    rollback: \"true\"\n{LINT}"
    setup = f"while [ ! -f {wait_for} ]; do sleep 0.05; done; echo ready"
    return (f"name: canary\nsteps:\n  - name: setup\n    command: \"{setup}\"\n    queue: io\n"
            f"    rollback: \"true\"\n{LINT}")


def env(settings: Settings, dev_server: DevServer, deployment: str, build_id: str) -> dict[str, str]:
    return {"META_BUILDER_WORKER_VERSIONING": "true", "META_BUILDER_DEPLOYMENT_NAME": deployment,
            "META_BUILDER_BUILD_ID": build_id, "TEMPORAL_ADDRESS": dev_server.address,
            "META_BUILDER_HOME": str(settings.home), "META_BUILDER_TASK_QUEUE_PREFIX": settings.task_queue_prefix}


def cli(extra: dict[str, str], *args: str, command: str = "canary") -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **extra, "META_BUILDER_LOG_LEVEL": "warning"}
    full.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "metabuilder.worker.cli", command, *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


async def start(client: Client, settings: Settings, repo: Path, text: str) -> Submitted:
    opts = SubmitOptions.of(settings, autofix=effective_settings(AUTOFIX, None, None))
    return await submit(client, text, "plan.yaml", repo, opts, run_id=f"cn-{uuid.uuid4().hex[:12]}")


async def pinned_to(handle: WorkflowHandle[object, object]) -> str:
    """The build id the run's first workflow task pinned it to."""
    async with asyncio.timeout(20):
        while True:
            info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
            if info.deployment_version.build_id:
                return info.deployment_version.build_id
            await asyncio.sleep(0.05)


async def finish_all(runs: list[Submitted], logs: Path, stall: float = 150) -> list[RunView]:
    """The runs' final views. A loaded machine may make them slow, so the bound is on progress: the
    test fails only when none of the runs still open finishes for ``stall`` seconds, and then it
    says where each open run stands and what the workers logged (a stuck run told from a slow one)."""
    tasks = [asyncio.create_task(finish(r.handle)) for r in runs]
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=stall, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                raise AssertionError(f"no run finished for {stall:.0f} s:\n" + await where_they_stand(runs, logs))
        return [t.result() for t in tasks]
    finally:
        for t in tasks:
            t.cancel()


async def where_they_stand(runs: list[Submitted], logs: Path) -> str:
    lines = []
    for run in runs:
        desc = (await run.handle.describe()).raw_description
        info = desc.workflow_execution_info
        if info.close_time.seconds:
            continue
        history = (await run.handle.fetch_history()).events
        events = [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in history][-6:]
        pending = [(a.activity_id, PendingActivityState.Name(a.state), a.attempt, a.last_failure.message)
                   for a in desc.pending_activities]
        lines.append(f"{run.run_id} on {info.versioning_info.deployment_version.build_id or '?'}: pending {pending},"
                     f" children {[c.workflow_id for c in desc.pending_children]}, last events {events}")
    for log in sorted(logs.glob("*.log")):
        lines.append(f"--- {log.name}: " + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(lines)


@pytest.mark.timeout(900)
async def test_a_regressed_candidate_is_rolled_back_and_its_runs_finish_on_it(
        client: Client, dev_server: DevServer, settings: Settings, sessions, user_repo: Path,
        tmp_path: Path, procs, request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    deployment = f"mb-canary-{uuid.uuid4().hex[:8]}"
    (user_repo / "app.py").write_text("print('app')   \n")
    current_env = env(settings, dev_server, deployment, CURRENT)
    candidate_env = env(settings, dev_server, deployment, CANDIDATE)
    procs.append(start_worker(settings, dev_server.address, tmp_path / "current.log", current_env, CONCURRENCY))
    # The first version of a deployment makes itself current; a later one waits to be ramped.
    async with asyncio.timeout(30):
        while (await service.routing(client, deployment)).current != CURRENT:
            await asyncio.sleep(0.5)
    procs.append(start_worker(settings, dev_server.address, tmp_path / "candidate.log",
                              {**candidate_env, "META_V4_CANARY_DRILL_FAIL_PATCH": "true"}, CONCURRENCY))
    async with asyncio.timeout(30):
        while CANDIDATE not in (await service.routing(client, deployment)).versions:
            await asyncio.sleep(0.5)

    histories = ROOT / "tests" / "histories"
    ramp = cli(candidate_env, "ramp", CANDIDATE, "--percent", "50", "--recent", "0", "--bundles", "5",
               "--histories", str(histories / "autofix_patched.v2.json"),
               "--histories", str(histories / "autofix_patched_repair_1.v2.json"))
    assert ramp.returncode == 0, ramp.stderr
    assert "2 histories replayed" in ramp.stdout and "passed" in ramp.stdout
    state = await service.routing(client, deployment)
    assert (state.current, state.ramping, state.ramp_percent) == (CURRENT, CANDIDATE, 50.0)

    marker = tmp_path / "go"
    request.addfinalizer(lambda: marker.write_text("go"))  # a failed test leaves no step waiting on it
    slow: list[Submitted] = []  # in flight when the rollback comes: at least one pinned to each version
    where: dict[str, str] = {}
    while len(set(where.values())) < 2:
        assert len(slow) < 16, f"16 runs and none on one of the versions: {where}"
        run = await start(client, settings, user_repo, plan(marker))
        slow.append(run)
        where[run.run_id] = await pinned_to(run.handle)
    quick: list[Submitted] = []
    versions: dict[str, str | None] = {}
    views: list[RunView] = []
    while len(quick) < 40 and min(sum(v == b for v in versions.values()) for b in (CURRENT, CANDIDATE)) < MIN_SAMPLES:
        batch = [await start(client, settings, user_repo, plan()) for _ in range(16)]  # Temporal splits them
        views += await finish_all(batch, tmp_path)
        quick += batch
        with transaction(sessions) as session:
            versions |= {r.run_id: rows.run_version(session, r.run_id) for r in batch}
    by_version = {v: [view.status for r, view in zip(quick, views, strict=True) if versions[r.run_id] == v]
                  for v in (CURRENT, CANDIDATE)}
    assert set(versions.values()) == {CURRENT, CANDIDATE}, versions
    assert set(by_version[CURRENT]) == {RunStatus.SUCCEEDED}  # the current version patches the lint error
    assert set(by_version[CANDIDATE]) == {RunStatus.ROLLED_BACK}  # the candidate's patch rung fails

    doctor = cli({**candidate_env, "META_V4_CANARY_MIN_SAMPLES": str(MIN_SAMPLES)}, "--json", command="doctor")
    [canary] = [c for c in json.loads(doctor.stdout) if c["name"] == "canary"]
    assert not canary["ok"] and f"{CANDIDATE} against {CURRENT}: rollback" in canary["reason"], canary
    status = cli(candidate_env, "status", "--json", "--act", "--min-samples", str(MIN_SAMPLES))
    assert status.returncode == 0, status.stderr
    out = json.loads(status.stdout)
    comparison = out["comparison"]
    assert comparison["recommendation"] == "rollback", comparison
    assert comparison["checks"]["success_rate"] == "regressed"
    assert comparison["success_p_value"] < 0.05
    assert comparison["candidate"]["runs"] == len(by_version[CANDIDATE])
    assert comparison["current"]["success_rate"] == 1.0 and comparison["candidate"]["success_rate"] == 0.0
    assert out["acted"] == {"deployment": deployment, "current": CURRENT, "ramping": None, "ramp_percent": 0.0,
                            "versions": out["acted"]["versions"]}

    after = [await start(client, settings, user_repo, plan()) for _ in range(6)]
    assert {await pinned_to(r.handle) for r in after} == {CURRENT}
    marker.write_text("go")
    slow_views = await finish_all(slow, tmp_path)
    await finish_all(after, tmp_path)
    for run, view in zip(slow, slow_views, strict=True):
        assert await pinned_to(run.handle) == where[run.run_id]  # still on the version it started on
        expected = RunStatus.SUCCEEDED if where[run.run_id] == CURRENT else RunStatus.ROLLED_BACK
        assert view.status is expected, (where[run.run_id], view.status, view.error)
    with transaction(sessions) as session:
        assert {r.run_id: rows.run_version(session, r.run_id) for r in slow} == where
    assert json.loads(cli(candidate_env, "status", "--json").stdout)["routing"]["ramping"] is None

    # Ramping again, the gate replays the deployment's recent histories (runs and repair children
    # of both versions) and re-drives the bundles these runs recorded.
    again = cli(candidate_env, "ramp", CANDIDATE, "--percent", "10", "--recent", "4", "--bundles", "3")
    assert again.returncode == 0, again.stderr
    assert "4 histories replayed, 3 bundles re-driven" in again.stdout and "passed" in again.stdout, again.stdout
    with transaction(sessions) as session:
        moves = [(a.event, a.actor, a.after) for a in audit_events(session, tenant="default")
                 if a.target == f"deployment:{deployment}"]
    assert [(e, actor) for e, actor, _ in moves] == [
        ("canary.ramped", f"cli:{getpass.getuser()}"), ("canary.rolled_back", f"cli:{getpass.getuser()}"),
        ("canary.ramped", f"cli:{getpass.getuser()}")]
    assert moves[1][2] == {"current": CURRENT, "ramping": None, "percent": 0.0}
