"""Langflow 1.13's in-memory ``JobQueueService`` surface, the base of the Redis service.

The same members and state as Langflow's class (``_queues`` as a dict of
``(queue, event_manager, task, cleanup_time)``, ``_closed``, ``_job_owners``,
``CLEANUP_GRACE_PERIOD``, the periodic cleanup), with jobqueue's bounded
:class:`~jobqueue.events.manager.EventQueue` as each job's queue and its typed
errors (which subclass the built-in exceptions Langflow raised). Each run also
records how it ended (``_outcomes``), which the Redis service writes into the
end of the job's stream; a run that returns without ending its stream gets
the end sentinel all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from typing import Any, ClassVar
from uuid import UUID

from jobqueue.errors import JobQueueNotFoundError, QueueExistsError, ServiceClosedError
from jobqueue.events.manager import EventManager, EventQueue, create_default_event_manager

__all__ = ["MemoryJobQueueService", "QueueData"]

log = logging.getLogger("jobqueue.redis")

QueueData = tuple[Any, EventManager, "asyncio.Task[Any] | None", "float | None"]
_CLEANUP_INTERVAL_S = 60.0
_CLEANUP_JITTER = 0.2


class MemoryJobQueueService:
    """Langflow's in-memory job queue service: queues, tasks and owners in this process."""

    name: ClassVar[str] = "job_queue_service"
    _backend_label: ClassVar[str] = "memory"

    def __init__(self, *, queue_size: int = 10_000) -> None:
        self._queues: dict[str, QueueData] = {}
        self._job_owners: dict[str, UUID] = {}
        self._public_jobs: set[str] = set()
        self._cleanup_task: asyncio.Task[None] | None = None
        self._closed = False
        self.ready = False
        self.CLEANUP_GRACE_PERIOD = 300
        self._queue_size = queue_size
        #: How each run here ended: completed, failed or cancelled (kept until cleanup).
        self._outcomes: dict[str, str] = {}

    # -- Langflow's Service interface ----------------------------------------------------

    def is_started(self) -> bool:
        return self._cleanup_task is not None

    @property
    def cross_worker_cancel_enabled(self) -> bool:
        return False

    def set_ready(self) -> None:
        if not self.is_started():
            self.start()
        self.ready = True

    def start(self) -> None:
        self._closed = False
        self._cleanup_task = asyncio.create_task(self._periodic_cleanup())

    async def stop(self) -> None:
        self._closed = True
        if self._cleanup_task:
            self._cleanup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup_task
        for job_id in list(self._queues):
            with contextlib.suppress(asyncio.CancelledError):
                await self.cleanup_job(job_id)

    async def teardown(self) -> None:
        await self.stop()

    def metrics_snapshot(self) -> dict[str, Any]:
        return {"backend": self._backend_label, "active_jobs": len(self._queues)}

    # -- queues and tasks ----------------------------------------------------------------

    def create_queue(self, job_id: str) -> tuple[EventQueue, EventManager]:
        if self._closed:
            raise ServiceClosedError("Queue service is closed")
        if job_id in self._queues:
            raise QueueExistsError(job_id)
        queue = EventQueue(self._queue_size)
        manager = self._create_default_event_manager(queue)
        self._queues[job_id] = (queue, manager, None, None)
        self._outcomes.pop(job_id, None)
        return queue, manager

    def start_job(self, job_id: str, task_coro: Coroutine[Any, Any, Any]) -> None:
        if job_id not in self._queues:
            task_coro.close()
            raise JobQueueNotFoundError(job_id, starting=True)
        if self._closed:
            task_coro.close()
            raise ServiceClosedError("Queue service is closed")
        queue, manager, existing, _ = self._queues[job_id]
        if existing is not None and not existing.done():
            existing.cancel()
        task = asyncio.create_task(self._guarded_task(job_id, task_coro, manager, queue))
        self._queues[job_id] = (queue, manager, task, None)

    async def _guarded_task(
        self,
        job_id: str,
        task_coro: Coroutine[Any, Any, Any],
        event_manager: EventManager,
        main_queue: Any,
    ) -> None:
        """Run the job; a crash sends ``on_error`` and the end; every run ends its stream."""
        try:
            await task_coro
        except asyncio.CancelledError:
            self._outcomes.setdefault(job_id, "cancelled")
            _end(main_queue)
            raise
        except Exception as exc:
            log.error("job %s failed: %s", job_id, exc, exc_info=True)
            self._outcomes.setdefault(job_id, "failed")
            if not _ended(main_queue):
                with contextlib.suppress(Exception):
                    event_manager.on_error(data={"error": str(exc)})
            _end(main_queue)
            raise
        self._outcomes.setdefault(job_id, "completed")
        _end(main_queue)

    def get_queue_data(self, job_id: str) -> QueueData:
        if self._closed:
            raise ServiceClosedError(f"Queue service is closed for job_id: {job_id}")
        try:
            return self._queues[job_id]
        except KeyError:
            raise JobQueueNotFoundError(job_id) from None

    # -- owners and public jobs ----------------------------------------------------------

    async def register_job_owner(self, job_id: str, user_id: UUID) -> None:
        self._job_owners[job_id] = user_id

    async def get_job_owner(self, job_id: str) -> UUID | None:
        return self._job_owners.get(job_id)

    async def register_public_job(self, job_id: str) -> None:
        self._public_jobs.add(job_id)

    def is_public_job(self, job_id: str) -> bool:
        return job_id in self._public_jobs

    async def is_public_job_async(self, job_id: str) -> bool:
        return self.is_public_job(job_id)

    # -- cleanup ---------------------------------------------------------------------------

    async def cleanup_job(self, job_id: str) -> None:
        """Cancel the job's task (re-raising ``CancelledError`` as Langflow does) and forget it."""
        entry = self._queues.get(job_id)
        if entry is None:
            return
        queue, _, task, _ = entry
        try:
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError as exc:
                    exc.args = (
                        ("LANGFLOW_USER_CANCELLED",)
                        if task.cancelled()
                        else ("LANGFLOW_SYSTEM_CANCELLED",)
                    )
                    raise
        finally:
            while not queue.empty():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            self._queues.pop(job_id, None)
            self._job_owners.pop(job_id, None)
            self._public_jobs.discard(job_id)
            self._outcomes.pop(job_id, None)

    async def cancel_job(self, job_id: str, *, confirm: float | None = None) -> str | None:
        """Cancel the job's task and forget it (``confirm`` is the Redis service's)."""
        await self.cleanup_job(job_id)
        return None

    async def _periodic_cleanup(self) -> None:
        while not self._closed:
            jitter = random.uniform(1 - _CLEANUP_JITTER, 1 + _CLEANUP_JITTER)
            await asyncio.sleep(_CLEANUP_INTERVAL_S * jitter)
            try:
                await self._cleanup_old_queues()
            except Exception:
                log.exception("periodic cleanup failed")

    async def _cleanup_old_queues(self) -> None:
        """Mark finished or orphaned entries, and forget them ``CLEANUP_GRACE_PERIOD`` later."""
        now = asyncio.get_running_loop().time()
        for job_id in list(self._queues):
            queue, manager, task, marked = self._queues[job_id]
            if task is not None and not task.done():
                continue
            if marked is None:
                self._queues[job_id] = (queue, manager, task, now)
            elif now - marked >= self.CLEANUP_GRACE_PERIOD:
                with contextlib.suppress(asyncio.CancelledError):
                    await self.cleanup_job(job_id)

    def _create_default_event_manager(self, queue: asyncio.Queue[Any]) -> EventManager:
        return create_default_event_manager(queue)


def _ended(queue: Any) -> bool:
    return isinstance(queue, EventQueue) and queue.ended


def _end(queue: Any) -> None:
    """Put the end sentinel unless the run put it already."""
    if not _ended(queue):
        with contextlib.suppress(Exception):
            queue.put_nowait((None, None, time.time()))
