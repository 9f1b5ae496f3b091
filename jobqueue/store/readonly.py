"""A database file opened read-only, for the commands that only look at it.

``jobqueue list``, ``show``, ``stats`` and ``metrics`` read the file through a
:class:`ReadOnlyStore`: a ``mode=ro`` SQLite connection. It never writes to
the file: no schema is created in an empty file, no migration, no heartbeat,
no crash sweep, no checkpoint of the ``-wal`` into the file. In WAL mode a
reader does not wait for writers, so these commands answer while another
process holds a write transaction.

Functions of the store modules (``jobs.list_jobs``, ``eventlog.read_after``,
...) run on its connection through :meth:`ReadOnlyStore.read`, which maps
SQLite's errors to the typed store errors, as a service does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from jobqueue.errors import StoreError
from jobqueue.store.health import FileState, diagnose, open_read_only
from jobqueue.store.schema import latest_version, newer_schema, older_schema, user_version
from jobqueue.store.sqlerrors import map_sqlite_error

__all__ = ["ReadOnlyStore"]

T = TypeVar("T")


class ReadOnlyStore:
    """``path`` opened read-only, after the diagnosis every command gives.

    Args:
        path: an existing database file.
        command: the command's name, for the messages (``list``, ``stats``...).
        busy_timeout: seconds to wait for a lock (readers of a WAL file rarely do).
        check: run SQLite's ``quick_check`` first, as a service does when it opens.
        allow_older: accept an older schema (for reads every version has, such as
            the ids the control commands look up before a service migrates the file).

    Attributes:
        state: what :func:`~jobqueue.store.health.diagnose` found.

    Raises:
        StoreCorruptedError: the file cannot be used (the message says why).
        StoreError: its schema is newer than this jobqueue, or older (a service
            migrates it; a read-only command cannot).
    """

    def __init__(
        self,
        path: str,
        *,
        command: str,
        busy_timeout: float = 5.0,
        check: bool = True,
        allow_older: bool = False,
    ) -> None:
        self.path = path
        self.state: FileState = diagnose(
            path, busy_timeout=busy_timeout, check="quick" if check else None
        )
        version = self.state.version
        if version > latest_version():
            raise newer_schema(path, version)
        if 0 < version < latest_version() and not allow_older:
            raise older_schema(path, version, command)
        self._empty = version == 0
        try:
            self._conn: sqlite3.Connection | None = open_read_only(path, busy_timeout)
        except sqlite3.Error as exc:
            raise map_sqlite_error(exc, path) or StoreError(f"{path}: {exc}", path) from exc

    @property
    def empty(self) -> bool:
        """No jobqueue schema in the file (yet: a service that opens it creates one)."""
        if self._empty and self._conn is not None:
            self._empty = self.read(user_version) == 0
        return self._empty

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)``; SQLite's errors become the typed store errors."""
        if self._conn is None:
            raise StoreError(f"{self.path}: the read-only connection is closed", self.path)
        try:
            return fn(self._conn, *args)
        except sqlite3.Error as exc:
            mapped = map_sqlite_error(exc, self.path)
            if mapped is None:
                raise
            raise mapped from exc

    def close(self) -> None:
        """Close the connection (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> ReadOnlyStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
