"""WAL checkpoints on their own connection, off the commit path.

With ``synchronous=NORMAL`` a WAL commit does not fsync; the fsync happens
when the WAL is checkpointed into the database file. SQLite's automatic
checkpoint runs inside the committing call, so every few hundred commits one
of them stalls for milliseconds. The writer's connection therefore turns
automatic checkpoints off and this task checkpoints (``PASSIVE``: it never
blocks writers) from a second connection, on a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable

from jobqueue.errors import StoreError
from jobqueue.store.connection import Database
from jobqueue.store.rows import by_name

__all__ = ["Checkpointer"]

log = logging.getLogger("jobqueue.store")


def _checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """``(busy, log, checkpointed)``: SQLite's report of one passive checkpoint."""
    row = by_name(conn).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(row["busy"]), int(row["log"]), int(row["checkpointed"])


class Checkpointer:
    """Checkpoints the WAL every ``interval`` seconds while writes happen."""

    def __init__(self, db: Database, progress: Callable[[], int], interval: float = 0.5) -> None:
        self._db = db
        self._progress = progress
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="jobqueue-wal")

    async def _loop(self) -> None:
        seen = self._progress()
        while True:
            await asyncio.sleep(self._interval)
            now = self._progress()
            if now == seen:
                continue
            seen = now
            try:
                await self._db.run(_checkpoint)
            except StoreError as exc:  # the next pass retries; SQLite stays consistent
                log.warning("WAL checkpoint failed: %s", exc)

    async def close(self) -> None:
        """Stop the task, checkpoint one last time and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self._db.run(_checkpoint)
        except StoreError as exc:
            log.warning("final WAL checkpoint failed: %s", exc)
        finally:
            await self._db.close()
