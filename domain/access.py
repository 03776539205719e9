"""Who may do what: the four roles of a tenant's users, and the role each kind of action needs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

TENANT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""A tenant id: lowercase letters, digits, '.', '_' and '-', up to 64 characters."""


def check_tenant_id(tenant_id: str | None) -> str:
    """``tenant_id`` if it is a usable tenant id; ``ValueError`` saying why not."""
    if not tenant_id:
        raise ValueError("a tenant id is required (e.g. `metabuilder tenants create acme`)")
    if not TENANT_ID.fullmatch(tenant_id):
        raise ValueError(f"tenant id {tenant_id[:80]!r}: use 1 to 64 lowercase letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return tenant_id


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
