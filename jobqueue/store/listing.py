"""The dashboard's reads: a keyset page of jobs, and the overview's aggregates.

A page is newest first and continues from an opaque cursor (the last row's
``seq``, or its id when filtering by an id prefix), never an ``OFFSET``: each
page costs the same at any depth and any table size. Migration 007's
``jobs_list`` makes each (handler, status) pair a range read in ``seq`` order:
a filter on statuses or a handler reads one range per pair (the handlers
found by a skip-scan of the index) and merges them. Pending jobs are not in
that index (a submit writes no entry there): they are read from the newest
rows of the table, where they mostly are, then from the claim's index. The overview reads at most
:data:`RECENT_ROWS` of the newest jobs for its throughput and latency charts.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from jobqueue.status import TaskStatus
from jobqueue.store import eventlog, jobs, lookup, retry, steps
from jobqueue.store.rows import by_name

__all__ = [
    "RECENT_ROWS",
    "ROW_COLUMNS",
    "WINDOW",
    "Detail",
    "Filters",
    "Overview",
    "Page",
    "data_version",
    "detail",
    "overview",
    "page",
]

#: What a list row shows (never the payload or result: they can be large).
ROW_COLUMNS: Final = (
    "seq, id, handler, status, session_id, description, priority, attempt, max_retries, "
    "reason, substr(error_message, 1, 200) AS error, created_at, started_at, completed_at, "
    "control"
)
#: Newest rows a page of pending jobs reads from the table before the claim's index.
WINDOW: Final = 50_000
#: Newest jobs the overview's throughput and latency charts are computed from.
RECENT_ROWS: Final = 5_000
_STATUSES: Final = tuple(s.value for s in TaskStatus)
#: The expressions ``jobs_list`` indexes, and its condition (migration 007 says why).
_HANDLER: Final = "ifnull(handler, '')"
_STATUS: Final = "(status || '')"
_LISTED: Final = "status <> 'pending'"


@dataclass(frozen=True, slots=True)
class Filters:
    """What the job list is narrowed to (``None``/empty: no filter)."""

    statuses: tuple[str, ...] = ()
    handler: str | None = None
    session_id: str | None = None
    id_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of rows (dicts of :data:`ROW_COLUMNS`) and the cursor of the next, if any."""

    rows: list[dict[str, Any]]
    next: str | None


@dataclass(frozen=True, slots=True)
class Detail:
    """One job as its page shows it."""

    job: jobs.Job
    steps: list[steps.Step]
    runs: list[retry.RetryRecord]  # how the runs a retry followed had ended
    last_seq: int  # its newest logged event (0: none)


@dataclass(frozen=True, slots=True)
class Overview:
    """Counts and recent activity, as the overview shows them.

    Attributes:
        by_status: jobs per status.
        by_handler: per handler (``""``: bare coroutine jobs), jobs per status.
        oldest_due: ``run_at`` of the oldest due pending job, or ``None``.
        finished: ``(completed_at, seconds from created to completed)`` of the
            newest finished jobs among the last :data:`RECENT_ROWS` jobs.
    """

    by_status: dict[str, int]
    by_handler: dict[str, dict[str, int]]
    oldest_due: float | None
    finished: list[tuple[float, float]] = field(default_factory=list)


def page(conn: sqlite3.Connection, filters: Filters, cursor: str | None, limit: int) -> Page:
    """Up to ``limit`` jobs after ``cursor`` (``None``: the newest), newest first.

    Raises:
        ValueError: ``cursor`` is not one this function returned.
    """
    if filters.id_prefix:
        return _by_id(conn, filters, cursor, limit)
    before = int(cursor) if cursor else None  # ValueError on a bad cursor
    if filters.session_id is not None:
        rows = _select(conn, "session_id = ?", [filters.session_id], filters, before, limit)
    elif filters.handler is not None or filters.statuses:
        rows = _merged(conn, filters, before, limit)
    else:
        rows = _select(conn, "1", [], filters, before, limit)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, str(rows[-1]["seq"]) if more else None)


