"""Serialise first-open work (WAL switch, foreign-file check, migrations) across processes.

SQLite alone leaves windows when several processes open a *new* file at the
same moment: the journal-mode switch does not wait on the busy handler, and
the "is this another program's file?" check could see a half-migrated file
(seen as lost jobs and false refusals). Holding one keyed file lock per
database for the few milliseconds of set-up closes them. The lock waits
without blocking the event loop and its file is removed on release, so a
refused file's directory is left as it was.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from jobqueue.errors import (
    InvalidLockKey,
    LockError,
    LockTimeout,
    StoreLockedError,
    StoreReadOnlyError,
)
from jobqueue.locks import KeyedWorkerLockManager
from jobqueue.store.connection import MEMORY

__all__ = ["init_lock"]


@contextlib.asynccontextmanager
async def init_lock(path: str, timeout: float) -> AsyncIterator[None]:
    """Hold the set-up lock of ``path`` (no-op for an in-memory database)."""
    if path == MEMORY:
        yield
        return
    db = os.path.abspath(path)  # noqa: ASYNC240 - string work and one getcwd
    try:
        locks = KeyedWorkerLockManager(os.path.dirname(db), poll_interval=0.005)
        async with locks.alock(f"jobqueue-init-{os.path.basename(db)}", timeout=timeout):
            yield
    except LockTimeout:
        raise StoreLockedError(
            f"{path}: another process kept opening this database for over {timeout:.0f}s; "
            "retry once it has started",
            path,
        ) from None
    except InvalidLockKey:
        raise
    except LockError as exc:  # the lock file cannot be made: the directory is read-only
        raise StoreReadOnlyError(
            f"{path}: cannot open the database for writing: its directory "
            f"{os.path.dirname(db)} is not writable (SQLite keeps its -wal and -shm files "
            f"there too); make it writable or move the file ({exc})",
            path,
        ) from None
