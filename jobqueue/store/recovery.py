"""Crash recovery: find running jobs whose owner is gone and settle them.

What is supported: several processes, and containers, sharing one database
file on ONE host (one kernel: SQLite's locks and shared memory must work
between them). Network filesystems are not supported.

Each service is an owner (see :mod:`jobqueue.runtime.owner` for its identity:
pid, process start time, PID namespace, boot id, and a per-service counter).
An owner is judged in one of two ways, never both:

* **By /proc**, when it lives in this process's PID namespace on this boot:
  alive while its pid exists with the same start time (a reused pid is not
  mistaken for it, and a wall-clock jump cannot steal its jobs). Services of
  one process share its liveness. Identities of the older ``"pid:start"``
  form are judged this way too.
* **By its heartbeat lease** otherwise (another PID namespace, such as
  another container; another boot or host; no usable procfs): its pid means
  nothing here, so it is dead only once its row in the ``owners`` table has
  had no heartbeat for ``stale_after`` seconds (wall-clock time). A live
  owner writes one at least every few seconds.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from jobqueue.runtime.owner import UNKNOWN, here, parse_owner

__all__ = [
    "STALE_AFTER",
    "ControlRequest",
    "OwnerRow",
    "SweepResult",
    "control_requests",
    "dead_owners",
    "forget_owner",
    "heartbeat",
    "heartbeats",
    "is_alive",
    "owner_alive",
    "owner_rows",
    "sweep",
    "sweep_on_open",
]

#: The lease of an owner that cannot be judged by /proc, for a judge with no heartbeat
#: cadence of its own (the sweep at open, the CLI's reports).
STALE_AFTER: Final = 60.0

_SOURCE: Final = "status = 'running' AND owner IN ({marks})"
#: Where no procfs exists at all there are no PID namespaces: pids are the host's.
_NO_NAMESPACES: Final = not sys.platform.startswith("linux")


def owner_alive(owner: str) -> bool | None:
    """True/False when /proc here can tell; None when it cannot (judge by the heartbeat).

    None for an owner in another PID namespace or boot, or when either side has
    no usable procfs and the pid exists. False for text this library never wrote.
    """
    who = parse_owner(owner)
    if who is None:
        return False  # not an identity this library wrote (e.g. 'unknown:0')
    me = here()
    if not who.legacy:
        unknown = UNKNOWN in (me.pidns, me.boot, who.pidns, who.boot)
        if (who.pidns, who.boot) != (me.pidns, me.boot) or (unknown and not _NO_NAMESPACES):
            return None  # its pid means nothing in our /proc
    elif me.pidns == UNKNOWN and Path("/proc/self/stat").exists():
        return None  # a /proc of another namespace (not remounted): our pids are not in it
    try:
        stat = Path(f"/proc/{who.pid}/stat").read_text()
    except FileNotFoundError:
        return False if Path("/proc/self/stat").exists() else _pid_exists(who.pid)
    except OSError:
        return None if _pid_exists(who.pid) else False
    try:
        fields = stat.rsplit(")", 1)[1].split()
        state, now_start = fields[0], fields[19]
    except IndexError:
        return None
    if state in ("Z", "X"):  # exited, not yet reaped by its parent: it runs nothing
        return False
    return now_start == who.start  # a different start time: the pid was reused


def _pid_exists(pid: int) -> bool | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    return None  # exists, but we cannot tell whether it is the same process


def is_alive(
    owner: str, beat: float | None, now: float | None = None, stale_after: float = STALE_AFTER
) -> bool:
    """:func:`owner_alive`, and where it cannot tell, whether the heartbeat ``beat`` is fresh.

    ``beat`` is the owner's last heartbeat (None: it has no row in ``owners``);
    ``now`` defaults to the wall-clock time.
    """
    alive = owner_alive(owner)
    if alive is None:
        if beat is None:
            return False
        return (time.time() if now is None else now) - beat < stale_after
    return alive


def _by_name(conn: sqlite3.Connection) -> sqlite3.Cursor:
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    return cur


def heartbeats(conn: sqlite3.Connection) -> dict[str, float]:
    """Each owner's last heartbeat (empty for a file older than the ``owners`` table)."""
    try:
        found = _by_name(conn).execute("SELECT owner, heartbeat FROM owners").fetchall()
    except sqlite3.OperationalError:  # no such table: a file from before owners were kept
        return {}
    return {r["owner"]: r["heartbeat"] for r in found}


