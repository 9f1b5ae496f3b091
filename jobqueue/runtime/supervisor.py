"""The service's watch loop: heartbeat, control requests from other services, dead owners.

Every ``poll_interval`` it reads the control requests (cancel/stop/pause)
other services (in other processes, or in this one) wrote for jobs this
service runs, and applies them. Every few polls, and at least every
``MAX_HEARTBEAT_INTERVAL`` seconds, it writes this service's heartbeat and
sweeps running jobs whose owner died (see :mod:`jobqueue.store.recovery` for
how an owner is judged, and what setups are supported).
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
from jobqueue.store.recovery import (
    STALE_AFTER,
    SweepResult,
    control_requests,
    dead_owners,
    forget_owner,
    heartbeat,
    sweep,
    sweep_on_open,
)
from jobqueue.store.writer import Writer

__all__ = ["Supervisor", "recover", "recover_on_open"]

log = logging.getLogger("jobqueue.recovery")

#: The longest a live service goes without writing its heartbeat (a larger poll
#: interval only spaces its control checks).
MAX_HEARTBEAT_INTERVAL = 5.0


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

    Also writes this service's first heartbeat.
    """
    result = sweep_on_open(conn, owner, os.getpid(), now, STALE_AFTER)
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
        #: How often this service writes its heartbeat and sweeps dead owners: at most
        #: every ``MAX_HEARTBEAT_INTERVAL`` seconds whatever ``poll_interval`` is, since
        #: owners in other PID namespaces are judged by their heartbeat alone.
        self.heartbeat_interval = min(max(poll_interval * 4, 1.0), MAX_HEARTBEAT_INTERVAL)
        #: An owner that cannot be judged by /proc here (another PID namespace or boot,
        #: no procfs) is dead after this long without a heartbeat: at least 30 s, six
        #: heartbeats of the slowest owner.
        self.stale_after = max(poll_interval * 4, 1.0) * 30
        self._applied: set[tuple[str, str, float | None]] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="jobqueue-watch")

    async def close(self) -> None:
        """Stop the loop and remove this service's heartbeat row."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        try:
            await self._writer.write(forget_owner, self._owner)
        except JobQueueError as exc:
            log.debug("could not remove the heartbeat row: %s", exc)

    async def beat(self) -> None:
        """Write this service's heartbeat."""
        await self._writer.write(heartbeat, self._owner, os.getpid(), self._boot_at, time.time())

    async def _loop(self) -> None:
        now = time.monotonic()
        next_controls, next_beat = now + self._poll, now + self.heartbeat_interval
        while True:
            await asyncio.sleep(max(0.0, min(next_controls, next_beat) - time.monotonic()))
            now = time.monotonic()
            try:
                if now >= next_controls:
                    next_controls = now + self._poll
                    await self._check_controls()
                if now >= next_beat:
                    next_beat = now + self.heartbeat_interval
                    await self.beat()
                    result = await recover(self._db, self._writer, self._owner, self.stale_after)
                    if result.total:
                        self._swept(result)
            except JobQueueError as exc:
                log.warning("watch loop pass failed: %s", exc)
            except Exception:
                log.exception("watch loop pass failed; it will run again")

    async def _check_controls(self) -> None:
        requests = await self._db.run(control_requests, self._owner)
        current = set()
        for req in requests:
            # Per run: pause, resume and pause again within one poll is a new request.
            key = (req.job_id, req.kind, req.started_at)
            current.add(key)
            if key not in self._applied:
                log.info(
                    "applying %s requested from another service to job %r", req.kind, req.job_id
                )
                self._apply(req.job_id, req.kind)
        self._applied = current  # requests are cleared when the job's outcome is stored
