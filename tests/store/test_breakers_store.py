"""Breaker state on SQLite and PostgreSQL: durable, and right under concurrent writers."""

from __future__ import annotations

import functools
import threading

from metabuilder.domain.breakers import (
    Admission,
    BreakerKey,
    BreakerPolicy,
    BreakerState,
    Override,
    override,
    record_failure,
    record_success,
)
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import breakers

KEY = BreakerKey("acme", FailureType.TRANSIENT, "127.0.0.1:8081")
POLICY = BreakerPolicy(threshold=3, window_seconds=60, cooldown_seconds=10)


def fail(sessions, now: float, run: str = "r", key: BreakerKey = KEY):  # type: ignore[no-untyped-def]
    return breakers.change(sessions, key, functools.partial(record_failure, now=now, policy=POLICY, run_id=run))


def test_a_breaker_opens_probes_and_closes_through_the_store(sessions) -> None:  # type: ignore[no-untyped-def]
    assert breakers.get(sessions, KEY).state is BreakerState.CLOSED
    fail(sessions, 100)
    fail(sessions, 101)
    b, moved = fail(sessions, 102)
    assert b.state is BreakerState.OPEN and moved is not None
    assert breakers.get(sessions, KEY) == b
    assert [x.key for x in breakers.open_breakers(sessions, "acme", ["127.0.0.1:8081", "other:1"])] == [KEY]
    assert breakers.open_breakers(sessions, "other-tenant", ["127.0.0.1:8081"]) == []

    assert breakers.admit_run(sessions, KEY, "a", POLICY, now=105).admission is Admission.WAIT
    assert breakers.admit_run(sessions, KEY, "a", POLICY, now=112).admission is Admission.PROBE
    assert breakers.admit_run(sessions, KEY, "b", POLICY, now=113).admission is Admission.WAIT
    b, moved = breakers.change(sessions, KEY, functools.partial(record_success, now=114, run_id="a"))
    assert b.state is BreakerState.CLOSED and moved is not None
    [row] = breakers.list_breakers(sessions, "acme")
    assert (row.breaker.state, row.breaker.trips) == (BreakerState.CLOSED, 1)
    assert row.last_reason == "the probe (run a) passed"


def test_waiting_runs_are_listed_with_their_breaker(sessions) -> None:  # type: ignore[no-untyped-def]
    for t in (1, 2, 3):
        fail(sessions, t)
    breakers.set_waiting(sessions, KEY, "run-1", "install")
    breakers.set_waiting(sessions, KEY, "run-1", "install")
    breakers.set_waiting(sessions, KEY, "run-2", "install")
    [row] = breakers.list_breakers(sessions)
    assert [(r, s) for r, s, _ in row.waiting] == [("run-1", "install"), ("run-2", "install")]
    breakers.clear_waiting(sessions, "run-1")
    assert [r for r, _, _ in breakers.list_breakers(sessions)[0].waiting] == ["run-2"]


def test_an_override_is_kept(sessions) -> None:  # type: ignore[no-untyped-def]
    b, _ = breakers.change(sessions, KEY, functools.partial(override, action=Override.OPEN, now=5, policy=POLICY))
    assert b.forced and breakers.get(sessions, KEY).forced
    assert breakers.admit_run(sessions, KEY, "a", POLICY, now=10_000).admission is Admission.WAIT


def test_concurrent_failures_lose_no_count_and_one_run_wins_the_probe(sessions) -> None:  # type: ignore[no-untyped-def]
    many = BreakerPolicy(threshold=1000, window_seconds=1e9, cooldown_seconds=10)
    start = threading.Barrier(8)

    def writer(i: int) -> None:
        start.wait()
        for j in range(5):
            breakers.change(sessions, KEY, functools.partial(record_failure, now=float(i * 10 + j), policy=many))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(breakers.get(sessions, KEY).failures) == 40

    other = BreakerKey("acme", FailureType.RATE_LIMIT, "api.example.com:443")
    for t in (1, 2, 3):
        fail(sessions, t, key=other)
    results: list[Admission] = []
    start = threading.Barrier(8)

    def asker(i: int) -> None:
        start.wait()
        results.append(breakers.admit_run(sessions, other, f"run-{i}", POLICY, now=50).admission)

    threads = [threading.Thread(target=asker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted([Admission.PROBE] + [Admission.WAIT] * 7)
