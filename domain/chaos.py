"""Chaos (seed 002 section 6): which fault to inject into which step attempt, and what it looks like.

Pure: whether and what is injected is a function of (scope, run id, step, attempt number) alone,
hashed with the scope's seed, so a replay, a rerun or a question a week later gets the same
answer (:func:`decide`). The fault is made by the step's real process (:func:`fault_command`): a
tool-like 503 or 429 and a non-zero exit, a SIGKILL of the step's shell (or of its worker), a
sleep, a write to ``/dev/full``; the real classifier and policy then react to it.
"""

from __future__ import annotations

import hashlib
import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from metabuilder.domain.taxonomy import FailureType


class FaultType(StrEnum):
    """What a chaos injection does to a step attempt."""

    TRANSIENT_ERROR = "transient_error"
    """The command prints a tool's 503 and exits 22 (curl's HTTP-error status)."""
    RATE_LIMIT = "rate_limit"
    """The command prints a 429 with ``Retry-After`` and exits 1."""
    INFRA_KILL = "infra_kill"
    """The step's shell is SIGKILLed (exit 137), as an OOM killer or a hard limit would."""
    WORKER_CRASH = "worker_crash"
    """The step SIGKILLs its worker process, then itself: a machine lost mid-step. Only for
    workers that are processes of their own (``metabuilder worker``), never ``up``."""
    LATENCY = "latency"
    """The command starts late (a sleep), then runs as it is: the step should still pass."""
    TIMEOUT = "timeout"
    """The command hangs past the step's timeout (killed there, exit 124); past the cap, a client
    timeout after the cap (curl's exit 28)."""
    SCHEMA_DRIFT = "schema_drift"
    """The command fails on a missing table (``no such table``), as after a schema change."""
    DISK_FULL = "disk_full"
    """A real write fails with ENOSPC (``/dev/full``), and the command exits 1."""
    SECURITY_FINDING = "security_finding"
    """The command reports a vulnerable dependency: a person must decide, nothing is retried."""


EXPECTED_CLASS: dict[FaultType, FailureType | None] = {
    FaultType.TRANSIENT_ERROR: FailureType.TRANSIENT,
    FaultType.RATE_LIMIT: FailureType.RATE_LIMIT,
    FaultType.INFRA_KILL: FailureType.INFRA,
    FaultType.WORKER_CRASH: None,
    FaultType.LATENCY: None,
    FaultType.TIMEOUT: FailureType.TRANSIENT,
    FaultType.SCHEMA_DRIFT: FailureType.SCHEMA_MIGRATION,
    FaultType.DISK_FULL: FailureType.INFRA,
    FaultType.SECURITY_FINDING: FailureType.SECURITY,
}
"""The class the classifier should give the attempt's log. None: no log to classify (the step
passes slower, or its worker is lost and Temporal retries it on a heartbeat timeout)."""

DEFAULT_WEIGHTS: dict[FaultType, float] = {
    FaultType.TRANSIENT_ERROR: 3.0, FaultType.RATE_LIMIT: 2.0, FaultType.INFRA_KILL: 2.0,
    FaultType.WORKER_CRASH: 0.0, FaultType.LATENCY: 2.0, FaultType.TIMEOUT: 1.0,
    FaultType.SCHEMA_DRIFT: 1.0, FaultType.DISK_FULL: 1.0, FaultType.SECURITY_FINDING: 0.0,
}
"""Relative weights. A worker crash and a security finding are opt-in: one takes a whole worker
process down, the other stops the run at a gate for a person."""

BANNER = "[metabuilder] chaos: a fault was injected into this attempt (metabuilder chaos stats)"


@dataclass(frozen=True)
class FaultParams:
    """How large the faults are (process settings ``META_V4_CHAOS_*_SECONDS``)."""

    retry_after_seconds: float = 2.0
    """What a RATE_LIMIT fault's ``Retry-After`` asks for."""
    max_latency_seconds: float = 3.0
    """A LATENCY fault sleeps between a tenth of this and this."""
    timeout_cap_seconds: float = 30.0
    """A TIMEOUT fault hangs past the step's timeout when that is at most this; else this long."""


