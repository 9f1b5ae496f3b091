"""Lifecycle controls: ``cancel``, ``stop``, ``pause``, ``resume`` — here or in another process.

A job running in this process is acted on directly. A job running in
another process gets a request written into its row (``control``); the
owner's watch loop applies it within one ``poll_interval``, and the call
here waits for the result. A job that is not running changes in one
guarded ``UPDATE``, so a concurrent claim cannot slip in between.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from functools import partial
from typing import Any

from jobqueue.errors import JobQueueError
from jobqueue.handlers import HandlerLayer
from jobqueue.runtime.supervisor import recover
from jobqueue.status import TaskStatus, check_transition
from jobqueue.store import jobs
from jobqueue.store.jobs import Job
from jobqueue.store.outcomes import Outcome

__all__ = ["ControlLayer"]

log = logging.getLogger("jobqueue.service")

S = TaskStatus


def _request(conn: sqlite3.Connection, job_id: str, kind: str) -> str | None:
    """Write a control request on a running job; returns its owner (None if not running)."""
    row = conn.execute(
        "UPDATE jobs SET control = ?, updated_at = ? WHERE id = ? AND status = 'running' "
        "RETURNING owner",
        (kind, time.time(), job_id),
    ).fetchone()
    return None if row is None else row[0]


def _resume(conn: sqlite3.Connection, job_id: str, now: float) -> bool:
    cur = conn.execute(
        "UPDATE jobs SET control = 'resume', run_at = ?, updated_at = ? "
        "WHERE id = ? AND status = 'paused'",
        (now, now, job_id),
    )
    return cur.rowcount == 1


class ControlLayer(HandlerLayer):
    """The control calls of :class:`~jobqueue.service.JobQueueService`."""

    async def get(self, job_id: str) -> Job:
        """The stored job. Raises :class:`~jobqueue.errors.JobNotFoundError`."""
        return await self._read(jobs.fetch, job_id)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job now: a running one gets ``CancelledError``; it ends ``cancelled``.

        A job that ignores cancellation for ``cancel_grace`` seconds is
        abandoned and recorded ``failed`` with reason ``unresponsive``.

        Raises:
            JobNotFoundError: unknown id.
            InvalidTransition: the job already finished.
        """
        return await self._control(job_id, "cancel")

    async def stop(self, job_id: str | None = None) -> Any:
        """Stop a job gracefully; with no argument, close the service (Langflow's ``stop()``).

        The running handler finishes its current step: its next
        ``await ctx.checkpoint()`` ends it ``stopped`` (so does finishing).
        One that does not within ``stop_timeout`` is cancelled (``cancelled``,
        reason ``stop_timeout``). A pending or paused job becomes ``stopped``.

        Raises:
            JobNotFoundError: unknown id.
            InvalidTransition: the job already finished.
        """
        if job_id is None:
            await self.close()
            return None
        return await self._control(job_id, "stop")

    async def pause(self, job_id: str) -> Job:
        """Pause a running job; once this returns, it holds no running task.

        A handler that calls ``await ctx.checkpoint()`` is paused at its next
        checkpoint (within ``stop_timeout``); any other is cancelled at once.
        A paused job stays paused across restarts. ``resume()`` runs it again
        from the start (workflows continue after their last completed step).
        Pausing a paused job returns it unchanged.

        Raises:
            JobNotFoundError: unknown id.
            InvalidTransition: the job is pending or finished.
        """
        return await self._control(job_id, "pause")

    async def resume(self, job_id: str) -> Job:
        """Let a paused job run again: it is claimed like a due pending job.

        Resuming a pending or running job returns it unchanged.

        Raises:
            JobNotFoundError: unknown id.
            InvalidTransition: the job already finished.
        """
        writer = await self._ready()
        job = await self.get(job_id)
        if job.status is S.PAUSED:
            if await writer.write(_resume, job_id, time.time()):
                self._want_claim()
            return await self.get(job_id)
        if job.done:
            check_transition(job_id, job.status, S.RUNNING)
        return job

    # -- implementation --------------------------------------------------------------

    async def _control(self, job_id: str, kind: str) -> Job:
        writer = await self._ready()
        for _ in range(5):  # the job may change status under us (claimed, finished)
            if await self._local(job_id, kind):
                return await self.get(job_id)
            job = await self.get(job_id)
            if job.status is S.RUNNING:
                if job.owner == self.owner:
                    await asyncio.sleep(0.01)  # starting or finishing here right now
                    continue
                owner = await writer.write(_request, job_id, kind)
                if owner is None:
                    continue
                return await self._await_owner(job, owner, kind)
            if job.status is S.PAUSED and kind == "pause":
                return job
            target = {"cancel": S.CANCELLED, "stop": S.STOPPED}.get(kind, S.PAUSED)
            check_transition(job_id, job.status, target)
            try:
                await writer.write(
                    partial(jobs.set_status, expected=(job.status,), reason=_REASON[kind]),
                    job_id,
                    target,
                )
            except JobQueueError:
                continue  # it changed meanwhile: look again
            self.tally.removed(job.status, job.handler)
            self._job_finished(job_id, Outcome(target, reason=_REASON[kind]), None, job.handler)
            return await self.get(job_id)
        return await self.get(job_id)

    async def _local(self, job_id: str, kind: str) -> bool:
        """Act on a job running in this process; False if it is not running here."""
        runner = self._runner
        run = runner.active.get(job_id) if runner is not None else None
        if run is None or run.task is None or run.abandoned:
            entry = self._registry.get(job_id)  # a Langflow start_job task
            if kind == "pause" or entry is None or entry.task is None or entry.task.done():
                return False
            entry.task.cancel()
            await asyncio.wait([entry.task], timeout=self._cancel_grace)
            return True
        assert runner is not None
        task = run.task
        if kind in ("stop", "pause"):
            runner.request(job_id, kind)
            cooperative = run.ctx is not None and run.ctx._checkpoints > 0
            if kind == "stop" or cooperative:
                await asyncio.wait([task], timeout=self._opts["stop_timeout"])
            if not task.done():
                runner.cancel(job_id, "stop_timeout" if kind == "stop" else "pause")
        else:
            runner.cancel(job_id, "cancel")
        await asyncio.wait([task], timeout=self._cancel_grace + 0.2)
        await self._barrier()
        return True

    async def _barrier(self) -> None:
        """Return once every write queued so far (the job's outcome) is committed."""
        writer = await self._ready()
        await writer.write(_noop)

    async def _await_owner(self, job: Job, owner: str, kind: str) -> Job:
        """Wait for the owning process to apply ``kind``; sweep it if it died."""
        assert self._db is not None
        assert self._writer is not None
        supervisor = self._supervisor
        stale = supervisor.stale_after if supervisor is not None else 60.0
        if (await recover(self._db, self._writer, self.owner, stale)).total:
            self._want_claim()
        budget = self._poll_interval * 3 + self._cancel_grace + 1.0
        if kind in ("stop", "pause"):
            budget += self._opts["stop_timeout"]
        deadline = time.monotonic() + budget
        while True:
            current = await self.get(job.id)
            if current.status is not S.RUNNING or current.owner != owner:
                return current
            if time.monotonic() >= deadline:
                return current  # still running: the request stays for the owner
            await asyncio.sleep(min(self._poll_interval / 2, 0.1))

    def _apply_control(self, job_id: str, kind: str) -> None:
        """The watch loop found a request from another process for a job running here."""
        asyncio.get_running_loop().create_task(
            self._apply_logged(job_id, kind), name=f"jobqueue-{kind}-{job_id}"
        )

    async def _apply_logged(self, job_id: str, kind: str) -> None:
        try:
            await self._local(job_id, kind)
        except JobQueueError as exc:
            log.warning("could not apply %s to job %r: %s", kind, job_id, exc)

    def _want_claim(self) -> None:
        if self._scheduler is not None:
            self._scheduler.want()


_REASON = {"cancel": "cancelled", "stop": "stopped", "pause": "paused"}


def _noop(conn: sqlite3.Connection) -> None:
    return None
