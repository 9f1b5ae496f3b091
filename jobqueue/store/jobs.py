"""The jobs table: the :class:`Job` record and the statements run on the db thread.

Functions here take the raw ``sqlite3.Connection`` and run inside a
transaction opened by the caller (the group-commit writer) or, for reads,
in autocommit mode. Every statement is parameterised.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from jobqueue import codec
from jobqueue.errors import (
    DuplicateJobError,
    InvalidTransition,
    JobNotFoundError,
    StoreCorruptedError,
)
from jobqueue.status import SOURCES, TERMINAL, TRANSITIONS, TaskStatus, parse_status

__all__ = [
    "COLUMNS",
    "Claimed",
    "Job",
    "NewJob",
    "count_by_status",
    "fetch",
    "insert_jobs",
    "list_jobs",
    "set_status",
    "upsert_running",
]

COLUMNS: Final = (
    "id, handler, status, payload, result, error_message, error_type, traceback, reason, "
    "session_id, description, "
    "priority, attempt, max_retries, timeout, run_at, idempotency_key, owner, "
    "created_at, updated_at, started_at, completed_at, report_path, workspace, "
    "concurrency_key, concurrency_limit, control"
)


@dataclass(frozen=True, slots=True)
class Job:
    """A job as stored. Returned by ``submit``, ``get`` and ``list``."""

    id: str
    handler: str | None
    status: TaskStatus
    payload: Any
    result: Any
    error: str | None
    error_type: str | None
    traceback: str | None
    reason: str | None
    session_id: str | None
    description: str | None
    priority: int
    attempt: int
    max_retries: int
    timeout: float | None
    run_at: float
    idempotency_key: str | None
    owner: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    completed_at: float | None
    report_path: str | None
    workspace: str | None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    #: A control request (cancel/stop/pause/resume) not yet applied by the owner.
    control: str | None = None

    @property
    def done(self) -> bool:
        """True once the job is in a terminal status."""
        return self.status in TERMINAL

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Job:
        """Build from a row selected with :data:`COLUMNS`.

        Raises:
            StoreCorruptedError: the stored payload or result is not JSON.
        """
        try:
            payload, result = codec.decode(row[3]), codec.decode(row[4])
        except ValueError as exc:  # JSONDecodeError, bad UTF-8: written by something else
            raise StoreCorruptedError(
                f"job {row[0]!r}: its stored payload or result is not valid JSON ({exc}); "
                "the row was changed outside jobqueue. Cancel it or delete the row; "
                "other jobs are unaffected"
            ) from None
        return cls(row[0], row[1], parse_status(row[2], row[0]), payload, result, *row[5:])


@dataclass(slots=True)  # not frozen: a frozen record costs several µs per job
class NewJob:
    """A row to insert. ``payload`` is already-encoded JSON text."""

    id: str
    handler: str | None
    payload: str | None
    status: TaskStatus
    created_at: float
    run_at: float
    priority: int = 0
    max_retries: int = 0
    timeout: float | None = None
    idempotency_key: str | None = None
    session_id: str | None = None
    description: str | None = None
    owner: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None

    def as_pending(self, payload: Any) -> Job:
        """The :class:`Job` this row is once inserted (``payload`` as the caller gave it)."""
        # Positional, in Job's field order: keywords cost a third more per job.
        return Job(
            self.id,
            self.handler,
            TaskStatus.PENDING,
            payload,
            None,  # result
            None,  # error
            None,  # error_type
            None,  # traceback
            None,  # reason
            self.session_id,
            self.description,
            self.priority,
            0,  # attempt
            self.max_retries,
            self.timeout,
            self.run_at,
            self.idempotency_key,
            None,  # owner
            self.created_at,
            self.created_at,  # updated_at
            None,  # started_at
            None,  # completed_at
            None,  # report_path
            None,  # workspace
            self.concurrency_key,
            self.concurrency_limit,
        )

    def copy_with(self, job_id: str, payload: str | None) -> NewJob:
        """This row's options for another job (``submit_many``: validated once)."""
        return NewJob(
            job_id,
            self.handler,
            payload,
            self.status,
            self.created_at,
            self.run_at,
            self.priority,
            self.max_retries,
            self.timeout,
            self.idempotency_key,
            self.session_id,
            self.description,
            self.owner,
            self.concurrency_key,
            self.concurrency_limit,
        )

    def params(self) -> tuple[Any, ...]:
        """Parameters for :data:`_INSERT`."""
        started = self.created_at if self.status is TaskStatus.RUNNING else None
        return (
            self.id,
            self.handler,
            self.payload,
            self.status._value_,
            self.created_at,
            self.created_at,
            started,
            self.run_at,
            self.priority,
            self.max_retries,
            self.timeout,
            self.idempotency_key,
            self.session_id,
            self.description,
            self.owner,
            self.concurrency_key,
            self.concurrency_limit,
        )


@dataclass(slots=True)  # not frozen: a frozen record costs several µs per job
class Claimed:
    """What the scheduler needs to start a claimed job (payload still JSON text)."""

    id: str
    handler: str
    payload: str | None
    attempt: int
    max_retries: int
    timeout: float | None
    priority: int
    run_at: float
    concurrency_key: str | None = None
    #: Highest persisted event seq of this job (0 if none, or the log is off).
    event_seq: int = 0


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


def _insert_one(conn: sqlite3.Connection, row: NewJob) -> Job | None:
    if row.idempotency_key is not None:
        existing = conn.execute(
            f"SELECT {COLUMNS} FROM jobs WHERE idempotency_key = ?", (row.idempotency_key,)
        ).fetchone()
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
    terminal = target in TERMINAL
    sql = (
        "UPDATE jobs SET status = ?, updated_at = ?, "
        "result = coalesce(?, result), error_message = coalesce(?, error_message), "
        "reason = coalesce(?, reason), "
        "completed_at = CASE WHEN ? THEN ? ELSE completed_at END, "
        "started_at = CASE WHEN ? = 'running' AND started_at IS NULL THEN ? ELSE started_at END, "
        "attempt = CASE WHEN ? = 'pending' THEN attempt + 1 ELSE attempt END, "
        "run_at = coalesce(?, run_at), "
        "owner = CASE WHEN ? THEN NULL ELSE owner END "
        f"WHERE id = ? AND status IN ({', '.join('?' * len(sources))}) RETURNING status"
    )
    params: list[Any] = [target.value, now, result, error, reason, terminal, now]
    params += [target.value, now, target.value, run_at, terminal or target == "pending"]
    params += [job_id, *(s.value for s in sources)]
    if conn.execute(sql, params).fetchone() is None:
        cur = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if cur is None:
            raise JobNotFoundError(job_id)
        current = parse_status(cur[0], job_id)
        raise InvalidTransition(
            job_id, current.value, target.value, sorted(s.value for s in TRANSITIONS[current])
        )


def fetch(conn: sqlite3.Connection, job_id: str) -> Job:
    """Read one job. Raises :class:`JobNotFoundError`."""
    row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobNotFoundError(job_id)
    return Job.from_row(row)


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
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
        (*params, limit, offset),
    ).fetchall()
    return [Job.from_row(r) for r in rows]


def count_by_status(conn: sqlite3.Connection) -> dict[str, int]:
    """Number of jobs per stored status value."""
    return {r[0]: r[1] for r in conn.execute("SELECT status, count(*) FROM jobs GROUP BY status")}
