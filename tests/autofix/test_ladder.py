"""Each rung of the repair ladder, on the time-skipping server with real git and real commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from metabuilder.domain.runs import RunStatus, StepStatus
from metabuilder.store import repository
from metabuilder.store.db import transaction
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings
from tests.autofix.conftest import finish, start_autofix, with_llm
from tests.conftest import git
from tests.fakes.openai_server import fake_openai
from tests.workflows.test_build_run import record_history

# Fails while app.py has trailing spaces, as a linter would; the fix command strips them.
LINT = """\
  - name: lint
    command: "if grep -n ' $' app.py; then echo 'app.py:1:13: W291 [*] Trailing whitespace'; echo 'Found 1 error.'; exit 1; fi"
    fix: sed -i 's/ *$//' app.py
"""
# A test that fails while app.py does not say 'good'.
TEST = """\
  - name: test
    command: "if grep -q good app.py; then echo '1 passed'; else echo \\"E   assert 'bad' == 'good'\\"; echo 'FAILED test_app.py::test_x - AssertionError'; exit 1; fi"
"""


async def keep_histories(client: Client, name: str, run_id: str, repairs: int) -> None:
    """With METABUILDER_RECORD_HISTORIES=1: keep the run's history and its repair children's."""
    handle = client.get_workflow_handle(f"build-run-{run_id}")
    record_history(f"autofix_{name}", (await handle.fetch_history()).to_json())
    for n in range(1, repairs + 1):
        child = client.get_workflow_handle(f"build-run-{run_id}-repair-{n}")
        record_history(f"autofix_{name}_repair_{n}", (await child.fetch_history()).to_json())


def assert_escalated(view) -> None:  # type: ignore[no-untyped-def]
    """The ladder gave up: a gate opened and, nobody deciding, expired to its default (reject)."""
    assert view.status is RunStatus.FAILED, view.error
    [gate] = view.gates
    assert (gate.kind, gate.status, gate.on_expiry) == ("escalation", "expired", "reject")
    assert view.error.startswith(f"gate {gate.gate_id} expired")


def strategies(view) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(e.strategy, e.outcome) for e in view.timeline]


async def test_lint_error_is_patched_by_the_steps_fix_command(
        ts_workers: Client, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    (user_repo / "app.py").write_text("print('app')   \n")
    run = await start_autofix(ts_workers, settings, user_repo, f"name: t\nsteps:\n{LINT}")
    view = await finish(run.handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert strategies(view) == [("classify", "failed"), ("patch", "applied"), ("patch", "fixed")]
    assert view.timeline[0].signal_type == "LINT"
    shared = Path(settings.shared_repo)
    assert git(shared, "show", f"{view.head_commit}:app.py") == "print('app')"
    assert "fix_command patch for lint" in git(shared, "log", "-1", "--format=%s", view.head_commit)
    assert git(shared, "rev-parse", f"refs/metabuilder/{view.run_id}/patch-1") == view.head_commit
    with transaction(sessions) as session:
        [attempt] = repository.repair_attempts(session, view.run_id)
        assert (attempt.fixer, attempt.outcome, attempt.files) == ("fix_command", "applied", ["app.py"])
        assert "-print('app')   " in attempt.diff and attempt.commit_after == view.head_commit
        audit = [a.event for a in repository.audit_events(session, tenant="default", run_id=view.run_id)]
        assert audit == ["autofix.classified", "autofix.patch_applied"]
        assert [r.attempt for r in repository.step_attempts(session, view.run_id, 0, 1, 9)] == [1, 2]
    await keep_histories(ts_workers, "patched", view.run_id, 1)


async def test_same_failure_after_a_patch_stops_patching_and_the_patch_is_rolled_back(
        ts_workers: Client, settings: Settings, user_repo: Path) -> None:
    steps = LINT.replace("sed -i 's/ *$//' app.py", "echo '# touched' >> README.txt")
    (user_repo / "app.py").write_text("print('app')   \n")
    view = await finish((await start_autofix(ts_workers, settings, user_repo, f"name: t\nsteps:\n{steps}")).handle)
    assert view.status is RunStatus.ROLLED_BACK
    assert strategies(view)[1:] == [("patch", "applied"), ("patch", "stuck"), ("rollback", "rolled_back")]
    # The useless patch is gone from the run branch: it is back at the snapshot.
    shared = Path(settings.shared_repo)
    assert git(shared, "rev-parse", f"refs/heads/{view.branch}") == view.base_commit


async def test_test_failure_that_passes_unchanged_is_flaky_not_fixed(
        ts_workers: Client, settings: Settings, sessions, user_repo: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    counter = tmp_path / "n"
    steps = f"""\
  - name: test
    command: "n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; if [ $n -lt 1 ]; then echo 'E   assert 0 == 1'; echo 'FAILED t.py::test_race - AssertionError'; exit 1; fi"
