"""Approval gates: where a run stops for a person's decision, and the rules of deciding.

A gate opens when a step marked ``requires_approval`` is about to run, and when the repair
ladder escalates a failure (SECURITY, POLICY, UNKNOWN after its retries, or anything it could
not repair or roll back). The run's workflow waits durably until someone approves or rejects
the gate, or until it expires and its default action is taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from metabuilder.domain.outcomes import Fixer
from metabuilder.domain.taxonomy import FailureType


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class GateStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    """Nobody decided in time; the gate's ``on_expiry`` decision was taken."""
    CANCELLED = "cancelled"
    """The run was cancelled while it waited."""


class GateKind(StrEnum):
    STEP_APPROVAL = "step_approval"
    """A step marked ``requires_approval``, before it runs."""
    ESCALATION = "escalation"
    """A failure the repair ladder handed to a person."""


class GateAction(StrEnum):
    """What approving a gate does."""

    RUN_STEP = "run_step"
    """Run the step that asked for approval."""
    RERUN = "rerun"
    """Run the failed step again from the run's head commit."""
    OVERRIDE = "override"
    """Accept the failure (a security or policy finding) and go on with the next step."""
    APPLY_PATCH = "apply_patch"
    """Apply the patch proposed at the gate, then run the failed step again on it."""


DECIDER_ROLES = ("admin", "owner")
"""Roles that may approve or reject a gate through the API (seed 001)."""

DEFAULT_GATE_TIMEOUT_SECONDS = 24 * 3600.0
MAX_GATE_TIMEOUT_SECONDS = 30 * 24 * 3600.0
ACCEPTING_CLASSES = frozenset({FailureType.SECURITY, FailureType.POLICY})
"""Failure classes whose gate, if approved, accepts the finding rather than re-running the step."""


@dataclass(frozen=True)
class ApprovalOptions:
    """A plan's ``approvals`` section: how long a gate waits and what happens then."""

    timeout_seconds: float = DEFAULT_GATE_TIMEOUT_SECONDS
    on_expiry: Decision = Decision.REJECT


@dataclass
class GateProposal:
    """A patch shown at a gate: the ladder did not apply it; approving the gate does."""

    seq: int
    """Its record in ``repair_attempts`` (the run's ``seq``)."""
    fixer: Fixer
    diff: str
    base_commit: str
    """The commit it was made on and applies to."""
    files: list[str] = field(default_factory=list)
    high_risk: bool = False
    """It would weaken a protected check: approving it needs a reason."""
    findings: list[str] = field(default_factory=list)
    """Why it is high-risk (each protected check it weakens, and how)."""


@dataclass
class GateView:
    """A gate as the workflow keeps it, the DB records it and the API shows it."""

    gate_id: str
    run_id: str
    step: str
    kind: GateKind
    action: GateAction
    """What approving does."""
    reason: str
    """Why the run stopped here (what failed, or that the step asks for approval)."""
    opened_at: datetime
    expires_at: datetime
    on_expiry: Decision = Decision.REJECT
    signal_type: FailureType | None = None
    evidence: list[str] = field(default_factory=list)
    deciders: list[str] = field(default_factory=lambda: list(DECIDER_ROLES))
    status: GateStatus = GateStatus.PENDING
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    proposal: GateProposal | None = None

    @property
    def pending(self) -> bool:
        return self.status == GateStatus.PENDING

    @property
    def approved(self) -> bool:
        """Approved by a person, or expired with ``approve`` as its default action."""
        return self.status == GateStatus.APPROVED or (
            self.status == GateStatus.EXPIRED and self.on_expiry == Decision.APPROVE)

    def summary(self) -> str:
        """One line saying how the gate was decided (for a failed run's error)."""
        if self.status == GateStatus.EXPIRED:
            return f"gate {self.gate_id} expired: {self.decision_reason}"
        reason = f": {self.decision_reason}" if self.decision_reason else ""
        return f"gate {self.gate_id} {self.status} by {self.decided_by}{reason}"


@dataclass(frozen=True)
class DecisionInput:
    """The body of an ``approve`` or ``reject`` Update or Signal."""

    gate_id: str
    by: str = ""
    """Who decided (the API fills in the token's user; the plain CLI may name anyone)."""
    reason: str = ""


