"""Lifecycle controls: ``cancel``, ``stop``, ``pause``, ``resume``, ``retry`` — here or elsewhere.

A job running in this process is acted on directly. A job running in
another process gets a request written into its row (``control``); the
owner's supervisor applies it within one ``poll_interval``, and the call
here waits for the result. A job that is not running changes in one
guarded ``UPDATE``, so a concurrent claim cannot slip in between.

``retry`` puts a failed, cancelled or stopped job back to pending under its
id; the bulk forms select and change their jobs in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence
from functools import partial

from jobqueue.errors import InvalidArgumentError, JobQueueError
from jobqueue.events.registry import QueueRegistry
from jobqueue.hooks import HookKind, Lifecycle
from jobqueue.runtime.engine import Runtime
from jobqueue.runtime.supervisor import recover
from jobqueue.status import TaskStatus, check_transition
from jobqueue.store import jobs, lookup
from jobqueue.store import retry as retries
from jobqueue.store.controls import barrier, keep_paused, request_control, resume_paused
from jobqueue.store.jobs import Job
from jobqueue.store.outcomes import Outcome
from jobqueue.validation import parse_status_arg

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
            if await writer.write(resume_paused, job_id, self._runtime.clock.time()):
                self._runtime.want_claim()
            return await self.get(job_id)
        if job.done:
            check_transition(job_id, job.status, S.RUNNING)
        return job

    async def retry(self, job_id: str) -> Job:
        """Run a failed, cancelled or stopped job again under its id (see the service)."""
        rt = self._runtime
        writer = await rt.ready()
        found = await rt.read(lookup.resolve_id, job_id)
        changed, job = await writer.write(retries.retry_job, found, self._runtime.clock.time())
        await self._requeued([changed])
        return job  # as the retry stored it: a claim may have started it since

    async def retry_where(
        self,
        status: TaskStatus | str | Collection[TaskStatus | str] | None,
        handler: str | None,
        session_id: str | None,
    ) -> list[str]:
        """Retry every matching job; the ids retried, oldest first."""
        wanted = _statuses("retry_where", status, retries.RETRYABLE, handler, session_id)
        writer = await self._runtime.ready()
        now = self._runtime.clock.time()
        found = await writer.write(retries.retry_matching, wanted, handler, session_id, now)
        await self._requeued(found)
        return [job.id for job in found]

    async def cancel_where(
        self,
        status: TaskStatus | str | Collection[TaskStatus | str] | None,
        handler: str | None,
        session_id: str | None,
    ) -> list[str]:
        """Cancel every matching job that has not ended; the ids cancelled, oldest first."""
        wanted = _statuses("cancel_where", status, retries.CANCELLABLE, handler, session_id)
        rt = self._runtime
        writer = await rt.ready()
        now = self._runtime.clock.time()
        found, waiting = await writer.write(
            retries.cancel_matching, wanted, handler, session_id, now
        )
        done = [job for job in found if job.id in waiting]
        running = [job for job in found if job.status is S.RUNNING]
        for job in done:
            rt.counts.removed(job.status, job.handler)
            rt.job_finished(job.id, Outcome(S.CANCELLED, reason="cancelled"), None, job.handler)
        # Running jobs are cancelled where they run, a few at a time (each may wait for
        # its owner); one that ended meanwhile is left as it ended.
        gate = asyncio.Semaphore(16)

        async def cancel(job_id: str) -> Job | None:
            async with gate:
                try:
                    return await self._control(job_id, "cancel")
                except JobQueueError:
                    return None

        ended = await asyncio.gather(*(cancel(job.id) for job in running))
        hit = {job.id for job in ended if job is not None and job.status is S.CANCELLED}
        return [job.id for job in found if job.id in waiting or job.id in hit]

    # -- implementation --------------------------------------------------------------

    async def _requeued(self, found: Sequence[retries.Changed]) -> None:
        """Jobs a retry made pending: counts, stale outcomes and event queues, the claim."""
        rt = self._runtime
        hooks = rt.hooks
        for job in found:
            rt.counts.moved(job.status, S.PENDING, job.handler)
            rt.waiters.forget(job.id)  # a wait() from now on is for the new run
            entry = rt.registry.get(job.id)
            if entry is not None and not entry.langflow and (entry.ended or entry.finished):
                await rt.registry.cleanup(job.id)  # the new run gets a new event queue
            if hooks.wants(HookKind.SUBMITTED):
                hooks.emit(Lifecycle(HookKind.SUBMITTED, job.id, job.handler, "pending", "retried"))
        if found:
            rt.want_claim()

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
                if await writer.write(keep_paused, job_id, self._runtime.clock.time()):
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


def _statuses(
    call: str,
    status: TaskStatus | str | Collection[TaskStatus | str] | None,
    allowed: Sequence[TaskStatus],
    handler: str | None,
    session_id: str | None,
) -> list[TaskStatus]:
    """The statuses a bulk call acts on: those given (each one of ``allowed``), else all."""
    if status is None and handler is None and session_id is None:
        raise InvalidArgumentError(
            f"{call}() needs at least one of status=, handler= or session_id= "
            "(it would act on every job of the file otherwise)"
        )
    if status is None:
        return list(allowed)
    given = [status] if isinstance(status, str) else list(status)
    wanted: list[TaskStatus] = []
    for s in given:
        parsed = parse_status_arg(s)
        if parsed not in allowed:
            names = ", ".join(a.value for a in allowed)
            raise InvalidArgumentError(
                f"{call}(status={s!r}): it acts on jobs that are {names}; pass those statuses "
                "(or none: all of them)"
            )
        if parsed not in wanted:
            wanted.append(parsed)
    if not wanted:
        raise InvalidArgumentError(f"{call}(status=...): an empty collection matches no job")
    return wanted
