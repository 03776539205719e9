"""The errors the service layer raises; the API maps each to one HTTP status, the CLI to a message."""

from __future__ import annotations


class NotFound(LookupError):
    """No such run, gate, plan or tenant (or it belongs to another tenant: ids do not leak)."""


class Conflict(ValueError):
    """The request is well-formed but the thing is not in a state that allows it."""


class Unavailable(RuntimeError):
    """A service the request needs (Temporal) cannot be reached."""


class BadRequest(ValueError):
    """The request names something unusable (a workspace that is not a git checkout...)."""
