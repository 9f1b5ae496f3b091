"""Shared fixtures: a factory of real, file-backed services that are always closed."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from jobqueue import JobQueueService

# Helper scripts and apps run by the tests live in tests/procs; they import each other
# by plain name, as they do when run as scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent / "procs"))

MakeService = Callable[..., Awaitable[JobQueueService]]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The database file of this test (not created yet)."""
    return tmp_path / "jobs.db"


@pytest.fixture
async def make_service(db_path: Path) -> AsyncIterator[MakeService]:
    """``await make_service(**opts)``: an open service on ``db_path``, closed at teardown.

    Pass ``path=...`` to use another file (``path=None`` for an in-memory service).
    """
    made: list[JobQueueService] = []

    async def make(**opts: Any) -> JobQueueService:
        path = opts.pop("path", db_path)
        svc = JobQueueService(None if path is None else str(path), **opts)
        made.append(svc)
        await svc.__aenter__()
        return svc

    try:
        yield make
    finally:
        for svc in reversed(made):
            await svc.close(drain_timeout=1.0)
