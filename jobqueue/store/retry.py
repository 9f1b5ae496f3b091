"""Retrying ended jobs and cancelling many at once: the statements, run on the db thread.

A retry puts a failed, cancelled or stopped job back to ``pending`` under
the same id, due now. How its last run ended is first copied into the
``retries`` table (the job's own error fields are overwritten by the next
run). Every write here selects its jobs and changes them in the caller's
one transaction, with the status guard in the ``UPDATE``: a job that another
process changes meanwhile is either changed here or left alone, never half.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from jobqueue.errors import InvalidArgumentError, JobNotFoundError, NotRetryableError
from jobqueue.status import TaskStatus, parse_status, requestable
from jobqueue.store.jobs import Job, fetch
from jobqueue.store.rows import by_name

__all__ = [
    "CANCELLABLE",
    "RETRYABLE",
    "Changed",
    "RetryRecord",
    "cancel_matching",
    "cancel_waiting",
    "list_retries",
    "matching",
    "retry_job",
    "retry_jobs",
    "retry_matching",
]

S = TaskStatus
#: The statuses a retry starts from.
RETRYABLE: Final = (S.FAILED, S.CANCELLED, S.STOPPED)
#: The statuses a cancel acts on.
CANCELLABLE: Final = (S.PENDING, S.RUNNING, S.PAUSED)
_CHUNK: Final = 500  # ids per statement: under SQLite's limit of bound parameters


class Changed(NamedTuple):
    """A job a write acted on: its id, the status it had before, its handler."""

    id: str
    status: TaskStatus
    handler: str | None


@dataclass(frozen=True, slots=True)
class RetryRecord:
    """How a run of a job ended before ``retry()`` ran it again (``service.get_retries``).

    Attributes:
        job_id: the job.
        seq: 1 for the job's first retry, then 2, 3, ...
        attempt: the job's stored attempt when that run ended (it was attempt
            ``attempt + 1`` as people count them).
        status: ``failed``, ``cancelled`` or ``stopped``.
        reason, error, error_type, traceback: as the job's record held them then.
        started_at: when the job first started (``None``: it never ran).
        completed_at: when that run ended.
        retried_at: when ``retry()`` put it back to pending.
    """

    job_id: str
    seq: int
    attempt: int
    status: str
    reason: str | None
    error: str | None
    error_type: str | None
    traceback: str | None
    started_at: float | None
    completed_at: float | None
    retried_at: float


def matching(
    conn: sqlite3.Connection,
    statuses: Sequence[TaskStatus],
    handler: str | None,
    session_id: str | None,
    *,
    runnable: bool = False,
) -> list[Changed]:
    """The jobs in one of ``statuses`` with the given handler and session, oldest first.

    ``runnable``: only jobs with a handler (a Langflow ``start_job`` coroutine has none).
    """
    where = [f"status IN ({', '.join('?' * len(statuses))})"]
    if runnable:
        where.append("handler IS NOT NULL")
    params: list[Any] = [s.value for s in statuses]
    if handler is not None:
        where.append("handler = ?")
        params.append(handler)
    if session_id is not None:
        where.append("session_id = ?")
        params.append(session_id)
    rows = by_name(conn).execute(
        f"SELECT id, status, handler FROM jobs WHERE {' AND '.join(where)} ORDER BY seq", params
    )
    return [Changed(r["id"], parse_status(r["status"], r["id"]), r["handler"]) for r in rows]


def retry_job(conn: sqlite3.Connection, job_id: str, now: float) -> tuple[Changed, Job]:
    """Put one failed, cancelled or stopped job back to pending; returns it as it was,
    and as stored now.

    Raises:
        JobNotFoundError: no such job.
        NotRetryableError: it is pending, running, paused or completed; nothing written.
    """
    row = (
        by_name(conn)
        .execute("SELECT id, status, handler FROM jobs WHERE id = ?", (job_id,))
        .fetchone()
    )
    if row is None:
        raise JobNotFoundError(job_id)
    status = parse_status(row["status"], job_id)
    if status not in RETRYABLE:
        raise NotRetryableError(job_id, status.value, requestable(status))
    if row["handler"] is None:
        raise InvalidArgumentError(
            f"job {job_id!r} ran a coroutine given to start_job (Langflow), which cannot be "
            "started again from the store; call start_job again; nothing was changed"
        )
    job = Changed(job_id, status, row["handler"])
    retry_jobs(conn, [job], now)
    return job, fetch(conn, job_id)


def retry_jobs(conn: sqlite3.Connection, found: Sequence[Changed], now: float) -> None:
    """Record how each job's run ended, then make it pending and due now.

    ``found`` come from :func:`matching` or :func:`retry_job`, in this transaction.
    A job that ran before makes its next attempt (``attempt + 1``); one that
    never ran (cancelled while pending) makes its first. ``max_retries`` grows
    to that attempt if needed: a job whose retries were used up gets one more
    run, a job with retries left keeps them.
    """
    for start in range(0, len(found), _CHUNK):
        ids = [job.id for job in found[start : start + _CHUNK]]
        marks = ", ".join("?" * len(ids))
        conn.execute(
            "INSERT INTO retries (job_id, seq, attempt, status, reason, error_message, "
            "error_type, traceback, started_at, completed_at, retried_at) "
            "SELECT id, 1 + (SELECT count(*) FROM retries r WHERE r.job_id = jobs.id), "
            "attempt, status, reason, error_message, error_type, traceback, started_at, "
            f"completed_at, ? FROM jobs WHERE id IN ({marks}) "
            "AND status IN ('failed', 'cancelled', 'stopped')",
            (now, *ids),
        )
        conn.execute(
            "UPDATE jobs SET status = 'pending', reason = 'retried', result = NULL, "
            "attempt = attempt + (started_at IS NOT NULL), "
            "max_retries = max(max_retries, attempt + (started_at IS NOT NULL)), "
            "run_at = ?, updated_at = ?, completed_at = NULL, owner = NULL, heartbeat = NULL, "
            f"control = NULL WHERE id IN ({marks}) "
            "AND status IN ('failed', 'cancelled', 'stopped')",
            (now, now, *ids),
        )


def cancel_waiting(conn: sqlite3.Connection, found: Sequence[Changed], now: float) -> list[str]:
    """Cancel the pending and paused jobs of ``found``; returns the ids cancelled.

    Running jobs are left to their owners (the controller asks them).
    """
    done: list[str] = []
    waiting = [job.id for job in found if job.status in (S.PENDING, S.PAUSED)]
    for start in range(0, len(waiting), _CHUNK):
        ids = waiting[start : start + _CHUNK]
        rows = by_name(conn).execute(
            "UPDATE jobs SET status = 'cancelled', reason = 'cancelled', completed_at = ?, "
            "updated_at = ?, owner = NULL, heartbeat = NULL, control = NULL "
            f"WHERE id IN ({', '.join('?' * len(ids))}) AND status IN ('pending', 'paused') "
            "RETURNING id",
            (now, now, *ids),
        )
        done += [r["id"] for r in rows]
    return done


def retry_matching(
    conn: sqlite3.Connection,
    statuses: Sequence[TaskStatus],
    handler: str | None,
    session_id: str | None,
    now: float,
) -> list[Changed]:
    """Retry every job that matches (``statuses`` from :data:`RETRYABLE`); returns them."""
    found = matching(conn, statuses, handler, session_id, runnable=True)
    retry_jobs(conn, found, now)
    return found


def cancel_matching(
    conn: sqlite3.Connection,
    statuses: Sequence[TaskStatus],
    handler: str | None,
    session_id: str | None,
    now: float,
) -> tuple[list[Changed], set[str]]:
    """Cancel the pending and paused jobs that match; ``(every match, the ids cancelled)``.

    The running ones that match are left for the controller to cancel where they run.
    """
    found = matching(conn, statuses, handler, session_id)
    return found, set(cancel_waiting(conn, found, now))


def list_retries(conn: sqlite3.Connection, job_id: str) -> list[RetryRecord]:
    """The job's earlier runs that a retry followed, oldest first.

    Raises:
        JobNotFoundError: no such job.
    """
    cur = by_name(conn)
    if cur.execute("SELECT 1 AS x FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
        raise JobNotFoundError(job_id)
    rows = cur.execute(
        "SELECT job_id, seq, attempt, status, reason, error_message, error_type, traceback, "
        "started_at, completed_at, retried_at FROM retries WHERE job_id = ? ORDER BY seq",
        (job_id,),
    )
    return [
        RetryRecord(
            job_id=r["job_id"],
            seq=r["seq"],
            attempt=r["attempt"],
            status=r["status"],
            reason=r["reason"],
            error=r["error_message"],
            error_type=r["error_type"],
            traceback=r["traceback"],
            started_at=r["started_at"],
            completed_at=r["completed_at"],
            retried_at=r["retried_at"],
        )
        for r in rows
    ]
