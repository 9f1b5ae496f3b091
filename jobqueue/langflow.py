"""Langflow's calls: ``create_queue``, ``start_job``, ``get_queue_data``, ``cleanup_job``.

An adapter over the runtime (which records each run in the store) and the
queue registry (which holds each job's queue, manager and task).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from jobqueue.errors import JobQueueNotFoundError
from jobqueue.events.manager import EventManager, EventQueue
from jobqueue.events.registry import QueueData, QueueRegistry
from jobqueue.runtime.bare import run_bare
from jobqueue.runtime.engine import Runtime
from jobqueue.validation import check_id

__all__ = ["LangflowQueues"]


class LangflowQueues:
    """Langflow's ``JobQueueService`` surface, with its known bugs fixed."""

    def __init__(self, runtime: Runtime, registry: QueueRegistry) -> None:
        self._runtime = runtime
        self._registry = registry

    def create_queue(self, job_id: str) -> tuple[EventQueue, EventManager]:
        self._runtime.check_usable()
        entry = self._registry.create(check_id(job_id, "job_id"))
        return entry.queue, entry.manager

    def start_job(self, job_id: str, task_coro: Coroutine[Any, Any, Any]) -> None:
        rt = self._runtime
        try:
            rt.check_usable()
            entry = self._registry.get(job_id)
            if entry is None:
                raise JobQueueNotFoundError(job_id)
            rt.start()
        except BaseException:
            task_coro.close()  # never awaited: close it so Python does not warn
            raise
        previous = entry.task
        entry.finished, entry.cleanup_at = False, None
        entry.task = asyncio.get_running_loop().create_task(
            run_bare(job_id, entry, task_coro, previous, rt.ready, rt.owner, rt.bare_finished),
            name=f"jobqueue-bare-{job_id}",
        )

    def get_queue_data(self, job_id: str) -> QueueData:
        self._runtime.check_usable()
        return self._registry.data(job_id)

    async def cleanup_job(self, job_id: str) -> None:
        await self._registry.cleanup(job_id)
