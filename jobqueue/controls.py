"""Lifecycle controls: ``cancel``, ``stop``, ``pause``, ``resume`` — here or in another process.

A job running in this process is acted on directly. A job running in
another process gets a request written into its row (``control``); the
owner's supervisor applies it within one ``poll_interval``, and the call
here waits for the result. A job that is not running changes in one
guarded ``UPDATE``, so a concurrent claim cannot slip in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from jobqueue.errors import JobQueueError
from jobqueue.events.registry import QueueRegistry
from jobqueue.runtime.engine import Runtime
from jobqueue.runtime.supervisor import recover
from jobqueue.status import TaskStatus, check_transition
from jobqueue.store import jobs
from jobqueue.store.controls import barrier, keep_paused, request_control, resume_paused
from jobqueue.store.jobs import Job
from jobqueue.store.outcomes import Outcome

__all__ = ["Controller"]

log = logging.getLogger("jobqueue.service")

S = TaskStatus
_REASON = {"cancel": "cancelled", "stop": "stopped", "pause": "paused"}
_TARGET = {"cancel": S.CANCELLED, "stop": S.STOPPED, "pause": S.PAUSED}


class Controller:
    """Carries out control calls on jobs, wherever they run.

    Args:
        runtime: the engine whose runner, writer and supervisor it acts through.
        registry: Langflow ``start_job`` tasks are cancelled through their entry.
    """

    def __init__(self, runtime: Runtime, registry: QueueRegistry) -> None:
        self._runtime = runtime
        self._registry = registry
        runtime.apply_control = self.apply_remote

    async def get(self, job_id: str) -> Job:
        return await self._runtime.read(jobs.fetch, job_id)

    async def cancel(self, job_id: str) -> Job:
        return await self._control(job_id, "cancel")

    async def stop(self, job_id: str) -> Job:
        return await self._control(job_id, "stop")

    async def pause(self, job_id: str) -> Job:
        return await self._control(job_id, "pause")

    async def resume(self, job_id: str) -> Job:
        writer = await self._runtime.ready()
        job = await self.get(job_id)
        if job.status is S.PAUSED:
            if await writer.write(resume_paused, job_id, time.time()):
                self._runtime.want_claim()
            return await self.get(job_id)
        if job.done:
            check_transition(job_id, job.status, S.RUNNING)
        return job

    # -- implementation --------------------------------------------------------------

    async def _control(self, job_id: str, kind: str) -> Job:
        rt = self._runtime
        writer = await rt.ready()
        for _ in range(5):  # the job may change status under us (claimed, finished)
            if await self._local(job_id, kind):
                return await self.get(job_id)
            job = await self.get(job_id)
            if job.status is S.RUNNING:
                if job.owner == rt.owner:
                    await asyncio.sleep(0.01)  # starting or finishing here right now
                    continue
                owner = await writer.write(request_control, job_id, kind)
                if owner is None:
                    continue
                return await self._await_owner(job, owner, kind)
            if job.status is S.PAUSED and kind == "pause":
                # A resume() not yet acted on would run it after this pause returned.
                if await writer.write(keep_paused, job_id, time.time()):
                    return await self.get(job_id)
                continue  # resumed and claimed meanwhile: pause that run
            target = _TARGET[kind]
            check_transition(job_id, job.status, target)
            try:
                await writer.write(
                    partial(jobs.set_status, expected=(job.status,), reason=_REASON[kind]),
                    job_id,
                    target,
                )
            except JobQueueError:
                continue  # it changed meanwhile: look again
            rt.counts.removed(job.status, job.handler)
            rt.job_finished(job_id, Outcome(target, reason=_REASON[kind]), None, job.handler)
            return await self.get(job_id)
        return await self.get(job_id)

    async def _local(self, job_id: str, kind: str) -> bool:
        """Act on a job running in this process; False if it is not running here."""
        rt = self._runtime
        grace = rt.settings.cancel_grace
        runner = rt.runner
        run = runner.active.get(job_id) if runner is not None else None
        if run is None or run.task is None or run.abandoned:
            entry = self._registry.get(job_id)  # a Langflow start_job task
            if kind == "pause" or entry is None or entry.task is None or entry.task.done():
                return False
            entry.task.cancel()
            await asyncio.wait([entry.task], timeout=grace)
            if entry.settled is not None:  # its outcome is stored beside the task, after it
                await asyncio.wait([entry.settled], timeout=grace)
            return True
        assert runner is not None
        task = run.task
        if kind in ("stop", "pause"):
            runner.request(job_id, kind)
            cooperative = run.ctx is not None and run.ctx.checkpoints_seen > 0
            if kind == "stop" or cooperative:
                await asyncio.wait([task], timeout=rt.settings.stop_timeout)
            if not task.done():
                runner.cancel(job_id, "stop_timeout" if kind == "stop" else "pause")
        else:
            runner.cancel(job_id, "cancel")
        await asyncio.wait([task], timeout=grace + 0.2)
        writer = await rt.ready()
        await writer.write(barrier)  # the job's outcome is committed once this is
        return True

    async def _await_owner(self, job: Job, owner: str, kind: str) -> Job:
        """Wait for the owning process to apply ``kind``; sweep it if it died."""
        rt = self._runtime
        s = rt.settings
        assert rt.db is not None
        assert rt.writer is not None
        stale = rt.supervisor.stale_after if rt.supervisor is not None else 60.0
        if (await recover(rt.db, rt.writer, rt.owner, stale)).total:
            rt.want_claim()
        budget = s.poll_interval * 3 + s.cancel_grace + 1.0
        if kind in ("stop", "pause"):
            budget += s.stop_timeout
        deadline = time.monotonic() + budget
        while True:
            current = await self.get(job.id)
            if current.status is not S.RUNNING or current.owner != owner:
                return current
            if time.monotonic() >= deadline:
                return current  # still running: the request stays for the owner
            await asyncio.sleep(min(s.poll_interval / 2, 0.1))

    def apply_remote(self, job_id: str, kind: str) -> None:
        """The supervisor found a request from another process for a job running here."""
        asyncio.get_running_loop().create_task(
            self._apply_logged(job_id, kind), name=f"jobqueue-{kind}-{job_id}"
        )

    async def _apply_logged(self, job_id: str, kind: str) -> None:
        try:
            await self._local(job_id, kind)
        except JobQueueError as exc:
            log.warning("could not apply %s to job %r: %s", kind, job_id, exc)
