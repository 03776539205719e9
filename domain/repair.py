"""The repair ladder: which rungs a failure class may climb, and the plan changes (re-plans).

Rungs, in order: retry -> patch -> re-plan -> rollback -> escalate. The retry rung is the step
activity's own Temporal retries (see :mod:`domain.policy`); a failure still red after them goes
to the repair workflow, which climbs the remaining rungs its class allows. Seed 003: security
issues, policy violations and unknown failures after their retries go to a person. A patch for an
UNKNOWN failure is only proposed: the person sees it at the gate, and approving applies it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from metabuilder.domain.approvals import GateProposal
from metabuilder.domain.outcomes import Fixer
from metabuilder.domain.plans import Plan, RepairOptions, Step
from metabuilder.domain.policy import AttemptBudget
from metabuilder.domain.signals import FailureSignal
from metabuilder.domain.taxonomy import FailureType


class Rung(StrEnum):
    """A rung of the ladder (each is also a :class:`domain.outcomes.Strategy` of the timeline)."""

    RETRY = "retry"
    FLAKE_CHECK = "flake_check"
    """An unchanged re-run of a failed test: a pass means flaky, not fixed."""
    PATCH = "patch"
    REPLAN = "replan"
    ROLLBACK = "rollback"
    ESCALATE = "escalate"


_CODE = (Rung.PATCH, Rung.REPLAN, Rung.ROLLBACK, Rung.ESCALATE)
_OPERATIONAL = (Rung.RETRY, Rung.REPLAN, Rung.ROLLBACK, Rung.ESCALATE)
LADDER: dict[FailureType, tuple[Rung, ...]] = {
    FailureType.TRANSIENT: _OPERATIONAL,
    FailureType.INFRA: _OPERATIONAL,
    FailureType.RATE_LIMIT: _OPERATIONAL,
    FailureType.TEST_ASSERT: (Rung.FLAKE_CHECK, *_CODE),
    FailureType.LINT: _CODE,
    FailureType.TYPECHECK: _CODE,
    FailureType.RUNTIME: (Rung.RETRY, *_CODE),
    FailureType.SCHEMA_MIGRATION: _CODE,
    FailureType.UNKNOWN: (Rung.RETRY, Rung.ESCALATE),
    FailureType.SECURITY: (Rung.ESCALATE,),
    FailureType.POLICY: (Rung.ESCALATE,),
}
"""Rungs each class may use. SECURITY and POLICY go straight to a person; UNKNOWN after its retries."""

PROPOSE_AT_GATE = frozenset({FailureType.UNKNOWN})
"""Classes whose patches are proposed to the person at the gate, never applied by the ladder: what
failed is not known, so it could be a license, secret or policy gate the classifier missed."""

LLM_CLASSES = frozenset({FailureType.LINT, FailureType.TYPECHECK, FailureType.TEST_ASSERT,
                         FailureType.RUNTIME, FailureType.UNKNOWN})
"""Classes whose failures are in the code, where an LLM-written patch may help."""


def allows(failure_type: FailureType, rung: Rung) -> bool:
    return rung in LADDER[failure_type]


ALEMBIC_MERGE_COMMAND = "alembic merge heads -m 'metabuilder: merge heads'"


@dataclass(frozen=True)
class FixerChoice:
    fixer: Fixer
    command: str | None = None


def may_patch(signal: FailureSignal, step: str, budget: AttemptBudget) -> bool:
    """Whether the next patch may be tried: one that is only proposed at a gate costs nothing, one
    the ladder applies needs an attempt left (charged when it is applied)."""
    return signal.type in PROPOSE_AT_GATE or budget.remaining(step) > 0


def same_failure(before: FailureSignal, after: FailureSignal) -> bool:
    """The same failure (same fingerprint). After a patch, this means the patches do not reach it,
    so the ladder stops patching the step."""
    return after.fingerprint == before.fingerprint


def can_roll_back(failure_type: FailureType, rollback_steps: Sequence[Step], last_good: str, head: str) -> bool:
    """The class allows a rollback and there is something to undo: completed steps with rollback
    commands, or patches committed since the last good commit."""
    return allows(failure_type, Rung.ROLLBACK) and (bool(rollback_steps) or head != last_good)


def escalation_reason(signal: FailureSignal, step: str, proposal: GateProposal | None) -> str:
    """Why the ladder hands the failure to a person, and what approving a proposed patch does."""
    if signal.requires_approval:
        reason = f"{signal.type} needs a person's decision"
    elif signal.type is FailureType.UNKNOWN:
        reason = f"{signal.type} in {step!r} after its retries needs a person's decision"
    else:
        reason = f"{signal.type} in {step!r} could not be repaired automatically"
    if proposal is not None:
        reason += (f"; a {'high-risk ' if proposal.high_risk else ''}patch ({proposal.fixer}) to "
                   f"{', '.join(proposal.files)} is proposed: approving applies it and re-runs the step")
    return reason


def fixers_for(signal: FailureSignal, step: Step) -> list[FixerChoice]:
    """Patch proposers for this failure, deterministic ones first, the LLM last."""
    if not allows(signal.type, Rung.PATCH) and signal.type not in PROPOSE_AT_GATE:
        return []
    out = []
    if step.fix_command:
        out.append(FixerChoice(Fixer.FIX_COMMAND, step.fix_command))
    if "alembic.multiple-heads" in signal.patterns:
        out.append(FixerChoice(Fixer.ALEMBIC_MERGE_HEADS, ALEMBIC_MERGE_COMMAND))
    if signal.type in LLM_CLASSES:
        out.append(FixerChoice(Fixer.LLM))
    return out


# --- re-plan ------------------------------------------------------------------------------------

class DeltaKind(StrEnum):
    INSERT_STEP = "insert_step"
    SKIP_STEP = "skip_step"
    USE_FALLBACK = "use_fallback"


@dataclass(frozen=True)
class PlanDelta:
    """One change to a running plan (seed table ``plan_deltas``)."""

    kind: DeltaKind
    step: str
    """The failing step the change is about."""
    reason: str
    triggered_by: str
    """What caused it: the failure class and the knowledge-base entry (``SCHEMA_MIGRATION:sql.missing-relation``)."""
    new_step: Step | None = None
    """For INSERT_STEP: the step run before ``step``."""
    command: str | None = None
    """For USE_FALLBACK: the command that replaces the step's."""


