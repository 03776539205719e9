"""Writing the projection: upserts keyed by natural ids, so that a retried activity writes the
same rows again instead of adding new ones, and the ids derived from those keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def stable_id(*parts: object) -> str:
    """A UUID derived from natural keys: the same record written twice gets the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "metabuilder:" + ":".join(map(str, parts))))


def upsert(session: Session, model: type[Any], values: dict[str, Any], keys: Sequence[str],
            update: Sequence[str]) -> bool:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, in the dialect of the session's engine. With no
    columns to update (DO NOTHING), returns whether a row was inserted; otherwise True."""
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    stmt = insert(model).values(**values)
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={col: stmt.excluded[col] for col in update})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    result = session.execute(stmt)
    return bool(getattr(result, "rowcount", 1))
