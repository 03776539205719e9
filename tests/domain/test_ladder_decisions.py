"""The repair ladder's decisions, as the ``RepairWorkflow`` asks them: plain tables, no Temporal."""

from __future__ import annotations

import pytest

from metabuilder.domain.approvals import GateProposal
from metabuilder.domain.outcomes import Fixer
from metabuilder.domain.plans import Step
from metabuilder.domain.policy import AttemptBudget
from metabuilder.domain.repair import can_roll_back, escalation_reason, may_patch, same_failure
from metabuilder.domain.signals import FailureSignal
from metabuilder.domain.taxonomy import FailureType

UNDO = Step(name="deploy", command="./deploy.sh", rollback_command="./undeploy.sh")


def signal(t: FailureType, fingerprint: str = "f1") -> FailureSignal:
    return FailureSignal.of(t, 0.9, fingerprint=fingerprint)


def budget(total: int = 0, step: int = 0, *, max_total: int = 6, max_step: int = 3) -> AttemptBudget:
    return AttemptBudget(max_total_attempts=max_total, max_per_step_attempts=max_step, total_attempts=total,
                         per_step_attempts={"s": step})


@pytest.mark.parametrize(("before", "after", "same"), [
    ("f1", "f1", True),
    ("f1", "f2", False),
    ("", "", True),
])
def test_same_fingerprint_after_a_patch_stops_patching(before: str, after: str, same: bool) -> None:
    assert same_failure(signal(FailureType.LINT, before), signal(FailureType.LINT, after)) is same


@pytest.mark.parametrize(("failure", "steps", "last_good", "head", "expected"), [
    (FailureType.LINT, [], "c0", "c0", False),             # nothing done, nothing to undo
    (FailureType.LINT, [], "c0", "c1", True),              # a patch was committed
    (FailureType.LINT, [UNDO], "c0", "c0", True),          # a completed step has a rollback command
    (FailureType.TRANSIENT, [UNDO], "c0", "c0", True),
    (FailureType.UNKNOWN, [UNDO], "c0", "c1", False),      # UNKNOWN goes to a person, never rolled back
    (FailureType.SECURITY, [UNDO], "c0", "c1", False),
    (FailureType.POLICY, [], "c0", "c1", False),
])
def test_something_to_roll_back(failure: FailureType, steps: list[Step], last_good: str, head: str,
                                expected: bool) -> None:
    assert can_roll_back(failure, steps, last_good, head) is expected


@pytest.mark.parametrize(("failure", "spent_total", "spent_step", "expected"), [
    (FailureType.LINT, 0, 0, True),
    (FailureType.LINT, 0, 3, False),       # the step's own budget is spent
    (FailureType.LINT, 6, 0, False),       # the run's budget is spent
    (FailureType.LINT, 5, 2, True),
    (FailureType.UNKNOWN, 6, 3, True),     # only proposed at a gate: costs nothing
])
def test_a_patch_needs_budget_unless_it_is_only_proposed(failure: FailureType, spent_total: int, spent_step: int,
                                                         expected: bool) -> None:
    assert may_patch(signal(failure), "s", budget(spent_total, spent_step)) is expected


@pytest.mark.parametrize(("spent_total", "spent_step", "max_total", "max_step", "spends", "after"), [
    (0, 0, 6, 3, True, (1, 1)),
    (0, 3, 6, 3, False, (0, 3)),
    (6, 0, 6, 3, False, (6, 0)),
    (0, 0, 0, 0, False, (0, 0)),      # a zero budget never spends
    (5, 1, 6, 3, True, (6, 2)),
])
def test_spend_charges_one_attempt_only_within_the_budget(spent_total: int, spent_step: int, max_total: int,
                                                          max_step: int, spends: bool, after: tuple[int, int]) -> None:
    state = budget(spent_total, spent_step, max_total=max_total, max_step=max_step)
    assert state.spend("s") is spends
    assert (state.total_attempts, state.per_step_attempts["s"]) == after


PATCH = GateProposal(seq=3, fixer=Fixer.LLM, diff="--- a\n+++ b\n", base_commit="c0", files=["app.py"])


@pytest.mark.parametrize(("failure", "proposal", "expected"), [
    (FailureType.LINT, None, "LINT in 'lint' could not be repaired automatically"),
    (FailureType.UNKNOWN, None, "UNKNOWN in 'lint' after its retries needs a person's decision"),
    (FailureType.SECURITY, None, "SECURITY needs a person's decision"),
    (FailureType.UNKNOWN, PATCH, "UNKNOWN in 'lint' after its retries needs a person's decision; a patch (llm) "
                                 "to app.py is proposed: approving applies it and re-runs the step"),
    (FailureType.TYPECHECK, GateProposal(seq=1, fixer=Fixer.FIX_COMMAND, diff="d", base_commit="c0",
                                         files=["a.py", "b.py"], high_risk=True),
     "TYPECHECK in 'lint' could not be repaired automatically; a high-risk patch (fix_command) to a.py, b.py is "
     "proposed: approving applies it and re-runs the step"),
])
def test_escalation_reason(failure: FailureType, proposal: GateProposal | None, expected: str) -> None:
    assert escalation_reason(signal(failure), "lint", proposal) == expected
