"""The words of auto-fix as they cross Temporal, the DB and metric labels: what a timeline entry
did and how it went, which fixer proposed a patch, and how a repair child ended.

``StrEnum``s, so that the JSON, the DB rows and the labels keep the plain strings they always had.
"""

from __future__ import annotations

from enum import StrEnum


class Strategy(StrEnum):
    """What an auto-fix timeline entry is about: the failure's classification, or a rung of the
    ladder (:class:`domain.repair.Rung`, same values)."""

    CLASSIFY = "classify"
    RETRY = "retry"
    FLAKE_CHECK = "flake_check"
    PATCH = "patch"
    REPLAN = "replan"
    ROLLBACK = "rollback"
    ESCALATE = "escalate"


class EventOutcome(StrEnum):
    """How one timeline entry went."""

    FAILED = "failed"
    """Classified a failure (``classify``), or a rollback that failed."""
    RETRIED = "retried"
    FLAKY = "flaky"
    FAILED_AGAIN = "failed_again"
    BUDGET_EXHAUSTED = "budget_exhausted"
    NO_PATCH = "no_patch"
    REJECTED = "rejected"
    """The sandbox refused the patch (or, at a gate, it no longer applied)."""
    NEEDS_APPROVAL = "needs_approval"
    APPLIED = "applied"
    NOT_APPLIED = "not_applied"
    FIXED = "fixed"
    STUCK = "stuck"
    """The same failure after a patch: no more patches for the step."""
    REPLANNED = "replanned"
    ROLLED_BACK = "rolled_back"
    ESCALATED = "escalated"


class RepairOutcome(StrEnum):
    """How a ``RepairWorkflow`` child ended, which tells its parent what to do next."""

    FIXED = "fixed"
    """A patch made the step pass: go on."""
    FLAKY = "flaky"
    """An unchanged re-run passed: go on, the step marked flaky."""
    REPLAN = "replan"
    """Change the plan (the parent owns it) and go on from the changed step."""
    ROLLED_BACK = "rolled_back"
    """The run was undone to its last good commit: the run ends rolled back."""
    ESCALATED = "escalated"
    """A person decides: a gate opens (or, for runs without gates, the run ends escalated)."""


class Fixer(StrEnum):
    """Who proposed a patch."""

    FIX_COMMAND = "fix_command"
    ALEMBIC_MERGE_HEADS = "alembic_merge_heads"
    LLM = "llm"
