"""What the step activity asks and tells the tenant's circuit breakers (``domain.breakers``).

Before a step runs, :meth:`Breakers.admit` checks the breakers on what the step needs: the
services it declares (``needs:``), what its earlier failed attempts named, and those its run was
found waiting on. An open breaker answers with a :class:`Wait`; the activity then raises
``BREAKER_OPEN`` (``domain.payloads``; not retryable, so no Temporal attempt and no retry budget
is spent) and the workflow sleeps until the wait's end and runs the step again
(``workflows.execution``). After a failure, :meth:`Breakers.failed` counts it against the
breakers of the dependencies it names; after a success, :meth:`Breakers.passed` lets a probe
close its breaker.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.breakers import (
    DEFAULT_POLICIES,
    Admission,
    Breaker,
    BreakerKey,
    BreakerPolicy,
    BreakerState,
    StepNeeds,
    Transition,
    breaker_keys,
    named_dependencies,
    policy_for,
    record_failure,
    record_success,
    wait_too_long,
)
from metabuilder.domain.payloads import BreakerWait, StepResult
from metabuilder.domain.signals import FailureSignal
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import breakers as store
from metabuilder.telemetry import events

OPEN_CHECK_SECONDS = 1.0
"""How long a worker trusts its last look at whether a tenant has any breaker open."""


@dataclass(frozen=True)
class BreakerSettings:
    enabled: bool = True
    policies: Mapping[FailureType, BreakerPolicy] = field(default_factory=lambda: dict(DEFAULT_POLICIES))


@dataclass(frozen=True)
class Wait:
    """A step held by a breaker: until when, since when, and whether that is past the policy's
    maximum wait (a person decides)."""

    key: BreakerKey
    until: float
    since: float
    escalate: bool
    max_wait_seconds: float

    def payload(self, attempt: int, result: StepResult | None = None) -> BreakerWait:
        """The ``BREAKER_OPEN`` error's details for the workflow."""
        return BreakerWait(breaker=str(self.key), until=self.until, max_wait_seconds=self.max_wait_seconds,
                           attempt=attempt, result=result)


