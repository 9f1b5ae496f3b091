"""``LangflowCompat``: Langflow 1.13's ``JobQueueService`` members on ``JobQueueService``.

The facade (:class:`~jobqueue.service.JobQueueService`) derives from this
class, so Langflow code runs unchanged against it: the ``Service`` interface
(``name``, ``ready``, ``set_ready``, ``teardown``), the queue calls, job
ownership, and the private state Langflow's own code and tests touch
(``_queues``, ``_closed``, ``CLEANUP_GRACE_PERIOD``, ``_cleanup_old_queues``,
...). Every member delegates to the facade's parts; this class holds no state.
Where Langflow versions disagree, 1.13's shape is kept (ownership calls are
``async``). See docs/langflow.md for each member, same or different.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

from jobqueue.events.manager import EventManager, EventQueue, create_default_event_manager
from jobqueue.events.registry import QueueData
from jobqueue.langflow.queues import LangflowQueues, QueuesView
from jobqueue.validation import check_seconds

if TYPE_CHECKING:
    from jobqueue.events.registry import QueueRegistry
    from jobqueue.runtime.engine import Runtime
    from jobqueue.settings import Settings

__all__ = ["LangflowCompat"]

#: Members Langflow's ``Service.get_schema`` leaves out.
_NOT_IN_SCHEMA = frozenset({"teardown", "set_ready"})


class LangflowCompat:
    """Langflow's ``JobQueueService`` (1.13): its ``Service`` base, its calls, its state."""

    #: Langflow's service name.
    name: ClassVar[str] = "job_queue_service"
    #: ``set_ready()`` sets it (Langflow's ``Service.ready``).
    ready: bool = False

    if TYPE_CHECKING:  # provided by JobQueueService
        runtime: Runtime
        registry: QueueRegistry
        _langflow: LangflowQueues

        @property
        def settings(self) -> Settings: ...
        def start(self) -> None: ...
        async def close(self, drain_timeout: float | None = None) -> None: ...

    # -- Langflow's Service interface ----------------------------------------------------

    def is_started(self) -> bool:
        """The service was started (stays ``True`` after ``stop()``, as in Langflow)."""
        return self.runtime.state != "new"

    def set_ready(self) -> None:
        """Start the service if it was not started, then set ``ready`` (needs a running loop)."""
        if not self.is_started():
            self.start()
        self.ready = True

    async def teardown(self) -> None:
        """Close the service, as ``stop()`` does (Langflow's shutdown calls this)."""
        await self.close()

    def get_schema(self) -> dict[str, dict[str, Any]]:
        """Every public method: its name, parameter annotations, return annotation and doc.

        Langflow's ``Service.get_schema``, for methods only (properties are not
        read, so none is evaluated).
        """
        schema: dict[str, dict[str, Any]] = {}
        for attr in dir(type(self)):
            if attr.startswith("_") or attr in _NOT_IN_SCHEMA:
                continue
            raw = inspect.getattr_static(self, attr)
            if not callable(raw) or isinstance(raw, type):
                continue
            func = getattr(self, attr)
            annotations = dict(getattr(func, "__annotations__", {}))
            schema[attr] = {
                "name": attr,
                "parameters": annotations,
                "return": annotations.get("return"),
                "documentation": func.__doc__,
            }
        return schema

    @property
    def cross_worker_cancel_enabled(self) -> bool:
        """``False``: Langflow's cross-worker cancel (``signal_cancel``) is Redis-only."""
        return False

    def metrics_snapshot(self) -> dict[str, Any]:
        """``{"backend": ..., "active_jobs": n}``: Langflow's ops snapshot (a fresh dict)."""
        return {"backend": self._backend_label, "active_jobs": len(self.registry)}

    @property
    def _backend_label(self) -> str:
        return "memory" if self.settings.in_memory else "sqlite"

    # -- Langflow's calls ----------------------------------------------------------------

    def create_queue(self, job_id: str) -> tuple[EventQueue, EventManager]:
        """Register a queue and EventManager for ``job_id``.

        Raises:
            ServiceClosedError: (a ``RuntimeError``) the service is closed
                ("Queue service is closed"); checked first.
            QueueExistsError: (a ``ValueError``) the id already has a queue.
        """
        return self._langflow.create_queue(job_id)

    def start_job(self, job_id: str, task_coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``task_coro`` as the job's task, replacing (cancelling) a previous one.

        A running task of the job is cancelled at once; the new coroutine starts
        only after it has finished, so the two never write to the queue at the
        same time. Once the service is started, the run is recorded in the store
        (handler ``None``); before that it runs as Langflow's does, opening
        nothing. If the coroutine raises, ``on_error`` gets ``{"error": str(exc)}``
        and the stream ends before the task does (as Langflow's guarded task).

        Raises:
            JobQueueNotFoundError: (a ``ValueError``) "No queue found for job_id
                ...": call create_queue first; checked first.
            ServiceClosedError: (a ``RuntimeError``) the service is closed.
        """
        self._langflow.start_job(job_id, task_coro)

    def get_queue_data(self, job_id: str) -> QueueData:
        """``(queue, event_manager, task, cleanup_time)`` of a registered job.

        ``cleanup_time`` is ``None`` until a reaper pass marks the finished job
        (then ``time.monotonic()`` of that pass, as Langflow's loop time).

        Raises:
            ServiceClosedError: (a ``RuntimeError``) the service is closed; checked first.
            JobQueueNotFoundError: no queue is registered for ``job_id``.
        """
        return self._langflow.get_queue_data(job_id)

    async def cleanup_job(self, job_id: str) -> None:
        """Cancel the job's task, drain its queue and forget it (unknown ids are ignored).

        Also forgets the job's owner and public mark. Unlike Langflow, the
        task's ``CancelledError`` does not escape: the caller is not the one
        cancelled (see docs/langflow.md).
        """
        await self._langflow.cleanup_job(job_id)

    async def cancel_job(self, job_id: str) -> None:
        """Cancel a job's task and release its resources (``cleanup_job``)."""
        await self._langflow.cleanup_job(job_id)

    # -- ownership (async, as in Langflow 1.13) -------------------------------------------

    async def register_job_owner(self, job_id: str, user_id: UUID) -> None:
        """Record the user who started the job (forgotten by ``cleanup_job``)."""
        self._langflow.owners[job_id] = user_id

    async def get_job_owner(self, job_id: str) -> UUID | None:
        """The user recorded for the job, or ``None``."""
        return self._langflow.owners.get(job_id)

    async def register_public_job(self, job_id: str) -> None:
        """Mark a job as started through the public (unauthenticated) build endpoint."""
        self._langflow.public.add(job_id)

    def is_public_job(self, job_id: str) -> bool:
        """The job was marked by ``register_public_job``."""
        return job_id in self._langflow.public

    async def is_public_job_async(self, job_id: str) -> bool:
        """``is_public_job``, awaitable (as Langflow's Redis service needs)."""
        return job_id in self._langflow.public

    # -- Langflow's private state, on jobqueue's parts ------------------------------------

    @property
    def _queues(self) -> QueuesView:
        return self._langflow.view

    @property
    def _closed(self) -> bool:
        return self._langflow.closed

    @_closed.setter
    def _closed(self, value: bool) -> None:
        self._langflow.closed = value

    @property
    def _job_owners(self) -> dict[str, UUID]:
        return self._langflow.owners

    @property
    def _public_jobs(self) -> set[str]:
        return self._langflow.public

    @property
    def CLEANUP_GRACE_PERIOD(self) -> float:
        """Langflow's grace period: the registry's ``retention`` (seconds)."""
        return self.registry.retention

    @CLEANUP_GRACE_PERIOD.setter
    def CLEANUP_GRACE_PERIOD(self, seconds: float) -> None:
        check_seconds(seconds, "CLEANUP_GRACE_PERIOD")
        self.registry.retention = seconds

    @property
    def _cleanup_task(self) -> asyncio.Task[None] | None:
        return self.runtime.reaper

    async def _periodic_cleanup(self) -> None:
        await self.runtime.reap_loop()

    async def _cleanup_old_queues(self) -> None:
        await self.registry.reap()

    def _create_default_event_manager(self, queue: asyncio.Queue[Any]) -> EventManager:
        return create_default_event_manager(queue, strict=self.registry.strict_events)
