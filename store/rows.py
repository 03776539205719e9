"""Writing the projection: upserts keyed by natural ids, so that a retried activity writes the
same rows again instead of adding new ones, and the ids derived from those keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ClauseElement


def stable_id(*parts: object) -> str:
    """A UUID derived from natural keys: the same record written twice gets the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "metabuilder:" + ":".join(map(str, parts))))


def upsert(session: Session, model: type[Any], values: dict[str, Any], keys: Sequence[str],
           update: Sequence[str], add: Sequence[str] = ()) -> bool:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, in the dialect of the session's engine: the
    ``update`` columns take the new values, the ``add`` columns add them to what they hold (a
    counter). With no columns to update (DO NOTHING), returns whether a row was inserted; otherwise True.

    The statement is built once per (dialect, table, keys, update) and the values are bound at
    execution: building it anew (the ``excluded`` alias, the values' coercion, its cache key) cost
    several times the SQL itself on the step path. Values that are SQL expressions take the
    statement built for them."""
    dialect = session.get_bind().dialect.name
    if any(isinstance(v, ClauseElement) for v in values.values()):
        stmt = _upsert_statement(dialect, model, tuple(keys), tuple(update), tuple(add)).values(**values)
        result = session.execute(stmt)
    else:
        result = session.execute(_upsert_statement(dialect, model, tuple(keys), tuple(update), tuple(add)), values)
    return bool(getattr(result, "rowcount", 1))


_STATEMENTS: dict[tuple[str, type[Any], tuple[str, ...], tuple[str, ...], tuple[str, ...]], Any] = {}


def _upsert_statement(dialect: str, model: type[Any], keys: tuple[str, ...], update: tuple[str, ...],
                      add: tuple[str, ...] = ()) -> Any:
    found = _STATEMENTS.get((dialect, model, keys, update, add))
    if found is None:
        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
        stmt = insert(model.__table__)
        table = model.__table__.c
        set_ = {**{c: stmt.excluded[c] for c in update}, **{c: table[c] + stmt.excluded[c] for c in add}}
        found = (stmt.on_conflict_do_update(index_elements=list(keys), set_=set_)
                 if set_ else stmt.on_conflict_do_nothing(index_elements=list(keys)))
        _STATEMENTS[(dialect, model, keys, update, add)] = found
    return found