class Breakers:
    def __init__(self, sessions: sessionmaker[Session], settings: BreakerSettings | None = None) -> None:
        self.sessions = sessions
        self.settings = settings or BreakerSettings()
        self._open_seen: dict[str, tuple[float, bool]] = {}
        self._opened: list[tuple[Transition, str]] = []
        """Breakers that opened here, with the run that opened them, until ``opened()`` takes them
        (to notify the tenant's webhooks from the activity's event loop)."""
        self._opened_lock = threading.Lock()

    def _policy(self, key: BreakerKey) -> BreakerPolicy:
        return policy_for(key.failure_class, self.settings.policies) or BreakerPolicy()

    def _moved(self, transition: Transition | None, run_id: str) -> None:
        if transition is not None:
            events.breaker_transition(transition, run_id)
            if transition.after is not BreakerState.CLOSED:  # this worker knows at once, without a look
                self._open_seen[transition.key.tenant] = (time.monotonic(), True)
            if transition.after is BreakerState.OPEN and transition.before is BreakerState.CLOSED:
                with self._opened_lock:
                    self._opened.append((transition, run_id))

    def opened(self) -> list[tuple[Transition, str]]:
        """The breakers that opened here since the last call (each once), with the run that opened them."""
        with self._opened_lock:
            taken, self._opened = self._opened, []
        return taken

    def needs(self, run_id: str, declared: Sequence[str], earlier_evidence: Sequence[str] = (), *,
              tenant: str | None = None, step_name: str | None = None) -> list[str]:
        """What a step of the run depends on: its ``needs:``, what the evidence of its earlier
        failed attempts names, what its run has waited on, and (given the tenant and the step's
        name) what runs of the same plan wait on at the same step."""
        if not self.settings.enabled:
            return []
        known = [*declared, *named_dependencies(earlier_evidence)]
        if tenant is not None and not self._any_open(tenant):
            return list(dict.fromkeys(known))  # every breaker closed: nothing to wait on, no query
        learned = store.needed_by_the_same_step(self.sessions, tenant, run_id, step_name) \
            if tenant is not None and step_name is not None else []
        return list(dict.fromkeys([*known, *store.waited_on(self.sessions, run_id), *learned]))

    def known_closed(self, tenant: str) -> bool:
        """Whether this worker's last look (at most a second old) found every breaker of the
        tenant closed: then :meth:`needs` asks nothing of the database."""
        cached = self._open_seen.get(tenant)
        return cached is not None and time.monotonic() - cached[0] <= OPEN_CHECK_SECONDS and not cached[1]

    def _any_open(self, tenant: str) -> bool:
        """Whether the tenant has a breaker that is not closed, read at most once a second per
        tenant: most steps run while every breaker is closed, and then cost no query."""
        now = time.monotonic()
        cached = self._open_seen.get(tenant)
        if cached is None or now - cached[0] > OPEN_CHECK_SECONDS:
            cached = (now, store.any_open(self.sessions, tenant))
            self._open_seen[tenant] = cached
        return cached[1]

    def admit(self, tenant: str, run_id: str, step_name: str, dependencies: Sequence[str]) -> Wait | None:
        """None: the step may run (every breaker closed, or this run is the probe)."""
        if not self.settings.enabled or not dependencies:
            return None
        now = time.time()
        for b in store.open_breakers(self.sessions, tenant, dependencies):
            policy = self._policy(b.key)
            decision = store.admit_run(self.sessions, b.key, run_id, policy, now)
            self._moved(decision.transition, run_id)
            if decision.admission is Admission.PROBE:  # its success must find the breaker to close
                self._open_seen[tenant] = (time.monotonic(), True)
            if decision.admission is Admission.WAIT:
                return self._wait(b.key, run_id, step_name, decision.until or now + policy.cooldown_seconds, policy)
        return None

    def _wait(self, key: BreakerKey, run_id: str, step_name: str, until: float, policy: BreakerPolicy) -> Wait:
        since = store.set_waiting(self.sessions, key, run_id, step_name)
        return Wait(key, until, since, wait_too_long(since, until, policy), policy.max_wait_seconds)

    def failed(self, tenant: str, run_id: str, step_name: str, signal: FailureSignal,
               declared: Sequence[str]) -> Wait | None:
        """Count a failure; a Wait when a breaker of what it names is (now) open."""
        if not self.settings.enabled:
            return None
        needs = StepNeeds(tuple(declared), tuple(named_dependencies(e.text for e in signal.evidence)))
        now = time.time()
        held: Wait | None = None
        for key in breaker_keys(tenant, signal.type, needs, self.settings.policies):
            policy = self._policy(key)
            after, moved = store.change(self.sessions, key,
                                        functools.partial(record_failure, now=now, policy=policy, run_id=run_id))
            self._moved(moved, run_id)
            if held is None and after.state is not BreakerState.CLOSED:
                held = self._wait(key, run_id, step_name, _next_look(after, now, policy), policy)
        return held

    def passed(self, tenant: str, run_id: str, dependencies: Sequence[str]) -> None:
        """A step that needed these passed: a probe among them closes its breaker."""
        if not self.settings.enabled or not dependencies:
            return
        now = time.time()
        for b in store.open_breakers(self.sessions, tenant, dependencies):
            _, moved = store.change(self.sessions, b.key, functools.partial(record_success, now=now, run_id=run_id))
            self._moved(moved, run_id)
        store.clear_waiting(self.sessions, run_id)


def _next_look(b: Breaker, now: float, policy: BreakerPolicy) -> float:
    if b.state is BreakerState.OPEN and b.next_probe_at is not None:
        return b.next_probe_at
    return now + min(b.cooldown_seconds or policy.cooldown_seconds, 30.0)
