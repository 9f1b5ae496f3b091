"""Read-only health reads of a database file, and the one diagnosis of an unusable file.

:func:`diagnose` is what every command and every service says about a file
that cannot be used (not SQLite, truncated, damaged, another program's): the
open-time probe of a service, ``jobqueue check`` and the read-only commands
all call it, so one file gets one diagnosis, in the same words, everywhere.
Each read runs on a connection opened with :func:`open_read_only`, which
never writes to the file (nor checkpoints a ``-wal`` beside it into the file).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from dataclasses import dataclass
from typing import Any, Final, Literal

from jobqueue.errors import StoreCorruptedError, StoreError
from jobqueue.store.rows import by_name
from jobqueue.store.schema import refuse_foreign, user_version
from jobqueue.store.sqlerrors import DAMAGED_CODES, map_sqlite_error, primary_code

__all__ = [
    "FileState",
    "damaged",
    "diagnose",
    "foreign_key_violations",
    "integrity",
    "integrity_failed",
    "journal_mode",
    "likely_cause",
    "open_read_only",
]

#: The first 16 bytes of every SQLite database file.
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
#: A database file is whole pages, and the smallest page size is 512 bytes.
MIN_PAGE: Final = 512


@dataclass(frozen=True, slots=True)
class FileState:
    """What :func:`diagnose` found in a usable file.

    Attributes:
        path: the file.
        exists: False when there is no file yet (a service creates it).
        size: its size in bytes (0 when it does not exist).
        version: its schema version (``PRAGMA user_version``; 0: no jobqueue
            schema yet, a new or empty file).
        integrity: SQLite's findings when asked for (``["ok"]``), else ``None``.
    """

    path: str
    exists: bool
    size: int
    version: int
    integrity: list[str] | None = None


def likely_cause(path: str) -> str:
    """What usually damages a SQLite file that jobqueue wrote, and what to do.

    SQLite keeps its file whole through crashes and full disks; what breaks it is the
    database file parted from its ``-wal`` (commits not yet copied into the
    file) and ``-shm`` (the index every process uses to find them) while in use.
    """
    return (
        f"{path}-wal or {path}-shm deleted, or {path} copied or moved without them, while "
        "a process had it open (the three files go together); restore the file from a "
        f'backup taken with `sqlite3 {path} ".backup copy.db"` or copied with every '
        "process stopped"
    )


def damaged(path: str, detail: str) -> StoreCorruptedError:
    """A file with SQLite's header that SQLite cannot read (``detail``: SQLite's words)."""
    return StoreCorruptedError(
        f"{path}: the database file is damaged ({detail}); the file was not modified. "
        f"Likely cause: {likely_cause(path)}.",
        path,
    )


def integrity_failed(path: str, found: list[str]) -> StoreCorruptedError:
    """SQLite's integrity check found problems (its first three findings are quoted)."""
    return StoreCorruptedError(
        f"{path}: integrity check failed ({'; '.join(found[:3])}); the file was not modified. "
        f"Likely cause: {likely_cause(path)}.",
        path,
    )


def _truncated(path: str, size: int) -> StoreCorruptedError:
    return StoreCorruptedError(
        f"{path}: {size} bytes is too short to be a SQLite database (a truncated file?); "
        "the file was not modified. Restore it from a backup or point jobqueue at a new file.",
        path,
    )


def _not_sqlite(path: str, head: bytes) -> StoreCorruptedError:
    return StoreCorruptedError(
        f"{path} is not a SQLite database: it does not start with SQLite's header (its "
        f"first bytes are {head[:16]!r}); another kind of file, or a database whose first "
        "page was overwritten. The file was not modified; check the path, or restore the "
        "file from a backup.",
        path,
    )


def _head(path: str) -> bytes:
    # Read only where no SQLite connection of this process can hold a lock on the file
    # (too short to be a database, or one SQLite refused): on POSIX, closing any
    # descriptor of a file drops every lock this process holds on it.
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC))
    except OSError:
        return b""


