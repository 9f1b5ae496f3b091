"""What a database file knows for its metrics: jobs by handler and status, waits, runs.

``jobqueue metrics --db FILE`` exports these (through
:class:`jobqueue.telemetry.stored.StoredMetrics`), re-read every interval on a
read-only connection, so they cover the jobs of every process on the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from jobqueue.status import TERMINAL
from jobqueue.store.rows import by_name

__all__ = ["Finished", "Tallies", "finished_since", "tallies"]


@dataclass(frozen=True, slots=True)
class Tallies:
    """One snapshot of the file's jobs.

    Attributes:
        by_handler_status: jobs per ``(handler, status)`` (``""``: bare coroutine jobs).
        oldest_due: per handler with pending jobs, ``run_at`` of its oldest due
            pending job (``None`` when none of them is due yet).
    """

    by_handler_status: dict[tuple[str, str], int]
    oldest_due: dict[str, float | None]


def tallies(conn: sqlite3.Connection, now: float) -> Tallies:
    """Jobs by handler and status, and the oldest due pending job of each handler."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")  # one snapshot: the two reads agree
    try:
        cur = by_name(conn)
        counts = {
            (r["handler"], r["status"]): r["n"]
            for r in cur.execute(
                "SELECT coalesce(handler, '') AS handler, status, count(*) AS n FROM jobs "
                "GROUP BY 1, 2"
            )
        }
        oldest: dict[str, float | None] = {
            r["handler"]: r["oldest"]
            for r in cur.execute(
                "SELECT coalesce(handler, '') AS handler, "
                "min(CASE WHEN run_at <= ? THEN run_at END) AS oldest "
                "FROM jobs WHERE status = 'pending' GROUP BY 1",
                (now,),
            )
        }
    finally:
        if own:
            conn.execute("COMMIT")
    return Tallies(counts, oldest)


@dataclass(frozen=True, slots=True)
class Finished:
    """A job that reached a final status: what a metric of its last run needs."""

    id: str
    handler: str
    status: str
    started_at: float | None
    completed_at: float
    error_type: str | None
    reason: str | None


def finished_since(conn: sqlite3.Connection, since: float) -> list[Finished]:
    """Jobs that reached a final status after ``since`` (``completed_at``), oldest first."""
    final: Sequence[str] = sorted(s.value for s in TERMINAL)
    rows = by_name(conn).execute(
        "SELECT id, coalesce(handler, '') AS handler, status, started_at, completed_at, "
        "error_type, reason FROM jobs "
        f"WHERE completed_at > ? AND status IN ({', '.join('?' * len(final))}) "
        "ORDER BY completed_at",
        (since, *final),
    )
    return [
        Finished(
            r["id"],
            r["handler"],
            r["status"],
            r["started_at"],
            r["completed_at"],
            r["error_type"],
            r["reason"],
        )
        for r in rows
    ]