@dataclass(frozen=True, slots=True)
class OwnerRow:
    """A service that opened the file: its identity, pid, start time and last heartbeat."""

    owner: str
    pid: int
    started_at: float
    heartbeat: float


def owner_rows(conn: sqlite3.Connection) -> list[OwnerRow]:
    """Every row of the ``owners`` table, oldest service first."""
    found = (
        _by_name(conn)
        .execute("SELECT owner, pid, started_at, heartbeat FROM owners ORDER BY started_at")
        .fetchall()
    )
    return [OwnerRow(r["owner"], r["pid"], r["started_at"], r["heartbeat"]) for r in found]


def dead_owners(conn: sqlite3.Connection, me: str, now: float, stale_after: float) -> list[str]:
    """Owners of running jobs, or with a heartbeat row, that are not alive (never ``me``).

    Owners that held no running job are included so that their ``owners`` rows
    are deleted by :func:`sweep` too, instead of piling up after each crash.
    """
    found = (
        _by_name(conn)
        .execute(
            "SELECT u.owner AS owner, o.heartbeat AS heartbeat FROM "
            "(SELECT owner FROM jobs WHERE status = 'running' UNION SELECT owner FROM owners) "
            "AS u LEFT JOIN owners AS o ON o.owner = u.owner WHERE u.owner IS NOT NULL"
        )
        .fetchall()
    )
    return [
        r["owner"]
        for r in found
        if r["owner"] != me and not is_alive(r["owner"], r["heartbeat"], now, stale_after)
    ]


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


def sweep_on_open(
    conn: sqlite3.Connection, me: str, pid: int, now: float, stale_after: float = STALE_AFTER
) -> SweepResult:
    """The sweep when a service opens the file, with its first heartbeat, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Running rows without an owner come from files written before owners were
        # recorded (or by another program): nobody can be running them now.
        conn.execute(
            "UPDATE jobs SET owner = 'unknown:0' WHERE status = 'running' AND owner IS NULL"
        )
        result = sweep(conn, dead_owners(conn, me, now, stale_after), now)
        heartbeat(conn, me, pid, now, now)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def heartbeat(conn: sqlite3.Connection, me: str, pid: int, started_at: float, now: float) -> None:
    """Record that ``me`` is alive (one row per owner, that is per service, not per job)."""
    conn.execute(
        "INSERT INTO owners (owner, pid, started_at, heartbeat) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(owner) DO UPDATE SET heartbeat = excluded.heartbeat",
        (me, pid, started_at, now),
    )


def forget_owner(conn: sqlite3.Connection, me: str) -> None:
    """Remove ``me``'s heartbeat row (its service is closing)."""
    conn.execute("DELETE FROM owners WHERE owner = ?", (me,))


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A cancel/stop/pause another process wrote on a job that ``owner`` runs."""

    job_id: str
    kind: str
    #: When this run of the job was claimed: a request on a later run is a new one.
    started_at: float | None = None


def control_requests(conn: sqlite3.Connection, owner: str) -> list[ControlRequest]:
    """The control requests waiting on ``owner``'s running jobs."""
    found = (
        _by_name(conn)
        .execute(
            "SELECT id, control, started_at FROM jobs WHERE owner = ? AND control IS NOT NULL "
            "AND status = 'running'",
            (owner,),
        )
        .fetchall()
    )
    return [ControlRequest(r["id"], r["control"], r["started_at"]) for r in found]
