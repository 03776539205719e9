"""Repair safety on the real engine: a patch that weakens the check judging it never lands
without a person, and an UNKNOWN failure goes to a person after its retries.

Each run has the fake OpenAI server answer with the patch a careless model would write.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from metabuilder.api.routes.views import gate_out
from metabuilder.domain.approvals import DecisionInput, GateView
from metabuilder.domain.payloads import RunView
from metabuilder.domain.runs import RunStatus, StepStatus
from metabuilder.store import approvals, repository
from metabuilder.store.db import transaction
from metabuilder.worker.cli.approvals import cmd_approvals
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings
from tests.autofix.conftest import finish, start_autofix, with_llm
from tests.autofix.test_gates import pending_gate
from tests.autofix.test_ladder import keep_histories, strategies
from tests.conftest import git
from tests.fakes.openai_server import FakeOpenAI, fake_openai


@pytest.fixture
async def llm(ts_env: WorkflowEnvironment, settings: Settings, sessions) -> AsyncIterator[FakeOpenAI]:  # type: ignore[no-untyped-def]
    """Workers whose LLM fixer is the fake server (its replies queued by the test)."""
    with fake_openai() as (fake, url):
        async with running_workers(build_workers(ts_env.client, with_llm(settings, url), sessions, POOLS)):
            yield fake


def commit_all(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "fixture")


def branch_file(settings: Settings, view: RunView, path: str) -> str:
    return git(Path(settings.shared_repo), "show", f"refs/heads/{view.branch}:{path}")


def held(view: RunView) -> list[str]:
    return [e.detail for e in view.timeline if e.outcome == "needs_approval"]


# --- the license gate -------------------------------------------------------------------------

LICENSES = json.dumps({"pdfmagic": {"version": "0.9.1", "license": "AGPL-3.0-only"}}, indent=2) + "\n"
LICENSE_STEP = """\
  - name: licenses
    command: >-
      python3 -c "import json,sys; d=json.load(open('third_party/licenses.json'));
      bad=[(k,v) for k,v in d.items() if v['license'].startswith('AGPL')];
      [print(MESSAGE.format(license=v[\\"license\\"], package=k, version=v[\\"version\\"])) for k,v in bad];
      sys.exit(1 if bad else 0)"
