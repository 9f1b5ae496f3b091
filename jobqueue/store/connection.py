"""One SQLite connection on its own thread (through aiosqlite), with typed errors.

Every call into SQLite is one hop to the connection's thread. A hop costs
hundreds of microseconds of latency, so callers hand over a whole unit of
work (a function taking the raw ``sqlite3.Connection``) instead of one
statement at a time: the group-commit writer runs a whole transaction per hop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
import warnings
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar

import aiosqlite

from jobqueue.errors import StoreError
from jobqueue.store.health import diagnose
from jobqueue.store.rows import by_name
from jobqueue.store.schema import refuse_foreign, user_version
from jobqueue.store.sqlerrors import map_sqlite_error

__all__ = ["MEMORY", "Database", "map_sqlite_error"]

log = logging.getLogger("jobqueue.store")
T = TypeVar("T")

MEMORY: Final = ":memory:"

Synchronous = Literal["NORMAL", "FULL"]


class Database:
    """An aiosqlite connection plus the raw connection its thread owns.

    Use :meth:`open` to create one; :meth:`run` executes a function on the
    connection thread; :meth:`close` stops the thread (no thread is left
    behind, so the interpreter exits cleanly).
    """

    def __init__(self, path: str, aconn: aiosqlite.Connection) -> None:
        self.path = path
        self._aconn: aiosqlite.Connection | None = aconn
        # The raw connection is only ever *used* on aiosqlite's thread (inside run()).
        self._raw: sqlite3.Connection = aconn._conn

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        synchronous: Synchronous = "NORMAL",
        check: bool = True,
        autocheckpoint: bool = True,
    ) -> Database:
        """Open (creating if needed) and configure a database file.

        Raises:
            StoreCorruptedError: the file exists but is not a healthy SQLite database.
            StoreReadOnlyError: the file or its directory cannot be opened for writing.
        """
        spath = str(path)
        if spath != MEMORY and os.path.isdir(spath):  # noqa: ASYNC240 - one stat, microseconds
            raise StoreError(f"{spath} is a directory; pass a file path such as jobs.db", spath)
        # No Python open() of the file here: on POSIX, closing any descriptor of a file
        # drops every lock this process holds on it, SQLite's included.
        try:
            aconn = await aiosqlite.connect(spath, isolation_level=None)
        except sqlite3.Error as exc:
            raise map_sqlite_error(exc, spath) or StoreError(f"{spath}: {exc}", spath) from exc
        db = cls(spath, aconn)
        try:
            await db.run(_configure, busy_timeout, synchronous, check, spath)
            if not autocheckpoint:  # a Checkpointer does it off the commit path
                await db.run(_no_autocheckpoint)
        except BaseException:
            await db.close()
            raise
        return db

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(raw_connection, *args)`` on the connection thread; map sqlite errors."""
        aconn = self._aconn
        if aconn is None:
            raise StoreError(f"{self.path}: the database is closed", self.path)
        try:
            # aiosqlite's own unit of work: one queue hop, one future.
            result: T = await aconn._execute(fn, self._raw, *args)  # type: ignore[no-untyped-call]
        except sqlite3.Error as exc:
            mapped = map_sqlite_error(exc, self.path)
            if mapped is None:
                raise
            raise mapped from exc
        return result

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._aconn is None

    async def close(self) -> None:
        """Close the connection and join its thread. Safe to call twice."""
        aconn, self._aconn = self._aconn, None
        if aconn is None:
            return
        # Finish even if our caller is cancelled: a half-closed connection leaks a thread.
        await asyncio.shield(aconn.close())
        # aiosqlite resolves close() just before its thread leaves its loop; wait for
        # the exit without blocking the event loop, so "closed" means "no thread".
        thread = getattr(aconn, "_thread", None)
        for _ in range(1000):
            if thread is None or not thread.is_alive():
                break
            await asyncio.sleep(0.001)

    def __del__(self) -> None:
        if getattr(self, "_aconn", None) is not None:
            warnings.warn(
                f"jobqueue Database {self.path!r} was not closed; use `async with "
                "JobQueueService(...)` or `await service.close()`",
                ResourceWarning,
                stacklevel=2,
            )


def _configure(
    conn: sqlite3.Connection, busy_timeout: float, synchronous: str, check: bool, path: str
) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    if path != MEMORY:
        _probe(path, busy_timeout, check)
    # The write connection has not read the file yet (so it has not opened a WAL that it
    # would checkpoint into the file on close). From here on the file is known to be ours.
    if user_version(conn) == 0:
        refuse_foreign(conn, path)
    if path != MEMORY:
        mode = _set_wal(conn, busy_timeout)
        if str(mode).lower() != "wal":
            log.warning("%s: could not switch to WAL (journal_mode=%s)", path, mode)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA temp_store = MEMORY")


def _probe(path: str, busy_timeout: float, check: bool) -> None:
    """Every check of an existing file, on a read-only connection of its own.

    :func:`~jobqueue.store.health.diagnose`, the diagnosis every command gives.
    Closing the last read-write connection of a WAL database checkpoints the
    WAL into the file. A ``-wal`` file beside a damaged database, or one copied
    from another program's database, would thus be written into the file we
    then refuse; a read-only connection never checkpoints, so a refused file
    and its ``-wal`` are left exactly as they were.
    """
    diagnose(path, busy_timeout=busy_timeout, check="quick" if check else None)


def _no_autocheckpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_autocheckpoint = 0")


def _set_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """Switch to WAL, retrying while another process holds the new file's lock.

    SQLite does not call the busy handler for this pragma, so several
    processes opening a new file at once would fail at once without this.
    Runs on the connection's thread, so waiting here never blocks the event loop.
    """
    deadline = time.monotonic() + busy_timeout
    delay = 0.001
    while True:
        try:
            return str(
                by_name(conn).execute("PRAGMA journal_mode = WAL").fetchone()["journal_mode"]
            )
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)  # on the db thread, not the loop
        delay = min(delay * 2, 0.05)
