"""Langflow's ``start_job``: run a bare coroutine for a job, recorded in the store.

Recorded once the service is started; a service never started runs it as
Langflow does, opening nothing (no store, no thread to close).

A bare coroutine cannot be persisted, so after a crash such a job cannot be
restarted; it is recorded all the same so that its fate is visible.

The task ``start_job`` makes ends as its coroutine does, as Langflow's does:
cancelled at once when it is cancelled (no store write in between), and a
coroutine that raises first sends ``on_error`` with ``{"error": str(exc)}``
and the end sentinel. The bookkeeping beside it (the run's record, its
outcome, the end of its stream) is *settled* by :class:`BareRun`: for a
normal end or a failure before the task ends, for a cancellation in a task
of its own right after. A replacing run, ``cleanup_job`` and ``close()`` wait
for a run to be settled, so outcomes are stored in order and before the
store closes.

A task registered directly (``service._queues[job_id] = (queue, manager,
task, None)``) is watched the same way: its run and outcome are recorded and
its stream ended when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Coroutine
from typing import Any, Protocol

from jobqueue import codec
from jobqueue.errors import JobQueueError
from jobqueue.events.manager import EventManager
from jobqueue.events.registry import Entry
from jobqueue.status import TaskStatus
from jobqueue.store import jobs
from jobqueue.store.jobs import NewJob
from jobqueue.store.outcomes import FINISH, Outcome
from jobqueue.store.writer import Writer

__all__ = ["BareHost", "BareRun", "BareRuns"]

log = logging.getLogger("jobqueue.service")


class BareRun:
    """One bare run of a job: a ``start_job`` coroutine, or a task registered directly."""

    def __init__(self, runs: BareRuns, job_id: str, entry: Entry, description: str) -> None:
        self._runs = runs
        self.job_id = job_id
        self.entry = entry
        self.description = description
        self.task: asyncio.Future[Any] | None = None
        #: Done once the run's outcome is stored and its stream ended (or nothing was recorded).
        self.settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._recorded = False  # the run's start was sent to the store
        self._settling: asyncio.Future[None] | None = None

    # -- a start_job coroutine ------------------------------------------------------------

    async def main(
        self,
        coro: Coroutine[Any, Any, Any],
        previous: asyncio.Future[Any] | None,
        previous_settled: asyncio.Future[None] | None,
    ) -> Any:
        """The task body: wait for the replaced run, record, run, settle (not when cancelled)."""
        # The replaced run was cancelled by start_job; the new coroutine starts once
        # it ended and its outcome is stored, so the two never share the queue.
        for waited in (previous, previous_settled):
            if waited is not None and not waited.done():
                await asyncio.wait([waited])
        await self._record_start()
        try:
            value = await coro
        except asyncio.CancelledError:
            raise  # settled beside the task (done()), which ends cancelled at once
        except Exception as exc:
            log.error("job %r: its coroutine raised %s", self.job_id, exc, exc_info=exc)
            manager = self.entry.manager
            with contextlib.suppress(Exception):  # as Langflow's guarded task
                manager.on_error(data={"error": str(exc)})
            await asyncio.shield(self._settle(_failed(exc)))
            raise
        await asyncio.shield(self._settle(Outcome(TaskStatus.COMPLETED), value))
        return value

    def done(self, task: asyncio.Future[Any], coro: Coroutine[Any, Any, Any] | None) -> None:
        """Done callback of the task: a cancelled run is settled now, in a task of its own."""
        if coro is not None:
            coro.close()  # never started (cancelled first): close it so Python does not warn
        self._runs.active.discard(self)
        if self._settling is None:  # cancelled (or never got to run)
            if self._recorded:
                self._settle(_outcome_of(task))
            else:
                self._end_stream()
                self._runs.settled(self)
        if not task.cancelled():
            task.exception()  # retrieved here; whoever awaits the task still gets it

    # -- a task registered directly -------------------------------------------------------

    async def watch(self, task: asyncio.Future[Any]) -> None:
        """Record a task we did not start: its run now, its outcome when it ends."""
        try:
            await self._record_start()
            await asyncio.wait([task])
        except asyncio.CancelledError:  # the watcher itself (loop shutdown)
            self._runs.settled(self)
            raise
        out = _outcome_of(task)
        value = task.result() if out.status is TaskStatus.COMPLETED else None
        await self._settle(out, value)

    # -- recording -------------------------------------------------------------------------

    async def _record_start(self) -> None:
        rt = self._runs.runtime
        try:
            writer = await rt.live_writer()
        except JobQueueError as exc:  # the coroutine still runs; its record is best effort
            log.error("could not record job %r: %s", self.job_id, exc)
            return
        if writer is None:  # the service was never started: nothing is recorded
            return
        now = time.time()
        row = NewJob(
            self.job_id,
            None,
            None,
            TaskStatus.RUNNING,
            now,
            now,
            description=self.description,
            owner=rt.owner,
        )
        self._recorded = True
        await _write(writer, self.job_id, jobs.upsert_running, row)

    def _settle(self, out: Outcome, value: Any = None) -> asyncio.Future[None]:
        if self._settling is None:
            self._settling = asyncio.ensure_future(self._finish(out, value))
        return self._settling

    async def _finish(self, out: Outcome, value: Any) -> None:
        """Store the outcome, then end the stream: a consumer that saw the end reads it stored."""
        rt = self._runs.runtime
        try:
            if self._recorded:
                writer = await rt.live_writer()
                if writer is not None:
                    await _write(writer, self.job_id, FINISH, self.job_id, out, time.time())
        except JobQueueError as exc:
            log.error("could not record the end of job %r: %s", self.job_id, exc)
        except asyncio.CancelledError:
            log.warning("recording the end of job %r was interrupted", self.job_id)
        finally:
            if self._recorded:
                rt.bare_finished(self.job_id, out, value)
            self._end_stream()
            self._runs.settled(self)

    def _end_stream(self) -> None:
        """End the stream, unless the run was replaced (the new run goes on with it)."""
        entry = self.entry
        if entry.task is not self.task:
            return
        manager = entry.manager
        if isinstance(manager, EventManager):
            manager.end_stream()
        else:  # a foreign manager given through _queues: put the sentinel itself
            with contextlib.suppress(Exception):
                entry.queue.put_nowait((None, None, time.time()))


class BareHost(Protocol):
    """What bare runs need of their runtime (a protocol: the runtime imports this module)."""

    @property
    def owner(self) -> str: ...

    async def live_writer(self) -> Writer | None: ...

    def bare_finished(self, job_id: str, out: Outcome, value: Any) -> None: ...


class BareRuns:
    """The bare runs of one runtime, so that closing cancels them and waits for their records."""

    def __init__(self, runtime: BareHost) -> None:
        self.runtime = runtime
        #: Runs whose task is still running.
        self.active: set[BareRun] = set()
        #: Runs not settled yet (running, or storing their outcome).
        self.unsettled: set[BareRun] = set()

    def start(self, job_id: str, entry: Entry, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as the job's task, replacing (cancelling at once) a running one."""
        previous = entry.task
        if previous is not None and not previous.done():
            previous.cancel()  # now, as Langflow does; the new run waits for it to end
        run = BareRun(self, job_id, entry, getattr(coro, "__qualname__", type(coro).__name__))
        task = asyncio.get_running_loop().create_task(
            run.main(coro, previous, entry.settled), name=f"jobqueue-bare-{job_id}"
        )
        self._track(run, task, coro)
        return task

    def watch(self, job_id: str, entry: Entry, task: asyncio.Future[Any]) -> None:
        """Record ``task`` (registered through ``_queues``) as the job's run until it ends."""
        name = task.get_name() if isinstance(task, asyncio.Task) else type(task).__name__
        run = BareRun(self, job_id, entry, name)
        self._track(run, task, None)
        watcher = asyncio.get_running_loop().create_task(
            run.watch(task), name=f"jobqueue-watch-{job_id}"
        )
        watcher.add_done_callback(_retrieve)

    def _track(
        self, run: BareRun, task: asyncio.Future[Any], coro: Coroutine[Any, Any, Any] | None
    ) -> None:
        run.task = task
        entry = run.entry
        entry.task, entry.settled, entry.finished, entry.cleanup_at = task, run.settled, False, None
        self.active.add(run)
        self.unsettled.add(run)
        if coro is not None:  # a watched task is settled by its watcher
            task.add_done_callback(lambda t: run.done(t, coro))
        else:
            task.add_done_callback(lambda t: self.active.discard(run))

    def settled(self, run: BareRun) -> None:
        self.unsettled.discard(run)
        if not run.settled.done():
            run.settled.set_result(None)

    def cancel_all(self) -> list[asyncio.Future[Any]]:
        """Cancel every running bare task (``close()``: Langflow's ``stop()`` does so at once)."""
        tasks = [r.task for r in self.active if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        return tasks

    async def wait_settled(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every run's outcome is stored."""
        pending = [r.settled for r in self.unsettled if not r.settled.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)


def _failed(exc: BaseException) -> Outcome:
    return Outcome(
        TaskStatus.FAILED,
        error=codec.storable(f"{type(exc).__name__}: {exc}"),
        error_type=type(exc).__name__,
        traceback=codec.storable("".join(traceback.format_exception(exc))[-8192:]),
        reason="error",
    )


def _outcome_of(task: asyncio.Future[Any]) -> Outcome:
    if task.cancelled():
        return Outcome(TaskStatus.CANCELLED, reason="cancelled")
    exc = task.exception()
    return Outcome(TaskStatus.COMPLETED) if exc is None else _failed(exc)


async def _write(writer: Writer, job_id: str, fn: Any, *args: Any) -> None:
    """Queue a write now (so writes keep their order) and wait for its commit."""
    try:
        await asyncio.shield(writer.enqueue(fn, *args))
    except JobQueueError as exc:  # the coroutine still runs; its record is best effort
        log.error("could not record job %r: %s", job_id, exc)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("watching a job's task failed: %s", exc, exc_info=exc)