"""
PIP_LICENSES = "'fail-on license {license} was found for package {package}:{version}'"
"""pip-licenses' own message (the issue's report): unknown to the classifier when it was filed."""
PYTEST_LICENSES = ("'FAILED tests/test_licenses.py::test_allowed - AssertionError: {package} is {license}'"
                   " + chr(10) + 'E   assert False'")
"""The same gate as a test: TEST_ASSERT, a class the ladder patches, so only the sandbox stands in the way."""
RELABEL = """```diff
--- a/third_party/licenses.json
+++ b/third_party/licenses.json
@@ -1,6 +1,6 @@
 {
   "pdfmagic": {
     "version": "0.9.1",
-    "license": "AGPL-3.0-only"
+    "license": "MIT"
   }
 }
```"""


@pytest.mark.parametrize(("message", "classes"), [(PIP_LICENSES, ("POLICY", "UNKNOWN")),
                                                (PYTEST_LICENSES, ("TEST_ASSERT",))], ids=["pip-licenses", "pytest"])
async def test_a_license_gate_is_not_passed_by_relabelling_the_package(
        ts_env: WorkflowEnvironment, llm: FakeOpenAI, settings: Settings, sessions, user_repo: Path,  # type: ignore[no-untyped-def]
        message: str, classes: tuple[str, ...]) -> None:
    commit_all(user_repo, {"third_party/licenses.json": LICENSES})
    llm.replies[:] = [RELABEL]
    step = LICENSE_STEP.replace("MESSAGE", message.replace('"', '\\"'))
    run = await start_autofix(ts_env.client, settings, user_repo, f"name: lic\nsteps:\n{step}")
    gate = await pending_gate(run.handle)
    view = await run.handle.query("status", result_type=RunView)
    # pip-licenses' message is POLICY (a person decides at once) or, as when the issue was filed,
    # UNKNOWN: retried, then the LLM's relabelling is held for a person as high-risk. Never green,
    # never relabelled.
    assert gate.signal_type in classes, (gate, view.timeline)
    assert branch_file(settings, view, "third_party/licenses.json") == LICENSES.strip()
    if gate.signal_type != "POLICY":
        assert [s for s, _ in strategies(view)].count("retry") == (2 if gate.signal_type == "UNKNOWN" else 0)
        [why] = held(view)
        assert "weaken a protected check" in why and "license data" in why
        assert "third_party/licenses.json" in why
        assert gate.action == "apply_patch" and gate.proposal is not None and gate.proposal.high_risk
        assert "+    \"license\": \"MIT\"" in gate.proposal.diff
        assert any("license data" in f for f in gate.proposal.findings)
        with transaction(sessions) as session:
            [attempt] = repository.repair_attempts(session, view.run_id)
            assert (attempt.outcome, attempt.files) == ("proposed", ["third_party/licenses.json"])
            assert "license data" in attempt.reason
            row = approvals.get_gate(session, gate.gate_id)
            assert row is not None
            shown = gate_out(row).proposal  # what the API and the portal show
            assert shown is not None and shown.high_risk and shown.diff == gate.proposal.diff
    await run.handle.execute_update("reject", DecisionInput(gate_id=gate.gate_id, by="ann", reason="drop pdfmagic"),
                                    result_type=GateView)
    view = await finish(run.handle)
    assert view.status is RunStatus.FAILED
    assert branch_file(settings, view, "third_party/licenses.json") == LICENSES.strip()


# --- a secret scanner's baseline ---------------------------------------------------------------

SECRETS_STEP = """\
  - name: secrets
    command: >-
      if grep -q 'config/settings.py' .secrets.baseline; then echo '1 passed'; else
      echo 'FAILED tests/test_secrets.py::test_no_new_secrets - AssertionError:
      config/settings.py:3 is not in .secrets.baseline';
      echo 'E   assert 1 == 0'; exit 1; fi
"""
BASELINE = '{\n  "results": {}\n}\n'
BASELINE_EDIT = """```diff
--- a/.secrets.baseline
+++ b/.secrets.baseline
@@ -1,3 +1,3 @@
 {
-  "results": {}
+  "results": {"config/settings.py": [{"type": "Secret Keyword", "line_number": 3}]}
 }
```"""


async def test_a_secret_scanner_is_not_passed_by_adding_the_finding_to_its_baseline(
        ts_env: WorkflowEnvironment, llm: FakeOpenAI, settings: Settings, sessions, user_repo: Path,  # type: ignore[no-untyped-def]
        capsys: pytest.CaptureFixture[str]) -> None:
    commit_all(user_repo, {".secrets.baseline": BASELINE, "config/settings.py": "A = 1\nB = 2\nPASSWORD = x\n"})
    llm.replies[:] = [BASELINE_EDIT]
    run = await start_autofix(ts_env.client, settings, user_repo, f"name: sec\nsteps:\n{SECRETS_STEP}")
    gate = await pending_gate(run.handle)
    view = await run.handle.query("status", result_type=RunView)
    assert gate.signal_type == "TEST_ASSERT"  # a patchable class: only the check-weakening rule stands in the way
    assert strategies(view) == [("classify", "failed"), ("flake_check", "failed_again"), ("patch", "needs_approval"),
                                ("escalate", "escalated")]
    [why] = held(view)
    assert "'.secrets.baseline': changes the file (secret-scanner baseline or allowlist)" in why
    assert gate.proposal is not None and gate.proposal.high_risk and gate.proposal.files == [".secrets.baseline"]
    assert branch_file(settings, view, ".secrets.baseline") == BASELINE.strip()
    # The person sees the diff and why it is high-risk.
    assert cmd_approvals(argparse.Namespace(tenant="default", all=False, json=False), settings) == 0
    shown = capsys.readouterr().out
    assert "proposed high-risk patch (llm) to .secrets.baseline:" in shown
    assert "    ! weakens a protected check: '.secrets.baseline': changes the file" in shown
    assert '    +  "results": {"config/settings.py"' in shown
    # Approving a high-risk patch needs a reason; rejecting ends the run without it.
    with pytest.raises(WorkflowUpdateFailedError) as no_reason:
        await run.handle.execute_update("approve", DecisionInput(gate_id=gate.gate_id, by="ann"), result_type=GateView)
    assert "applying a high-risk patch needs a reason" in str(no_reason.value.cause)
    await run.handle.execute_update("reject", DecisionInput(gate_id=gate.gate_id, by="ann", reason="rotate it"),
                                    result_type=GateView)
    view = await finish(run.handle)
    assert view.status is RunStatus.FAILED and view.error == f"gate {gate.gate_id} rejected by ann: rotate it"
    assert branch_file(settings, view, ".secrets.baseline") == BASELINE.strip()
    await keep_histories(ts_env.client, "weakening_rejected", view.run_id, 1)


# --- `# type: ignore` for a type error ----------------------------------------------------------

TYPED = "def total(xs: list[int]) -> int:\n    return str(sum(xs))\n"
MYPY_STEP = """\
  - name: types
    command: >-
      if grep -q 'return str(' app.py && ! grep -q 'type: ignore' app.py; then
      echo 'app.py:2: error: Incompatible return value type (got "str", expected "int")  [return-value]';
      echo 'Found 1 error in 1 file (checked 1 source file)'; exit 1; else echo 'Success: no issues found'; fi
