"""The steps table of durable workflows: the :class:`Step` record and its statements.

Functions here run on the database thread. Writes go through the group-commit
writer (inside its transaction); :func:`list_steps` also serves plain reads.
A step row is keyed by ``(job_id, name)``; its ``status`` is one of
:data:`STEP_STATUSES`. Only a ``completed`` row is ever replayed: a row left
``running`` by a crash or a cancellation is a step that did not finish, and
it runs again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from jobqueue import codec
from jobqueue.errors import JobNotFoundError
from jobqueue.store.rows import by_name

__all__ = [
    "STEP_STATUSES",
    "Step",
    "StepRow",
    "end_sleep",
    "list_steps",
    "load_steps",
    "mark_step",
    "reset_running_steps",
    "start_sleep",
    "start_step",
]

#: ``pending`` (reached but not finished: interrupted, or waiting to run again),
#: ``running``, ``sleeping`` (a durable sleep before its deadline), ``completed``, ``failed``.
STEP_STATUSES: Final = ("pending", "running", "sleeping", "completed", "failed")

_COLUMNS: Final = (
    "job_id, name, seq, kind, status, result, error, attempts, started_at, completed_at, wake_at"
)


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a workflow job, as ``service.get_steps(job_id)`` returns it.

    Attributes:
        job_id: the job the step belongs to.
        name: the step name (``map`` items are ``"name[i]"``).
        seq: the order in which the job first reached the step (0, 1, ...).
        kind: ``"step"`` or ``"sleep"``.
        status: ``pending``, ``running``, ``sleeping``, ``completed`` or ``failed``.
        result: the stored JSON result (``None`` until completed; always ``None`` for a sleep).
        error: the last attempt's error, ``"Type: message"``.
        attempts: how many times the step function was started (0 for a sleep).
        started_at: Unix time the latest attempt (or the sleep) started.
        completed_at: Unix time it completed or failed.
        wake_at: for a sleep, its deadline.
    """

    job_id: str
    name: str
    seq: int
    kind: str
    status: str
    result: Any
    error: str | None
    attempts: int
    started_at: float | None
    completed_at: float | None
    wake_at: float | None

    @property
    def duration(self) -> float | None:
        """Seconds from the latest start to completion (``None`` while unfinished)."""
        if self.started_at is None or self.completed_at is None:
            return None
        return self.completed_at - self.started_at


@dataclass(frozen=True, slots=True)
class StepRow:
    """What a running workflow needs of a stored step (``result`` still JSON text)."""

    seq: int
    kind: str
    status: str
    result: str | None
    wake_at: float | None


def load_steps(conn: sqlite3.Connection, job_id: str) -> dict[str, StepRow]:
    """Every stored step of the job, by name (read at a run's first step)."""
    rows = by_name(conn).execute(
        "SELECT name, seq, kind, status, result, wake_at FROM steps WHERE job_id = ?", (job_id,)
    )
    return {
        r["name"]: StepRow(
            seq=r["seq"],
            kind=r["kind"],
            status=r["status"],
            result=r["result"],
            wake_at=r["wake_at"],
        )
        for r in rows
    }


def start_step(conn: sqlite3.Connection, job_id: str, name: str, seq: int, now: float) -> None:
    """An attempt of the step starts: ``running``, ``attempts + 1``."""
    conn.execute(
        "INSERT INTO steps (job_id, name, seq, kind, status, attempts, started_at) "
        "VALUES (?, ?, ?, 'step', 'running', 1, ?) ON CONFLICT (job_id, name) DO UPDATE SET "
        "status = 'running', attempts = attempts + 1, started_at = excluded.started_at, "
        "error = NULL, completed_at = NULL",
        (job_id, name, seq, now),
    )


def mark_step(
    conn: sqlite3.Connection,
    job_id: str,
    name: str,
    seq: int,
    status: str,
    result: str | None,
    error: str | None,
    now: float,
) -> None:
    """Record how the step's latest attempt ended (``completed``, ``failed`` or ``pending``).

    An upsert, so the outcome is kept even if the ``running`` mark was never
    written. A ``completed`` row is never changed again.
    """
    done = now if status in ("completed", "failed") else None
    conn.execute(
        "INSERT INTO steps (job_id, name, seq, kind, status, result, error, attempts, "
        "started_at, completed_at) VALUES (?, ?, ?, 'step', ?, ?, ?, 1, ?, ?) "
        "ON CONFLICT (job_id, name) DO UPDATE SET status = excluded.status, "
        "result = excluded.result, error = excluded.error, "
        "completed_at = excluded.completed_at WHERE steps.status <> 'completed'",
        (job_id, name, seq, status, result, error, now, done),
    )


def start_sleep(
    conn: sqlite3.Connection, job_id: str, name: str, seq: int, wake_at: float, now: float
) -> float:
    """Store a durable sleep's deadline; returns the stored one (the first call's wins)."""
    row = (
        by_name(conn)
        .execute(
            "INSERT INTO steps (job_id, name, seq, kind, status, started_at, wake_at) "
            "VALUES (?, ?, ?, 'sleep', 'sleeping', ?, ?) ON CONFLICT (job_id, name) "
            "DO UPDATE SET status = steps.status RETURNING wake_at",
            (job_id, name, seq, now, wake_at),
        )
        .fetchone()
    )
    stored = None if row is None else row["wake_at"]
    return wake_at if stored is None else float(stored)


def end_sleep(conn: sqlite3.Connection, job_id: str, name: str, now: float) -> None:
    """A durable sleep reached its deadline."""
    conn.execute(
        "UPDATE steps SET status = 'completed', completed_at = ? "
        "WHERE job_id = ? AND name = ? AND status <> 'completed'",
        (now, job_id, name),
    )


def reset_running_steps(conn: sqlite3.Connection, job_ids: Sequence[str]) -> int:
    """Steps left ``running`` by a run that ended without finishing them become ``pending``."""
    if not job_ids:
        return 0
    return conn.execute(
        "UPDATE steps SET status = 'pending' WHERE status = 'running' "
        f"AND job_id IN ({', '.join('?' * len(job_ids))})",
        tuple(job_ids),
    ).rowcount


def list_steps(conn: sqlite3.Connection, job_id: str) -> list[Step]:
    """The job's steps in the order it reached them.

    Raises:
        JobNotFoundError: no such job.
    """
    rows = (
        by_name(conn)
        .execute(f"SELECT {_COLUMNS} FROM steps WHERE job_id = ? ORDER BY seq, name", (job_id,))
        .fetchall()
    )
    if not rows and conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
        raise JobNotFoundError(job_id)
    return [
        Step(
            job_id=r["job_id"],
            name=r["name"],
            seq=r["seq"],
            kind=r["kind"],
            status=r["status"],
            result=codec.decode(r["result"]),
            error=r["error"],
            attempts=r["attempts"],
            started_at=r["started_at"],
            completed_at=r["completed_at"],
            wake_at=r["wake_at"],
        )
        for r in rows
    ]