def _select(
    conn: sqlite3.Connection,
    where: str,
    params: list[Any],
    filters: Filters,
    before: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """One read in ``seq`` order, the other filters applied to its rows."""
    clauses, args = [where], list(params)
    if before is not None:
        clauses.append("seq < ?")
        args.append(before)
    _residual(filters, clauses, args, skip="session" if "session_id" in where else "")
    sql = f"SELECT {ROW_COLUMNS} FROM jobs WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?"
    return [dict(r) for r in by_name(conn).execute(sql, (*args, limit + 1))]


def _merged(
    conn: sqlite3.Connection, filters: Filters, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """One range of ``jobs_list`` per (handler, status), and the pending jobs; merged."""
    statuses = filters.statuses or _STATUSES
    handlers = [filters.handler] if filters.handler is not None else _handlers(conn)
    runs: list[list[dict[str, Any]]] = []
    for status in statuses:
        if status == "pending":  # not in jobs_list
            runs.append(_pending(conn, filters.handler, before, limit))
            continue
        for handler in handlers:
            clauses = [f"{_HANDLER} = ?", f"{_STATUS} = ?", _LISTED]
            args: list[Any] = [handler, status]
            if before is not None:
                clauses.append("seq < ?")
                args.append(before)
            sql = (
                f"SELECT {ROW_COLUMNS} FROM jobs WHERE {' AND '.join(clauses)} "
                "ORDER BY seq DESC LIMIT ?"
            )
            runs.append([dict(r) for r in by_name(conn).execute(sql, (*args, limit + 1))])
    merged = heapq.merge(*runs, key=lambda r: r["seq"], reverse=True)
    return [r for _, r in zip(range(limit + 1), merged, strict=False)]


def _pending(
    conn: sqlite3.Connection, handler: str | None, before: int | None, limit: int
) -> list[dict[str, Any]]:
    """Pending jobs newest first: the newest :data:`WINDOW` rows, then ``jobs_pending``.

    Pending jobs are mostly the newest rows, found in the first read (a range
    of the table). Older ones (delayed far ahead, under a long history) come
    from the claim's index, sorted: the cost grows with the pending jobs, not
    with the table.
    """
    top = before if before is not None else conn.execute("SELECT max(seq) FROM jobs").fetchone()[0]
    if top is None:
        return []
    if before is None:
        top += 1
    only = Filters(("pending",), handler)
    floor = max(top - WINDOW, 0)
    rows = _select(conn, "status = 'pending' AND seq >= ?", [floor], only, top, limit)
    if len(rows) > limit or floor == 0:
        return rows
    clauses, args = ["status = 'pending'", "seq < ?"], [floor]
    if handler is not None:
        clauses.append("handler = ?")
        args.append(handler)
    sql = (
        f"SELECT {ROW_COLUMNS} FROM jobs INDEXED BY jobs_pending WHERE {' AND '.join(clauses)} "
        "ORDER BY seq DESC LIMIT ?"
    )
    older = by_name(conn).execute(sql, (*args, limit + 1 - len(rows)))
    return rows + [dict(r) for r in older]


def _handlers(conn: sqlite3.Connection) -> list[str]:
    """The handler names in ``jobs_list`` (``""``: coroutine jobs), one index seek each."""
    found: list[str] = []
    sql = f"SELECT min({_HANDLER}) AS h FROM jobs WHERE {_HANDLER} > ? AND {_LISTED}"
    first = conn.execute(
        f"SELECT min({_HANDLER}) AS h FROM jobs WHERE {_HANDLER} >= '' AND {_LISTED}"
    ).fetchone()[0]
    name: str | None = first
    while name is not None:
        found.append(name)
        name = conn.execute(sql, (name,)).fetchone()[0]
    return found


def _by_id(conn: sqlite3.Connection, filters: Filters, cursor: str | None, limit: int) -> Page:
    """Jobs whose id starts with the prefix, by id descending (time order for made ids)."""
    prefix = filters.id_prefix or ""
    clauses = ["id >= ?", "id < ?"]
    args: list[Any] = [prefix, prefix + "\U0010ffff"]
    if cursor is not None:
        clauses.append("id < ?")
        args.append(cursor)
    _residual(filters, clauses, args, skip="")
    sql = f"SELECT {ROW_COLUMNS} FROM jobs WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?"
    rows = [dict(r) for r in by_name(conn).execute(sql, (*args, limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, rows[-1]["id"] if more else None)


def _residual(filters: Filters, clauses: list[str], args: list[Any], *, skip: str) -> None:
    """The filters the chosen index does not apply, as conditions on its rows."""
    if filters.statuses:
        clauses.append(f"status IN ({', '.join('?' * len(filters.statuses))})")
        args.extend(filters.statuses)
    if filters.handler is not None:
        clauses.append("handler = ?")
        args.append(filters.handler)
    if filters.session_id is not None and skip != "session":
        clauses.append("session_id = ?")
        args.append(filters.session_id)


def overview(conn: sqlite3.Connection, now: float) -> Overview:
    """Counts by status and handler, the oldest due pending job, and recent finishes.

    One read transaction. The counts are a scan of ``jobs_handler_status`` alone
    (no table rows: ~60 ms at 1,000,000 jobs), the oldest due job a range of
    ``jobs_status``.
    """
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        cur = by_name(conn)
        by_status: dict[str, int] = {}
        by_handler: dict[str, dict[str, int]] = {}
        for r in cur.execute(
            f"SELECT {_HANDLER} AS handler, {_STATUS} AS status, count(*) AS n FROM jobs "
            f"WHERE {_LISTED} GROUP BY 1, 2"
        ):
            by_status[r["status"]] = by_status.get(r["status"], 0) + r["n"]
            by_handler.setdefault(r["handler"], {})[r["status"]] = r["n"]
        oldest = None
        for r in cur.execute(  # the pending jobs: a range of the claim's jobs_pending
            "SELECT coalesce(handler, '') AS handler, count(*) AS n, "
            "min(CASE WHEN run_at <= ? THEN run_at END) AS oldest "
            "FROM jobs WHERE status = 'pending' GROUP BY 1",
            (now,),
        ):
            by_status["pending"] = by_status.get("pending", 0) + r["n"]
            by_handler.setdefault(r["handler"], {})["pending"] = r["n"]
            if r["oldest"] is not None and (oldest is None or r["oldest"] < oldest):
                oldest = r["oldest"]
        finished = _recent(
            cur.execute(
                "SELECT created_at, completed_at FROM "
                "(SELECT created_at, completed_at FROM jobs ORDER BY seq DESC LIMIT ?) "
                "WHERE completed_at IS NOT NULL",
                (RECENT_ROWS,),
            )
        )
    finally:
        if own:
            conn.execute("COMMIT")
    return Overview(by_status, by_handler, oldest, finished)


def _recent(rows: Iterable[Sequence[Any]]) -> list[tuple[float, float]]:
    return sorted((r[1], max(r[1] - r[0], 0.0)) for r in rows)


def detail(conn: sqlite3.Connection, job_id: str) -> Detail:
    """The job, its steps, its earlier runs and its newest event's seq, in one snapshot.

    ``job_id`` may also be a unique prefix or suffix of the id (a short id, as
    the list shows it), as the command line takes.

    Raises:
        JobNotFoundError: no job's id is, starts or ends with ``job_id``.
        AmbiguousJobIdError: several do.
    """
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        job_id = lookup.resolve_id(conn, job_id)
        return Detail(
            jobs.fetch(conn, job_id),
            steps.list_steps(conn, job_id),
            retry.list_retries(conn, job_id),
            eventlog.max_seq(conn, job_id),
        )
    finally:
        if own:
            conn.execute("COMMIT")


def data_version(conn: sqlite3.Connection) -> tuple[int, int]:
    """What moves on every commit: ``PRAGMA data_version`` (commits of other
    connections) and this connection's own changes (an in-memory service's)."""
    (version,) = conn.execute("PRAGMA data_version").fetchone()
    return int(version), conn.total_changes
