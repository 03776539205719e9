"""Budgets that are reserved before they are spent (seed 002 sections 2 and 3).

A budget is a set of :class:`Ledger` values, one per :class:`Dimension`: a limit, what is
reserved by work in flight, and what was spent. Work that costs something first *reserves* its
worst case against every ledger it touches (the run's and the tenant's); it runs only if every
reservation fits; afterwards it *settles*: the reservation is released and the real amount is
spent. So the spend can pass the limit only by what a settled amount exceeds its reservation,
and for an LLM call the reservation is a true upper bound (the prompt's tokens at the input
price plus ``max_tokens`` at the output price), so it never does.

Everything here is pure. ``store/budgets.py`` keeps the ledgers in ``mb_v4_run_budget`` and
applies :func:`fits` as a conditional ``UPDATE`` so that concurrent runs of one tenant cannot
both take the last dollar.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class Dimension(StrEnum):
    """What a budget limits."""

    TIME = "time_seconds"
    """Wall time of the run, from its start."""
    COST = "cost_usd"
    """Money: LLM calls at the catalogue's prices, plus CPU-seconds at a pool's price."""
    TOKENS = "tokens"
    """LLM tokens, in and out together."""
    ATTEMPTS = "attempts"
    """Step executions, retries and repair re-runs included."""


class Period(StrEnum):
    """The window a tenant's budget renews over (a run's budget is the run)."""

    DAY = "day"
    MONTH = "month"


def period_key(period: Period, at: datetime) -> str:
    """The ledger a moment falls into: ``2026-12-02`` for a day, ``2026-12`` for a month (UTC)."""
    return at.strftime("%Y-%m-%d" if period is Period.DAY else "%Y-%m")


@dataclass(frozen=True, slots=True)
class Ledger:
    """One dimension of one budget."""

    limit: float | None
    """None: unlimited (the dimension is only metered)."""
    reserved: float = 0.0
    spent: float = 0.0

    @property
    def available(self) -> float:
        if self.limit is None:
            return math.inf
        return self.limit - self.reserved - self.spent

    @property
    def used_fraction(self) -> float | None:
        """Spent and reserved over the limit (0 for a zero limit with nothing used), or None."""
        if self.limit is None:
            return None
        if self.limit <= 0:
            return 0.0 if self.reserved + self.spent <= 0 else math.inf
        return (self.reserved + self.spent) / self.limit

    def fits(self, amount: float) -> bool:
        return amount <= 0 or amount <= self.available + 1e-12

    def reserve(self, amount: float) -> Ledger:
        if amount < 0:
            raise ValueError(f"a reservation must not be negative, got {amount}")
        return replace(self, reserved=self.reserved + amount)

    def settle(self, reserved: float, actual: float) -> Ledger:
        """Release ``reserved`` and spend ``actual`` (which may differ from it either way)."""
        if reserved < 0 or actual < 0:
            raise ValueError(f"amounts must not be negative, got reserved={reserved}, actual={actual}")
        return replace(self, reserved=max(0.0, self.reserved - reserved), spent=self.spent + actual)


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Why a reservation was refused: the first ledger it did not fit."""

    scope: str
    """``run`` or ``tenant``."""
    dimension: Dimension
    needed: float
    available: float

    def describe(self) -> str:
        return (f"{self.scope} budget for {self.dimension.value}: needs {self.needed:g}, "
                f"{max(self.available, 0.0):g} left")


Ledgers = Mapping[Dimension, Ledger]


def shortfall(scopes: Mapping[str, Ledgers], amounts: Mapping[Dimension, float]) -> Shortfall | None:
    """The first ledger (in scope order, then dimension order) that ``amounts`` do not fit, or None.

    A dimension a scope has no ledger for is unlimited there.
    """
    for scope, ledgers in scopes.items():
        for dimension in Dimension:
            amount = amounts.get(dimension, 0.0)
            ledger = ledgers.get(dimension)
            if ledger is not None and not ledger.fits(amount):
                return Shortfall(scope, dimension, amount, ledger.available)
    return None


class ShortAction(StrEnum):
    """What a run does when a budget is short (written into its timeline)."""

    CHEAPER_MODEL = "cheaper_model"
    SKIP_LLM = "skip_llm"
    """A shallower ladder: the deterministic fixers, re-plan and rollback still run; no LLM call."""
    ESCALATE = "escalate"
    STOP = "budget_exceeded"


def on_short(dimension: Dimension, *, cheaper_model: bool, gates: bool) -> ShortAction:
    """The documented rule: money or tokens short for an LLM call step down a model, else skip the
    LLM; time or attempts short stop the run, at a gate when gates are on."""
    if dimension in (Dimension.COST, Dimension.TOKENS):
        return ShortAction.CHEAPER_MODEL if cheaper_model else ShortAction.SKIP_LLM
    return ShortAction.ESCALATE if gates else ShortAction.STOP
