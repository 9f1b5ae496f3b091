"""Pending jobs by ``(priority, started)`` group: how a claim skips delayed jobs.

The ``jobs_pending`` index orders pending jobs by priority, then started-before
first, then ``run_at``; each group is one contiguous range of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any, Final

from jobqueue.store.rows import getter_of

__all__ = ["IN_GROUP", "pending_groups"]


#: One ``(priority, started)`` group of pending jobs: a contiguous range of ``jobs_pending``.
IN_GROUP: Final = "status = 'pending' AND priority = ? AND (started_at IS NOT NULL) = ?"
_GROUP_COLUMNS: Final = "priority, (started_at IS NOT NULL) AS started"
_FIRST_GROUP: Final = (
    f"SELECT {_GROUP_COLUMNS} FROM jobs WHERE status = 'pending' "
    "ORDER BY priority DESC, (started_at IS NOT NULL) DESC LIMIT 1"
)
_NEW_IN_PRIORITY: Final = (
    f"SELECT {_GROUP_COLUMNS} FROM jobs WHERE status = 'pending' AND priority = ? "
    "AND (started_at IS NOT NULL) = 0 LIMIT 1"
)
_NEXT_PRIORITY: Final = (
    f"SELECT {_GROUP_COLUMNS} FROM jobs WHERE status = 'pending' AND priority < ? "
    "ORDER BY priority DESC, (started_at IS NOT NULL) DESC LIMIT 1"
)


def pending_groups(conn: sqlite3.Connection) -> Iterator[tuple[int, int]]:
    """The ``(priority, started)`` pairs of pending jobs, in claim order (a lazy skip-scan).

    ``jobs_pending`` orders pending jobs by priority, then started-before
    first, then ``run_at``: within one pair the due jobs are a prefix of the
    range, so the claim reads each pair's range up to its first job not yet
    due. Finding the next pair is one index seek, so the cost grows with the
    number of distinct priorities, never with the number of delayed jobs.
    """
    found = _one_group(conn, _FIRST_GROUP, ())
    while found is not None:
        yield found
        priority, started = found
        found = _one_group(conn, _NEW_IN_PRIORITY, (priority,)) if started else None
        if found is None:
            found = _one_group(conn, _NEXT_PRIORITY, (priority,))


def _one_group(
    conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]
) -> tuple[int, int] | None:
    cur = conn.execute(sql, params)
    rows = cur.fetchall()  # all (at most one): no statement is left open between the steps
    if not rows:
        return None
    priority, started = getter_of(sql, cur, "priority", "started")(rows[0])
    return priority, started
