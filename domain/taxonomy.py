"""The failure taxonomy: the 11 classes a failed step is sorted into, and what each class allows."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureType(StrEnum):
    """What kind of failure a step's log shows (seed 001's 11 classes)."""

    TRANSIENT = "TRANSIENT"
    """Network blips, 5xx from a service, timeouts: likely to pass on a re-run."""
    INFRA = "INFRA"
    """The machine or platform: disk full, OOM-killed, missing binary, runner or agent lost."""
    TEST_ASSERT = "TEST_ASSERT"
    """A test ran and its assertion failed."""
    LINT = "LINT"
    """Style, formatting and static-analysis findings."""
    TYPECHECK = "TYPECHECK"
    """Type checker or compiler errors (types, undefined names, syntax)."""
    SECURITY = "SECURITY"
    """Vulnerable dependencies, insecure code findings, secrets in the tree."""
    POLICY = "POLICY"
    """Rules of the organisation: protected branches, 403s, licences, API-compatibility gates."""
    RUNTIME = "RUNTIME"
    """The program crashed: uncaught exception, panic, signal."""
    SCHEMA_MIGRATION = "SCHEMA_MIGRATION"
    """Database migrations and schema: missing tables, diverged heads, failed changesets."""
    RATE_LIMIT = "RATE_LIMIT"
    """429s, quotas and throttling."""
    UNKNOWN = "UNKNOWN"
    """Nothing in the log decides it (or not confidently enough)."""


@dataclass(frozen=True, slots=True)
class ClassTraits:
    """What a failure class allows the self-healing ladder to do."""

    can_retry: bool
    """A re-run of the same step can plausibly pass."""
    requires_replan: bool
    """The plan itself needs a change (e.g. a migration step inserted before this one)."""
    requires_approval: bool
    """A person must decide before anything else happens."""


TRAITS: dict[FailureType, ClassTraits] = {
    FailureType.TRANSIENT: ClassTraits(can_retry=True, requires_replan=False, requires_approval=False),
    FailureType.INFRA: ClassTraits(can_retry=True, requires_replan=False, requires_approval=False),
    FailureType.TEST_ASSERT: ClassTraits(can_retry=False, requires_replan=False, requires_approval=False),
    FailureType.LINT: ClassTraits(can_retry=False, requires_replan=False, requires_approval=False),
    FailureType.TYPECHECK: ClassTraits(can_retry=False, requires_replan=False, requires_approval=False),
    FailureType.SECURITY: ClassTraits(can_retry=False, requires_replan=False, requires_approval=True),
    FailureType.POLICY: ClassTraits(can_retry=False, requires_replan=False, requires_approval=True),
    FailureType.RUNTIME: ClassTraits(can_retry=True, requires_replan=False, requires_approval=False),
    FailureType.SCHEMA_MIGRATION: ClassTraits(can_retry=False, requires_replan=True, requires_approval=False),
    FailureType.RATE_LIMIT: ClassTraits(can_retry=True, requires_replan=False, requires_approval=False),
    FailureType.UNKNOWN: ClassTraits(can_retry=True, requires_replan=False, requires_approval=False),
}
