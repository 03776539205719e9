"""The ladder per class and the re-plan rules."""

from __future__ import annotations

from metabuilder.domain.plans import RepairOptions, Step, parse_plan
from metabuilder.domain.repair import (
    LADDER,
    PROPOSE_AT_GATE,
    DeltaKind,
    Fixer,
    Rung,
    apply_delta,
    fixers_for,
    propose_replan,
)
from metabuilder.domain.signals import Evidence, FailureSignal
from metabuilder.domain.taxonomy import FailureType


def signal(t: FailureType, *patterns: str, text: str = "") -> FailureSignal:
    evidence = [Evidence(1, text, patterns[0] if patterns else "")]
    return FailureSignal.of(t, 0.9, patterns=list(patterns), evidence=evidence)


def test_security_and_policy_go_straight_to_a_person() -> None:
    assert LADDER[FailureType.SECURITY] == LADDER[FailureType.POLICY] == (Rung.ESCALATE,)
    for t in FailureType:
        rungs = [r for r in Rung if r in LADDER[t]]
        assert list(LADDER[t]) == rungs, f"{t}: rungs out of order"
        assert LADDER[t][-1] is Rung.ESCALATE


def test_fixers_deterministic_first_llm_last() -> None:
    step = Step(name="lint", command="ruff check .", fix_command="ruff check --fix .")
    assert [f.fixer for f in fixers_for(signal(FailureType.LINT, "ruff"), step)] == [Fixer.FIX_COMMAND, Fixer.LLM]
    heads = signal(FailureType.SCHEMA_MIGRATION, "alembic.multiple-heads")
    assert [f.fixer for f in fixers_for(heads, Step(name="m", command="alembic upgrade head"))] == [
        Fixer.ALEMBIC_MERGE_HEADS]
    assert fixers_for(signal(FailureType.TRANSIENT, "curl"), step) == []


def test_replan_inserts_migration_then_respects_once_per_step() -> None:
    step = Step(name="seed", command="python seed.py")
    sig = signal(FailureType.SCHEMA_MIGRATION, "sql.missing-relation")
    delta = propose_replan(sig, step, set(), RepairOptions())
    assert delta is not None and delta.kind is DeltaKind.INSERT_STEP
    assert delta.new_step is not None and delta.new_step.command == "alembic upgrade head"
    assert propose_replan(sig, step, {"insert_step:seed"}, RepairOptions()) is None


def test_replan_installs_only_allowlisted_modules() -> None:
    step = Step(name="run", command="python app.py")
    sig = signal(FailureType.RUNTIME, "python.import-error", text="ModuleNotFoundError: No module named 'yaml'")
    assert propose_replan(sig, step, set(), RepairOptions()) is None
    delta = propose_replan(sig, step, set(), RepairOptions(install_allowlist=["yaml"]))
    assert delta is not None and delta.new_step is not None
    assert delta.new_step.command == "python -m pip install yaml"


def test_fallback_then_skip_optional_and_apply_delta() -> None:
    plan = parse_plan("name: p\nsteps:\n  - {name: a, command: x, fallback: y, optional: true}\n"
                      "  - {name: b, command: z}\n")
    sig = signal(FailureType.TEST_ASSERT, "pytest")
    first = propose_replan(sig, plan.steps[0], set(), plan.repair)
    assert first is not None and first.kind is DeltaKind.USE_FALLBACK
    assert apply_delta(plan, first).steps[0].command == "y"
    second = propose_replan(sig, plan.steps[0], {"use_fallback:a"}, plan.repair)
    assert second is not None and second.kind is DeltaKind.SKIP_STEP
    assert propose_replan(signal(FailureType.SECURITY, "x"), plan.steps[0], set(), plan.repair) is None


def test_plan_repair_section_is_validated() -> None:
    from metabuilder.domain.plans import PlanError

    try:
        parse_plan("name: p\nrepair:\n  install: pip install it\n  install_allowlist: ['ok', 'no such']\n"
                   "steps:\n  - {name: a, command: x}\n", source="p.yaml")
    except PlanError as err:
        text = str(err)
        assert "p.yaml:3: repair.install: must contain {package}" in text
        assert "repair.install_allowlist[1]: 'no such' is not a module name" in text
    else:
        raise AssertionError("a bad repair section was accepted")


def test_unknown_escalates_after_its_retries_and_patches_are_only_proposed() -> None:
    # Seed 003: security issues, policy violations and unknown failures after retries go to a person.
    assert LADDER[FailureType.UNKNOWN] == (Rung.RETRY, Rung.ESCALATE)
    assert {t for t in FailureType if Rung.PATCH not in LADDER[t] and fixers_for(signal(t, "x"), Step("s", "c"))} \
        == PROPOSE_AT_GATE == {FailureType.UNKNOWN}
    step = Step(name="odd", command="./odd.sh", fix_command="./repair.sh", fallback_command="./other.sh",
                optional=True)
    unknown = signal(FailureType.UNKNOWN)
    assert [f.fixer for f in fixers_for(unknown, step)] == [Fixer.FIX_COMMAND, Fixer.LLM]
    assert propose_replan(unknown, step, set(), RepairOptions()) is None
    for t in (FailureType.SECURITY, FailureType.POLICY):
        assert fixers_for(signal(t, "x"), step) == []


def test_a_gate_with_a_proposal_applies_it_and_a_high_risk_one_needs_a_reason() -> None:
    from metabuilder.domain.approvals import (
        Decision,
        DecisionInput,
        GateAction,
        GateKind,
        GateProposal,
        GateView,
        action_for,
        check_decision,
    )

    proposal = GateProposal(seq=3, fixer="llm", diff="--- a/x\n+++ b/x\n", base_commit="c0", files=["x"])
    assert action_for(GateKind.ESCALATION, "UNKNOWN", proposal) is GateAction.APPLY_PATCH
    assert action_for(GateKind.ESCALATION, "UNKNOWN") is GateAction.RERUN
    assert action_for(GateKind.ESCALATION, "POLICY", proposal) is GateAction.OVERRIDE

    def gate(high_risk: bool) -> GateView:
        p = GateProposal(**{**vars(proposal), "high_risk": high_risk})
        return GateView(gate_id="r-gate-1", run_id="r", step="s", kind="escalation", action="apply_patch",
                        reason="", opened_at="", expires_at="", proposal=p)

    assert check_decision([gate(False)], Decision.APPROVE, DecisionInput("r-gate-1", by="ann")).gate_id == "r-gate-1"
    try:
        check_decision([gate(True)], Decision.APPROVE, DecisionInput("r-gate-1", by="ann"))
    except ValueError as err:
        assert str(err) == "applying a high-risk patch needs a reason (gate r-gate-1)"
    else:
        raise AssertionError("a high-risk patch was approved without a reason")
