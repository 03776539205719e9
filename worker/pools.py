"""A worker's pools and their slots: ``metabuilder worker --queues cpu=4,io=16,llm=2``."""

from __future__ import annotations

from metabuilder.domain.plans import Queue
from metabuilder.domain.runs import WORKFLOW_QUEUE

POOL_NAMES = (WORKFLOW_QUEUE, *(q.value for q in Queue))
MAX_SLOTS = 1000


def parse_queues(text: str | None, default_slots: int) -> dict[str, int]:
    """``"cpu=4,io=16,llm"`` -> ``{"cpu": 4, "io": 16, "llm": default_slots}``, in the given order
    (all pools when ``text`` is empty). Slots are the steps (for ``workflow``: the workflow tasks)
    the process runs at once in that pool. ``ValueError`` naming the flag and the bad part."""
    if not text or not text.strip():
        return {pool: default_slots for pool in POOL_NAMES}
    slots: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, count = (s.strip() for s in part.partition("="))
        if name not in POOL_NAMES:
            raise ValueError(f"--queues {text!r}: unknown pool {name!r} in {part!r}: "
                             f"expected some of {', '.join(POOL_NAMES)}")
        if name in slots:
            raise ValueError(f"--queues {text!r}: pool {name!r} is named twice")
        if not sep:
            slots[name] = default_slots
            continue
        try:
            value = int(count)
        except ValueError:
            raise ValueError(f"--queues {text!r}: {part!r}: slots must be a whole number "
                             f"(e.g. {name}=4)") from None
        if not 1 <= value <= MAX_SLOTS:
            raise ValueError(f"--queues {text!r}: {part!r}: slots must be from 1 to {MAX_SLOTS}")
        slots[name] = value
    if not slots:
        raise ValueError(f"--queues {text!r}: no pool named: expected some of {', '.join(POOL_NAMES)}")
    return slots


def describe(slots: dict[str, int]) -> str:
    """``{"cpu": 4, "io": 16}`` -> ``"cpu=4,io=16"`` (what a worker reports about itself)."""
    return ",".join(f"{pool}={n}" for pool, n in slots.items())
