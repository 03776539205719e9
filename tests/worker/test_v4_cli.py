"""v4 from the command line: ``run --priority`` and ``--idempotency-key``, ``queues``, and the
v4 settings failing at start-up (real dev server, no worker polling the test's queues)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import Client

from metabuilder.domain.runs import workflow_id
from metabuilder.worker.devserver import DevServer
from metabuilder.worker.settings import Settings
from tests.worker.test_cli import metabuilder, write_plan


@pytest.fixture
def env(settings: Settings, dev_server: DevServer) -> dict[str, str]:
    return {"TEMPORAL_ADDRESS": dev_server.address, "META_BUILDER_HOME": str(settings.home),
            "META_BUILDER_TASK_QUEUE_PREFIX": settings.task_queue_prefix}


async def test_run_with_a_priority_and_an_idempotency_key_then_the_queues(  # type: ignore[no-untyped-def]
        env: dict[str, str], user_repo: Path, tmp_path: Path, client: Client) -> None:
    plan = write_plan(tmp_path / "plan.yaml", "  - name: s\n    command: 'true'\n")
    args = ("run", str(plan), "--workspace", str(user_repo), "--detach", "--priority", "low",
            "--idempotency-key", "nightly-42")
    first = metabuilder(*args, env=env)
    assert first.returncode == 0, first.stderr
    run_id = first.stdout.strip()
    assert "v4: on (from platform), priority low for every step, fairness key 'default'" in first.stderr
    again = metabuilder(*args, env=env)
    assert (again.returncode, again.stdout.strip()) == (0, run_id)
    assert f"run {run_id} was started by an earlier `metabuilder run` with --idempotency-key 'nightly-42'" \
        in again.stderr
    other = metabuilder(*args[:5], "--priority", "high", "--idempotency-key", "nightly-42", env=env)
    assert other.returncode == 2 and "Idempotency-Key 'nightly-42' was used with another request" in other.stderr

    described = await client.get_workflow_handle(workflow_id(run_id)).describe()
    assert described.raw_description.workflow_execution_info.priority.priority_key == 5
    queues = metabuilder("queues", "--json", env=env)
    assert queues.returncode == 0, queues.stderr
    pools = {p["pool"]: p for p in json.loads(queues.stdout)["pools"]}
    # Nothing polls the test's queues: the run's first workflow task waits, at low priority.
    assert pools["workflow"]["pollers"] == 0
    assert pools["workflow"]["total"]["backlog_count"] == 1
    assert pools["workflow"]["by_priority"]["low"]["backlog_count"] == 1
    table = metabuilder("queues", env=env).stdout
    assert f"workflow ({env['META_BUILDER_TASK_QUEUE_PREFIX']}-workflow)" in table and "  low" in table
    await client.get_workflow_handle(workflow_id(run_id)).terminate("test over")

    bad = metabuilder("run", str(plan), "--priority", "urgent", env=env)
    assert bad.returncode == 2 and "--priority='urgent': expected one of high, normal, low" in bad.stderr


def test_bad_v4_settings_stop_a_command_naming_the_variable(env: dict[str, str]) -> None:
    for name, value, message in [
        ("META_V4_MAX_WORKERS", "0", "META_V4_MAX_WORKERS='0': expected a number from 1 to 1024"),
        ("META_V4_MAX_WORKERS", "many", "META_V4_MAX_WORKERS='many': expected a whole number"),
        ("FEATURE_META_V4_ENABLED", "perhaps", "FEATURE_META_V4_ENABLED='perhaps': expected true or false"),
        ("META_V4_FAIRNESS_WEIGHTS", '{"acme": -1}', "META_V4_FAIRNESS_WEIGHTS.acme=-1: expected a weight"),
        ("META_V4_FAIRNESS_WEIGHTS", "[1", "META_V4_FAIRNESS_WEIGHTS: not JSON"),
        ("META_V4_SLA_CLASSES", '{"fast": {"repair_depth": 2.5}}',
         "META_V4_SLA_CLASSES.fast.repair_depth: expected a whole number up to 16"),
        ("META_V4_SLA_CLASSES", '{"urgent": {}}', "META_V4_SLA_CLASSES"),
        ("META_V4_MODEL_CATALOGUE", '[{"name": "m", "tier": "gold"}]', "META_V4_MODEL_CATALOGUE[0].tier"),
        ("META_V4_MODEL_CATALOGUE", '[{"name": "m", "endpoint": "ftp://x"}]',
         "META_V4_MODEL_CATALOGUE[0].endpoint='ftp://x': expected an http:// or https:// URL"),
    ]:
        res = metabuilder("queues", env={**env, name: value})
        assert res.returncode == 2, (name, value, res.stderr)
        assert f"metabuilder: bad setting: {message}" in res.stderr, res.stderr
    # A cap below the pools a worker polls stops the worker before it polls.
    res = metabuilder("worker", "--queues", "cpu,io", env={**env, "META_V4_MAX_WORKERS": "1"})
    assert res.returncode == 2 and "META_V4_MAX_WORKERS=1: a worker process polling 2 step pools" in res.stderr


async def test_the_v4_flag_goes_platform_then_tenant_then_run(  # type: ignore[no-untyped-def]
        env: dict[str, str], user_repo: Path, tmp_path: Path, client: Client) -> None:
    plan = write_plan(tmp_path / "plan.yaml", "  - name: s\n    command: 'true'\n")
    off = metabuilder("settings", "--tenant", "acme", "--v4", "off", "--json", env=env)
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["v4"] == {"enabled": False, "source": "tenant",
                                            "variable": "FEATURE_META_V4_ENABLED"}
    run = ("run", str(plan), "--workspace", str(user_repo), "--detach", "--tenant", "acme")
    plain = metabuilder(*run, env=env)
    assert plain.returncode == 0 and "v4: on" not in plain.stderr
    forced = metabuilder(*run, "--v4", "--priority", "high", env={**env, "META_V4_FAIRNESS_WEIGHTS": '{"acme": 3}'})
    assert "v4: on (from run), priority high for every step, fairness key 'acme' weight 3" in forced.stderr
    keys = []
    for res in (plain, forced):
        info = (await client.get_workflow_handle(workflow_id(res.stdout.strip())).describe()).raw_description
        keys.append((info.workflow_execution_info.priority.priority_key,
                     info.workflow_execution_info.priority.fairness_key))
        await client.get_workflow_handle(workflow_id(res.stdout.strip())).terminate("test over")
    assert keys == [(0, ""), (1, "acme")]  # without v4: no priority at all (Temporal's default)
    back = metabuilder("settings", "--tenant", "acme", "--v4", "platform", env=env)
    assert "v4 (priority, fairness) true   from platform" in back.stdout


async def test_run_with_an_sla_class(  # type: ignore[no-untyped-def]
        env: dict[str, str], user_repo: Path, tmp_path: Path, client: Client) -> None:
    plan = write_plan(tmp_path / "plan.yaml", "  - name: s\n    command: 'true'\n")
    started = metabuilder("run", str(plan), "--workspace", str(user_repo), "--detach", "--sla", "fast", env=env)
    assert started.returncode == 0, started.stderr
    assert "v4: on (from platform), priority high, fairness key 'default'" in started.stderr
    assert "SLA: fast (from run): time budget 600s, model tier economy, repair depth 1" in started.stderr
    handle = client.get_workflow_handle(workflow_id(started.stdout.strip()))
    assert (await handle.describe()).raw_description.workflow_execution_info.priority.priority_key == 1
    await handle.terminate("test over")
    bad = metabuilder("run", str(plan), "--sla", "urgent", env=env)
    assert bad.returncode == 2 and "--sla='urgent': expected one of fast, normal, thorough" in bad.stderr
    off = metabuilder("run", str(plan), "--workspace", str(user_repo), "--detach", "--sla", "fast", "--no-v4", env=env)
    assert off.returncode != 0 and "SLA classes are part of v4" in off.stderr and "Traceback" not in off.stderr
