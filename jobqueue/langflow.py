"""The Langflow-compatible calls: create_queue, start_job, get_queue_data, cleanup_job."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from jobqueue.core import ServiceCore
from jobqueue.errors import JobQueueNotFoundError
from jobqueue.events.manager import EventManager, EventQueue
from jobqueue.events.registry import QueueData
from jobqueue.runtime.bare import run_bare
from jobqueue.validation import check_id

__all__ = ["LangflowLayer"]


class LangflowLayer(ServiceCore):
    """Langflow's ``JobQueueService`` surface, with its known bugs fixed."""

    def create_queue(self, job_id: str) -> tuple[EventQueue, EventManager]:
        """Register a queue and EventManager for ``job_id``.

        Raises:
            QueueExistsError: (a ``ValueError``) the id already has a queue.
            ServiceClosedError: (a ``RuntimeError``) the service is closed.
        """
        self._check_usable()
        entry = self._registry.create(check_id(job_id, "job_id"))
        return entry.queue, entry.manager

    def start_job(self, job_id: str, task_coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``task_coro`` as the job's task, replacing (cancelling) a previous one.

        The new coroutine starts only after a replaced task has finished, so
        the two never write to the queue at the same time. The run is
        recorded in the store (handler ``None``).

        Raises:
            JobQueueNotFoundError: (a ``ValueError``) no queue: call create_queue first.
            ServiceClosedError: (a ``RuntimeError``) the service is closed.
        """
        try:
            self._check_usable()
            entry = self._registry.get(job_id)
            if entry is None:
                raise JobQueueNotFoundError(job_id)
            self.start()
        except BaseException:
            task_coro.close()  # never awaited: close it so Python does not warn
            raise
        previous = entry.task
        entry.finished, entry.cleanup_at = False, None
        entry.task = asyncio.get_running_loop().create_task(
            run_bare(
                job_id, entry, task_coro, previous, self._ready, self.owner, self._bare_finished
            ),
            name=f"jobqueue-bare-{job_id}",
        )

    def get_queue_data(self, job_id: str) -> QueueData:
        """``(queue, event_manager, task, cleanup_at)`` of a registered job.

        Raises:
            JobQueueNotFoundError: no queue is registered for ``job_id``.
            ServiceClosedError: (a ``RuntimeError``) the service is closed.
        """
        self._check_usable()
        return self._registry.data(job_id)

    async def cleanup_job(self, job_id: str) -> None:
        """Cancel the job's task, drain its queue and forget it (unknown ids are ignored)."""
        await self._registry.cleanup(job_id)