"""
    view = await finish((await start_autofix(ts_workers, settings, user_repo, f"name: t\nsteps:\n{steps}")).handle)
    assert view.status is RunStatus.SUCCEEDED
    assert strategies(view) == [("classify", "failed"), ("flake_check", "flaky")]
    assert view.steps[0].flaky
    with transaction(sessions) as session:
        [rate] = repository.flake_rates(session, "default")
        assert (rate.plan, rate.step, rate.runs, rate.flaky, rate.rate) == ("t", "test", 1, 1, 1.0)


async def test_missing_table_is_repaired_by_inserting_a_migration_step(
        ts_workers: Client, settings: Settings, sessions, user_repo: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "app.db"
    plan = f"""\
name: t
repair:
  migrate: "echo 'CREATE TABLE users (id int);' | python3 -c \\"import sqlite3,sys; sqlite3.connect('{db}').executescript(sys.stdin.read())\\" && echo migrated"
steps:
  - name: seed
    command: "python3 -c \\"import sqlite3; sqlite3.connect('{db}').execute('INSERT INTO users VALUES (1)').connection.commit()\\""
"""
    view = await finish((await start_autofix(ts_workers, settings, user_repo, plan)).handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert [s.name for s in view.steps] == ["migrate-before-seed", "seed"]
    assert [s.status for s in view.steps] == [StepStatus.SUCCEEDED, StepStatus.SUCCEEDED]
    [delta] = view.plan_deltas
    assert (delta.kind, delta.triggered_by) == ("insert_step", "SCHEMA_MIGRATION:sql.missing-relation")
    with transaction(sessions) as session:
        [row] = repository.plan_deltas(session, view.run_id)
        assert row.delta_data["new_step"]["name"] == "migrate-before-seed"
        assert row.original_plan_id != row.new_plan_id
        assert "autofix.replanned" in [a.event for a in repository.audit_events(session, tenant="default")]
    await keep_histories(ts_workers, "replanned", view.run_id, 1)


async def test_fallback_command_and_optional_step(ts_workers: Client, settings: Settings, user_repo: Path) -> None:
    steps = f"""{TEST}    fallback: echo 'fallback passed'
  - name: docs
    command: |
      echo 'E   assert 1 == 2'; echo 'FAILED docs::t - AssertionError'; exit 1
    optional: true
