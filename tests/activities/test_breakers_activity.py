"""The step activity's side of circuit breakers, on a real SQLite projection."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from metabuilder.activities.breakers import Breakers, BreakerSettings
from metabuilder.domain.breakers import BreakerPolicy, BreakerState
from metabuilder.domain.signals import Evidence, FailureSignal
from metabuilder.domain.taxonomy import FailureType
from metabuilder.migrations import upgrade
from metabuilder.store import breakers as store
from metabuilder.store.db import make_engine, session_factory

URL = "http://127.0.0.1:8081/simple/"
POLICY = BreakerPolicy(threshold=3, window_seconds=60, cooldown_seconds=0.3, max_cooldown_seconds=1,
                       max_wait_seconds=5)


@pytest.fixture
def sessions(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'mb.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def signal(cls: FailureType, text: str) -> FailureSignal:
    return FailureSignal.of(cls, 0.9, evidence=[Evidence(1, text, "p")])


def test_a_storm_opens_the_breaker_holds_the_others_and_a_probe_closes_it(sessions) -> None:  # type: ignore[no-untyped-def]
    b = Breakers(sessions, BreakerSettings(policies={FailureType.TRANSIENT: POLICY}))
    down = signal(FailureType.TRANSIENT, f"HTTP Error 503: Service Unavailable for url {URL}")
    assert b.failed("acme", "run-1", "install", down, []) is None
    assert b.failed("acme", "run-2", "install", down, []) is None
    held = b.failed("acme", "run-3", "install", down, [])
    assert held is not None and held.key.dependency == "127.0.0.1:8081" and not held.escalate
    # the opening, once, for the step activity to tell the tenant's webhooks (breaker.opened)
    [(opened, by)] = b.opened()
    assert (str(opened.key), opened.before, opened.after, by) == (
        "acme/TRANSIENT/127.0.0.1:8081", BreakerState.CLOSED, BreakerState.OPEN, "run-3")
    assert b.opened() == []
    assert held.payload(attempt=1).breaker == "acme/TRANSIENT/127.0.0.1:8081"

    # run-1's step, run again, learns from the waits table what it needs, and waits too
    assert b.failed("acme", "run-1", "install", down, []) is not None
    needs = b.needs("run-1", [])
    assert needs == ["127.0.0.1:8081"]
    wait = b.admit("acme", "run-1", "install", needs)
    assert wait is not None and wait.until > time.time()
    # another tenant's breaker on the same dependency is its own
    assert b.admit("other", "run-9", "install", needs) is None

    # run-2's retry: what its earlier attempt's evidence names makes it ask the breaker
    assert b.needs("run-2", [], [down.evidence[0].text]) == ["127.0.0.1:8081"]
    assert b.admit("acme", "run-2", "install", b.needs("run-2", [], [down.evidence[0].text])) is not None
    time.sleep(0.35)
    assert b.admit("acme", "run-2", "install", b.needs("run-2", [])) is None  # the probe
    assert b.admit("acme", "run-3", "install", b.needs("run-3", [])) is not None  # waits for it
    b.passed("acme", "run-2", b.needs("run-2", []))
    [row] = store.list_breakers(sessions, "acme")
    assert row.breaker.state is BreakerState.CLOSED and sorted(r for r, _, _ in row.waiting) == ["run-1", "run-3"]
    assert b.admit("acme", "run-3", "install", b.needs("run-3", [])) is None


def test_classes_without_a_breaker_and_the_off_switch(sessions) -> None:  # type: ignore[no-untyped-def]
    b = Breakers(sessions, BreakerSettings(policies={FailureType.TRANSIENT: BreakerPolicy(threshold=1)}))
    assert b.failed("acme", "r", "test", signal(FailureType.TEST_ASSERT, f"assert 1 == 2 {URL}"), []) is None
    assert store.list_breakers(sessions) == []
    off = Breakers(sessions, BreakerSettings(enabled=False,
                                             policies={FailureType.TRANSIENT: BreakerPolicy(threshold=1)}))
    assert off.failed("acme", "r", "install", signal(FailureType.TRANSIENT, f"503 for {URL}"), ["pypi"]) is None
    assert store.list_breakers(sessions) == [] and off.needs("r", ["pypi"]) == []


def test_a_failure_naming_nothing_counts_against_the_declared_needs_and_a_long_wait_escalates(  # type: ignore[no-untyped-def]
        sessions) -> None:
    policy = BreakerPolicy(threshold=1, cooldown_seconds=10, max_wait_seconds=5)
    b = Breakers(sessions, BreakerSettings(policies={FailureType.RATE_LIMIT: policy}))
    held = b.failed("acme", "r", "deploy", signal(FailureType.RATE_LIMIT, "429 Too Many Requests"), ["registry"])
    assert held is not None and held.key.dependency == "registry"
    assert held.escalate  # the first probe is 10 s away, past the 5 s a run may wait
