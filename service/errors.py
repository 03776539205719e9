"""The errors the service layer raises, and the one table of what each means to a caller: the API
says it as an HTTP status (``api/errors.py``), the CLI as an exit status (``worker/cli/exits.py``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from enum import StrEnum


class NotFound(LookupError):
    """No such run, gate, plan or tenant (or it belongs to another tenant: ids do not leak)."""


class Conflict(ValueError):
    """The request is well-formed but the thing is not in a state that allows it."""


class Unavailable(RuntimeError):
    """A service the request needs (Temporal) cannot be reached."""


class BadRequest(ValueError):
    """The request names something unusable (a workspace that is not a git checkout...)."""


class ErrorKind(StrEnum):
    """What a refusal means to the caller, whatever the way it is told."""

    BAD_INPUT = "bad_input"
    """The input (a plan, a setting, a workspace) is unusable; the message says where."""
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    """Well-formed, but the thing's state does not allow it."""
    UNAVAILABLE = "unavailable"
    """Something the request needs (Temporal) cannot be reached."""


KINDS: tuple[tuple[str, str, ErrorKind], ...] = (
    ("metabuilder.service.errors", "NotFound", ErrorKind.NOT_FOUND),
    ("metabuilder.service.errors", "Conflict", ErrorKind.CONFLICT),
    ("metabuilder.service.errors", "Unavailable", ErrorKind.UNAVAILABLE),
    ("metabuilder.service.errors", "BadRequest", ErrorKind.BAD_INPUT),
    ("metabuilder.domain.plans", "PlanError", ErrorKind.BAD_INPUT),
    ("metabuilder.domain.policy", "PolicyError", ErrorKind.BAD_INPUT),
)
"""Every error a use case raises on purpose, by module and class name: a module that was never
imported cannot have raised, so a short-lived process (the CLI) looks an error up without
importing anything."""


def kind_of(err: BaseException, table: Sequence[tuple[str, str, ErrorKind]] = KINDS) -> ErrorKind | None:
    """What ``err`` means to the caller, by ``table``; None for an error it does not list."""
    for module_name, name, kind in table:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(err, getattr(module, name)):
            return kind
    return None


def error_types() -> dict[type[Exception], ErrorKind]:
    """The table with its classes imported, for a process that installs a handler per type."""
    return {getattr(importlib.import_module(module), name): kind for module, name, kind in KINDS}
