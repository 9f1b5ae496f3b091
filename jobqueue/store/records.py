"""The jobs table's records: :class:`Job`, :class:`NewJob`, :class:`Claimed`, :class:`Finished`.

A row becomes a record by column name (:data:`COLUMNS`); the statements that read
and write them are in :mod:`jobqueue.store.jobs`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Final

from jobqueue import codec
from jobqueue.errors import StoreCorruptedError
from jobqueue.status import TERMINAL, TaskStatus, parse_status

__all__ = ["COLUMNS", "Claimed", "Finished", "Job", "NewJob"]

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
