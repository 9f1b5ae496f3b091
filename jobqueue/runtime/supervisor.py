"""The service's watch loop: heartbeat, control requests from other processes, dead owners.

Every ``poll_interval`` it reads the control requests (cancel/stop/pause)
other processes wrote for jobs this process runs, and applies them; every
few polls it writes this process's heartbeat and sweeps running jobs whose
owner died (see :mod:`jobqueue.store.recovery`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable

from jobqueue.errors import JobQueueError
from jobqueue.store.connection import Database
from jobqueue.store.recovery import SweepResult, dead_owners, heartbeat, sweep
from jobqueue.store.writer import Writer

__all__ = ["Supervisor", "recover", "recover_on_open"]

log = logging.getLogger("jobqueue.recovery")


async def recover(db: Database, writer: Writer, owner: str, stale_after: float) -> SweepResult:
    """Sweep dead owners' running jobs now; logs what it did."""
    now = time.time()
    dead = await db.run(dead_owners, owner, now, stale_after)
    if not dead:
        return SweepResult()
    result: SweepResult = await writer.write(sweep, dead, now)
    if result.total:
        _log_result(result)
    return result


def recover_on_open(conn: sqlite3.Connection, owner: str, now: float) -> SweepResult:
    """The sweep at start, in one transaction on the database thread.

    Also writes this process's first heartbeat.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Running rows without an owner come from files written before owners were
        # recorded (or by another program): nobody can be running them now.
        conn.execute(
            "UPDATE jobs SET owner = 'unknown:0' WHERE status = 'running' AND owner IS NULL"
        )
        dead = dead_owners(conn, owner, now, stale_after=60.0)
        result = sweep(conn, dead, now)
        heartbeat(conn, owner, os.getpid(), now, now)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    if result.total:
        _log_result(result)
    return result


def _log_result(result: SweepResult) -> None:
    log.warning(
        "recovered %d job(s) of %d dead process(es): %d back to pending, %d failed "
        "(crashed, retries used up), %d failed (lost_on_restart), %d control requests applied",
        result.total,
        result.owners,
        result.requeued,
        result.crashed,
        result.lost,
        result.controlled,
    )


def _controls(conn: sqlite3.Connection, owner: str) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT id, control FROM jobs WHERE owner = ? AND control IS NOT NULL "
        "AND status = 'running'",
        (owner,),
    ).fetchall()


class Supervisor:
    """Background task of one open service."""

    def __init__(
        self,
        db: Database,
        writer: Writer,
        *,
        owner: str,
        boot_at: float,
        poll_interval: float,
        apply: Callable[[str, str], None],
        swept: Callable[[SweepResult], None],
    ) -> None:
        self._db = db
        self._writer = writer
        self._owner = owner
        self._boot_at = boot_at
        self._poll = poll_interval
        self._apply = apply
        self._swept = swept
        self.heartbeat_interval = max(poll_interval * 4, 1.0)
        #: An owner whose pid exists but cannot be verified is dead after this long silent.
        self.stale_after = self.heartbeat_interval * 30
        self._applied: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="jobqueue-watch")

    async def close(self) -> None:
        """Stop the loop and remove this process's heartbeat row."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        try:
            await self._writer.write(_forget, self._owner)
        except JobQueueError as exc:
            log.debug("could not remove the heartbeat row: %s", exc)

    async def beat(self) -> None:
        """Write this process's heartbeat."""
        await self._writer.write(heartbeat, self._owner, os.getpid(), self._boot_at, time.time())

    async def _loop(self) -> None:
        last_beat = last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(self._poll)
            try:
                await self._check_controls()
                now = time.monotonic()
                if now - last_beat >= self.heartbeat_interval:
                    last_beat = now
                    await self.beat()
                if now - last_sweep >= self.heartbeat_interval:
                    last_sweep = now
                    result = await recover(self._db, self._writer, self._owner, self.stale_after)
                    if result.total:
                        self._swept(result)
            except JobQueueError as exc:
                log.warning("watch loop pass failed: %s", exc)
            except Exception:
                log.exception("watch loop pass failed; it will run again")

    async def _check_controls(self) -> None:
        requests = await self._db.run(_controls, self._owner)
        current = set()
        for job_id, kind in requests:
            current.add((job_id, kind))
            if (job_id, kind) not in self._applied:
                log.info("applying %s requested from another process to job %r", kind, job_id)
                self._apply(job_id, kind)
        self._applied = current  # requests are cleared when the job's outcome is stored


def _forget(conn: sqlite3.Connection, owner: str) -> None:
    conn.execute("DELETE FROM owners WHERE owner = ?", (owner,))
