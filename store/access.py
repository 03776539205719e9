"""Tenants, users and API tokens. A token is kept only as its SHA-256: it is shown once."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from metabuilder.domain.access import Principal, Role, check_tenant_id
from metabuilder.store.models import ApiToken, Tenant, User, utcnow
from metabuilder.store.rows import upsert
from metabuilder.store.tenants import ensure_tenant

TOKEN_PREFIX = "mb_"
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per token, so that reading through the API
stays a read: written on every request, it made each GET a write transaction on one row."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_tenant(session: Session, tenant_id: str, name: str | None = None) -> Tenant:
    """Create a tenant; ``ValueError`` if it exists or the id is not usable."""
    check_tenant_id(tenant_id)
    if session.get(Tenant, tenant_id) is not None:
        raise ValueError(f"tenant {tenant_id!r} exists already")
    ensure_tenant(session, tenant_id, name)
    tenant = session.get(Tenant, tenant_id)
    assert tenant is not None
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.id)))


@dataclass(frozen=True)
class NewToken:
    token: str
    """The token itself: shown to its owner once and never stored."""
    token_id: str
    user: str
    tenant: str
    role: Role


def create_token(session: Session, tenant_id: str, user: str, role: Role) -> NewToken:
    """Issue a token for ``user`` of the tenant, creating the user or setting its role."""
    if session.get(Tenant, tenant_id) is None:
        raise ValueError(f"unknown tenant {tenant_id!r} (create it first: metabuilder tenants create)")
    if not user.strip() or len(user) > 200:
        raise ValueError("a user name is 1 to 200 characters")
    upsert(session, User, {"id": str(uuid.uuid4()), "tenant_id": tenant_id, "name": user, "role": role.value,
                           "created_at": utcnow()}, keys=["tenant_id", "name"], update=["role"])
    row = session.scalars(select(User).where(User.tenant_id == tenant_id, User.name == user)).one()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = str(uuid.uuid4())
    session.add(ApiToken(id=token_id, user_id=row.id, token_hash=hash_token(token), prefix=token[:10],
                         created_at=utcnow()))
    session.flush()
    return NewToken(token=token, token_id=token_id, user=user, tenant=tenant_id, role=role)


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal a token belongs to; None for an unknown or revoked token. Every request asks,
    so it reads four columns rather than two ORM objects."""
    found = session.execute(
        select(ApiToken.id, ApiToken.last_used_at, User.tenant_id, User.name, User.role)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))).first()
    if found is None:
        return None
    now = utcnow()
    if _stale(found.last_used_at, now):
        session.execute(update(ApiToken).where(
            ApiToken.id == found.id,
            (ApiToken.last_used_at.is_(None)) | (ApiToken.last_used_at < now - LAST_USED_RESOLUTION))
            .values(last_used_at=now).execution_options(synchronize_session=False))
    return Principal(tenant=found.tenant_id, user=found.name, role=Role(found.role))


def _stale(last_used: datetime | None, now: datetime) -> bool:
    if last_used is None:
        return True
    if last_used.tzinfo is None:  # SQLite keeps no offset; the value was written in UTC
        last_used = last_used.replace(tzinfo=UTC)
    return now - last_used >= LAST_USED_RESOLUTION


@dataclass(frozen=True)
class RevokedToken:
    token_id: str
    user: str
    tenant: str


def revoke_token(session: Session, token_id: str) -> RevokedToken | None:
    """Revoke an active token; None when there is no such token or it was revoked already."""
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return None
    row.revoked_at = utcnow()
    user = session.get(User, row.user_id)
    assert user is not None
    return RevokedToken(token_id=token_id, user=user.name, tenant=user.tenant_id)


def list_tokens(session: Session, tenant_id: str) -> list[tuple[ApiToken, User]]:
    rows = session.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                           .where(User.tenant_id == tenant_id).order_by(ApiToken.created_at))
    return [(t, u) for t, u in rows]


def user_role(session: Session, tenant_id: str, name: str) -> Role | None:
    """The role ``name`` holds in the tenant now; None when there is no such user."""
    role = session.scalar(select(User.role).where(User.tenant_id == tenant_id, User.name == name))
    return Role(role) if role is not None else None
