"""Budgets in the activities: the reservation before an LLM call, and the metering of what each
LLM call and each step attempt used.

- ``reserve_budget`` (a local activity of the workflow worker) reserves an LLM call's worst case
  (:func:`domain.budget_settings.llm_worst_case`) against the run's budget and its tenant's for
  the day and the month, all or nothing (``store.budgets.reserve``, a conditional ``UPDATE``).
  When one is short it reserves nothing and says what the run does instead
  (:func:`domain.budgets.on_short`).
- :meth:`Metering.llm_call` (in ``propose_llm_patch``) writes the call's record and settles its
  reservation with the real tokens and cost; :meth:`Metering.step` (in ``run_step``) writes the
  attempt's wall and CPU seconds and their cost at the pool's price. Each is idempotent by its
  record's id, and the Prometheus counters count only a new record.
- What is still reserved when a run ends is released by ``record_run`` (``store.budgets.release_run``).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from metabuilder.activities.notifications import Notifier
from metabuilder.adapters.llm import LlmSettings
from metabuilder.adapters.llm_context import MAX_TOTAL_BYTES
from metabuilder.domain.budget_settings import PROMPT_OVERHEAD_CHARS, BudgetSettings, llm_worst_case
from metabuilder.domain.budgets import Dimension, on_short
from metabuilder.domain.models_catalogue import ModelChoice, ModelSpec, Tier, choose_model
from metabuilder.domain.notifications import NotificationEvent
from metabuilder.domain.payloads import PatchProposal, ReserveInput, ReserveResult
from metabuilder.store import budgets as ledgers
from metabuilder.telemetry.metrics import BUDGET_EXCEEDED, COST_USD, LLM_TOKENS


def model_spec(platform: BudgetSettings, llm: LlmSettings) -> ModelSpec:
    """The configured model's entry in the catalogue, else one from ``META_BUILDER_LLM_PRICE_*``."""
    return platform.model(llm.model) or ModelSpec(
        name=llm.model, tier=Tier.STANDARD, price_in_per_million=llm.price_in_per_million,
        price_out_per_million=llm.price_out_per_million, context_tokens=1 << 30)


@dataclass
class Metering:
    """Writes metering records and spends them on the ledgers (used by the step and repair activities)."""

    sessions: sessionmaker[Session]
    platform: BudgetSettings = field(default_factory=BudgetSettings)

    def priced(self, proposal: PatchProposal) -> PatchProposal:
        """The proposal with its cost at the catalogue's prices (when the catalogue lists its model)."""
        spec = self.platform.model(proposal.model or "")
        if spec is None:
            return proposal
        return replace(proposal, cost_usd=round(spec.cost_usd(proposal.tokens_in, proposal.tokens_out), 9))

    def llm_call(self, *, key: str, run_id: str, tenant: str, step: str, reservation: str,
                 proposal: PatchProposal) -> bool:
        """Record one LLM call (priced by :meth:`priced`) and spend its tokens and cost; settles
        ``reservation`` if open."""
        tokens = float(proposal.tokens_in + proposal.tokens_out)
        amounts = {Dimension.COST: proposal.cost_usd, Dimension.TOKENS: tokens}
        record = ledgers.CostRecord(
            id=key, run_id=run_id, tenant_id=tenant, kind="llm", step_name=step, pool="llm", model=proposal.model,
            tokens_in=proposal.tokens_in, tokens_out=proposal.tokens_out, cost_usd=proposal.cost_usd,
            reservation_id=reservation or None)
        new = ledgers.meter_run(self.sessions, self.platform, record, datetime.now(UTC), amounts, amounts)
        if new:
            model = proposal.model or "unknown"
            LLM_TOKENS.labels(model, "in").inc(proposal.tokens_in)
            LLM_TOKENS.labels(model, "out").inc(proposal.tokens_out)
            COST_USD.labels("llm").inc(proposal.cost_usd)
        return new

    def release(self, reservation: str) -> bool:
        """Give a reservation back unspent (the call was refused or cannot be made)."""
        return bool(reservation) and ledgers.settle(self.sessions, reservation, {})

    def step(self, s: Session, *, key: str, run_id: str, tenant: str, step: str, pool: str, wall_seconds: float,
             cpu_seconds: float) -> bool:
        """Record one step attempt's wall and CPU seconds, and their cost at the pool's price, in
        the caller's transaction (the attempt's final row)."""
        cost = round(cpu_seconds * self.platform.cpu_price_per_second.get(pool, 0.0), 9)
        record = ledgers.CostRecord(id=key, run_id=run_id, tenant_id=tenant, kind="step", step_name=step, pool=pool,
                                    wall_seconds=wall_seconds, cpu_seconds=cpu_seconds, cost_usd=cost)
        on_run = {Dimension.TIME: wall_seconds, Dimension.ATTEMPTS: 1.0, **({Dimension.COST: cost} if cost else {})}
        new = ledgers.meter_run_in(s, self.platform, record, datetime.now(UTC), on_run,
                                   {Dimension.COST: cost} if cost else {})
        if new and cost > 0:
            COST_USD.labels(pool).inc(cost)
        return new


