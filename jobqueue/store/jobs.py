"""The jobs table: the statements run on the db thread (records in :mod:`.records`).

Functions here take the raw ``sqlite3.Connection`` and run inside a
transaction opened by the caller (the group-commit writer) or, for reads,
in autocommit mode. Every statement is parameterised.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Final

from jobqueue.errors import (
    DuplicateJobError,
    InvalidTransition,
    JobNotFoundError,
)
from jobqueue.status import SOURCES, TERMINAL, TaskStatus, parse_status, requestable
from jobqueue.store.records import COLUMNS, Claimed, Finished, Job, NewJob
from jobqueue.store.rows import by_name
from jobqueue.store.writer import Batchable

__all__ = [
    "COLUMNS",
    "INSERT",
    "Claimed",
    "Finished",
    "Job",
    "NewJob",
    "fetch",
    "finished_or_status",
    "insert_jobs",
    "list_jobs",
    "set_status",
    "upsert_running",
]
_INSERT: Final = (
    "INSERT INTO jobs (id, handler, payload, status, created_at, updated_at, started_at, "
    "run_at, priority, max_retries, timeout, idempotency_key, session_id, description, owner, "
    "concurrency_key, concurrency_limit) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_jobs(conn: sqlite3.Connection, rows: Sequence[NewJob]) -> list[Job | None]:
    """Insert rows; for each, ``None`` if inserted or the existing job for a reused key.

    Raises:
        DuplicateJobError: a caller-given id is taken (nothing of this call is kept).
    """
    if len(rows) == 1 and rows[0].idempotency_key is None:  # submit()
        try:
            conn.execute(_INSERT, rows[0].params())
        except sqlite3.IntegrityError:
            raise DuplicateJobError(rows[0].id) from None
        return [None]
    if all(r.idempotency_key is None for r in rows):
        try:  # fast path: one executemany
            conn.executemany(_INSERT, [r.params() for r in rows])
            return [None] * len(rows)
        except sqlite3.IntegrityError:
            pass  # find the offender row by row below, inside a savepoint
    conn.execute("SAVEPOINT insert_jobs")
    try:
        out = [_insert_one(conn, r) for r in rows]
    except BaseException:
        conn.execute("ROLLBACK TO insert_jobs")
        conn.execute("RELEASE insert_jobs")
        raise
    conn.execute("RELEASE insert_jobs")
    return out


def _insert_groups(
    conn: sqlite3.Connection, groups: Sequence[tuple[Sequence[NewJob]]]
) -> list[list[Job | None]]:
    """:func:`insert_jobs` for the rows of several callers: one ``executemany`` for all.

    Raises on the first bad row (a duplicate id, a repeated idempotency key): the
    writer then undoes it and inserts each caller's rows on their own.
    """
    if any(r.idempotency_key is not None for (rows,) in groups for r in rows):
        raise _Separately
    conn.executemany(_INSERT, [r.params() for (rows,) in groups for r in rows])
    return [[None] * len(rows) for (rows,) in groups]


class _Separately(Exception):
    """Rows with idempotency keys are looked up one caller at a time."""


#: :func:`insert_jobs` as the writer batches it: the submits of one batch share a statement.
INSERT: Final[Batchable[[Sequence[NewJob]], list[Job | None]]] = Batchable(
    insert_jobs, _insert_groups
)


def _insert_one(conn: sqlite3.Connection, row: NewJob) -> Job | None:
    if row.idempotency_key is not None:
        existing = (
            by_name(conn)
            .execute(
                f"SELECT {COLUMNS} FROM jobs WHERE idempotency_key = ?", (row.idempotency_key,)
            )
            .fetchone()
        )
        if existing is not None:
            return Job.from_row(existing)
    try:
        conn.execute(_INSERT, row.params())
    except sqlite3.IntegrityError:
        raise DuplicateJobError(row.id) from None
    return None


def upsert_running(conn: sqlite3.Connection, row: NewJob) -> None:
    """Record a bare-coroutine job as running; a restart of the same id starts a new run."""
    conn.execute(
        _INSERT + " ON CONFLICT(id) DO UPDATE SET status = 'running', attempt = attempt + 1, "
        "result = NULL, error_message = NULL, reason = NULL, completed_at = NULL, "
        "started_at = excluded.started_at, updated_at = excluded.updated_at, "
        "owner = excluded.owner, description = excluded.description",
        row.params(),
    )


def set_status(
    conn: sqlite3.Connection,
    job_id: str,
    target: TaskStatus,
    *,
    expected: Sequence[TaskStatus] | None = None,
    result: str | None = None,
    error: str | None = None,
    reason: str | None = None,
    run_at: float | None = None,
    now: float | None = None,
) -> None:
    """Move one job to ``target`` if its current status allows it.

    The guard is in the ``WHERE`` clause, so a concurrent change by another
    process cannot be overwritten.

    Raises:
        JobNotFoundError: no such job.
        InvalidTransition: the table (or ``expected``) does not allow it; nothing written.
    """
    now = time.time() if now is None else now
    sources = tuple(expected) if expected is not None else SOURCES[target]
    marks = ", ".join(f":source{i}" for i in range(len(sources)))
    sql = (
        "UPDATE jobs SET status = :status, updated_at = :now, "
        "result = coalesce(:result, result), error_message = coalesce(:error, error_message), "
        "reason = coalesce(:reason, reason), "
        "completed_at = CASE WHEN :terminal THEN :now ELSE completed_at END, "
        "started_at = CASE WHEN :status = 'running' AND started_at IS NULL THEN :now "
        "ELSE started_at END, "
        "attempt = CASE WHEN :status = 'pending' THEN attempt + 1 ELSE attempt END, "
        "run_at = coalesce(:run_at, run_at), "
        "owner = CASE WHEN :drop_owner THEN NULL ELSE owner END "
        f"WHERE id = :id AND status IN ({marks}) RETURNING status"
    )
    terminal = target in TERMINAL
    params: dict[str, Any] = {
        "status": target.value,
        "now": now,
        "result": result,
        "error": error,
        "reason": reason,
        "terminal": terminal,
        "run_at": run_at,
        "drop_owner": terminal or target is TaskStatus.PENDING,
        "id": job_id,
    }
    params.update((f"source{i}", s.value) for i, s in enumerate(sources))
    if conn.execute(sql, params).fetchone() is None:
        cur = by_name(conn).execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if cur is None:
            raise JobNotFoundError(job_id)
        current = parse_status(cur["status"], job_id)
        raise InvalidTransition(job_id, current.value, target.value, requestable(current))


def fetch(conn: sqlite3.Connection, job_id: str) -> Job:
    """Read one job. Raises :class:`JobNotFoundError`."""
    row = by_name(conn).execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobNotFoundError(job_id)
    return Job.from_row(row)


def finished_or_status(
    conn: sqlite3.Connection, ids: Sequence[str]
) -> dict[str, Finished | TaskStatus]:
    """For each id found: its :class:`Finished` record if terminal, else its status.

    One statement for all of them (the batched read of ``wait()``); a missing
    id is absent from the result.
    """
    cur = by_name(conn).execute(
        "SELECT id, handler, status, result, error_message, error_type, traceback, reason "
        f"FROM jobs WHERE id IN ({', '.join('?' * len(ids))})",
        tuple(ids),
    )
    out: dict[str, Finished | TaskStatus] = {}
    for r in cur:
        job_id = r["id"]
        status = parse_status(r["status"], job_id)
        out[job_id] = (
            Finished(
                job_id,
                r["handler"],
                status,
                r["result"],
                r["error_message"],
                r["error_type"],
                r["traceback"],
                r["reason"],
            )
            if status in TERMINAL
            else status
        )
    return out


def list_jobs(
    conn: sqlite3.Connection,
    status: Sequence[TaskStatus] | None,
    handler: str | None,
    session_id: str | None,
    limit: int,
    offset: int,
) -> list[Job]:
    """Read jobs, newest first, filtered."""
    where: list[str] = []
    params: list[Any] = []
    if status:
        where.append(f"status IN ({', '.join('?' * len(status))})")
        params += [s.value for s in status]
    if handler is not None:
        where.append("handler = ?")
        params.append(handler)
    if session_id is not None:
        where.append("session_id = ?")
        params.append(session_id)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = (
        by_name(conn)
        .execute(
            f"SELECT {COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        .fetchall()
    )
    return [Job.from_row(r) for r in rows]
