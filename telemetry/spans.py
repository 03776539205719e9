"""Where a step's milliseconds go: named timing spans around each phase of the step path.

Off unless a benchmark turns it on (``SPANS.start()``): then each ``span(name)`` block adds its
wall time to a per-process table that ``bench/bench_steps.py`` prints. Off, a span costs one
attribute check. Not metrics: nothing here is exported, and names may change freely.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Spans:
    def __init__(self) -> None:
        self.enabled = False
        self.seconds: defaultdict[str, list[float]] = defaultdict(list)

    def start(self) -> None:
        self.seconds.clear()
        self.enabled = True

    def stop(self) -> dict[str, list[float]]:
        self.enabled = False
        taken, self.seconds = dict(self.seconds), defaultdict(list)
        return taken

    def add(self, name: str, seconds: float) -> None:
        if self.enabled:
            self.seconds[name].append(seconds)


SPANS = Spans()


@contextmanager
def span(name: str) -> Iterator[None]:
    """Time the block as ``name`` when spans are on."""
    if not SPANS.enabled:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        SPANS.add(name, time.perf_counter() - started)
