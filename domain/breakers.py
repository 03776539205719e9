"""Circuit breakers: a dependency that keeps failing pauses the runs that need it.

A breaker is kept per tenant, failure class and dependency (:class:`BreakerKey`). The
dependency is what the failure names: the ``host:port`` of a URL or host in the evidence, or a
service the step declares with ``needs:``. Classes that name no dependency (a failed assertion,
a lint finding) have no breaker: :data:`DEFAULT_POLICIES` lists the classes that do.

The states are the usual three:

- **closed**: steps run; failures are counted in a sliding window, and ``threshold`` of them
  within ``window_seconds`` open the breaker;
- **open**: steps that need the dependency wait, spending no retries, until ``next_probe_at``;
- **half-open**: one run (the probe) is let through. Its success closes the breaker; its
  failure opens it again with the cooldown multiplied by ``backoff`` (up to a cap).

Everything here is pure: a :class:`Breaker` is an immutable value, and each function returns
the next value and what happened. The store keeps the value in ``mb_v4_circuit_breaker_state``
and applies these functions under a compare-and-set on the row's version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from metabuilder.domain.settings_json import json_value
from metabuilder.domain.taxonomy import FailureType


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Admission(StrEnum):
    """What a step that needs a dependency may do now."""

    RUN = "run"
    """The breaker is closed: run as usual."""
    PROBE = "probe"
    """The breaker is half-open and this run is its probe: run, and the outcome decides."""
    WAIT = "wait"
    """The breaker is open (or another run is probing): wait until ``Decision.until``."""


class Override(StrEnum):
    """What an operator can force (``POST /api/meta/v4/circuit-breakers``, ``metabuilder breakers``)."""

    OPEN = "open"
    """Open until someone closes it: no probes."""
    CLOSE = "close"
    """Close now, keeping the trip count and the grown cooldown."""
    RESET = "reset"
    """Forget everything: closed, no failures, the policy's first cooldown."""


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open."""

    threshold: int = 5
    """Failures within the window that open the breaker."""
    window_seconds: float = 60.0
    cooldown_seconds: float = 30.0
    """How long it stays open the first time."""
    backoff: float = 2.0
    """A failed probe multiplies the cooldown by this..."""
    max_cooldown_seconds: float = 600.0
    """...up to this."""
    probe_timeout_seconds: float = 900.0
    """A probe that reports nothing for this long (its run died) hands the probe to another run."""
    max_wait_seconds: float = 3600.0
    """A run that would wait longer than this for one breaker goes to an approval gate instead."""

    def __post_init__(self) -> None:
        problems = [f"{name} must be above 0" for name in
                    ("threshold", "window_seconds", "cooldown_seconds", "probe_timeout_seconds",
                     "max_wait_seconds") if getattr(self, name) <= 0]
        if self.backoff < 1:
            problems.append("backoff must be at least 1")
        if self.max_cooldown_seconds < self.cooldown_seconds:
            problems.append("max_cooldown_seconds must be at least cooldown_seconds")
        if problems:
            raise ValueError("breaker policy: " + "; ".join(problems))


DEFAULT_POLICIES: Mapping[FailureType, BreakerPolicy] = {
    FailureType.TRANSIENT: BreakerPolicy(threshold=5, window_seconds=60, cooldown_seconds=30),
    FailureType.RATE_LIMIT: BreakerPolicy(threshold=3, window_seconds=60, cooldown_seconds=60,
                                          max_cooldown_seconds=900),
    FailureType.INFRA: BreakerPolicy(threshold=5, window_seconds=120, cooldown_seconds=60),
}
"""The classes whose failures name a dependency. The others (TEST_ASSERT, LINT, TYPECHECK...)
say something about the change, not about a service, and have no breaker."""


@dataclass(frozen=True, slots=True)
class BreakerKey:
    tenant: str
    failure_class: FailureType
    dependency: str

    def __str__(self) -> str:
        return f"{self.tenant}/{self.failure_class}/{self.dependency}"


@dataclass(frozen=True, slots=True)
class Breaker:
    """One breaker's state. Times are seconds since the epoch."""

    key: BreakerKey
    state: BreakerState = BreakerState.CLOSED
    failures: tuple[float, ...] = ()
    """Times of the failures in the current window (closed state only)."""
    opened_at: float | None = None
    cooldown_seconds: float | None = None
    """The cooldown of the current or last opening (None: never opened, or reset)."""
    next_probe_at: float | None = None
    """Open: when a probe may go. None while forced open."""
    probe_run: str | None = None
    probe_started_at: float | None = None
    trips: int = 0
    """How many times it has opened."""
    forced: bool = False
    """Forced open by an operator: no probes until closed or reset."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, for the audit trail, the metrics and the run's timeline."""

    key: BreakerKey
    before: BreakerState
    after: BreakerState
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    admission: Admission
    until: float | None = None
    """For WAIT: when to ask again."""
    breaker: Breaker | None = None
    transition: Transition | None = None