"""
IGNORE = """```diff
--- a/app.py
+++ b/app.py
@@ -1,2 +1,2 @@
 def total(xs: list[int]) -> int:
-    return str(sum(xs))
+    return str(sum(xs))  # type: ignore[return-value]
```"""


async def test_a_type_error_is_not_silenced_with_type_ignore_unless_a_person_approves_it(
        ts_env: WorkflowEnvironment, llm: FakeOpenAI, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    commit_all(user_repo, {"app.py": TYPED})
    llm.replies[:] = [IGNORE]
    run = await start_autofix(ts_env.client, settings, user_repo, f"name: ty\nsteps:\n{MYPY_STEP}")
    gate = await pending_gate(run.handle)
    view = await run.handle.query("status", result_type=RunView)
    assert gate.signal_type == "TYPECHECK"
    assert strategies(view) == [("classify", "failed"), ("patch", "needs_approval"), ("escalate", "escalated")]
    [why] = held(view)
    assert "inline lint or type-check suppression" in why and "type: ignore" in why
    assert "app.py (" in why  # the files sent to the LLM, and why each, are on the timeline
    assert branch_file(settings, view, "app.py") == TYPED.strip()
    assert "File app.py:" in llm.requests[-1]["messages"][1]["content"]
    # The person may still take it (a reason is required); it is applied and the step re-runs.
    await run.handle.execute_update(
        "approve", DecisionInput(gate_id=gate.gate_id, by="ann", reason="stub until the refactor lands"),
        result_type=GateView)
    view = await finish(run.handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert "# type: ignore[return-value]" in branch_file(settings, view, "app.py")
    assert strategies(view)[-1] == ("patch", "applied")
    with transaction(sessions) as session:
        [attempt] = repository.repair_attempts(session, view.run_id)
        assert attempt.outcome == "applied" and attempt.reason.startswith("approved by ann")
        assert attempt.commit_after == view.head_commit
    assert "approved by ann" in git(Path(settings.shared_repo), "log", "-1", "--format=%s", view.head_commit)


# --- UNKNOWN after its retries ------------------------------------------------------------------

ODD_STEP = """\
  - name: odd
    command: "grep -q ready state.txt || { echo 'something odd happened'; exit 3; }"
