"""The jobs table: the :class:`Job` record and the statements run on the db thread.

Functions here take the raw ``sqlite3.Connection`` and run inside a
transaction opened by the caller (the group-commit writer) or, for reads,
in autocommit mode. Every statement is parameterised.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from jobqueue import codec
from jobqueue.errors import (
    DuplicateJobError,
    InvalidTransition,
    JobNotFoundError,
    StoreCorruptedError,
)
from jobqueue.status import SOURCES, TERMINAL, TaskStatus, parse_status, requestable
from jobqueue.store.rows import by_name, getter_of
from jobqueue.store.writer import Batchable

__all__ = [
    "COLUMNS",
    "INSERT",
    "IN_GROUP",
    "Claimed",
    "Counts",
    "Finished",
    "Job",
    "JobSummary",
    "NewJob",
    "count_by_status",
    "counts",
    "example_with_status",
    "fetch",
    "finished_or_status",
    "insert_jobs",
    "list_jobs",
    "pending_groups",
    "running_by_owner",
    "set_status",
    "summaries",
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
    def from_row(cls, row: sqlite3.Row) -> Job:
        """Build from a row selected with :data:`COLUMNS` (read by column name).

        Raises:
            StoreCorruptedError: the stored payload or result is not JSON.
        """
        job_id = row["id"]
        try:
            payload, result = codec.decode(row["payload"]), codec.decode(row["result"])
        except ValueError as exc:  # JSONDecodeError, bad UTF-8: written by something else
            raise StoreCorruptedError(
                f"job {job_id!r}: its stored payload or result is not valid JSON ({exc}); "
                "the row was changed outside jobqueue. Cancel it or delete the row; "
                "other jobs are unaffected"
            ) from None
        return cls(
            id=job_id,
            handler=row["handler"],
            status=parse_status(row["status"], job_id),
            payload=payload,
            result=result,
            error=row["error_message"],
            error_type=row["error_type"],
            traceback=row["traceback"],
            reason=row["reason"],
            session_id=row["session_id"],
            description=row["description"],
            priority=row["priority"],
            attempt=row["attempt"],
            max_retries=row["max_retries"],
            timeout=row["timeout"],
            run_at=row["run_at"],
            idempotency_key=row["idempotency_key"],
            owner=row["owner"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            started_at=row["started_at"],
            completed_at=row["completed_at"],
            report_path=row["report_path"],
            workspace=row["workspace"],
            concurrency_key=row["concurrency_key"],
            concurrency_limit=row["concurrency_limit"],
            control=row["control"],
        )


@dataclass(slots=True)
class Finished:
    """A job's terminal record as ``wait()`` reports it (``result`` is its JSON text).

    Built from the outcome a runner committed (no read), or read back by
    :func:`finished_or_status`.
    """

    id: str
    handler: str | None
    status: TaskStatus
    result: str | None
    error: str | None
    error_type: str | None
    traceback: str | None
    reason: str | None

    def value(self) -> Any:
        """The decoded result (``None`` when there is none).

        Raises:
            StoreCorruptedError: the stored result is not JSON (written by something else).
        """
        try:
            return codec.decode(self.result)
        except ValueError as exc:
            raise StoreCorruptedError(
                f"job {self.id!r}: its stored result is not valid JSON ({exc}); the row was "
                "changed outside jobqueue. Cancel it or delete the row; other jobs are unaffected"
            ) from None

    @property
    def size(self) -> int:
        """Characters of text this record holds (what keeping it in memory costs)."""
        n = len(self.result) if self.result else 0
        if self.error:
            n += len(self.error)
        if self.traceback:
            n += len(self.traceback)
        return n


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