_MISSING_MODULE = re.compile(r"No module named '?([A-Za-z_][A-Za-z0-9_]*)")


def _missing_module(signal: FailureSignal) -> str | None:
    for ev in signal.evidence:
        if m := _MISSING_MODULE.search(ev.text):
            return m.group(1)
    return None


def propose_replan(signal: FailureSignal, step: Step, applied: set[str], options: RepairOptions) -> PlanDelta | None:
    """The plan change for this failure, or None. ``applied`` holds ``f"{kind}:{step}"`` of the
    changes made to this run already: each kind of change is made at most once per step."""

    def fresh(kind: DeltaKind) -> bool:
        return f"{kind}:{step.name}" not in applied

    if not allows(signal.type, Rung.REPLAN):
        return None
    trigger = f"{signal.type}:{signal.patterns[0]}" if signal.patterns else str(signal.type)
    if (signal.type is FailureType.SCHEMA_MIGRATION and fresh(DeltaKind.INSERT_STEP)
            and {"sql.missing-relation", "sql.missing-column", "alembic.revision-problem"} & set(signal.patterns)):
        new = Step(name=_inserted_name("migrate", step.name), command=options.migrate_command, queue=step.queue,
                   timeout_seconds=step.timeout_seconds, env=dict(step.env))
        return PlanDelta(DeltaKind.INSERT_STEP, step.name, "the schema is behind the code: migrate first",
                         trigger, new_step=new)
    module = _missing_module(signal)
    if module and fresh(DeltaKind.INSERT_STEP):
        if module in options.install_allowlist:
            new = Step(name=_inserted_name("install", step.name),
                       command=options.install_command.format(package=module), queue=step.queue,
                       timeout_seconds=step.timeout_seconds, env=dict(step.env))
            return PlanDelta(DeltaKind.INSERT_STEP, step.name, f"module {module!r} is missing: install it first",
                             trigger, new_step=new)
    if step.fallback_command and fresh(DeltaKind.USE_FALLBACK):
        return PlanDelta(DeltaKind.USE_FALLBACK, step.name, "switch to the step's fallback command", trigger,
                         command=step.fallback_command)
    if step.optional and fresh(DeltaKind.SKIP_STEP):
        return PlanDelta(DeltaKind.SKIP_STEP, step.name, "the step is optional: skip it", trigger)
    return None


def _inserted_name(prefix: str, step: str) -> str:
    return f"{prefix}-before-{step}"[:64]


def apply_delta(plan: Plan, delta: PlanDelta) -> Plan:
    """The plan after ``delta`` (a skipped step stays in the plan; the run marks it skipped)."""
    steps = list(plan.steps)
    index = next(i for i, s in enumerate(steps) if s.name == delta.step)
    if delta.kind is DeltaKind.INSERT_STEP:
        assert delta.new_step is not None
        steps.insert(index, delta.new_step)
    elif delta.kind is DeltaKind.USE_FALLBACK:
        assert delta.command is not None
        steps[index] = replace(steps[index], command=delta.command, fallback_command=None)
    return replace(plan, steps=steps)