"""
READY = "```diff\n--- a/state.txt\n+++ b/state.txt\n@@ -1 +1 @@\n-waiting\n+ready\n```"


async def test_unknown_failure_escalates_after_its_retries_and_approving_applies_the_proposed_patch(
        ts_env: WorkflowEnvironment, llm: FakeOpenAI, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    commit_all(user_repo, {"state.txt": "waiting\n"})
    llm.replies[:] = [READY]
    run = await start_autofix(ts_env.client, settings, user_repo, f"name: odd\nsteps:\n{ODD_STEP}")
    gate = await pending_gate(run.handle)
    view = await run.handle.query("status", result_type=RunView)
    assert strategies(view) == [("retry", "retried"), ("retry", "retried"), ("classify", "failed"),
                                ("patch", "needs_approval"), ("escalate", "escalated")]
    assert "UNKNOWN failures are only patched with a person's approval" in held(view)[0]
    assert (gate.signal_type, gate.action) == ("UNKNOWN", "apply_patch")
    assert gate.proposal is not None and not gate.proposal.high_risk and "+ready" in gate.proposal.diff
    assert "approving applies it and re-runs the step" in gate.reason
    # Nothing was applied while the gate waits.
    assert branch_file(settings, view, "state.txt") == "waiting"
    assert git(Path(settings.shared_repo), "rev-parse", f"refs/heads/{view.branch}") == view.base_commit
    await run.handle.execute_update("approve", DecisionInput(gate_id=gate.gate_id, by="ann"), result_type=GateView)
    view = await finish(run.handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert view.steps[0].status is StepStatus.SUCCEEDED
    assert strategies(view)[-1] == ("patch", "applied")
    assert branch_file(settings, view, "state.txt") == "ready"
    with transaction(sessions) as session:
        [attempt] = repository.repair_attempts(session, view.run_id)
        assert (attempt.outcome, attempt.files, attempt.fixer) == ("applied", ["state.txt"], "llm")
        audit = [a.event for a in repository.audit_events(session, tenant="default", run_id=view.run_id)]
        assert audit.count("autofix.patch_applied") == 1 and "approval.granted" in audit
    await keep_histories(ts_env.client, "unknown_proposal_approved", view.run_id, 1)


async def test_an_unknown_failure_proposal_is_not_applied_when_the_gate_expires_to_approve(
        ts_env: WorkflowEnvironment, llm: FakeOpenAI, settings: Settings, user_repo: Path) -> None:
    commit_all(user_repo, {"state.txt": "waiting\n"})
    llm.replies[:] = [READY]
    plan = f"name: odd\napprovals: {{timeout: 1h, on_expiry: approve}}\nsteps:\n{ODD_STEP}"
    run = await start_autofix(ts_env.client, settings, user_repo, plan)
    await pending_gate(run.handle)
    await ts_env.sleep(timedelta(hours=1, minutes=1))
    # Nobody looked: the patch stays out, the step re-runs as it was and fails to a second gate.
    second = await pending_gate(run.handle, 2)
    view = await run.handle.query("status", result_type=RunView)
    assert view.gates[0].status == "expired"
    assert ("patch", "not_applied") in strategies(view)
    assert git(Path(settings.shared_repo), "show", f"refs/heads/{view.branch}:state.txt") == "waiting"
    await run.handle.execute_update("reject", DecisionInput(gate_id=second.gate_id, by="ann", reason="look later"),
                                    result_type=GateView)
    assert (await finish(run.handle)).status is RunStatus.FAILED


# --- what the LLM is shown ----------------------------------------------------------------------

async def test_the_llm_is_sent_the_code_a_traceback_points_to_and_the_timeline_says_so(
        ts_env: WorkflowEnvironment, llm: FakeOpenAI, settings: Settings, user_repo: Path) -> None:
    commit_all(user_repo, {"calc/__init__.py": "", "calc/core.py": "def half(x):\n    return x / 0\n",
                           "main.py": "from calc.core import half\nprint(half(4))\n"})
    run = await start_autofix(ts_env.client, settings, user_repo,
                              "name: tb\nsteps:\n  - name: run\n    command: python3 \"$PWD/main.py\"\n")
    gate = await pending_gate(run.handle)  # the fake answers NO_PATCH
    view = await run.handle.query("status", result_type=RunView)
    [no_patch] = [e.detail for e in view.timeline if e.outcome == "no_patch"]
    # The step's traceback names absolute paths of its own checkout; the fixer resolves them.
    assert no_patch == "llm: 2 file(s) sent [sent: calc/core.py (traceback frame), main.py (traceback frame)]"
    prompt = llm.requests[-1]["messages"][1]["content"]
    assert "File calc/core.py:\n```\ndef half(x):" in prompt
    await run.handle.execute_update("reject", DecisionInput(gate_id=gate.gate_id, by="ann", reason="later"),
                                    result_type=GateView)
    await finish(run.handle)


def test_the_portal_gate_card_shows_the_proposed_patch_and_its_risk() -> None:
    from datetime import UTC, datetime

    from metabuilder.api.portal import templates
    from metabuilder.api.schemas import GateOut

    now = datetime.now(UTC)
    gate = GateOut(gate_id="r-gate-1", run_id="r", step="types", kind="escalation", action="apply_patch",
                   status="pending", reason="TYPECHECK in 'types' could not be repaired automatically",
                   signal_type="TYPECHECK", evidence=[], deciders=["admin"], on_expiry="reject", opened_at=now,
                   expires_at=now, decided_by=None, decided_at=None, decision_reason=None,
                   proposal={"seq": 1, "fixer": "llm", "diff": IGNORE.strip("`").removeprefix("diff\n"),
                             "base_commit": "c0", "files": ["app.py"], "high_risk": True,
                             "findings": ["weakens a protected check: 'app.py': adds '# type: ignore'"]})
    card = templates.env.get_template("_macros.html").module.gate_card(gate, True, "t", "/portal/approvals")
    assert "Proposed patch (llm)" in card and "high risk" in card
    assert "apply the proposed patch below, then re-run the failed step" in card
    assert '<span class="add">+    return str(sum(xs))  # type: ignore[return-value]</span>' in card
    assert "weakens a protected check: &#39;app.py&#39;" in card and "Reason (required)" in card


async def test_a_plans_own_protected_check_refuses_through_the_whole_run(
        ts_env: WorkflowEnvironment, llm: FakeOpenAI, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    commit_all(user_repo, {"golden/expected.txt": "4\n"})
    llm.replies[:] = ["```diff\n--- a/golden/expected.txt\n+++ b/golden/expected.txt\n@@ -1 +1 @@\n-4\n+5\n```"]
    plan = ("name: golden\nprotected_checks:\n  - name: golden outputs\n    paths: ['golden/*']\n"
            "    action: refuse\nsteps:\n  - name: test\n    command: >-\n"
            "      grep -q 5 golden/expected.txt || { echo 'FAILED test_out.py::test_sum - assert 5 == 4';"
            " echo 'E   assert 5 == 4'; exit 1; }\n")
    run = await start_autofix(ts_env.client, settings, user_repo, plan)
    gate = await pending_gate(run.handle)
    view = await run.handle.query("status", result_type=RunView)
    [rejected] = [e.detail for e in view.timeline if e.outcome == "rejected"]
    assert "weakens a protected check: 'golden/expected.txt': changes the file (golden outputs)" in rejected
    assert gate.action == "rerun" and gate.proposal is None  # refused: not even offered
    with transaction(sessions) as session:
        [attempt] = repository.repair_attempts(session, view.run_id)
        assert (attempt.outcome, attempt.files) == ("rejected", ["golden/expected.txt"])
    await run.handle.execute_update("reject", DecisionInput(gate_id=gate.gate_id, by="ann", reason="no"),
                                    result_type=GateView)
    await finish(run.handle)
