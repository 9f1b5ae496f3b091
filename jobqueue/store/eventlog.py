"""The persisted event log (``persist_events=True``): its SQL and the per-job appender.

Each durable job's events are rows ``(job_id, seq, type, data, created_at)``
with ``seq`` = 1, 2, 3, ... per job, continuing across runs and restarts.
Rows are only ever appended (never updated), so a consumer that read up to
``seq`` N can resume with ``seq > N`` and see every later event exactly once.

Writes go through the group-commit :class:`~jobqueue.store.writer.Writer`
(consecutive appends of a batch are one ``executemany``); reads run on the
database thread through :meth:`Database.run`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import Any, Final

from jobqueue.errors import JobQueueError
from jobqueue.store import jobs
from jobqueue.store.jobs import Job
from jobqueue.store.rows import by_name
from jobqueue.store.writer import Batchable, Writer

__all__ = [
    "APPEND",
    "JobLog",
    "LogRow",
    "append",
    "append_many",
    "delete",
    "last_event",
    "max_seq",
    "read_after",
]

log = logging.getLogger("jobqueue.events")

#: ``(seq, type, data JSON text, created_at)``
LogRow = tuple[int, str, str, float]

_INSERT: Final = (
    "INSERT INTO events (job_id, seq, type, data, created_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (job_id, seq) DO NOTHING"
)


def append(
    conn: sqlite3.Connection, job_id: str, seq: int, event_type: str, data: str, created_at: float
) -> None:
    """Append one event (the writer appends in bulk: :data:`APPEND`)."""
    append_many(conn, [(job_id, seq, event_type, data, created_at)])


def append_many(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> list[None]:
    """Append events in one statement.

    Never raises on a taken ``(job_id, seq)``: an exception here would roll
    back the whole writer batch (other jobs' outcomes included). A conflict
    means two writers disagreed about a job's sequence, so it is logged.
    """
    before = conn.total_changes
    conn.executemany(_INSERT, rows)
    inserted = conn.total_changes - before
    if inserted < len(rows):
        log.warning(
            "event log: %d of %d event(s) not appended (their seq was taken), e.g. job %r",
            len(rows) - inserted,
            len(rows),
            rows[0][0],
        )
    return [None] * len(rows)


#: :func:`append` as the writer batches it: the appends of a batch share one ``executemany``.
APPEND: Final[Batchable[[str, int, str, str, float], None]] = Batchable(append, append_many)


def read_after(conn: sqlite3.Connection, job_id: str, after: int, limit: int) -> list[LogRow]:
    """Up to ``limit`` events of a job with ``seq > after``, oldest first."""
    rows = by_name(conn).execute(
        "SELECT seq, type, data, created_at FROM events WHERE job_id = ? AND seq > ? "
        "ORDER BY seq LIMIT ?",
        (job_id, after, limit),
    )
    return [(r["seq"], r["type"], r["data"], r["created_at"]) for r in rows]


def max_seq(conn: sqlite3.Connection, job_id: str) -> int:
    """The highest persisted seq of a job (0 when it has no events)."""
    row = (
        by_name(conn)
        .execute("SELECT coalesce(max(seq), 0) AS seq FROM events WHERE job_id = ?", (job_id,))
        .fetchone()
    )
    return int(row["seq"])


def last_event(conn: sqlite3.Connection, job_id: str) -> tuple[int, str] | None:
    """``(seq, type)`` of a job's newest event, or ``None``."""
    row = (
        by_name(conn)
        .execute(
            "SELECT seq, type FROM events WHERE job_id = ? ORDER BY seq DESC LIMIT 1", (job_id,)
        )
        .fetchone()
    )
    return None if row is None else (row["seq"], row["type"])


def delete(conn: sqlite3.Connection, job_ids: Sequence[str]) -> int:
    """Forget the events of these jobs (e.g. when the jobs are purged); returns rows deleted."""
    before = conn.total_changes
    conn.executemany("DELETE FROM events WHERE job_id = ?", [(j,) for j in job_ids])
    return conn.total_changes - before


class JobLog:
    """Appends one job's events to the log and tells when they are committed.

    Appends are fire-and-forget writer ops (they are written even if the
    sender goes away); :meth:`flush` waits until every event appended so far
    is committed, which is what a consumer needs before it reads the log.
    """

    __slots__ = ("_committed", "_inflight", "_sent", "_waiters", "_writer", "job_id")

    def __init__(self, writer: Writer, job_id: str) -> None:
        self.job_id = job_id
        self._writer = writer
        self._sent = 0  # seq of the newest event appended
        self._committed = 0  # ... and of the newest one whose batch ended
        self._inflight = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def inflight(self) -> int:
        """Events appended whose batch has not ended yet."""
        return self._inflight

    def append(self, seq: int, event_type: str, data: str, created_at: float) -> None:
        """Queue one event for the next batch (call on the event loop's thread)."""
        self._sent = seq
        self._inflight += 1
        try:
            self._writer.then(
                APPEND,
                (self.job_id, seq, event_type, data, created_at),
                partial(self._done, seq),
                weight=1,
            )
        except JobQueueError as exc:  # the store is closed: the live copy still goes out
            self._done(seq, False, exc)

    def _done(self, seq: int, ok: bool, value: object) -> None:
        self._inflight -= 1
        if not ok:
            log.error("event log: event %d of job %r was not stored: %s", seq, self.job_id, value)
        # Batches end in order, so every event up to ``seq`` is settled now.
        self._committed = max(self._committed, seq)
        if self._waiters:
            ready = [fut for target, fut in self._waiters if target <= self._committed]
            self._waiters = [(t, f) for t, f in self._waiters if t > self._committed]
            for fut in ready:
                if not fut.done():
                    fut.set_result(None)

    async def flush(self) -> None:
        """Return once every event appended so far is committed (or failed to be)."""
        target = self._sent
        if self._committed >= target:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        await fut


def read_with_job(
    conn: sqlite3.Connection, job_id: str, after: int, limit: int
) -> tuple[Job, list[LogRow], tuple[int, str] | None]:
    """The job, its logged events after ``after``, and (when none and it is done) its last one.

    One read transaction: if the job is seen finished, every event sent
    before it finished is in the same snapshot.
    """
    own = not conn.in_transaction  # never the case between writer batches; be sure
    if own:
        conn.execute("BEGIN")
    try:
        job = jobs.fetch(conn, job_id)
        rows = read_after(conn, job_id, after, limit)
        tail = None if rows or not job.done else last_event(conn, job_id)
    finally:
        if own:
            conn.execute("COMMIT")
    return job, rows, tail
