"""Activity inputs of an older shape, scheduled by the previous version of the workflows and
retried (or first started) on this one after a deployment: each activity accepts them too.

An activity's parameter is ``Input | FirstShape``: Temporal's converter tries ``Input`` first and
hands over the plain JSON object only when it does not fit; :func:`current` reshapes that.
"""

from __future__ import annotations

from typing import Any, TypeVar

from temporalio.converter import value_to_type

from metabuilder.domain.payloads import nest_run_ref

FirstShape = dict[str, Any]
"""An input as the first shape's JSON object (``run_id``... at its top level)."""

T = TypeVar("T")


def current(cls: type[T], inp: T | FirstShape) -> T:
    """``inp`` as a ``cls``, reshaped from the first shape when it came in that."""
    if isinstance(inp, cls):
        return inp
    assert isinstance(inp, dict)
    return value_to_type(cls, nest_run_ref(inp))  # type: ignore[no-any-return]  # Any from JSON
