"""Temporal ``Priority`` of a run's workflow, steps and repair children (``domain.pools``)."""

from __future__ import annotations

from temporalio.common import Priority

from metabuilder.domain.plans import Step
from metabuilder.domain.pools import Scheduling


def temporal_priority(scheduling: Scheduling | None, step: Step | None = None) -> Priority:
    """The run's (or, with ``step``, that step's) priority and fairness keys; Temporal's default
    (inherit, or key 3 and no fairness key) for a run without v4 scheduling."""
    if scheduling is None:
        return Priority.default
    return Priority(priority_key=scheduling.key(step.priority if step else None),
                    fairness_key=scheduling.fairness_key or None, fairness_weight=scheduling.fairness_weight)
