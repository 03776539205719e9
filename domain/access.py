"""Who may do what: the four roles of a tenant's users, and the role each kind of action needs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """A user's role in a tenant; each role may do everything the roles before it may."""

    VIEWER = "viewer"
    """Read runs, gates, settings and logs."""
    OPERATOR = "operator"
    """Also start, retry and cancel runs, and create plans."""
    ADMIN = "admin"
    """Also approve and reject gates, and change settings."""
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user of one tenant, with a role."""

    tenant: str
    user: str
    role: Role