def gate_id(run_id: str, number: int) -> str:
    """Id of a run's ``number``-th gate (1-based): unique across runs, readable in a URL."""
    return f"{run_id}-gate-{number}"


def action_for(kind: GateKind, signal_type: FailureType | None, proposal: GateProposal | None = None) -> GateAction:
    if kind is GateKind.STEP_APPROVAL:
        return GateAction.RUN_STEP
    if signal_type in ACCEPTING_CLASSES:
        return GateAction.OVERRIDE
    return GateAction.APPLY_PATCH if proposal is not None else GateAction.RERUN


def reason_required(decision: Decision, gate: GateView) -> bool:
    """A rejection always says why; so does accepting a security or policy finding, and applying
    a high-risk patch."""
    return (decision is Decision.REJECT or gate.action == GateAction.OVERRIDE
            or (gate.proposal is not None and gate.proposal.high_risk))


def check_decision(gates: list[GateView], decision: Decision, inp: DecisionInput) -> GateView:
    """The pending gate that ``inp`` decides; ``ValueError`` saying what is wrong otherwise."""
    gate = next((g for g in gates if g.gate_id == inp.gate_id), None)
    if gate is None:
        known = ", ".join(g.gate_id for g in gates if g.pending) or "none"
        raise ValueError(f"unknown gate {inp.gate_id!r} (pending gates of this run: {known})")
    if not gate.pending:
        at = gate.decided_at.isoformat() if gate.decided_at else None
        raise ValueError(f"gate {gate.gate_id} was already decided: {gate.status} by {gate.decided_by} at {at}")
    if reason_required(decision, gate) and not inp.reason.strip():
        what = ("a rejection" if decision is Decision.REJECT else "accepting a security or policy finding"
                if gate.action == GateAction.OVERRIDE else "applying a high-risk patch")
        raise ValueError(f"{what} needs a reason (gate {gate.gate_id})")
    if len(inp.reason) > 2000:
        raise ValueError(f"the reason is {len(inp.reason)} characters long; at most 2000 are kept")
    return gate


def decide(gate: GateView, decision: Decision, inp: DecisionInput, at: datetime) -> None:
    """Record a decision on a gate that :func:`check_decision` accepted."""
    gate.status = GateStatus.APPROVED if decision is Decision.APPROVE else GateStatus.REJECTED
    gate.decided_by = inp.by.strip() or "unknown"
    gate.decided_at = at
    gate.decision_reason = inp.reason.strip() or None


def expire(gate: GateView, at: datetime) -> None:
    gate.status = GateStatus.EXPIRED
    gate.decided_by = "expiry"
    gate.decided_at = at
    gate.decision_reason = f"nobody decided before {gate.expires_at.isoformat()}; default action: {gate.on_expiry}"


def audit_event(gate: GateView) -> str:
    """The audit event of a gate's outcome: ``approval.granted``, ``.rejected`` or ``.expired``."""
    if gate.status == GateStatus.EXPIRED:
        return "approval.expired"
    if gate.status == GateStatus.CANCELLED:
        return "approval.cancelled"
    return "approval.granted" if gate.status == GateStatus.APPROVED else "approval.rejected"


@dataclass(frozen=True)
class ApproverQuery:
    """Who a decision names, asked of the DB when the decision arrives (the ``approver_role``
    activity): the role they hold in the run's tenant *now*, not when the gate opened."""

    tenant: str
    user: str


def approver_refusal(gate: GateView, decision: Decision, inp: DecisionInput, tenant: str,
                     role: str | None) -> str | None:
    """Why the approver that ``inp`` names may not decide ``gate`` (None: they may). ``role`` is
    their current role in ``tenant`` (None: no such user there)."""
    who = inp.by.strip()
    needs = " or ".join(gate.deciders)
    if not who:
        return f"{decision.value} of gate {gate.gate_id} refused: the decision names no approver ('by')"
    if role is None:
        return (f"{decision.value} of gate {gate.gate_id} by {who!r} refused: no user {who!r} in tenant "
                f"{tenant!r} (deciding needs the {needs} role)")
    if role not in gate.deciders:
        return (f"{decision.value} of gate {gate.gate_id} by {who!r} refused: {who!r} is {role} in tenant "
                f"{tenant!r}; deciding needs the {needs} role")
    return None
