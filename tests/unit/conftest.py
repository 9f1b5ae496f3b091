"""Fixtures of the unit tests: a real temp-file database with the schema, and its writer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobqueue.store.connection import Database
from jobqueue.store.schema import apply_migrations
from jobqueue.store.writer import Writer


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    """An open database on ``db_path`` with every migration applied (as the runtime opens it)."""
    database = await Database.open(db_path)
    try:
        await database.run(apply_migrations, str(db_path))
        yield database
    finally:
        await database.close()


@pytest.fixture
async def writer(db: Database) -> AsyncIterator[Writer]:
    """A started group-commit writer over ``db``; closed (flushed) at teardown."""
    w = Writer(db)
    w.start()
    try:
        yield w
    finally:
        await w.close()
