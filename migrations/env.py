from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import make_url

from metabuilder.store.db import make_engine
from metabuilder.store.models import Base

MIGRATION_LOCK_KEY = 0x4D42_4D49  # "MBMI": the PostgreSQL advisory lock of Meta-Builder's migrations

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url, pooled=False)
    with sqlite_file_lock(url), engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":  # held until this migration's transaction ends
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            context.run_migrations()
    engine.dispose()


@contextlib.contextmanager
def sqlite_file_lock(url: str) -> Iterator[None]:
    """Processes that start together on a new database (a worker and a CLI command) migrate one at
    a time, and the later ones find it at head; PostgreSQL gets the same from an advisory lock."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        yield
        return
    lock = Path(parsed.database).expanduser()
    lock = lock.with_name(lock.name + ".migrate-lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