"""
    view = await finish((await start_autofix(ts_workers, settings, user_repo, f"name: t\nsteps:\n{steps}")).handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert [s.status for s in view.steps] == [StepStatus.SUCCEEDED, StepStatus.SKIPPED]
    assert [d.kind for d in view.plan_deltas] == ["use_fallback", "skip_step"]
    assert "fallback passed" in view.steps[0].log_tail


async def test_unrepairable_failure_rolls_back_in_reverse_order(
        ts_workers: Client, settings: Settings, user_repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "rollbacks.txt"
    steps = f"""\
  - name: migrate
    command: echo schema > schema.txt
    rollback: echo undo-migrate >> {log}
  - name: deploy
    command: echo deployed
    rollback: echo undo-deploy >> {log}
{TEST}"""
    view = await finish((await start_autofix(ts_workers, settings, user_repo, f"name: t\nsteps:\n{steps}")).handle)
    assert view.status is RunStatus.ROLLED_BACK
    assert strategies(view)[-2:] == [("patch", "no_patch"), ("rollback", "rolled_back")]
    assert log.read_text().split() == ["undo-deploy", "undo-migrate"]
    assert git(Path(settings.shared_repo), "rev-parse", f"refs/heads/{view.branch}") == view.head_commit
    await keep_histories(ts_workers, "rolled_back", view.run_id, 1)


async def test_security_failure_is_escalated_without_retry_or_patch(
        ts_workers: Client, settings: Settings, user_repo: Path) -> None:
    steps = ("  - name: secrets\n    command: |\n"
             "      echo 'Private key detected in config/id_rsa'; echo 'gitleaks: leaks found: 1'; exit 1\n")
    view = await finish((await start_autofix(ts_workers, settings, user_repo, f"name: t\nsteps:\n{steps}")).handle)
    assert_escalated(view)
    assert strategies(view) == [("classify", "failed"), ("escalate", "escalated")]
    assert "needs a person's decision" in view.gates[0].reason


@pytest.mark.parametrize("budget", [0, 1, 2])
async def test_attempt_budgets_are_never_exceeded(
        ts_workers: Client, settings: Settings, sessions, user_repo: Path, budget: int) -> None:  # type: ignore[no-untyped-def]
    steps = ("  - name: fetch\n    command: |\n"
             "      echo 'curl: (7) Failed to connect to 10.0.0.1 port 80: Connection refused'; exit 7\n")
    autofix_run = {"max_total_attempts": budget}
    view = await finish((await start_autofix(ts_workers, settings, user_repo, f"name: t\nsteps:\n{steps}",
                                             **autofix_run)).handle)
    assert_escalated(view)
    assert view.retry_state is not None and view.retry_state.total_attempts == budget
    assert view.retry_state.attempt_counter == 1 + budget
    with transaction(sessions) as session:
        assert len(repository.step_attempts(session, view.run_id, 0, 1, 99)) == 1 + budget


# --- the LLM fixer, against a local OpenAI-compatible server --------------------------------

GOOD = """```diff
--- a/app.py
+++ b/app.py
@@ -1 +1 @@
-print('bad')
+print('good')
```"""
OUTSIDE = "```diff\n--- a/../outside.py\n+++ b/../outside.py\n@@ -0,0 +1 @@\n+x = 1\n```"
INTO_GIT = "```diff\n--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+echo owned\n```"
PRIVATE_KEY = ("```diff\n--- a/app.py\n+++ b/app.py\n@@ -1 +1,2 @@\n-print('bad')\n+print('good')\n"
               "+KEY = '-----BEGIN RSA PRIVATE KEY-----'\n```")


async def test_llm_patch_after_the_sandbox_rejects_unsafe_ones(
        ts_env: WorkflowEnvironment, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    (user_repo / "app.py").write_text("print('bad')\n")
    steps = TEST + "    fix: echo the declared fixer changes nothing\n"
    with fake_openai() as (fake, url):
        fake.replies += [OUTSIDE]
        llm_settings = with_llm(settings, url)
        async with running_workers(build_workers(ts_env.client, llm_settings, sessions, POOLS)):
            plan = f"name: t\nwrite_scope: ['*.py']\nsteps:\n{steps}"
            # Three bad answers are each rejected (one per run: a run asks the LLM once per failure).
            for bad in (OUTSIDE, INTO_GIT, PRIVATE_KEY):
                fake.replies[:] = [bad]
                view = await finish((await start_autofix(ts_env.client, settings, user_repo, plan)).handle)
                assert_escalated(view)
                rejected = [e for e in view.timeline if e.outcome == "rejected"]
                assert len(rejected) == 1, strategies(view)
            fake.replies[:] = [GOOD]
            view = await finish((await start_autofix(ts_env.client, settings, user_repo, plan)).handle)
    assert view.status is RunStatus.SUCCEEDED, [(e.strategy, e.outcome, e.detail) for e in view.timeline]
    # The declared fixer first (it changes nothing), then the LLM's patch.
    assert strategies(view) == [("classify", "failed"), ("flake_check", "failed_again"), ("patch", "no_patch"),
                                ("patch", "applied"), ("patch", "fixed")]
    assert git(Path(settings.shared_repo), "show", f"{view.head_commit}:app.py") == "print('good')"
    prompt = fake.requests[-1]["messages"][1]["content"]
    assert "TEST_ASSERT" in prompt and "File app.py:" in prompt and "print('bad')" in prompt
    assert fake.headers[-1]["Authorization"] == "Bearer test-key"
    with transaction(sessions) as session:
        all_attempts = [a for run in repository.list_runs(session) for a in repository.repair_attempts(session, run.id)]
    reasons = sorted(a.reason for a in all_attempts if a.outcome == "rejected")
    assert any("outside the workspace" in r for r in reasons)
    assert any("denied path" in r and ".git/hooks/pre-commit" in r for r in reasons)
    assert any("adds a private key" in r for r in reasons)
    # A refused patch is kept with the files it touches (the diff's own paths: it never reached git).
    assert sorted(a.files for a in all_attempts if a.outcome == "rejected") == [
        ["../outside.py"], [".git/hooks/pre-commit"], ["app.py"]]
    llm = [a for a in all_attempts if a.fixer == "llm" and a.outcome == "applied"]
    assert [(a.model, a.tokens_in, a.tokens_out, a.cost_usd) for a in llm] == [("fake-fixer", 1000, 200, 0.0014)]
    # Rejected patches never reached the run branches.
    assert not (Path(settings.shared_repo).parent / "outside.py").exists()
