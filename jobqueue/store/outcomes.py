"""How a run ends: the :class:`Outcome` record and :func:`finish`, run on the db thread.

Terminal outcomes from many jobs share one statement (the writer batches
:data:`FINISH`); retries, pauses and outcomes carrying effects are written one by one.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from jobqueue.codec import storable
from jobqueue.status import TERMINAL, TaskStatus
from jobqueue.store.rows import by_name
from jobqueue.store.writer import Batchable

__all__ = ["FINISH", "Outcome", "finish", "finish_many"]


@dataclass(slots=True)  # not frozen: a frozen record costs several µs per job
class Outcome:
    """How one run of a job ended, ready to store (``result`` is JSON text)."""

    status: TaskStatus
    result: str | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    reason: str | None = None
    #: For ``status == pending`` (a retry): when to run again.
    run_at: float | None = None
    #: For a retry: whether this run counts against ``max_retries`` (not on shutdown).
    count_attempt: bool = True
    #: ``(fn, args)`` written in the same transaction as a ``completed`` outcome.
    effects: tuple[tuple[Any, tuple[Any, ...]], ...] = ()


def finish(conn: sqlite3.Connection, job_id: str, out: Outcome, now: float) -> bool | Outcome:
    """Record how a running job ended; False if someone else changed it first.

    A ``pending`` outcome is a retry (``run_at`` set, the attempt counted
    unless ``count_attempt`` is false); ``paused`` keeps the job for
    ``resume()``. A ``completed`` outcome with effects runs them in this
    transaction, under a savepoint: if one raises, the job is failed instead
    and that failed :class:`Outcome` is returned.
    """
    if out.status is TaskStatus.PENDING:
        # A control another process asked for while this run ended wins over the retry:
        # the job ends cancelled/stopped/paused instead of running again.
        row = (
            by_name(conn)
            .execute(
                "UPDATE jobs SET status = CASE control WHEN 'cancel' THEN 'cancelled' "
                "WHEN 'stop' THEN 'stopped' WHEN 'pause' THEN 'paused' ELSE 'pending' END, "
                "reason = CASE control WHEN 'cancel' THEN 'cancelled' WHEN 'stop' THEN 'stopped' "
                "WHEN 'pause' THEN 'paused' ELSE :reason END, "
                "completed_at = CASE WHEN control IN ('cancel', 'stop') THEN :now "
                "ELSE completed_at END, "
                "attempt = attempt + :count, run_at = :run_at, error_message = :error, "
                "error_type = :error_type, traceback = :traceback, updated_at = :now, "
                "owner = NULL, heartbeat = NULL, control = NULL "
                "WHERE id = :id AND status IN ('running', 'paused') RETURNING status",
                {
                    "count": int(out.count_attempt),
                    "run_at": out.run_at or now,
                    "error": out.error,
                    "error_type": out.error_type,
                    "traceback": out.traceback,
                    "reason": out.reason,
                    "now": now,
                    "id": job_id,
                },
            )
            .fetchone()
        )
        if row is None:
            return False
        if row["status"] == "pending":
            return True
        status = TaskStatus(row["status"])
        return Outcome(status, error=out.error, reason=status.value)
    if out.status is TaskStatus.PAUSED:
        cur = conn.execute(
            "UPDATE jobs SET status = 'paused', reason = ?, updated_at = ?, owner = NULL, "
            "heartbeat = NULL, control = NULL WHERE id = ? AND status = 'running'",
            (out.reason, now, job_id),
        )
        return cur.rowcount == 1
    if not out.effects:
        return finish_many(conn, [(job_id, out, now)])[0]
    conn.execute("SAVEPOINT effects")
    try:
        done = finish_many(conn, [(job_id, dataclasses.replace(out, effects=()), now)])
        if done[0]:
            for fn, args in out.effects:
                fn(conn, *args)
    except Exception as exc:  # the effect failed: keep none of it, fail the job
        conn.execute("ROLLBACK TO effects")
        conn.execute("RELEASE effects")
        failed = Outcome(
            TaskStatus.FAILED,
            error=storable(f"effect failed: {type(exc).__name__}: {exc}"),
            error_type=type(exc).__name__,
            reason="effect_error",
        )
        return failed if finish_many(conn, [(job_id, failed, now)])[0] else False
    conn.execute("RELEASE effects")
    return done[0]


_FINISH_CHUNK: Final = 3000  # keeps a statement under SQLite's 32766 parameters
_FINISH_ONE: Final = (
    "UPDATE jobs SET status = ?, result = ?, error_message = ?, error_type = ?, traceback = ?, "
    "reason = ?, completed_at = ?, updated_at = ?, owner = NULL, heartbeat = NULL, "
    "control = NULL WHERE id = ? AND status IN ('running', 'paused')"
)


def finish_many(conn: sqlite3.Connection, items: Sequence[tuple[Any, ...]]) -> list[bool | Outcome]:
    """:func:`finish` for several ``(job_id, outcome, now)``: terminal outcomes in one
    statement, retries, pauses and outcomes with effects one by one."""
    terminal = [it for it in items if _bulk(it[1])]
    if len(terminal) == len(items) and _finish_all(conn, items):
        return [True] * len(items)
    done = _finish_returning(conn, terminal)
    return [it[0] in done if _bulk(it[1]) else finish(conn, *it) for it in items]


def _finish_all(conn: sqlite3.Connection, items: Sequence[tuple[Any, ...]]) -> bool:
    """The common case: one prepared statement for every row; False (nothing kept) if any
    job was changed by someone else first, for :func:`_finish_returning` to sort out."""
    conn.execute("SAVEPOINT finish_all")
    before = conn.total_changes
    conn.executemany(
        _FINISH_ONE,
        [
            (o.status._value_, o.result, o.error, o.error_type, o.traceback, o.reason, now, now, i)
            for i, o, now in items
        ],
    )
    ok = conn.total_changes - before == len(items)
    if not ok:
        conn.execute("ROLLBACK TO finish_all")
    conn.execute("RELEASE finish_all")
    return ok


def _finish_returning(conn: sqlite3.Connection, terminal: Sequence[tuple[Any, ...]]) -> set[str]:
    """Terminal outcomes by ``UPDATE ... FROM (VALUES ...) RETURNING``: the ids stored."""
    done: set[str] = set()
    for start in range(0, len(terminal), _FINISH_CHUNK):
        chunk = terminal[start : start + _FINISH_CHUNK]
        params: list[Any] = []
        for job_id, out, now in chunk:
            params += (
                job_id,
                out.status.value,
                out.result,
                out.error,
                out.error_type,
                out.traceback,
                out.reason,
                now,
                now,
            )
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        rows = by_name(conn).execute(
            "UPDATE jobs SET status = v.column2, result = v.column3, error_message = v.column4, "
            "error_type = v.column5, traceback = v.column6, reason = v.column7, "
            "completed_at = v.column8, updated_at = v.column9, owner = NULL, heartbeat = NULL, "
            "control = NULL "
            f"FROM (VALUES {values}) AS v WHERE jobs.id = v.column1 "
            "AND jobs.status IN ('running', 'paused') RETURNING jobs.id AS id",
            params,
        )
        done.update(r["id"] for r in rows)
    return done


def _bulk(out: Outcome) -> bool:
    """Terminal outcomes without effects share one bulk statement."""
    return out.status in TERMINAL and not out.effects


#: :func:`finish` as the writer batches it: the outcomes of a batch share one statement.
FINISH: Final[Batchable[[str, Outcome, float], bool | Outcome]] = Batchable(finish, finish_many)
