"""SQLite's errors as jobqueue's typed store errors (:func:`map_sqlite_error`).

Its own module so that both the connection and the file diagnosis
(:mod:`jobqueue.store.health`) use it without importing each other.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Final

from jobqueue.errors import (
    StoreCorruptedError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreReadOnlyError,
)

__all__ = ["map_sqlite_error", "primary_code"]

# Primary SQLite result codes (the low byte of the extended code).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26
#: The codes of a file that is not a (sound) SQLite database.
DAMAGED_CODES: Final = (_CORRUPT, _NOTADB)

# The largest write SQLite makes at once: a WAL frame of the biggest page size.
_MAX_FRAME: Final = 65536 + 24


def primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of ``exc`` (the low byte of the extended code)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


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
