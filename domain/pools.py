"""Worker pools, priority and fairness (seed 002, distributed execution): pure rules.

A step runs on its pool's task queue (``cpu``, ``io``, ``llm``). High and Low are not extra
queues: they are Temporal priority keys on the run's workflow, its step activities and its
repair children, and tenants share each queue through Temporal fairness keys (the tenant, with
an optional weight). The workflow gets a :class:`Scheduling` in its input and turns it into
Temporal's ``Priority`` per step; a run without one (v4 off, or started before v4) schedules as
it always did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class PriorityClass(StrEnum):
    """A plan's, a step's or a run's ``priority``."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PRIORITY_KEYS: dict[PriorityClass, int] = {PriorityClass.HIGH: 1, PriorityClass.NORMAL: 3, PriorityClass.LOW: 5}
"""Temporal priority keys (1 is served first, 5 last; 3 is Temporal's own default)."""

MAX_FAIRNESS_KEY_CHARS = 64
"""Temporal takes fairness keys of at most 64 bytes; a tenant id is at most 64 characters of ASCII."""
DEFAULT_FAIRNESS_WEIGHT = 1.0
MIN_FAIRNESS_WEIGHT, MAX_FAIRNESS_WEIGHT = 0.001, 1000.0
"""The range Temporal's matching service clamps fairness weights to."""


@dataclass(frozen=True)
class Scheduling:
    """How a run's work is ordered in the shared task queues (carried in its input)."""

    priority: PriorityClass = PriorityClass.NORMAL
    """The run's priority: the API's or CLI's override, else the plan's, else normal."""
    override: bool = False
    """The priority was given for the run (``--priority``): it beats the steps' own."""
    fairness_key: str = ""
    """The tenant: Temporal serves fairness keys in proportion to their weights."""
    fairness_weight: float = DEFAULT_FAIRNESS_WEIGHT

    def for_step(self, step_priority: PriorityClass | None) -> PriorityClass:
        """A step's priority: the run's override, else the step's own, else the run's."""
        if self.override or step_priority is None:
            return self.priority
        return step_priority

    def key(self, step_priority: PriorityClass | None = None) -> int:
        return PRIORITY_KEYS[self.for_step(step_priority)]


def run_scheduling(*, tenant: str, plan_priority: PriorityClass | None, override: PriorityClass | None,
                   weights: Mapping[str, float]) -> Scheduling:
    """A run's :class:`Scheduling`: ``override`` (API/CLI) over the plan's priority; the tenant's weight."""
    return Scheduling(priority=override or plan_priority or PriorityClass.NORMAL, override=override is not None,
                      fairness_key=tenant[:MAX_FAIRNESS_KEY_CHARS],
                      fairness_weight=weights.get(tenant, DEFAULT_FAIRNESS_WEIGHT))


def parse_priority(value: object, where: str) -> PriorityClass:
    """``high``, ``normal`` or ``low``; ``ValueError`` naming ``where``."""
    try:
        return PriorityClass(str(value).strip().lower())
    except ValueError:
        raise ValueError(f"{where}={value!r}: expected one of high, normal, low") from None


def parse_weights(data: object, where: str) -> dict[str, float]:
    """Tenant -> fairness weight (``{"acme": 2, "free-tier": 0.5}``); ``ValueError`` naming ``where``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a JSON object of tenant -> weight, got {type(data).__name__}")
    out: dict[str, float] = {}
    for tenant, weight in data.items():
        if not isinstance(tenant, str) or not tenant or len(tenant) > MAX_FAIRNESS_KEY_CHARS:
            raise ValueError(f"{where}: {tenant!r} is not a tenant id (1 to {MAX_FAIRNESS_KEY_CHARS} characters)")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or not MIN_FAIRNESS_WEIGHT <= weight <= MAX_FAIRNESS_WEIGHT:
            raise ValueError(f"{where}.{tenant}={weight!r}: expected a weight from {MIN_FAIRNESS_WEIGHT:g} "
                             f"to {MAX_FAIRNESS_WEIGHT:g}")
        out[tenant] = float(weight)
    return out


def share_slots(requested: Mapping[str, int], cap: int) -> dict[str, int]:
    """The activity slots of each step pool of one worker process, given what each pool asks for
    and the process's cap (``META_V4_MAX_WORKERS``): as asked when the sum fits, else the cap
    shared in proportion to what was asked (largest remainders first), each pool at least one.
    ``ValueError`` when the cap is smaller than the number of pools."""
    if not requested:
        return {}
    if cap < len(requested):
        raise ValueError(f"a worker process polling {len(requested)} step pools ({', '.join(requested)}) needs "
                         f"at least {len(requested)} slots; the cap is {cap}")
    total = sum(requested.values())
    if total <= cap:
        return dict(requested)
    exact = {pool: cap * asked / total for pool, asked in requested.items()}
    out = {pool: max(1, int(share)) for pool, share in exact.items()}
    while sum(out.values()) > cap:  # the minimum of one each took more than the cap: the biggest give back
        out[max(out, key=lambda p: (out[p], p))] -= 1
    left = cap - sum(out.values())
    for pool in sorted(exact, key=lambda p: (out[p] - exact[p], p))[:left]:
        out[pool] += 1
    return out
