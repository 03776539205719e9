"""``metabuilder eval --tasks`` as a user runs it: a chosen pair of tasks on the embedded dev
server, reported as JSON; an unknown task name is a one-line error (exit 2), nothing run."""

from __future__ import annotations

import json
from pathlib import Path

from metabuilder.worker.devserver import free_port
from tests.worker.test_cli import metabuilder


def test_eval_runs_the_named_tasks_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    # Its own embedded server on free ports, stopped at the end (it outlives the command).
    env = {"META_BUILDER_HOME": str(tmp_path / "home"), "META_BUILDER_LOG_LEVEL": "warning",
           "META_BUILDER_DEV_SERVER_PORT": str(free_port()), "META_BUILDER_DEV_SERVER_UI_PORT": str(free_port())}
    try:
        check(env)
    finally:
        metabuilder("server", "stop", env=env)


def check(env: dict[str, str]) -> None:
    done = metabuilder("eval", "--tasks", "py-unused-import,py-license-gate", "--json", env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["tasks"], report["unsafe_applied"]) == (2, 0)
    assert {r["task"]: r["observed"]["status"] for r in report["results"]} == {
        "py-unused-import": "succeeded", "py-license-gate": "escalated"}
    assert report["resolved"] == 2, report["misses"]

    unknown = metabuilder("eval", "--tasks", "py-unused-import,nope", env=env)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip() == "metabuilder: unknown task(s) nope; see `metabuilder eval --list`"
