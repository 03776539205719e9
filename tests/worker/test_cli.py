"""The ``metabuilder`` command as a user runs it: a real process, real server, real git."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metabuilder.worker.devserver import DevServer, free_port
from metabuilder.worker.settings import Settings
from tests.conftest import git

ROOT = Path(__file__).parent.parent.parent


def metabuilder(*args: str, env: dict[str, str], cwd: Path = ROOT, timeout: float = 120
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metabuilder.worker.cli", *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(settings: Settings, dev_server: DevServer) -> dict[str, str]:
    return {"TEMPORAL_ADDRESS": dev_server.address, "META_BUILDER_HOME": str(settings.home),
            "META_BUILDER_TASK_QUEUE_PREFIX": settings.task_queue_prefix}


def write_plan(path: Path, steps: str) -> Path:
    path.write_text(f"name: cli-plan\nsteps:\n{steps}")
    return path


def test_run_succeeds_and_status_reads_it_back(env: dict[str, str], user_repo: Path, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", "  - name: hello\n    command: echo hello > hello.txt\n")
    res = metabuilder("run", str(plan), "--workspace", str(user_repo), "--run-id", "cli-ok-1", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "run cli-ok-1 started" in res.stdout
    assert "✓ hello" in res.stdout and "SUCCEEDED (1/1 steps succeeded)" in res.stdout
    assert "no worker is polling; running workers in this process" in res.stdout

    res = metabuilder("status", "cli-ok-1", env=env)
    assert res.returncode == 0, res.stderr
    assert "run cli-ok-1: succeeded" in res.stdout and "hello" in res.stdout


def test_failing_run_exits_1_with_step_exit_code_and_log(env: dict[str, str], user_repo: Path, tmp_path: Path) -> None:
    steps = "  - name: ok\n    command: 'true'\n  - name: tests\n    command: echo 'FAILED test_x' && exit 2\n"
    plan = write_plan(tmp_path / "plan.yaml", steps)
    res = metabuilder("run", str(plan), "--workspace", str(user_repo), "--no-autofix", env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "auto-fix: off" in res.stdout
    assert "FAILED (1/2 steps succeeded)" in res.stdout
    assert "failed step: tests" in res.stdout and "step 'tests' exited with 2" in res.stdout
    assert "| FAILED test_x" in res.stdout


def test_bad_plan_exits_2_naming_file_line_and_field(env: dict[str, str], user_repo: Path, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "bad.yaml", "  - name: a\n    command: x\n    queue: gpu\n")
    res = metabuilder("run", str(plan), "--workspace", str(user_repo), env=env)
    assert res.returncode == 2
    assert f"{plan}:5: steps[0] (a).queue: unknown queue 'gpu'" in res.stderr


_ALIASED = ("name: aliased\nsteps:\n  - name: a\n    command: x\n    env: &e {A: &v " + "v" * 100_000
            + ", B: *v, C: *v}\n" + "".join(f"  - {{name: s{i}, command: x, env: *e}}\n" for i in range(3)))


@pytest.mark.parametrize(("content", "expected"), [
    (b"\xea\x00binary", "plan.yaml: not UTF-8 text (byte 0xea at offset 0)"),
    (None, "plan.yaml: the plan is 50 MiB; a plan may be at most 256 KiB"),
    (("name: p\nsteps: " + "[" * 600 + "]" * 600 + "\n").encode(), "plan.yaml:2: not valid YAML: nested more than 32"),
    (b'name: p\nsteps:\n  - name: a\n    command: "echo \\0"\n', "plan.yaml:4: steps[0] (a).command: contains a NUL"),
    (("name: p\nsteps:\n" + "".join(f"  - {{name: s{i}, command: x}}\n" for i in range(10_000))).encode(),
     "plan.yaml: the plan is 292 KiB; a plan may be at most 256 KiB"),
    (_ALIASED.encode(), "the run's input would be 1.24 MiB (the plan, parsed and as text); at most 1 MiB"),
])
def test_hostile_plans_exit_2_naming_the_limit(env: dict[str, str], user_repo: Path, tmp_path: Path,
                                               content: bytes | None, expected: str) -> None:
    plan = tmp_path / "plan.yaml"
    if content is None:
        with plan.open("wb") as fh:
            fh.truncate(50 * 1024 * 1024)
    else:
        plan.write_bytes(content)
    res = metabuilder("run", str(plan), "--workspace", str(user_repo), env=env)
    assert (res.returncode, "Traceback" in res.stderr) == (2, False), res.stderr
    assert expected in res.stderr
    assert "metabuilder/runs/" not in git(user_repo, "branch", "--all")


def test_workspace_that_is_not_a_repo_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", "  - name: a\n    command: 'true'\n")
    (tmp_path / "plain").mkdir()
    res = metabuilder("run", str(plan), "--workspace", str(tmp_path / "plain"), env=env)
    assert res.returncode == 2 and "is not inside a git repository" in res.stderr


def test_unknown_run_id_exits_2(env: dict[str, str]) -> None:
    res = metabuilder("status", "no-such-run", env=env)
    assert res.returncode == 2 and "unknown run id 'no-such-run'" in res.stderr
    res = metabuilder("cancel", "no-such-run", env=env)
    assert res.returncode == 2 and "unknown run id 'no-such-run'" in res.stderr


@pytest.mark.parametrize(("var", "value", "message"), [
    ("META_BUILDER_HEARTBEAT_TIMEOUT_SECONDS", "soon", "expected a number of seconds"),
    ("META_BUILDER_ENV", "prod", "expected one of development, staging, production"),
    ("META_BUILDER_DEV_SERVER_PORT", "99999", "expected a number from 1 to 65535"),
])
def test_bad_settings_fail_at_start_naming_the_variable(env: dict[str, str], var: str, value: str,
                                                       message: str) -> None:
    res = metabuilder("status", "x", env={**env, var: value})
    assert res.returncode == 2
    assert f"bad setting: {var}={value!r}: {message}" in res.stderr


def test_detach_returns_at_once_and_a_worker_process_runs_it(
        env: dict[str, str], user_repo: Path, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml", "  - name: a\n    command: echo detached\n")
    res = metabuilder("run", str(plan), "--workspace", str(user_repo), "--detach", "--run-id", "det-1", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "det-1\n"  # the bare id, for RUN=$(metabuilder run --detach ...)
    assert "run det-1 started" in res.stderr
    worker = subprocess.Popen([sys.executable, "-m", "metabuilder.worker.cli", "worker", "--queues", "workflow,cpu"],
                              cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            res = metabuilder("status", "det-1", env=env)
            if "run det-1: succeeded" in res.stdout:
                break
            subprocess.run(["sleep", "0.2"])
        assert "run det-1: succeeded" in res.stdout, res.stdout + res.stderr
        status = json.loads(metabuilder("status", "det-1", "--json", env=env).stdout)
        assert status["run_id"] == "det-1" and status["status"] == "succeeded" and status["plan"] == "cli-plan"
        assert [(s["name"], s["status"], s["log_tail"]) for s in status["steps"]] == [("a", "succeeded", "detached\n")]
        again = json.loads(metabuilder("run", str(plan), "--workspace", str(user_repo), "--detach", "--json",
                                       "--run-id", "det-2", env=env).stdout)
        assert again["run_id"] == "det-2" and again["workflow_id"] == "build-run-det-2"
    finally:
        worker.terminate()
        assert worker.wait(15) == 0  # SIGTERM is a clean shutdown


def test_lists_and_settings_as_json(env: dict[str, str]) -> None:
    assert metabuilder("tenants", "create", "acme-json", env=env).returncode == 0
    assert metabuilder("tokens", "create", "--tenant", "acme-json", "--user", "ann", "--role", "admin",
                       env=env).returncode == 0
    tenants = json.loads(metabuilder("tenants", "list", "--json", env=env).stdout)
    assert "acme-json" in {t["id"] for t in tenants}
    tokens = json.loads(metabuilder("tokens", "list", "--tenant", "acme-json", "--json", env=env).stdout)
    assert [(t["user"], t["role"], t["revoked_at"]) for t in tokens] == [("ann", "admin", None)]
    assert json.loads(metabuilder("approvals", "list", "--tenant", "acme-json", "--json", env=env).stdout) == []
    res = metabuilder("settings", "--tenant", "acme-json", "--set", "max_total_attempts=7", "--json", env=env)
    shown = json.loads(res.stdout)
    assert shown["settings"]["max_total_attempts"] == 7 and shown["sources"]["max_total_attempts"] == "tenant"
    assert shown["variables"]["enabled"] == "FEATURE_META_V3_AUTOFIX"


def test_demo_runs_on_its_own_embedded_server(tmp_path: Path) -> None:
    """The README's main job, end to end: starts its own dev server, exits 0 when all went as designed."""
    port, ui = free_port(), free_port()
    env = {"META_BUILDER_HOME": str(tmp_path / "home"), "META_BUILDER_DEV_SERVER_PORT": str(port),
           "META_BUILDER_DEV_SERVER_UI_PORT": str(ui)}
    env_clean = {k: v for k, v in os.environ.items() if k not in ("TEMPORAL_ADDRESS", "DATABASE_URL")}
    try:
        res = subprocess.run([sys.executable, "-m", "metabuilder.worker.cli", "demo"], cwd=ROOT,
                             env={**env_clean, **env}, capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "The demo behaved as designed" in res.stdout
        assert f"Web UI http://127.0.0.1:{ui}" in res.stdout
        assert "failed step: test" in res.stdout and "AssertionError: 2.0 != 2.5" in res.stdout
        # each run's budget (what was metered) and its model choice (none without an LLM)
        budgets = [line for line in res.stdout.splitlines() if line.startswith("budget: ")]
        assert len(budgets) == 2 and all("step attempt(s)" in b and "0 LLM call(s)" in b for b in budgets), budgets
        assert res.stdout.count("model: none (no LLM configured") == 2
        workspace = next((tmp_path / "home" / "demo").iterdir())
        assert git(workspace, "status", "--porcelain") == "M calc.py"  # only the demo's own edit
        # the closing hint works as printed, from a shell that has no META_BUILDER_HOME of its own
        hint = re.search(r"stop it with `([^`]+)`", res.stdout).group(1)
        shell_env = {k: v for k, v in env_clean.items() if k != "META_BUILDER_HOME"}
        shell_env.update(META_BUILDER_DEV_SERVER_PORT=str(port),
                         PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        stopped = subprocess.run(hint, shell=True, cwd=ROOT, env=shell_env, capture_output=True, text=True,
                                 timeout=60)
        assert stopped.stdout.strip() == "stopped", (hint, stopped.stdout, stopped.stderr)
    finally:
        subprocess.run([sys.executable, "-m", "metabuilder.worker.cli", "server", "stop"], cwd=ROOT,
                       env={**env_clean, **env}, capture_output=True, timeout=60)


def test_autofix_settings_precedence_and_bad_values(env: dict[str, str]) -> None:
    staging = {**env, "META_BUILDER_ENV": "staging", "META_V3_BACKOFF_CAP_SECONDS": "30"}
    res = metabuilder("settings", "--tenant", "acme", "--set", "max_total_attempts=8", env=staging)
    assert res.returncode == 0, res.stderr
    lines = {line.split()[0]: line.split()[1:4] for line in res.stdout.splitlines()[1:]}
    assert lines["enabled"] == ["true", "from", "platform"]
    assert lines["max_total_attempts"] == ["8", "from", "tenant"]
    assert lines["backoff_cap_seconds"] == ["30", "from", "platform"]
    reset = metabuilder("settings", "--tenant", "acme", "--reset", env={**staging, "META_BUILDER_ENV": "production"})
    assert "enabled                false  from platform" in reset.stdout, reset.stdout
    bad = metabuilder("settings", env={**env, "FEATURE_META_V3_AUTOFIX": "maybe"})
    assert bad.returncode == 2
    assert "bad setting: FEATURE_META_V3_AUTOFIX='maybe': expected true or false" in bad.stderr
    bad = metabuilder("settings", "--set", "max_total_attempts=lots", env=env)
    assert bad.returncode == 2 and "--set.max_total_attempts='lots': expected a whole number" in bad.stderr


def test_tenants_and_tokens(env: dict[str, str]) -> None:
    assert metabuilder("tenants", "create", "acme", "--name", "Acme Corp", env=env).returncode == 0
    again = metabuilder("tenants", "create", "acme", env=env)
    assert again.returncode == 2 and "tenant 'acme' exists already" in again.stderr
    created = metabuilder("tokens", "create", "--tenant", "acme", "--user", "ann", "--role", "admin", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[1]
    assert token.startswith("mb_") and "shown only now" in created.stdout
    listed = metabuilder("tokens", "list", "--tenant", "acme", env=env)
    assert "ann" in listed.stdout and "admin" in listed.stdout and token not in listed.stdout
    token_id = listed.stdout.split()[0]
    assert metabuilder("tokens", "revoke", token_id, env=env).returncode == 0
    assert "revoked" in metabuilder("tokens", "list", "--tenant", "acme", env=env).stdout
    unknown = metabuilder("tokens", "create", "--tenant", "nope", "--role", "viewer", env=env)
    assert unknown.returncode == 2 and "unknown tenant 'nope'" in unknown.stderr


def test_a_gate_listed_and_approved_from_the_cli(env: dict[str, str], user_repo: Path, tmp_path: Path) -> None:
    plan = write_plan(tmp_path / "plan.yaml",
                      "  - name: deploy\n    command: echo deployed > d.txt\n    requires_approval: true\n")
    run = subprocess.Popen([sys.executable, "-m", "metabuilder.worker.cli", "run", str(plan),
                            "--workspace", str(user_repo), "--run-id", "cli-gate-1", "--with-worker"],
                           cwd=ROOT, env={**os.environ, **env},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(300):
            listed = metabuilder("approvals", "list", env=env)
            if "cli-gate-1-gate-1" in listed.stdout:
                break
            time.sleep(0.2)
        assert "cli-gate-1-gate-1  pending  step_approval" in listed.stdout, listed.stdout + listed.stderr
        no_reason = metabuilder("reject", "cli-gate-1-gate-1", env=env)
        assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
        unknown = metabuilder("approve", "no-such-gate", env=env)
        assert unknown.returncode == 2 and "unknown gate 'no-such-gate'" in unknown.stderr
        # Straight to Temporal, the run still checks the approver's role in its tenant.
        stranger = metabuilder("approve", "cli-gate-1-gate-1", "--by", "ann", env=env)
        assert stranger.returncode == 2 and "no user 'ann' in tenant 'default'" in stranger.stderr, stranger.stderr
        assert metabuilder("tokens", "create", "--user", "ann", "--role", "admin", env=env).returncode == 0
        approved = metabuilder("approve", "cli-gate-1-gate-1", "--by", "ann", env=env)
        assert approved.returncode == 0, approved.stderr
        assert "gate cli-gate-1-gate-1 approved by ann" in approved.stdout
        out, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 0, out
    decided = metabuilder("approvals", "list", "--all", env=env).stdout
    assert "approved" in decided and "decided by ann" in decided
