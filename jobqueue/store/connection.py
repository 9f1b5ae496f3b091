"""One SQLite connection on its own thread (through aiosqlite), with typed errors.

Every call into SQLite is one hop to the connection's thread. A hop costs
tens to hundreds of microseconds of latency, so callers hand over a whole unit
of work (a function taking the raw ``sqlite3.Connection``) instead of one
statement at a time: the group-commit writer runs a whole transaction per hop.

A small unit of work may instead run at once on the event loop's thread
(:meth:`Database.run_now`), when the connection's thread has nothing in hand
and a commit cannot wait on the disk (WAL with ``synchronous=NORMAL`` writes the
log and never syncs at commit). It runs with ``busy_timeout`` 0: if another
process holds the write lock it fails at once with :class:`WouldBlock`, and
the caller hands the work to the thread, which waits for the lock instead of
the loop. Other processes writing the same file can also stall a write
without holding the lock (their checkpoints sync the log this process
appends to), so while another connection has written the file lately
(``PRAGMA data_version``), or a write here took long, every unit of work goes
to the thread (:attr:`Database.quiet`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
import warnings
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar

import aiosqlite

from jobqueue.errors import StoreCorruptedError, StoreError
from jobqueue.store.health import diagnose
from jobqueue.store.rows import by_name
from jobqueue.store.schema import refuse_foreign, user_version
from jobqueue.store.sqlerrors import map_sqlite_error

__all__ = ["MEMORY", "Database", "WouldBlock", "map_sqlite_error"]

log = logging.getLogger("jobqueue.store")
T = TypeVar("T")

MEMORY: Final = ":memory:"

Synchronous = Literal["NORMAL", "FULL"]

# Primary result codes of a lock held by another connection.
_BUSY_CODES: Final = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
#: Seconds the loop's thread leaves the file to the connection's thread after another
#: connection wrote it, or after a unit of work there was slow or found the lock held.
SHARED_PAUSE: Final = 1.0
#: A unit of work on the loop's thread that took longer than this (seconds) was stalled;
#: :data:`SLOW_STREAK` of them within :data:`SHARED_PAUSE` seconds pause the loop's writes.
SLOW_NOW: Final = 0.001
SLOW_STREAK: Final = 3


class WouldBlock(Exception):
    """:meth:`Database.run_now` found the file locked by another connection; nothing was kept."""


class Database:
    """An aiosqlite connection plus the raw connection its thread owns.

    Use :meth:`open` to create one; :meth:`run` executes a function on the
    connection thread; :meth:`close` stops the thread (no thread is left
    behind, so the interpreter exits cleanly).
    """

    def __init__(self, path: str, aconn: aiosqlite.Connection) -> None:
        self.path = path
        self._aconn: aiosqlite.Connection | None = aconn
        # The raw connection is used on aiosqlite's thread (run()), or on the loop's
        # thread while that thread has nothing in hand (run_now()): never both at once.
        self._raw: sqlite3.Connection = aconn._conn
        self._issued = 0  # calls handed to the thread (written on the loop's thread only)
        self._ended = 0  # ... and finished there (written on the connection's thread only)
        self._busy_pragma = "PRAGMA busy_timeout = 5000"  # what the thread's calls run with
        self._busy_off = False  # busy_timeout is 0, as run_now() left it
        #: A commit never waits on the disk (WAL, synchronous=NORMAL, or in memory): small
        #: units of work may run on the loop's thread (:meth:`run_now`).
        self.inline = False
        #: Calls run on the connection's thread, and on the loop's thread (for benchmarks).
        self.calls = 0
        self.calls_now = 0
        self._data_version: int | None = None
        self._shared_until = 0.0
        self._slow: list[float] = []  # when the latest slow units of work on the loop ended
        #: Other connections of this process to the same file (the checkpointer's): while
        #: one of them has a call in flight (a checkpoint syncs the log), nothing runs on
        #: the loop's thread.
        self.companions: list[Database] = []
        #: Times the loop's thread left the file to the connection's thread (another
        #: connection wrote it, or a unit of work on the loop was slow or found it locked).
        self.shared_seen = 0

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
        had = {s: os.path.exists(spath + s) for s in _SIDE_FILES}  # noqa: ASYNC240 - stats
        try:
            # check_same_thread off: run_now() uses it from the loop's thread, never while
            # the connection's own thread holds a call (see `idle`).
            aconn = await aiosqlite.connect(spath, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise map_sqlite_error(exc, spath) or StoreError(f"{spath}: {exc}", spath) from exc
        db = cls(spath, aconn)
        try:
            await db.run(_configure, busy_timeout, synchronous, check, spath)
            if not autocheckpoint:  # a Checkpointer does it off the commit path
                await db.run(_no_autocheckpoint)
        except BaseException as exc:
            await db.close()
            if isinstance(exc, StoreCorruptedError) and spath != MEMORY:
                _remove_new_side_files(spath, had)
            raise
        db._busy_pragma = f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}"
        # A commit that cannot sync the disk: WAL (a rollback journal syncs at NORMAL too)
        # and no automatic checkpoint (one would write and sync the file), or in memory.
        if spath == MEMORY:
            db.inline = True
        elif synchronous == "NORMAL" and not autocheckpoint:
            db.inline = await db.run(_journal_mode) == "wal"
        return db

    @property
    def idle(self) -> bool:
        """No call is queued on or running in the connection's thread."""
        return self._issued == self._ended

    @property
    def quiet(self) -> bool:
        """A small unit of work may run on the loop's thread now (:meth:`run_now`).

        The commit cannot sync the disk (:attr:`inline`), the connection's
        thread has nothing in hand, and no other connection wrote the file in
        the last :data:`SHARED_PAUSE` seconds (nor was a unit of work here
        slow, or refused by a lock, in that time).
        """
        if not self.inline or self._issued != self._ended or self._aconn is None:
            return False
        for other in self.companions:
            if not other.idle:
                return False
        now = time.monotonic()
        if now < self._shared_until:
            return False
        try:  # changes when another connection commits (or resets the log)
            version = self._raw.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            return False
        seen, self._data_version = self._data_version, version
        if seen is not None and version != seen:
            self._shared(now)
            return False
        return True

    def _shared(self, now: float) -> None:
        self._shared_until = now + SHARED_PAUSE
        self.shared_seen += 1

    def _on_thread(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            if self._busy_off:  # the thread waits for other processes' locks; the loop never
                self._raw.execute(self._busy_pragma)
                self._busy_off = False
            return fn(self._raw, *args)
        finally:
            self._ended += 1

    def run_now(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(raw_connection, *args)`` at once on the calling (loop) thread.

        For small units of work only (the loop waits for them), and only while
        :attr:`idle`; ``busy_timeout`` is 0 meanwhile, so SQLite never sleeps on
        this thread.

        Raises:
            WouldBlock: another connection holds the lock ``fn`` needs; ``fn``
                must leave nothing behind when it raises (a transaction rolled
                back), so the same work can be handed to :meth:`run`.
            StoreError: what :meth:`run` would raise for other SQLite errors.
        """
        if self._aconn is None:
            raise StoreError(f"{self.path}: the database is closed", self.path)
        if not self.idle:
            raise RuntimeError("run_now() while the connection's thread holds a call")
        raw = self._raw
        self.calls_now += 1
        started = time.monotonic()
        if not self._busy_off:  # left at 0 for the next run_now(); _on_thread() restores it
            raw.execute("PRAGMA busy_timeout = 0")
            self._busy_off = True
        try:
            return fn(raw, *args)
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if isinstance(code, int) and code & 0xFF in _BUSY_CODES:
                self._shared(time.monotonic())
                raise WouldBlock(str(exc)) from exc
            mapped = map_sqlite_error(exc, self.path)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            ended = time.monotonic()
            if ended - started > SLOW_NOW:  # one can be the machine; a streak is the file
                slow = self._slow = [t for t in self._slow if t > ended - SHARED_PAUSE]
                slow.append(ended)
                if len(slow) >= SLOW_STREAK:
                    slow.clear()
                    self._shared(ended)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(raw_connection, *args)`` on the connection thread; map sqlite errors."""
        aconn = self._aconn
        if aconn is None:
            raise StoreError(f"{self.path}: the database is closed", self.path)
        self._issued += 1
        self.calls += 1
        try:
            # aiosqlite's own unit of work: one queue hop, one future.
            result: T = await aconn._execute(self._on_thread, fn, args)  # type: ignore[no-untyped-call]
        except ValueError:
            if not aconn._running:  # refused before it reached the thread
                self._issued -= 1
            raise
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


#: What SQLite puts beside a database in WAL mode.
_SIDE_FILES = ("-wal", "-shm")


def _remove_new_side_files(path: str, had: dict[str, bool]) -> None:
    """Remove the empty ``-wal`` and the ``-shm`` that opening a refused file made.

    A damaged header can say "WAL" (its read version byte is 2): the read-only
    probe then creates both before it finds the damage. A refused file must be
    left as it was found, side files included; ones that were there stay.
    """
    for suffix in _SIDE_FILES:
        side = path + suffix
        if had.get(suffix, True):
            continue
        with contextlib.suppress(OSError):
            if suffix == "-shm" or os.path.getsize(side) == 0:
                os.unlink(side)


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


def _journal_mode(conn: sqlite3.Connection) -> str:
    return str(by_name(conn).execute("PRAGMA journal_mode").fetchone()["journal_mode"]).lower()


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
