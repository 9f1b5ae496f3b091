"""Crash recovery: find running jobs whose owner process is gone and settle them.

Liveness is the owner's identity (pid plus the process start time read from
``/proc``), so a reused pid is not mistaken for the dead owner and a clock
jump cannot steal a live job. Where the start time cannot be read (no
procfs), a pid that exists counts as alive unless its heartbeat in the
``owners`` table is older than ``stale_after`` seconds.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["SweepResult", "dead_owners", "heartbeat", "owner_alive", "sweep"]

_SOURCE: Final = "status = 'running' AND owner IN ({marks})"


def owner_alive(owner: str) -> bool | None:
    """True/False when the owner's liveness is known, None when only the pid could be checked."""
    pid_text, _, start = owner.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False  # not an identity this library wrote
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False if Path("/proc/self/stat").exists() else _pid_exists(pid)
    except OSError:
        return None if _pid_exists(pid) else False
    try:
        fields = stat.rsplit(")", 1)[1].split()
        state, now_start = fields[0], fields[19]
    except IndexError:
        return None
    if state in ("Z", "X"):  # exited, not yet reaped by its parent: it runs nothing
        return False
    return now_start == start  # a different start time: the pid was reused


def _pid_exists(pid: int) -> bool | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    return None  # exists, but we cannot tell whether it is the same process


def dead_owners(conn: sqlite3.Connection, me: str, now: float, stale_after: float) -> list[str]:
    """Owners of running jobs, or with a heartbeat row, that are not alive (never ``me``).

    Owners that held no running job are included so that their ``owners`` rows
    are deleted by :func:`sweep` too, instead of piling up after each crash.
    """
    owners = [
        r[0]
        for r in conn.execute(
            "SELECT owner FROM jobs WHERE status = 'running' UNION SELECT owner FROM owners"
        )
        if r[0] is not None and r[0] != me
    ]
    if not owners:
        return []
    beats = dict(conn.execute("SELECT owner, heartbeat FROM owners").fetchall())
    dead = []
    for owner in owners:
        alive = owner_alive(owner)
        if alive is None:  # pid exists but unverifiable: fall back to the heartbeat
            beat = beats.get(owner)
            alive = beat is not None and now - beat < stale_after
        if not alive:
            dead.append(owner)
    return dead


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one sweep did to dead owners' running jobs."""

    requeued: int = 0  #: back to pending, attempt counted
    crashed: int = 0  #: failed, reason ``crashed`` (retries used up)
    lost: int = 0  #: bare-coroutine jobs failed, reason ``lost_on_restart``
    controlled: int = 0  #: a pending cancel/stop/pause request applied instead
    owners: int = 0

    @property
    def total(self) -> int:
        """Jobs changed."""
        return self.requeued + self.crashed + self.lost + self.controlled


def sweep(conn: sqlite3.Connection, dead: Sequence[str], now: float) -> SweepResult:
    """Settle the running jobs of ``dead`` owners (inside the caller's transaction)."""
    if not dead:
        return SweepResult()
    marks = ", ".join("?" * len(dead))
    where = _SOURCE.format(marks=marks)
    owners = tuple(dead)
    done = "completed_at = ?, updated_at = ?, owner = NULL, heartbeat = NULL, control = NULL"
    # Workflow steps the dead owner was running did not finish: they run again.
    conn.execute(
        "UPDATE steps SET status = 'pending' WHERE status = 'running' "
        f"AND job_id IN (SELECT id FROM jobs WHERE {where})",
        owners,
    )
    # A control request the dead owner never applied: honour it now.
    controlled = conn.execute(
        "UPDATE jobs SET status = CASE control WHEN 'pause' THEN 'paused' "
        "WHEN 'stop' THEN 'stopped' ELSE 'cancelled' END, reason = CASE control "
        "WHEN 'pause' THEN 'paused' WHEN 'stop' THEN 'stopped' ELSE 'cancelled' END, "
        "completed_at = CASE control WHEN 'pause' THEN NULL ELSE ? END, updated_at = ?, "
        f"owner = NULL, heartbeat = NULL, control = NULL WHERE {where} "
        "AND control IN ('cancel', 'stop', 'pause')",
        (now, now, *owners),
    ).rowcount
    lost = conn.execute(
        f"UPDATE jobs SET status = 'failed', reason = 'lost_on_restart', "
        f"error_message = 'the process running this coroutine died; it cannot be restarted', "
        f"error_type = 'LostOnRestart', {done} WHERE {where} AND handler IS NULL",
        (now, now, *owners),
    ).rowcount
    crashed = conn.execute(
        f"UPDATE jobs SET status = 'failed', reason = 'crashed', attempt = attempt + 1, "
        f"error_message = 'the process running this job died and its retries are used up', "
        f"error_type = 'Crashed', {done} WHERE {where} AND attempt >= max_retries",
        (now, now, *owners),
    ).rowcount
    requeued = conn.execute(
        "UPDATE jobs SET status = 'pending', reason = 'crashed', attempt = attempt + 1, "
        "run_at = ?, updated_at = ?, owner = NULL, heartbeat = NULL, control = NULL "
        f"WHERE {where}",
        (now, now, *owners),
    ).rowcount
    conn.execute(f"DELETE FROM owners WHERE owner IN ({marks})", owners)
    return SweepResult(requeued, crashed, lost, controlled, len(dead))


def heartbeat(conn: sqlite3.Connection, me: str, pid: int, started_at: float, now: float) -> None:
    """Record that ``me`` is alive (one row per process, not per job)."""
    conn.execute(
        "INSERT INTO owners (owner, pid, started_at, heartbeat) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(owner) DO UPDATE SET heartbeat = excluded.heartbeat",
        (me, pid, started_at, now),
    )
