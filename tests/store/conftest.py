"""The store tests' database: each test runs once on SQLite and once on a fresh PostgreSQL database."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from metabuilder.migrations import upgrade
from metabuilder.store.db import make_engine, session_factory
from tests.conftest import fresh_pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    with contextlib.ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'mb.db'}" if request.param == "sqlite"
               else stack.enter_context(fresh_pg_database()))
        upgrade(url)
        engine = make_engine(url)
        yield session_factory(engine)
        engine.dispose()
