"""Idempotency keys are kept for a retention window, then forgotten (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from metabuilder.store import v4 as rows
from metabuilder.store.db import transaction
from metabuilder.store.models import IdempotencyKey
from metabuilder.store.tenants import ensure_tenant


def test_a_key_is_held_within_its_retention_and_free_after_it(sessions) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    with transaction(sessions) as s:
        assert rows.claim_key(s, "acme", "deploy-1", "h1", "run-1", expired_before=now - timedelta(hours=24)) is None
        assert rows.claim_key(s, "acme", "old", "h0", "run-0", expired_before=now - timedelta(hours=24)) is None
        rows.settle_key(s, "acme", "deploy-1", {"run_id": "run-1"})
    with transaction(sessions) as s:
        s.get(IdempotencyKey, ("acme", "old")).created_at = now - timedelta(hours=30)  # type: ignore[union-attr]
        ensure_tenant(s, "other")
        s.add(IdempotencyKey(tenant_id="other", key="old", body_hash="h", run_id="run-9",
                             created_at=now - timedelta(hours=30)))
    with transaction(sessions) as s:  # within the window: the first request's row answers
        held = rows.claim_key(s, "acme", "deploy-1", "h2", "run-2", expired_before=now - timedelta(hours=24))
        assert held is not None and (held.run_id, held.body_hash, held.response) == ("run-1", "h1", {"run_id": "run-1"})
    with transaction(sessions) as s:  # the tenant's expired key went; another tenant's waits for its own claim
        assert s.get(IdempotencyKey, ("acme", "old")) is None
        assert s.get(IdempotencyKey, ("other", "old")) is not None
    with transaction(sessions) as s:  # past the window the key names a new request
        later = now + timedelta(hours=25)
        assert rows.claim_key(s, "acme", "deploy-1", "h3", "run-3", expired_before=later - timedelta(hours=24)) is None
    with transaction(sessions) as s:
        row = s.get(IdempotencyKey, ("acme", "deploy-1"))
        assert row is not None and (row.run_id, row.response) == ("run-3", None)
        assert s.scalar(select(func.count()).select_from(IdempotencyKey).where(IdempotencyKey.tenant_id == "acme")) == 1
