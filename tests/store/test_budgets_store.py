"""Budget reservations on SQLite and PostgreSQL: all or nothing, idempotent, right under concurrency."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.budgets import Dimension, Ledger
from metabuilder.store import budgets
from metabuilder.store.budgets import LedgerScope
from metabuilder.store.db import transaction

COST, TOKENS = Dimension.COST, Dimension.TOKENS


def scopes(run: str, *, run_cost: float | None = None, tenant_cost: float | None = 1.0) -> list[LedgerScope]:
    return [LedgerScope.run(run, "acme", {COST: run_cost}),
            LedgerScope.tenant("acme", "2026-12-02", {COST: tenant_cost})]


def test_reserve_settle_and_what_is_left(sessions: sessionmaker[Session]) -> None:
    assert budgets.reserve(sessions, "r1/s0/a1/llm", run_id="r1", tenant_id="acme", scopes=scopes("r1"),
                           amounts={COST: 0.4, TOKENS: 2000}) is None
    assert budgets.ledgers(sessions, "tenant", "acme", "2026-12-02") == {
        COST: Ledger(1.0, reserved=pytest.approx(0.4)), TOKENS: Ledger(None, reserved=2000)}
    assert budgets.settle(sessions, "r1/s0/a1/llm", {COST: 0.1, TOKENS: 900})
    assert not budgets.settle(sessions, "r1/s0/a1/llm", {COST: 0.1, TOKENS: 900}), "settled once only"
    run = budgets.ledgers(sessions, "run", "r1")
    assert run[COST] == Ledger(None, reserved=pytest.approx(0.0), spent=pytest.approx(0.1))
    assert run[TOKENS].spent == 900


def test_a_short_ledger_reserves_nothing_anywhere(sessions: sessionmaker[Session]) -> None:
    assert budgets.reserve(sessions, "a", run_id="r1", tenant_id="acme", scopes=scopes("r1"),
                           amounts={COST: 0.8}) is None
    short = budgets.reserve(sessions, "b", run_id="r2", tenant_id="acme", scopes=scopes("r2"),
                            amounts={COST: 0.3, TOKENS: 10})
    assert short is not None and (short.scope, short.dimension) == ("tenant", COST)
    assert short.available == pytest.approx(0.2)
    assert budgets.ledgers(sessions, "run", "r2") == {}, "the refused reservation left nothing behind"
    assert budgets.ledgers(sessions, "tenant", "acme", "2026-12-02")[COST].reserved == pytest.approx(0.8)
    short = budgets.reserve(sessions, "c", run_id="r3", tenant_id="acme",
                            scopes=scopes("r3", run_cost=0.1, tenant_cost=5.0), amounts={COST: 0.3})
    assert short is not None and short.scope == "run"


def test_a_retried_reservation_is_reserved_once(sessions: sessionmaker[Session]) -> None:
    for _ in range(3):
        assert budgets.reserve(sessions, "same", run_id="r1", tenant_id="acme", scopes=scopes("r1"),
                               amounts={COST: 0.5}) is None
    assert budgets.ledgers(sessions, "tenant", "acme", "2026-12-02")[COST].reserved == pytest.approx(0.5)


def test_an_ended_run_gives_back_what_it_held(sessions: sessionmaker[Session]) -> None:
    for i in range(3):
        budgets.reserve(sessions, f"r1/{i}", run_id="r1", tenant_id="acme", scopes=scopes("r1"),
                        amounts={COST: 0.2})
    budgets.settle(sessions, "r1/0", {COST: 0.15})
    assert budgets.release_run(sessions, "r1") == 2
    tenant = budgets.ledgers(sessions, "tenant", "acme", "2026-12-02")[COST]
    assert (tenant.reserved, tenant.spent) == (pytest.approx(0.0), pytest.approx(0.15))


def test_a_changed_limit_applies_to_the_next_reservation(sessions: sessionmaker[Session]) -> None:
    budgets.reserve(sessions, "a", run_id="r1", tenant_id="acme", scopes=scopes("r1"), amounts={COST: 0.9})
    raised = scopes("r2", tenant_cost=2.0)
    assert budgets.reserve(sessions, "b", run_id="r2", tenant_id="acme", scopes=raised, amounts={COST: 0.9}) is None
    assert budgets.ledgers(sessions, "tenant", "acme", "2026-12-02")[COST].limit == 2.0


def test_concurrent_runs_of_one_tenant_never_reserve_past_the_limit(sessions: sessionmaker[Session]) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        for j in range(3):
            got = budgets.reserve(sessions, f"r{i}/{j}", run_id=f"r{i}", tenant_id="acme",
                                  scopes=scopes(f"r{i}", tenant_cost=1.0), amounts={COST: 0.1})
            with lock:
                results.append(got is None)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 10, f"{sum(results)} of {len(results)} reservations of 0.1 fit a limit of 1.0"
    tenant = budgets.ledgers(sessions, "tenant", "acme", "2026-12-02")[COST]
    assert tenant.reserved == pytest.approx(1.0)


def test_metering_settles_its_reservation_once_and_the_records_sum_to_the_spend(
        sessions: sessionmaker[Session]) -> None:
    assert budgets.reserve(sessions, "r1/fix-1", run_id="r1", tenant_id="acme", scopes=scopes("r1"),
                           amounts={COST: 0.5, TOKENS: 5000}) is None
    call = budgets.CostRecord(id="r1/fix-1/llm/1", run_id="r1", tenant_id="acme", kind="llm", model="m",
                              tokens_in=1000, tokens_out=200, cost_usd=0.2, reservation_id="r1/fix-1")
    spent = {COST: 0.2, TOKENS: 1200.0}
    assert budgets.meter(sessions, call, [(s, spent) for s in scopes("r1")])
    assert not budgets.meter(sessions, call, [(s, spent) for s in scopes("r1")]), "a retried write spends nothing"
    # A second answer for the same reservation (an activity retried after its worker died) is paid for too.
    again = dataclasses.replace(call, id="r1/fix-1/llm/2")
    assert budgets.meter(sessions, again, [(s, spent) for s in scopes("r1")])
    step = budgets.CostRecord(id="r1/0/1/step", run_id="r1", tenant_id="acme", kind="step", pool="cpu",
                              wall_seconds=1.5, cpu_seconds=0.75, cost_usd=0.01)
    assert budgets.meter(sessions, step, [(scopes("r1")[0], {COST: 0.01, Dimension.TIME: 1.5,
                                                            Dimension.ATTEMPTS: 1.0})])
    tenant = budgets.ledgers(sessions, "tenant", "acme", "2026-12-02")
    assert tenant[COST] == Ledger(1.0, reserved=pytest.approx(0.0), spent=pytest.approx(0.4))
    run = budgets.ledgers(sessions, "run", "r1")
    assert run[COST].spent == pytest.approx(0.41) and run[Dimension.ATTEMPTS].spent == 1
    with transaction(sessions) as session:
        totals = budgets.cost_totals(session, run_id="r1")
        assert budgets.open_reservations(session, run_id="r1") == 0
    assert totals == {"cost_usd": pytest.approx(0.41), "tokens_in": 2000, "tokens_out": 400,
                      "cpu_seconds": 0.75, "wall_seconds": 1.5, "llm_calls": 2, "step_attempts": 1}
    assert run[COST].spent == pytest.approx(totals["cost_usd"])