def policy_for(failure_class: FailureType | str,
               policies: Mapping[FailureType, BreakerPolicy] = DEFAULT_POLICIES) -> BreakerPolicy | None:
    """The class's breaker policy; None for a class that has no breaker."""
    try:
        return policies.get(FailureType(failure_class))
    except ValueError:
        return None


def _moved(before: Breaker, after: Breaker, reason: str) -> Transition | None:
    return None if before.state == after.state else Transition(before.key, before.state, after.state, reason)


def _open(b: Breaker, now: float, cooldown: float, reason: str) -> tuple[Breaker, Transition | None]:
    opened = replace(b, state=BreakerState.OPEN, failures=(), opened_at=now, cooldown_seconds=cooldown,
                     next_probe_at=now + cooldown, probe_run=None, probe_started_at=None, trips=b.trips + 1)
    return opened, Transition(b.key, b.state, BreakerState.OPEN, reason)


def record_failure(b: Breaker, now: float, policy: BreakerPolicy,
                   run_id: str | None = None) -> tuple[Breaker, Transition | None]:
    """A step that needed the dependency failed with the breaker's class."""
    if b.state is BreakerState.CLOSED:
        window = tuple(t for t in b.failures if now - t < policy.window_seconds) + (now,)
        if len(window) >= policy.threshold:
            return _open(b, now, policy.cooldown_seconds,
                         f"{len(window)} failures within {policy.window_seconds:g}s")
        return replace(b, failures=window), None
    if b.state is BreakerState.HALF_OPEN and run_id is not None and run_id == b.probe_run:
        longer = min((b.cooldown_seconds or policy.cooldown_seconds) * policy.backoff, policy.max_cooldown_seconds)
        return _open(b, now, longer, f"the probe (run {run_id}) failed")
    # Open, or a run that was let through before the breaker opened: the count is already made.
    return b, None


def record_success(b: Breaker, now: float, run_id: str | None = None) -> tuple[Breaker, Transition | None]:
    """A step that needed the dependency passed."""
    if b.state is BreakerState.HALF_OPEN and run_id is not None and run_id == b.probe_run:
        closed = replace(b, state=BreakerState.CLOSED, failures=(), next_probe_at=None, probe_run=None,
                         probe_started_at=None)
        return closed, _moved(b, closed, f"the probe (run {run_id}) passed")
    return b, None


def admit(b: Breaker, now: float, run_id: str, policy: BreakerPolicy) -> Decision:
    """May a step of ``run_id`` that needs the dependency run now?

    While open, everyone waits until the next probe time; the first run to ask after it becomes
    the probe (half-open) and the others wait for its outcome, asking again every
    ``min(cooldown, 30 s)``. A probe that never reports is replaced after ``probe_timeout_seconds``.
    """
    if b.state is BreakerState.CLOSED:
        return Decision(Admission.RUN, breaker=b)
    poll = min(b.cooldown_seconds or policy.cooldown_seconds, 30.0)
    if b.state is BreakerState.OPEN:
        if b.forced or b.next_probe_at is None:
            return Decision(Admission.WAIT, until=now + poll, breaker=b)
        if now < b.next_probe_at:
            return Decision(Admission.WAIT, until=b.next_probe_at, breaker=b)
        probing = replace(b, state=BreakerState.HALF_OPEN, probe_run=run_id, probe_started_at=now)
        return Decision(Admission.PROBE, breaker=probing,
                        transition=_moved(b, probing, f"cooldown over: run {run_id} probes"))
    if b.probe_run == run_id:
        return Decision(Admission.PROBE, breaker=b)
    if b.probe_started_at is not None and now - b.probe_started_at >= policy.probe_timeout_seconds:
        taken = replace(b, probe_run=run_id, probe_started_at=now)
        return Decision(Admission.PROBE, breaker=taken)
    return Decision(Admission.WAIT, until=now + poll, breaker=b)


def override(b: Breaker, action: Override, now: float, policy: BreakerPolicy) -> tuple[Breaker, Transition | None]:
    """An operator's decision, which wins over the counts."""
    if action is Override.OPEN:
        forced = replace(b, state=BreakerState.OPEN, failures=(), opened_at=b.opened_at if b.forced else now,
                         cooldown_seconds=b.cooldown_seconds or policy.cooldown_seconds, next_probe_at=None,
                         probe_run=None, probe_started_at=None, forced=True,
                         trips=b.trips if b.state is BreakerState.OPEN else b.trips + 1)
        return forced, _moved(b, forced, "forced open by an operator")
    if action is Override.CLOSE:
        closed = replace(b, state=BreakerState.CLOSED, failures=(), next_probe_at=None, probe_run=None,
                         probe_started_at=None, forced=False)
        return closed, _moved(b, closed, "closed by an operator")
    fresh = Breaker(b.key)
    return fresh, _moved(b, fresh, "reset by an operator")


def wait_too_long(waiting_since: float, until: float, policy: BreakerPolicy) -> bool:
    """Would waiting until ``until`` keep a run waiting past the policy's maximum?"""
    return until - waiting_since > policy.max_wait_seconds


# -- what a failure names ----------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ssh": 22, "git": 9418, "postgres": 5432,
                  "postgresql": 5432, "mysql": 3306, "redis": 6379, "amqp": 5672, "mongodb": 27017}
_URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://(?:[^\s/@:]+(?::[^\s/@]*)?@)?(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(\d{1,5}))?",
                  re.IGNORECASE)
_HOST_PORT = re.compile(
    r"(?:\bconnect(?:ing|ion)?\s+to\s+(?:host\s+)?|\bresolve\s+(?:host\s*:?\s*)?|\bhost\s+|\baddress\s+)"
    r"['\"(]?(\[[0-9a-f:.]+\]|[a-z0-9][a-z0-9.-]*\.[a-z0-9.-]*[a-z0-9]|localhost)['\")]?"
    r"(?:[:\s]+(?:port\s+)?(\d{1,5}))?", re.IGNORECASE)
_BARE_HOST_PORT = re.compile(r"\b((?:\d{1,3}\.){3}\d{1,3}|localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+):(\d{2,5})\b",
                             re.IGNORECASE)
_KEYWORD_HOST = re.compile(r"\bhost=['\"]?([a-z0-9][a-z0-9.-]*)['\"]?,\s*port=(\d{1,5})", re.IGNORECASE)
"""urllib3 and requests: ``HTTPSConnectionPool(host='pypi.org', port=443)``."""
_NOT_HOSTS = re.compile(r"\.(?:py|js|ts|go|rs|java|rb|txt|log|yaml|yml|json|toml|cfg|ini|lock|sh)$", re.IGNORECASE)


def _dependency(host: str, port: str | None, scheme: str | None = None) -> str | None:
    host = host.lower().strip(".")
    if not host or _NOT_HOSTS.search(host):
        return None
    if port:
        return f"{host}:{int(port)}"
    default = _DEFAULT_PORTS.get((scheme or "").lower())
    return f"{host}:{default}" if default else host


def named_dependencies(evidence: Iterable[str]) -> list[str]:
    """``host:port`` names of what the evidence lines say failed, first seen first.

    >>> named_dependencies(["curl: (22) The requested URL returned error: 503 for http://127.0.0.1:8081/simple"])
    ['127.0.0.1:8081']
    """
    found: list[str] = []
    for line in evidence:
        candidates = [_dependency(m[2], m[3], m[1]) for m in _URL.finditer(line)]
        if not candidates:
            candidates = [_dependency(m[1], m[2]) for m in _KEYWORD_HOST.finditer(line)]
        if not candidates:
            candidates = [_dependency(m[1], m[2]) for m in _HOST_PORT.finditer(line)]
        if not candidates:
            candidates = [_dependency(m[1], m[2]) for m in _BARE_HOST_PORT.finditer(line)]
        found += [c for c in candidates if c and c not in found]
    return found


@dataclass(frozen=True, slots=True)
class StepNeeds:
    """What one failed step says it depends on."""

    declared: tuple[str, ...] = ()
    """The step's ``needs:``."""
    named: tuple[str, ...] = field(default=())
    """What its failure's evidence names."""

    def dependencies(self) -> tuple[str, ...]:
        """The failure's own names come first; a failure that names nothing is charged to every
        service the step declares."""
        return self.named or self.declared


def breaker_keys(tenant: str, failure_class: FailureType | str, needs: StepNeeds,
                 policies: Mapping[FailureType, BreakerPolicy] = DEFAULT_POLICIES) -> list[BreakerKey]:
    """The breakers a failure counts against (none for classes without a breaker)."""
    if policy_for(failure_class, policies) is None:
        return []
    return [BreakerKey(tenant, FailureType(failure_class), d) for d in needs.dependencies()]


def parse_policies(text: str, source: str = "META_V4_BREAKER_POLICIES") -> dict[FailureType, BreakerPolicy]:
    """The breaker policies, from a JSON object of class -> fields over :data:`DEFAULT_POLICIES`.

    ``{"TRANSIENT": {"threshold": 3, "cooldown_seconds": 10}, "INFRA": null}`` lowers the
    TRANSIENT threshold and cooldown and turns INFRA's breaker off. Raises ``ValueError`` naming
    the class and field that is wrong.
    """
    policies = dict(DEFAULT_POLICIES)
    if not text.strip():
        return policies
    data = json_value(text, source)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object of failure class -> policy")
    fields = set(BreakerPolicy.__dataclass_fields__)
    for name, given in data.items():
        try:
            cls = FailureType(str(name).upper())
        except ValueError:
            raise ValueError(f"{source}: {name!r} is not a failure class") from None
        if given is None:
            policies.pop(cls, None)
            continue
        if not isinstance(given, dict):
            raise ValueError(f"{source}.{cls}: expected an object of policy fields, or null for no breaker")
        unknown = sorted(set(given) - fields)
        if unknown:
            raise ValueError(f"{source}.{cls}: unknown field(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(fields))})")
        bad = [k for k, v in given.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise ValueError(f"{source}.{cls}.{bad[0]}: expected a number, got {given[bad[0]]!r}")
        try:
            policies[cls] = replace(policies.get(cls, BreakerPolicy()), **given)
        except ValueError as err:
            raise ValueError(f"{source}.{cls}: {err}") from None
    return policies
