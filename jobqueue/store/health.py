"""Read-only health reads of a database file: integrity, journal mode, foreign keys.

Used by the open-time probe and by ``jobqueue check``, each on a connection
opened with :func:`open_read_only`, which never writes to the file (nor
checkpoints a ``-wal`` beside it into the file).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from typing import Any

from jobqueue.store.rows import by_name

__all__ = ["foreign_key_violations", "integrity", "journal_mode", "open_read_only"]


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
