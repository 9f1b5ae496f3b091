"""Schema migrations: numbered SQL files, ``PRAGMA user_version``, one transaction each.

Each migration runs under ``BEGIN IMMEDIATE`` and re-reads ``user_version``
once it holds the write lock, so several processes opening a new file at the
same moment apply each migration exactly once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib import resources

from jobqueue.errors import StoreCorruptedError, StoreError
from jobqueue.store.rows import by_name

__all__ = [
    "Migration",
    "apply_migrations",
    "latest_version",
    "migrations",
    "newer_schema",
    "older_schema",
    "refuse_foreign",
    "user_version",
]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``version`` is the ``user_version`` after it is applied."""

    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """Split the script into single statements (``executescript`` would commit)."""
        out: list[str] = []
        buf = ""
        for line in self.sql.splitlines(keepends=True):
            buf += line
            if sqlite3.complete_statement(buf):
                if buf.strip():
                    out.append(buf.strip())
                buf = ""
        if buf.strip() and not all(ln.strip().startswith("--") for ln in buf.strip().splitlines()):
            raise ValueError(f"migration {self.name}: trailing incomplete statement")
        return out


@cache
def migrations() -> tuple[Migration, ...]:
    """All bundled migrations, in order."""
    found: list[Migration] = []
    for entry in resources.files("jobqueue.store").joinpath("migrations").iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        found.append(Migration(int(name.split("_", 1)[0]), name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for i, m in enumerate(found, start=1):
        if m.version != i:
            raise RuntimeError(f"migrations must be numbered 1..n without gaps; got {m.name}")
    return tuple(found)


def latest_version() -> int:
    """The schema version this jobqueue writes."""
    return migrations()[-1].version


def user_version(conn: sqlite3.Connection) -> int:
    """The file's schema version (``PRAGMA user_version``; 0 for a new or foreign file)."""
    return int(by_name(conn).execute("PRAGMA user_version").fetchone()["user_version"])


def apply_migrations(conn: sqlite3.Connection, path: str) -> int:
    """Bring the schema up to date; return the final version. Runs on the db thread."""
    latest = latest_version()
    version = user_version(conn)
    if version == 0:
        refuse_foreign(conn, path)
    if version > latest:
        raise newer_schema(path, version)
    for m in migrations():
        if m.version <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            version = user_version(conn)
            if m.version <= version:
                conn.execute("ROLLBACK")
                continue
            for stmt in m.statements():
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {m.version}")
            conn.execute("COMMIT")
            version = m.version
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return version


def newer_schema(path: str, version: int) -> StoreError:
    """A file written by a newer jobqueue: the one message every command gives."""
    return StoreError(
        f"{path} has schema version {version}, newer than this jobqueue understands "
        f"({latest_version()}); upgrade jobqueue to open it.",
        path,
    )


def older_schema(path: str, version: int, command: str) -> StoreError:
    """A file a read-only ``command`` cannot read before a service migrates it."""
    return StoreError(
        f"{path} has schema version {version}, older than this jobqueue's "
        f"({latest_version()}); {command} reads the file read-only and never migrates it: "
        "start a worker (or any JobQueueService) on it once, which migrates it, then retry.",
        path,
    )


def refuse_foreign(conn: sqlite3.Connection, path: str) -> None:
    """A version-0 file with tables of its own belongs to some other program."""
    tables = [
        r["name"]
        for r in by_name(conn).execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    if tables:
        shown = ", ".join(sorted(tables)[:5])
        raise StoreCorruptedError(
            f"{path} is a SQLite database of another program (tables: {shown}), not a "
            "jobqueue store; it was not modified. Use a separate file for jobqueue.",
            path,
        )
