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

from jobqueue.errors import (
    StoreCorruptedError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreReadOnlyError,
)
from jobqueue.store.health import integrity, open_read_only
from jobqueue.store.rows import by_name
from jobqueue.store.schema import refuse_foreign, user_version

__all__ = ["MEMORY", "Database", "map_sqlite_error"]

log = logging.getLogger("jobqueue.store")
T = TypeVar("T")

MEMORY: Final = ":memory:"

# Primary SQLite result codes (the low byte of the extended code).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26

Synchronous = Literal["NORMAL", "FULL"]

# The largest write SQLite makes at once: a WAL frame of the biggest page size.
_MAX_FRAME: Final = 65536 + 24
# A database file is whole pages, and the smallest page size is 512 bytes.
_MIN_PAGE: Final = 512


def map_sqlite_error(exc: sqlite3.Error, path: str) -> StoreError | None:
    """Translate a sqlite3 error into the matching typed store error, if any."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary == _FULL or "disk is full" in text:
        return StoreFullError(
            f"{path}: the disk or file size limit is full ({text}); the change was rolled "
            "back and stored jobs are intact. Free space and retry.",
            path,
        )
    if primary in (_BUSY, _LOCKED) or "database is locked" in text:
        return StoreLockedError(
            f"{path}: another connection held the write lock past busy_timeout ({text}); "
            "retry, or raise busy_timeout if several processes write heavily.",
            path,
        )
    if primary == _READONLY or "readonly" in text:
        return StoreReadOnlyError(
            f"{path}: the database cannot be written ({text}); check the permissions of "
            "the file and of its directory (SQLite writes -wal and -shm files beside it).",
            path,
        )
    if primary == _CANTOPEN:
        return StoreReadOnlyError(
            f"{path}: cannot open the database file ({text}); check that the directory "
            "exists and is writable.",
            path,
        )
    if text.startswith("Could not decode to UTF-8"):  # raised by Python's sqlite3 on a read
        return StoreCorruptedError(
            f"{path}: a stored text value is not valid UTF-8 ({text:.200}); the file was damaged "
            "or written by another program. Run `python -m jobqueue check --db FILE`.",
            path,
        )
    if primary in (_CORRUPT, _NOTADB) or "malformed" in text or "not a database" in text:
        return StoreCorruptedError(
            f"{path}: the database file is damaged or is not a SQLite database ({text}); "
            "it was not modified. Restore it from a backup or point jobqueue at a new file.",
            path,
        )
    if primary == _IOERR:
        limit = _size_limit_reached(path)
        if limit is not None:  # SQLite reports EFBIG (RLIMIT_FSIZE) as an I/O error
            return StoreFullError(
                f"{path}: the file size limit of {limit} bytes (RLIMIT_FSIZE, `ulimit -f`) is "
                f"reached ({text}); the change was rolled back and stored jobs are intact. "
                "Raise the limit and retry.",
                path,
            )
        return StoreError(
            f"{path}: disk I/O error ({text}); the change was rolled back and stored jobs are "
            "intact. Check the disk (for example the kernel log) and retry.",
            path,
        )
    return None


def _size_limit_reached(path: str) -> int | None:
    """The ``RLIMIT_FSIZE`` soft limit if the database or its journal is within a frame of it."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if soft == resource.RLIM_INFINITY:
        return None
    for name in (path, path + "-wal", path + "-journal"):
        try:
            if os.path.getsize(name) + _MAX_FRAME >= soft:
                return soft
        except OSError:
            continue
    return None


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

    Closing the last read-write connection of a WAL database checkpoints the
    WAL into the file. A ``-wal`` file beside a damaged database, or one copied
    from another program's database, would thus be written into the file we
    then refuse; a read-only connection never checkpoints, so a refused file
    and its ``-wal`` are left exactly as they were.
    """
    try:
        size = os.path.getsize(path)
        if size == 0 and not os.path.exists(path + "-wal"):
            return  # a new file: nothing to check, nothing to damage
    except OSError:
        return  # cannot even stat it: the write connection reports why
    if 0 < size < _MIN_PAGE:  # SQLite would take it for an empty database and write over it
        raise StoreCorruptedError(
            f"{path}: {size} bytes is too short to be a SQLite database (a truncated file?); "
            "it was not modified. Restore it from a backup or point jobqueue at a new file.",
            path,
        )
    ro = open_read_only(path, busy_timeout)  # reads the header: a non-SQLite file fails here
    try:
        if check:
            found = integrity(ro, quick=True)
            if found != ["ok"]:
                detail = "; ".join(found[:3])
                raise StoreCorruptedError(
                    f"{path}: integrity check failed ({detail}); the file was not modified. "
                    "Restore it from a backup or point jobqueue at a new file.",
                    path,
                )
        # A file of another program is refused before WAL mode rewrites its header.
        if user_version(ro) == 0:
            refuse_foreign(ro, path)
    finally:
        ro.close()


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
