"""A run's confidence and risk signals, read from its DB projection (:mod:`domain.confidence`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from metabuilder.domain.confidence import Confidence, RepairFacts, run_confidence
from metabuilder.domain.outcomes import EventOutcome, Fixer, Strategy
from metabuilder.domain.runs import AttemptStatus, RunStatus
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import autofix
from metabuilder.store import steps as step_rows
from metabuilder.store.models import BuildRun, BuildStep

_RESOLVED = {EventOutcome.FIXED: Strategy.PATCH, EventOutcome.FLAKY: Strategy.FLAKE_CHECK,
             EventOutcome.REPLANNED: Strategy.REPLAN}


Steps = Sequence[BuildStep | Row[Any]]
"""A run's step attempts, as ORM objects or as rows of ``store.steps.STEP_VIEW``."""


def repairs_of(session: Session, run: BuildRun, steps: Steps | None = None) -> list[RepairFacts]:
    """Each step the ladder (or a retry) got past a failure, with what is known of that repair;
    ``steps``: the run's step attempts when the caller has read them already.

    A run without auto-fix events (most runs) costs one query: the rest, the flake counts of the
    tenant's runs of the plan above all, is read only for a run that has some."""
    timeline = autofix.autofix_timeline(session, run.id)
    if not timeline:
        return []
    applied = [a for a in autofix.repair_attempts(session, run.id) if a.outcome == "applied"]
    passed = {s.name for s in (step_rows.run_steps(session, run.id) if steps is None else steps)
              if s.status in (AttemptStatus.SUCCEEDED, AttemptStatus.ADOPTED)}
    flaky = {f.step: f.flaky for f in autofix.flake_rates(session, run.tenant_id, plan=run.plan.name)}
    green = run.status == RunStatus.SUCCEEDED
    out: list[RepairFacts] = []
    for step in dict.fromkeys(e.step_name for e in timeline):
        events = [e for e in timeline if e.step_name == step]
        ends = [e for e in events if e.outcome in _RESOLVED]
        if ends:
            rung = _RESOLVED[EventOutcome(ends[-1].outcome)]
        elif step in passed and any(e.strategy == Strategy.RETRY for e in events):
            rung = Strategy.RETRY
        else:
            continue
        first = next((e for e in events if e.signal_type), None)
        patches = [a for a in applied if a.step_name == step]
        was_flaky = rung is Strategy.FLAKE_CHECK
        out.append(RepairFacts(
            step=step, failure_type=FailureType(first.signal_type) if first and first.signal_type
            else FailureType.UNKNOWN, classifier_confidence=first.confidence or 0.0 if first else 0.0, rung=rung,
            fixer=Fixer(patches[-1].fixer) if patches and rung is Strategy.PATCH else None,
            diff=patches[-1].diff if patches and rung is Strategy.PATCH else "",
            flaky_before=max(0, flaky.get(step, 0) - was_flaky), checks_green=green and step in passed))
    return out


def confidence_of(session: Session, run: BuildRun, steps: Steps | None = None) -> Confidence | None:
    """The run's confidence (None when nothing was repaired); ``steps`` as for ``repairs_of``."""
    repairs = repairs_of(session, run, steps)
    if not repairs:
        return None
    return run_confidence(repairs, list((run.plan.spec or {}).get("write_scope") or []))