def _refused(path: str, exc: sqlite3.Error) -> StoreError:
    """The diagnosis of a file SQLite failed to open or read."""
    if primary_code(exc) in DAMAGED_CODES or "malformed" in str(exc):
        head = _head(path)
        if not head.startswith(SQLITE_MAGIC):
            return _not_sqlite(path, head)
        return damaged(path, str(exc))
    return map_sqlite_error(exc, path) or StoreError(f"{path}: {exc}", path)


def diagnose(
    path: str,
    *,
    busy_timeout: float = 5.0,
    check: Literal["quick", "full"] | None = "quick",
) -> FileState:
    """Read ``path`` (read-only) and say why it cannot be used, or what it holds.

    In order: a directory; no file (fine: a service creates it); an empty file
    (fine: no schema yet); shorter than a page: truncated when it starts like a
    SQLite file, else another kind of file; a file SQLite refuses: damaged
    when it has SQLite's header, else another kind of file; SQLite's
    integrity check (``check``; ``None`` skips it); a database of another
    program. The file is never written.

    Raises:
        StoreCorruptedError: not a SQLite file, truncated, damaged, or another
            program's database; the message says which and what to do.
        StoreError: a directory, or the file cannot be read (permissions, locked).
    """
    if os.path.isdir(path):
        raise StoreError(
            f"{path} is a directory, not a database file; pass a file path such as jobs.db", path
        )
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return FileState(path, exists=False, size=0, version=0)
    except OSError:
        size = -1  # cannot stat it: opening it says why
    if size == 0 and not os.path.exists(path + "-wal"):
        return FileState(path, exists=True, size=0, version=0)  # new: nothing to check
    if 0 < size < MIN_PAGE:  # SQLite would take it for an empty database and write over it
        head = _head(path)
        if SQLITE_MAGIC.startswith(head) or head.startswith(SQLITE_MAGIC):
            raise _truncated(path, size)
        raise _not_sqlite(path, head)
    try:
        ro = open_read_only(path, busy_timeout)  # reads the header: a non-SQLite file fails
    except sqlite3.Error as exc:
        raise _refused(path, exc) from exc
    try:
        found = None if check is None else integrity(ro, quick=check == "quick")
        version = user_version(ro)
        if version == 0:
            refuse_foreign(ro, path)  # before WAL mode would rewrite its header
    except sqlite3.Error as exc:
        raise _refused(path, exc) from exc
    finally:
        ro.close()
    if found is not None and found != ["ok"]:
        raise integrity_failed(path, found)
    return FileState(path, exists=True, size=max(size, 0), version=version, integrity=found)


def open_read_only(path: str, busy_timeout: float) -> sqlite3.Connection:
    """A read-only connection to ``path`` whose header was read.

    Raises:
        sqlite3.Error: the file cannot be opened, or is not a SQLite database.
    """
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout)
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reads the header: fails if not SQLite
    except BaseException:
        conn.close()
        raise
    return conn


def integrity(conn: sqlite3.Connection, quick: bool) -> list[str]:
    """SQLite's integrity check (``quick``: the faster ``quick_check``); ``["ok"]`` if sound."""
    pragma = "quick_check" if quick else "integrity_check"
    return [str(r[pragma]) for r in by_name(conn).execute(f"PRAGMA {pragma}")]


def journal_mode(conn: sqlite3.Connection) -> str:
    """The file's journal mode (``wal`` once a service opened it)."""
    return str(by_name(conn).execute("PRAGMA journal_mode").fetchone()["journal_mode"])


def foreign_key_violations(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """Rows that break a foreign key: ``(table, rowid, parent table, key id)`` each."""
    return [
        (r["table"], r["rowid"], r["parent"], r["fkid"])
        for r in by_name(conn).execute("PRAGMA foreign_key_check")
    ]
