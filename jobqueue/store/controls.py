"""Control requests written into a job's row (cancel/stop/pause from another process)."""

from __future__ import annotations

import sqlite3
import time

from jobqueue.store.rows import by_name

__all__ = ["barrier", "keep_paused", "request_control", "resume_paused"]


def request_control(conn: sqlite3.Connection, job_id: str, kind: str) -> str | None:
    """Ask the owner of a running job for ``kind``; returns the owner (None if not running)."""
    # A weaker request never replaces a stronger one (cancel > stop > pause).
    row = (
        by_name(conn)
        .execute(
            "UPDATE jobs SET control = CASE "
            "WHEN control = 'cancel' THEN control "
            "WHEN control = 'stop' AND :kind = 'pause' THEN control "
            "ELSE :kind END, updated_at = :now "
            "WHERE id = :id AND status = 'running' RETURNING owner",
            {"kind": kind, "now": time.time(), "id": job_id},
        )
        .fetchone()
    )
    return None if row is None else str(row["owner"])


def resume_paused(conn: sqlite3.Connection, job_id: str, now: float) -> bool:
    """Make a paused job due now; False if it is not paused (any more)."""
    cur = conn.execute(
        "UPDATE jobs SET control = 'resume', run_at = ?, updated_at = ? "
        "WHERE id = ? AND status = 'paused'",
        (now, now, job_id),
    )
    return cur.rowcount == 1


def keep_paused(conn: sqlite3.Connection, job_id: str, now: float) -> bool:
    """A pause of a paused job: withdraw a resume not yet acted on; False if not paused."""
    cur = conn.execute(
        "UPDATE jobs SET control = NULL, updated_at = CASE WHEN control IS NULL "
        "THEN updated_at ELSE ? END WHERE id = ? AND status = 'paused'",
        (now, job_id),
    )
    return cur.rowcount == 1


def barrier(conn: sqlite3.Connection) -> None:
    """A write that does nothing: once it is committed, every earlier write is too."""
    return None
