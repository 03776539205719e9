"""Budgets as the API and CLI see them: levels and sources, tenancy, and what remains (the seam
for model selection)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.budget_settings import BudgetSettings
from metabuilder.domain.budgets import Dimension
from metabuilder.service import budgets as service
from metabuilder.service.errors import BadRequest, NotFound
from metabuilder.store import budgets as ledgers
from metabuilder.store.db import transaction

PLATFORM = BudgetSettings(default_time_seconds=600, default_cost_usd=2.0)


def test_levels_sources_and_what_remains(seeded: sessionmaker[Session]) -> None:
    with transaction(seeded) as s:
        service.change_tenant_budget(s, PLATFORM, "acme", {"cost_usd_per_day": 1.0, "run": {"attempts": 9}},
                                     merge=False, where="body", tenant="acme", actor="ann")
        view = service.change_run_budget(s, PLATFORM, "acme-1", {"cost_usd": 0.5}, merge=False, where="body",
                                         tenant="acme", actor="ann")
    dims = view["dimensions"]
    assert {k: (d["limit"], d["source"]) for k, d in dims.items()} == {
        "time_seconds": (600, "platform"), "cost_usd": (0.5, "run"), "tokens": (None, "metered"),
        "attempts": (9, "tenant")}
    now = datetime.now(UTC)
    run, tenants = ledgers.run_scopes(seeded, PLATFORM, "acme-1", "acme", now)
    assert ledgers.reserve(seeded, "acme-1/fix-1", run_id="acme-1", tenant_id="acme", scopes=[run, *tenants],
                           amounts={Dimension.COST: 0.3}) is None
    left = service.remaining(seeded, PLATFORM, "acme-1", "acme", now)
    assert left.run[Dimension.COST] == pytest.approx(0.2) and left.tenant[Dimension.COST] == pytest.approx(0.7)
    assert left.of(Dimension.COST) == pytest.approx(0.2) and left.of(Dimension.TOKENS) == math.inf
    with transaction(seeded) as s:
        shown = service.tenant_budget(s, PLATFORM, "acme", tenant="acme", at=now)
    today = shown["periods"][now.strftime("%Y-%m-%d")]["cost_usd"]
    assert (today["limit"], today["reserved"], today["available"]) == (1.0, pytest.approx(0.3), pytest.approx(0.7))
    assert shown["open_reservations"] == 1 and shown["run_defaults"]["attempts"] == 9


def test_another_tenants_budget_is_not_found_and_bad_input_names_the_key(seeded: sessionmaker[Session]) -> None:
    with transaction(seeded) as s:
        with pytest.raises(NotFound):
            service.run_budget(s, PLATFORM, "globex-1", tenant="acme")
        with pytest.raises(NotFound):
            service.tenant_budget(s, PLATFORM, "globex", tenant="acme")
        with pytest.raises(BadRequest, match=r"body: unknown run budget key\(s\) 'dollars'"):
            service.change_run_budget(s, PLATFORM, "acme-1", {"dollars": 1}, merge=False, where="body",
                                      tenant="acme", actor="ann")


def test_the_run_panel_shows_one_budget_the_ledgers_limits_else_the_settings(seeded: sessionmaker[Session]) -> None:
    """The run page's Budget panel: a ledger reserved against a limit shows that limit; a
    dimension only metered shows the limit the settings give now, and the level it comes from (a
    ledger limit the settings no longer give names no level)."""
    from metabuilder.service.run_panel import run_panel
    from metabuilder.store.models import BuildRun

    with transaction(seeded) as s:
        service.change_run_budget(s, PLATFORM, "acme-1", {"attempts": 4}, merge=False, where="body",
                                  tenant="acme", actor="ann")
    assert ledgers.reserve(seeded, "acme-1/fix-1", run_id="acme-1", tenant_id="acme", amounts={
        Dimension.COST: 0.4, Dimension.ATTEMPTS: 1, Dimension.TOKENS: 10}, scopes=[ledgers.LedgerScope.run(
            "acme-1", "acme", {Dimension.COST: 1.0})]) is None
    with transaction(seeded) as s:
        dims = service.run_budget(s, PLATFORM, "acme-1", tenant="acme")["dimensions"]
        panel = run_panel(s, s.get(BuildRun, "acme-1"), dims)
    lines = {b.dimension: (b.limit, b.reserved, b.source, b.percent) for b in panel.budget}
    assert lines == {"cost_usd": (1.0, 0.4, None, 40.0), "attempts": (4, 1, "run", 25.0),
                     "tokens": (None, 10, None, None)}
