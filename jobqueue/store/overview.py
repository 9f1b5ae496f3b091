"""What a database file holds at a glance: jobs per status, per owner, one line per job.

Read by ``jobqueue stats``, ``check`` and the demo, and by the runtime's counts.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from jobqueue.store.groups import pending_groups
from jobqueue.store.rows import by_name

__all__ = [
    "Counts",
    "JobSummary",
    "count_by_status",
    "counts",
    "example_with_status",
    "running_by_owner",
    "summaries",
]


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """Number of jobs per stored status value."""
    rows = by_name(conn).execute("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


@dataclass(frozen=True, slots=True)
class Counts:
    """The job counts of the whole file, read in one snapshot by :func:`counts`.

    Attributes:
        by_status: jobs per stored status value.
        pending_by_handler: pending jobs per handler name (``""`` for bare
            coroutine jobs), largest first.
        due: pending jobs whose ``run_at`` has come.
        oldest_due: ``run_at`` of the oldest due pending job (``None``: none is due).
    """

    by_status: dict[str, int]
    pending_by_handler: dict[str, int]
    due: int
    oldest_due: float | None


def counts(conn: sqlite3.Connection, now: float) -> Counts:
    """Jobs by status, pending jobs by handler, and the due ones (``run_at <= now``)."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")  # one snapshot: the pending figures agree with each other
    try:
        by_status = count_by_status(conn)
        cur = by_name(conn)
        pending = cur.execute(
            "SELECT coalesce(handler, '') AS handler, count(*) AS n FROM jobs "
            "WHERE status = 'pending' GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        due, oldest = 0, None
        for group in pending_groups(conn):  # the due prefix of each group's index range
            row = cur.execute(
                "SELECT count(*) AS n, min(run_at) AS oldest FROM jobs "
                "WHERE status = 'pending' AND priority = ? AND (started_at IS NOT NULL) = ? "
                "AND run_at <= ?",
                (*group, now),
            ).fetchone()
            due += row["n"]
            if row["oldest"] is not None and (oldest is None or row["oldest"] < oldest):
                oldest = row["oldest"]
    finally:
        if own:
            conn.execute("COMMIT")
    return Counts(
        by_status=by_status,
        pending_by_handler={r["handler"]: r["n"] for r in pending},
        due=due,
        oldest_due=oldest,
    )


def running_by_owner(conn: sqlite3.Connection) -> dict[str | None, int]:
    """Running jobs per owner (``None`` for rows that name no owner)."""
    rows = by_name(conn).execute(
        "SELECT owner, count(*) AS n FROM jobs WHERE status = 'running' GROUP BY owner"
    )
    return {r["owner"]: r["n"] for r in rows}


def example_with_status(conn: sqlite3.Connection, status: object) -> str | None:
    """The id of one job whose stored status is ``status`` (any stored value, even NULL)."""
    row = (
        by_name(conn).execute("SELECT id FROM jobs WHERE status IS ? LIMIT 1", (status,)).fetchone()
    )
    return None if row is None else row["id"]  # as stored: a damaged file may hold a non-text id


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One line of an overview of the file's jobs (the demo's final table).

    ``detail`` is the stored result JSON, else the error message, else the reason.
    """

    id: str
    handler: str | None
    status: str
    attempt: int
    detail: str


def summaries(conn: sqlite3.Connection) -> list[JobSummary]:
    """Every job of the file, oldest first, as a :class:`JobSummary`."""
    rows = by_name(conn).execute(
        "SELECT id, handler, status, attempt, "
        "coalesce(result, error_message, reason, '') AS detail FROM jobs ORDER BY seq"
    )
    return [
        JobSummary(
            id=r["id"],
            handler=r["handler"],
            status=r["status"],
            attempt=r["attempt"],
            detail=str(r["detail"]),
        )
        for r in rows
    ]
