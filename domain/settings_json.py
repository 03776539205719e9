"""Small readers for settings given as JSON text: each error names the variable and the field."""

from __future__ import annotations

import json
from enum import StrEnum


def json_value(text: str, source: str) -> object:
    """The parsed JSON, or ``ValueError`` naming ``source`` and where the text stops being JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not JSON ({err.msg} at character {err.pos})") from None


def number(value: object, where: str, *, minimum: float = 0.0) -> float:
    """``value`` as a float of at least ``minimum``; booleans and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: must be at least {minimum:g}, got {value!r}")
    return float(value)


def enum_value(kind: type[StrEnum], value: object, where: str) -> StrEnum:
    """The member of ``kind`` spelt by ``value`` (any case), or ``ValueError`` listing the choices."""
    try:
        return kind(str(value).lower())
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(m.value for m in kind)}") from None