@dataclass
class BudgetActivities:
    """The reservation activity, given the DB, the platform's budget settings and the LLM endpoint."""

    sessions: sessionmaker[Session]
    platform: BudgetSettings = field(default_factory=BudgetSettings)
    llm: LlmSettings | None = None
    notifier: Notifier | None = None
    """Tells the tenant's webhooks of a call a budget could not hold (None: nobody)."""

    @activity.defn(name="reserve_budget")
    async def reserve_budget(self, inp: ReserveInput) -> ReserveResult:
        """Reserve an LLM call's worst case, or say which budget is short and what to do instead."""
        result = await asyncio.to_thread(self._reserve, inp)
        if not result.reserved and self.notifier is not None:  # once: the delivery's id is the reservation's
            await self.notifier.notify(inp.tenant, NotificationEvent.BUDGET_EXCEEDED, inp.reservation, inp.run_id, {
                "run_id": inp.run_id, "step": inp.step, "dimension": result.dimension, "shortfall": result.shortfall,
                "action": result.action, "model": result.model, "worst_case_usd": result.cost_usd})
        return result

    def _reserve(self, inp: ReserveInput) -> ReserveResult:
        if self.llm is None:
            return ReserveResult(reserved=True)
        spec, why = model_spec(self.platform, self.llm), ""
        if inp.model_tier is not None and self.platform.catalogue:
            chosen = self._choose(inp)
            if chosen.model is None:  # nothing to reserve: the fixer finds no model either, and says why
                return ReserveResult(reserved=True)
            spec, why = chosen.model, chosen.reason
        # The prompt: what the workflow counted (log tail, command) and the most the context files add.
        estimate = llm_worst_case(spec, prompt_chars=inp.prompt_chars + MAX_TOTAL_BYTES,
                                  max_output_tokens=self.llm.max_tokens)
        run, tenants = ledgers.run_scopes(self.sessions, self.platform, inp.run_id, inp.tenant, datetime.now(UTC))
        ledgers.open_ledgers(self.sessions, [run], [Dimension.TIME, Dimension.ATTEMPTS])
        held = ledgers.ledgers(self.sessions, "run", inp.run_id)
        # Time and attempts are metered after each step, not reserved: one used up stops the LLM too.
        for dimension in (Dimension.TIME, Dimension.ATTEMPTS):
            ledger = held.get(dimension)
            if ledger is not None and ledger.limit is not None and ledger.available <= 0:
                return self._short(inp, estimate.model, estimate.cost_usd, estimate.tokens,
                                   f"run budget for {dimension.value}: {ledger.spent:g} of {ledger.limit:g} used",
                                   dimension)
        short = ledgers.reserve(self.sessions, inp.reservation, run_id=inp.run_id, tenant_id=inp.tenant,
                                scopes=[run, *tenants],
                                amounts={Dimension.COST: estimate.cost_usd, Dimension.TOKENS: float(estimate.tokens)})
        if short is not None:
            return self._short(inp, estimate.model, estimate.cost_usd, estimate.tokens, short.describe(),
                               short.dimension)
        return ReserveResult(reserved=True, reservation=inp.reservation, model=estimate.model,
                             cost_usd=estimate.cost_usd, tokens=estimate.tokens, model_reason=why)

    def _choose(self, inp: ReserveInput) -> ModelChoice:
        """The SLA tier's model for the money left, priced at the same worst case the reservation holds."""
        assert self.llm is not None and inp.model_tier is not None
        left = ledgers.remaining(self.sessions, self.platform, inp.run_id, inp.tenant).of(Dimension.COST)
        choice = choose_model(list(self.platform.catalogue), Tier(inp.model_tier),
                              prompt_tokens=inp.prompt_chars + MAX_TOTAL_BYTES + PROMPT_OVERHEAD_CHARS,
                              max_output_tokens=self.llm.max_tokens, remaining_usd=left)
        if math.isinf(left):
            return replace(choice, reason=choice.reason.replace(f"${left:.4f} left", "no cost limit"))
        return choice

    @staticmethod
    def _short(inp: ReserveInput, model: str, cost: float, tokens: int, why: str,
               dimension: Dimension) -> ReserveResult:
        # A local activity that is run again (its workflow task lost) may count a refusal twice; a
        # refusal writes nothing to dedupe it by, and the counter is a rate of refusals, not a ledger.
        BUDGET_EXCEEDED.labels(dimension.value).inc()
        action = on_short(dimension, cheaper_model=False, gates=True)
        return ReserveResult(reserved=False, model=model, cost_usd=cost, tokens=tokens, shortfall=why,
                             dimension=dimension.value, action=action.value)
