"""What the service does when the scheduler, runner and reaper report back.

Counts, waiters, terminal events and lifecycle records are kept here, apart
from the opening and closing machinery in :mod:`jobqueue.core`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from jobqueue.errors import JobQueueError, ServiceClosedError
from jobqueue.events.manager import EventManager
from jobqueue.events.registry import QueueRegistry
from jobqueue.hooks import HookKind, Hooks, Lifecycle
from jobqueue.runtime.counts import JobCounts
from jobqueue.runtime.runner import Runner
from jobqueue.runtime.scheduler import Scheduler
from jobqueue.status import TaskStatus
from jobqueue.store.connection import Database
from jobqueue.store.jobs import Claimed
from jobqueue.store.outcomes import Outcome
from jobqueue.store.recovery import SweepResult

__all__ = ["Bookkeeping"]

log = logging.getLogger("jobqueue.service")
_FINISHED, _EVENT_CONSUMED = HookKind.FINISHED, HookKind.EVENT_CONSUMED


class Bookkeeping:
    """Callbacks of :class:`~jobqueue.core.ServiceCore`'s parts; state set up there."""

    hooks: Hooks
    tally: JobCounts
    _opts: dict[str, Any]
    _registry: QueueRegistry
    _waiters: dict[str, set[asyncio.Future[None]]]
    _db: Database | None
    _runner: Runner | None
    _scheduler: Scheduler | None
    _cleanup_interval: float

    # -- callbacks from scheduler and runner ------------------------------------------------

    def _start_claimed(self, claimed: Claimed) -> None:
        assert self._runner is not None
        self.tally.claimed(claimed.handler)
        if self._opts["persist_events"]:
            self._registry.begin_run(claimed.id, claimed.event_seq)
        entry = self._registry.get(claimed.id)
        task = self._runner.start(claimed)
        if entry is not None:
            entry.task, entry.finished = task, False

    def _runner_finished(self, job_id: str, out: Outcome, value: Any) -> None:
        self.tally.removed(TaskStatus.RUNNING, None)
        self._job_finished(job_id, out, value, None)

    def _retried(self, run_at: float, handler: str) -> None:
        self.tally.moved(TaskStatus.RUNNING, TaskStatus.PENDING, handler)
        if self._scheduler is not None:
            self._scheduler.want()

    def _paused(self, job_id: str, handler: str) -> None:
        self.tally.moved(TaskStatus.RUNNING, TaskStatus.PAUSED)
        self._wake_waiters(job_id)  # pause() waits for this

    def _swept(self, result: SweepResult) -> None:
        """The watch loop settled a dead process's jobs: recount, and claim them."""
        if self._scheduler is not None:
            self._scheduler.want()
        asyncio.get_running_loop().create_task(self.refresh_stats(), name="jobqueue-recount")

    def _apply_control(self, job_id: str, kind: str) -> None:
        """A control request for a job of ours came from another process."""
        raise NotImplementedError

    def active_counts(self) -> dict[str, int]:
        """Running jobs by handler in this process (safe from another thread)."""
        runner = self._runner
        if runner is None:
            return {}
        counts: dict[str, int] = {}
        for run in list(runner.active.values()):  # one C-level copy under the GIL
            if not run.abandoned:
                counts[run.claimed.handler] = counts.get(run.claimed.handler, 0) + 1
        return counts

    def queue_lengths(self) -> dict[str, int]:
        """Pending jobs by handler, from in-memory counts (safe from another thread)."""
        return self.tally.queue_lengths()

    def _bare_finished(self, job_id: str, out: Outcome, value: Any) -> None:
        self.tally.added(out.status)
        self._wake_waiters(job_id)

    def _job_finished(self, job_id: str, out: Outcome, value: Any, handler: str | None) -> None:
        """A durable job reached a terminal status (already committed)."""
        self.tally.added(out.status)
        entry = self._registry.get(job_id)
        if entry is not None and not entry.queue.ended:
            self._end_events(entry.manager, out.status, value, out.error, out.reason)
            entry.finished = True
        self._wake_waiters(job_id)
        if handler is not None and self.hooks.wants(_FINISHED):  # runner jobs emit their own
            self.hooks.emit(Lifecycle(_FINISHED, job_id, handler, out.status.value, out.reason))

    @staticmethod
    def _end_events(
        manager: EventManager,
        status: TaskStatus,
        result: Any,
        error: str | None,
        reason: str | None,
    ) -> None:
        """Put the terminal event and the end sentinel on a job's queue."""
        if status is TaskStatus.FAILED:
            manager.send_event(
                event_type="error", data={"status": status.value, "error": error, "reason": reason}
            )
        else:
            data: dict[str, Any] = {"status": status.value}
            if status is TaskStatus.COMPLETED:
                data["result"] = result
            elif reason:
                data["reason"] = reason
            manager.send_event(event_type="end", data=data)
        manager.end_stream()

    def _wake_waiters(self, job_id: str) -> None:
        for fut in self._waiters.pop(job_id, ()):
            if not fut.done():
                fut.set_result(None)

    def _forget_waiter(self, job_id: str, fut: asyncio.Future[None]) -> None:
        futs = self._waiters.get(job_id)
        if futs is not None:
            futs.discard(fut)
            if not futs:
                del self._waiters[job_id]

    def _event_consumed(self, seconds: float) -> None:
        if self.hooks.wants(_EVENT_CONSUMED):
            self.hooks.emit(Lifecycle(_EVENT_CONSUMED, wait_s=seconds))

    def _runner_cancel(self, job_id: str) -> asyncio.Task[Any] | None:
        if self._runner is not None:
            task = self._runner.cancel(job_id, "cancel")
            if task is not None:
                return task
        entry = self._registry.get(job_id)
        if entry is not None and entry.task is not None and not entry.task.done():
            entry.task.cancel()
            return entry.task
        return None

    def _events_for(self, job_id: str) -> EventManager:
        raise NotImplementedError

    def _close_extras(self) -> None:
        """Release what the public layer added (metrics); overridden there."""

    async def _until_idle(self) -> None:
        while True:
            scheduler, runner = self._scheduler, self._runner
            if scheduler is None or runner is None:
                raise ServiceClosedError()
            scheduler.want()
            await scheduler.idle.wait()
            if not runner.drained.is_set():
                await runner.drained.wait()  # outcomes committed; retries may be pending
                continue
            if scheduler.idle.is_set():
                return

    # -- reaper ------------------------------------------------------------------------------

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval)
            try:
                await self._registry.reap()
                await self.refresh_stats()
            except JobQueueError as exc:
                log.warning("reaper pass failed: %s", exc)
            except Exception:
                log.exception("reaper pass failed; it will run again")

    async def refresh_stats(self) -> None:
        """Re-read job counts and lag from the store (the reaper does this periodically)."""
        if self._db is not None:
            await self.tally.refresh(self._db)