@dataclass(frozen=True)
class ChaosSettings:
    """``META_V4_CHAOS_*``: whether a worker may inject at all, and the defaults of its scopes."""

    enabled: bool = False
    forced: bool = False
    """``META_V4_CHAOS_FORCE``: allowed in the production environment."""
    probability: float = 0.1
    weights: Mapping[FaultType, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    seed: int = 0
    retention_days: float = 7.0
    """Injections older than this are deleted and never counted."""
    params: FaultParams = field(default_factory=FaultParams)


@dataclass(frozen=True)
class ChaosScope:
    """Where chaos is on: a tenant's runs, or one run (which wins over its tenant's scope)."""

    tenant: str
    run_id: str = ""
    """"" for the whole tenant."""
    probability: float = 0.1
    weights: Mapping[FaultType, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    seed: int = 0
    steps: tuple[str, ...] = ()
    """Only these step names (empty: every step)."""
    max_attempt: int | None = None
    """Only attempts numbered up to this (None: any attempt), e.g. 1 for first attempts only."""
    expires_at: float | None = None
    """Epoch seconds after which the scope is off (None: until disabled)."""

    def __post_init__(self) -> None:
        check_probability(self.probability, "probability")
        check_weights(self.weights, "weights")
        if self.max_attempt is not None and self.max_attempt < 1:
            raise ValueError(f"max_attempt={self.max_attempt}: expected at least 1")

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class Fault:
    """One injection: its type, its size and the draws that chose it (to explain it later)."""

    type: FaultType
    seconds: float = 0.0
    """The latency's or the hang's length, or the Retry-After; 0 for the others."""
    roll: float = 0.0
    """The draw compared with the probability (injected when below it)."""

    @property
    def expected_class(self) -> FailureType | None:
        return EXPECTED_CLASS[self.type]


def check_probability(value: float, where: str) -> float:
    if not (isinstance(value, int | float) and not isinstance(value, bool)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}={value!r}: expected a probability from 0 to 1")
    return float(value)


def check_weights(weights: Mapping[FaultType, float], where: str) -> None:
    for fault, weight in weights.items():
        if not isinstance(fault, FaultType):
            raise ValueError(f"{where}: {fault!r} is not a fault type")
        if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0 or math.isinf(weight):
            raise ValueError(f"{where}: {fault}={weight!r}: expected a weight of 0 or more")
    if weights and not any(w > 0 for w in weights.values()):
        raise ValueError(f"{where}: every weight is 0: nothing could be injected")


def parse_weights(text: str, where: str = "weights") -> dict[FaultType, float]:
    """``"transient_error=3,latency=1"`` -> weights; the types not named get 0. ``ValueError``
    naming ``where`` and the bad entry."""
    weights: dict[FaultType, float] = dict.fromkeys(FaultType, 0.0)
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if not entries:
        raise ValueError(f"{where}: empty; expected type=weight pairs, e.g. transient_error=3,latency=1")
    for entry in entries:
        name, sep, raw = entry.partition("=")
        try:
            fault = FaultType(name.strip().lower())
        except ValueError:
            raise ValueError(f"{where}: {name.strip()!r} is not a fault type; expected some of "
                             f"{', '.join(FaultType)}") from None
        try:
            weights[fault] = float(raw) if sep else math.nan
        except ValueError:
            weights[fault] = math.nan
        if math.isnan(weights[fault]):
            raise ValueError(f"{where}: {entry!r}: expected {fault}=<a number of 0 or more>")
    check_weights(weights, where)
    return weights


def format_weights(weights: Mapping[FaultType, float]) -> str:
    return ",".join(f"{f}={w:g}" for f, w in weights.items() if w > 0)


def choose_scope(scopes: Iterable[ChaosScope], tenant: str, run_id: str, now: float) -> ChaosScope | None:
    """The scope that applies to a step of ``run_id``: the run's own, else its tenant's; expired ones never."""
    candidates = [s for s in scopes if s.tenant == tenant and s.run_id in ("", run_id) and s.active(now)]
    return max(candidates, key=lambda s: s.run_id != "", default=None)


def _draws(seed: int, run_id: str, step: str, attempt: int) -> tuple[float, float, float]:
    digest = hashlib.sha256(f"{seed}\x1f{run_id}\x1f{step}\x1f{attempt}".encode()).digest()
    return tuple(int.from_bytes(digest[i:i + 8], "big") / 2**64 for i in (0, 8, 16))  # type: ignore[return-value]


def decide(scope: ChaosScope | None, run_id: str, step: str, attempt: int,
           params: FaultParams = FaultParams()) -> Fault | None:
    """The fault to inject into attempt ``attempt`` of ``step`` in ``run_id``, or None.

    Deterministic: the same inputs always give the same answer, whichever worker asks and when.
    The first draw is compared with the probability, the second picks the type by weight, the
    third sizes it (a latency)."""
    if scope is None or scope.probability <= 0 or (scope.steps and step not in scope.steps):
        return None
    if scope.max_attempt is not None and attempt > scope.max_attempt:
        return None
    roll, pick, size = _draws(scope.seed, run_id, step, attempt)
    if roll >= scope.probability:
        return None
    fault = _weighted(scope.weights, pick)
    if fault is None:
        return None
    seconds = 0.0
    if fault is FaultType.LATENCY:
        seconds = round(params.max_latency_seconds * (0.1 + 0.9 * size), 3)
    elif fault is FaultType.RATE_LIMIT:
        seconds = params.retry_after_seconds
    elif fault is FaultType.TIMEOUT:
        seconds = params.timeout_cap_seconds
    return Fault(fault, seconds, round(roll, 6))


def _weighted(weights: Mapping[FaultType, float], pick: float) -> FaultType | None:
    items = [(f, w) for f, w in sorted(weights.items()) if w > 0]
    total = sum(w for _, w in items)
    if not total:
        return None
    point, acc = pick * total, 0.0
    for fault, weight in items:
        acc += weight
        if point < acc:
            return fault
    return items[-1][0]


def fault_command(fault: Fault, command: str, *, step_timeout: float, worker_pid: int,
                  step: str = "step") -> str:
    """The bash text the step runs instead of ``command``: the fault, made by the real process.

    Only LATENCY runs ``command`` (after its sleep); every other fault ends the attempt before
    the command would start, as a failing service or machine would."""
    say = f"echo {shlex.quote(BANNER)} >&2"
    table = "chaos_" + "".join(c if c.isalnum() else "_" for c in step.lower())[:40]
    match fault.type:
        case FaultType.TRANSIENT_ERROR:
            return (f"{say}; echo 'curl: (22) The requested URL returned error: 503 Service Unavailable' >&2; "
                    "exit 22")
        case FaultType.RATE_LIMIT:
            return (f"{say}; printf 'HTTP/1.1 429 Too Many Requests\\nRetry-After: %s\\n' {fault.seconds:g} >&2; "
                    "echo 'error: rate limit exceeded, retry later' >&2; exit 1")
        case FaultType.INFRA_KILL:
            return f"{say}; kill -KILL $$"
        case FaultType.WORKER_CRASH:
            return f"{say}; kill -KILL {int(worker_pid)}; kill -KILL $$"
        case FaultType.LATENCY:
            return f"{say}; sleep {fault.seconds:g}\n{command}"
        case FaultType.TIMEOUT:
            if step_timeout <= fault.seconds:
                return f"{say}; sleep {step_timeout + 5:g}; exit 1"
            millis = int(fault.seconds * 1000)
            return (f"{say}; sleep {fault.seconds:g}; echo 'curl: (28) Operation timed out after {millis} "
                    "milliseconds with 0 bytes received' >&2; exit 28")
        case FaultType.SCHEMA_DRIFT:
            return f"{say}; echo 'sqlite3.OperationalError: no such table: {table}' >&2; exit 1"
        case FaultType.DISK_FULL:
            return f"{say}; dd if=/dev/zero of=/dev/full bs=4096 count=1; exit 1"
        case FaultType.SECURITY_FINDING:
            return (f"{say}; echo 'Found 1 known vulnerability in 1 package' >&2; "
                    "echo 'Name     Version ID            Fix Versions' >&2; "
                    "echo 'requests 2.5.0   PYSEC-2018-28 2.20.0' >&2; exit 1")
    raise AssertionError(fault.type)


# --- statistics ----------------------------------------------------------------------------------

class EventOutcome(StrEnum):
    """Where a recorded injection stands."""

    PENDING = "pending"
    """The step has not passed since, and its run goes on."""
    RECOVERED = "recovered"
    """A later attempt of the step (or the same one, for a latency) passed."""
    UNRECOVERED = "unrecovered"
    """The run ended without the step passing again."""


@dataclass(frozen=True)
class EventFacts:
    """What the statistics need of one recorded injection."""

    fault: FaultType
    outcome: EventOutcome
    recovery_seconds: float | None = None


@dataclass(frozen=True)
class TypeStats:
    injections: int
    recovered: int
    unrecovered: int
    pending: int
    recovery_rate: float | None
    """Recovered over settled (recovered + unrecovered); None while none has settled."""
    mean_recovery_seconds: float | None
    p95_recovery_seconds: float | None


@dataclass(frozen=True)
class ChaosStats:
    total: TypeStats
    by_type: dict[FaultType, TypeStats]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _type_stats(events: Sequence[EventFacts]) -> TypeStats:
    recovered = [e for e in events if e.outcome is EventOutcome.RECOVERED]
    unrecovered = sum(e.outcome is EventOutcome.UNRECOVERED for e in events)
    times = [e.recovery_seconds for e in recovered if e.recovery_seconds is not None]
    settled = len(recovered) + unrecovered
    return TypeStats(
        injections=len(events), recovered=len(recovered), unrecovered=unrecovered,
        pending=len(events) - settled,
        recovery_rate=round(len(recovered) / settled, 4) if settled else None,
        mean_recovery_seconds=round(sum(times) / len(times), 3) if times else None,
        p95_recovery_seconds=percentile(times, 0.95))


def summarize(events: Iterable[EventFacts]) -> ChaosStats:
    """Injections by type, recovery rate, mean and p95 recovery time; every type listed."""
    events = list(events)
    return ChaosStats(total=_type_stats(events),
                      by_type={f: _type_stats([e for e in events if e.fault is f]) for f in FaultType})
