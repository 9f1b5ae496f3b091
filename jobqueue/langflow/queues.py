"""Langflow's calls over the runtime and the queue registry, and the ``_queues`` view.

:class:`LangflowQueues` holds what the Langflow layer owns: the gate that
``service._closed = True`` shuts, the job owners and public jobs. The
queues themselves are the registry's entries; :class:`QueuesView` shows
them as Langflow's ``dict`` of 4-tuples.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator, MutableMapping
from typing import Any
from uuid import UUID

from jobqueue.errors import JobQueueNotFoundError, ServiceClosedError
from jobqueue.events.manager import EventManager, EventQueue
from jobqueue.events.registry import QueueData, QueueRegistry
from jobqueue.runtime.engine import Runtime
from jobqueue.validation import check_id

__all__ = ["LangflowQueues", "QueuesView"]


class LangflowQueues:
    """Langflow's ``JobQueueService`` calls, with its known bugs fixed."""

    def __init__(self, runtime: Runtime, registry: QueueRegistry) -> None:
        self._runtime = runtime
        self._registry = registry
        #: ``service._closed = True`` was set: the Langflow calls refuse new work.
        self.refusing = False
        #: Langflow's ``_job_owners``: job id -> the user who started it.
        self.owners: dict[str, UUID] = {}
        #: Langflow's ``_public_jobs``: jobs started through the public endpoint.
        self.public: set[str] = set()
        registry.on_forget.append(self._forget)
        self.view = QueuesView(self)

    # -- the gate ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """The Langflow calls refuse new work (``_closed``)."""
        return self.refusing or self._runtime.state in ("closing", "closed")

    @closed.setter
    def closed(self, value: bool) -> None:
        self.refusing = bool(value)
        if not value:
            self._runtime.reopen()  # a closed service takes work again (reopened on use)

    # -- Langflow's calls ----------------------------------------------------------------

    def create_queue(self, job_id: str) -> tuple[EventQueue, EventManager]:
        if self.closed:
            raise ServiceClosedError("Queue service is closed")
        entry = self._registry.create(check_id(job_id, "job_id"))
        queue = entry.queue
        assert isinstance(queue, EventQueue)  # the registry makes its own
        return queue, entry.manager

    def start_job(self, job_id: str, task_coro: Coroutine[Any, Any, Any]) -> None:
        rt = self._runtime
        try:
            entry = self._registry.get(job_id)
            if entry is None:  # checked first, as Langflow does
                raise JobQueueNotFoundError(job_id, starting=True)
            if self.closed:
                raise ServiceClosedError("Queue service is closed")
        except BaseException:
            task_coro.close()  # never awaited: close it so Python does not warn
            raise
        # Recorded in the store once the service is started (start(), set_ready(),
        # async with); before that it runs as Langflow's does, opening nothing.
        rt.bare.start(job_id, entry, task_coro)

    def get_queue_data(self, job_id: str) -> QueueData:
        if self.closed:
            raise ServiceClosedError(f"Queue service is closed for job_id: {job_id}")
        return self._registry.data(job_id)

    async def cleanup_job(self, job_id: str) -> None:
        await self._registry.cleanup(job_id)

    def _forget(self, job_id: str) -> None:
        self.owners.pop(job_id, None)
        self.public.discard(job_id)

    # -- _queues[job_id] = (queue, manager, task, cleanup_time) -----------------------------

    def adopt(self, job_id: str, value: Any) -> None:
        """Register (or update) ``job_id``'s entry from Langflow's 4-tuple."""
        try:
            queue, manager, task, cleanup_time = value
        except (TypeError, ValueError):
            raise ValueError(
                f"_queues[{job_id!r}] takes (queue, event_manager, task, cleanup_time), "
                f"got {value!r:.80}"
            ) from None
        if task is not None and not isinstance(task, asyncio.Future):
            raise TypeError(f"the task of _queues[{job_id!r}] must be an asyncio.Task or None")
        check_id(job_id, "job_id")
        registry = self._registry
        entry = registry.get(job_id)
        if entry is None or entry.queue is not queue or entry.manager is not manager:
            entry = registry.adopt(job_id, queue, manager)
        if task is not entry.task:
            entry.task, entry.settled, entry.finished = task, None, False
            rt = self._runtime
            if task is not None and not task.done() and rt.state not in ("closing", "closed"):
                rt.bare.watch(job_id, entry, task)
        entry.cleanup_at = cleanup_time


class QueuesView(MutableMapping[str, QueueData]):
    """Langflow's ``_queues``: the registry as ``job_id -> (queue, manager, task, cleanup_time)``.

    Live: reads show the registry as it is now. Assigning a 4-tuple registers
    that queue and manager (a task in it is recorded as the job's run and its
    end stored, as ``start_job``'s); ``del`` / ``pop`` forget an entry
    without touching its task (as removing it from Langflow's dict does).
    """

    def __init__(self, queues: LangflowQueues) -> None:
        self._queues = queues
        self._entries = queues._registry.entries

    def __getitem__(self, job_id: str) -> QueueData:
        return self._entries[job_id].as_tuple()

    def __setitem__(self, job_id: str, value: QueueData) -> None:
        self._queues.adopt(job_id, value)

    def __delitem__(self, job_id: str) -> None:
        del self._entries[job_id]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))  # a snapshot: the loop may change the registry

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    def __repr__(self) -> str:
        return f"<_queues view of {len(self)} job(s): {list(self._entries)!r:.200}>"
