"""``TaskService``: launch registered handlers as tasks on a chosen backend.

Langflow's ``TaskService`` picked between an in-process backend and
``CeleryBackend``; this one keeps that shape over the
:class:`~jobqueue.tasks.TaskBackend` protocol::

    tasks = TaskService(service)                 # in-process, on a JobQueueService
    tasks = TaskService(CeleryBackend(service))  # the same handlers on Celery workers

    task_id = await tasks.launch_task("resize", {"path": p})
    info = await tasks.get_task(task_id)         # TaskInfo: status, result, failure
    result = await tasks.launch_and_await_task("resize", {"path": p})
    await tasks.revoke_task(task_id)

The unit of work is a handler *name*: names cross process boundaries and
survive restarts, where a function object does neither.
"""

from __future__ import annotations

import uuid
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from jobqueue.errors import InvalidArgumentError
from jobqueue.tasks.backend import TaskBackend, TaskInfo
from jobqueue.validation import check_id, check_number

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from jobqueue.events.manager import Event
    from jobqueue.service import JobQueueService

__all__ = ["TaskService"]


class TaskService:
    """Launch, await, inspect and revoke tasks on one backend.

    Args:
        backend: a :class:`~jobqueue.tasks.TaskBackend`, or a
            :class:`~jobqueue.JobQueueService` to run tasks in this process
            (shorthand for ``InProcessBackend(service)``).

    ``async with TaskService(...)`` calls :meth:`aclose` at the end; the
    in-process backend never closes your service, the Celery backend closes
    its connections.
    """

    def __init__(self, backend: TaskBackend | JobQueueService) -> None:
        if not isinstance(backend, TaskBackend):
            from jobqueue.service import JobQueueService
            from jobqueue.tasks.inprocess import InProcessBackend

            if not isinstance(backend, JobQueueService):
                raise TypeError(
                    f"TaskService needs a TaskBackend or a JobQueueService, got {backend!r}"
                )
            backend = InProcessBackend(backend)
        self.backend: TaskBackend = backend

    @property
    def backend_name(self) -> str:
        """The backend's name: ``"inprocess"`` or ``"celery"``."""
        return self.backend.name

    async def launch_task(
        self,
        name: str,
        payload: Any = None,
        *,
        task_id: str | None = None,
        time_limit: float | None = None,
    ) -> str:
        """Start handler ``name`` on ``payload`` in the background; return the task id.

        Returns once the task is queued (committed to the store, or published
        to the broker), never after it runs.

        Args:
            name: a registered handler's name.
            payload: its JSON payload.
            task_id: the id to use; by default a new uuid4 hex string.
            time_limit: seconds one run may take. In process, a longer run fails
                the task with reason ``timeout``; on Celery it is a soft time
                limit, and the run is tried again (3 tries by default) before
                the task fails with reason ``timeout``.

        Raises:
            UnknownHandlerError: no handler registered under ``name``.
            PayloadError: the payload is not JSON or is too large.
            DuplicateJobError: ``task_id`` is already taken.
            BackendUnavailableError: the broker cannot be reached (Celery).
            InvalidArgumentError: a bad ``task_id`` or ``time_limit``.
        """
        tid = uuid.uuid4().hex if task_id is None else check_id(task_id, "task_id")
        check_number(time_limit, "time_limit", positive=True)
        await self.backend.launch_task(name, payload, task_id=tid, time_limit=time_limit)
        return tid

    async def launch_and_await_task(
        self,
        name: str,
        payload: Any = None,
        *,
        time_limit: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Launch a task, wait for it and return its result.

        Args:
            name: a registered handler's name.
            payload: its JSON payload.
            time_limit: seconds one run may take (see :meth:`launch_task`).
            timeout: seconds to wait; the task keeps running after a timeout.

        Raises:
            TaskFailedError: the task failed (``.error_type``, ``.traceback``, ``.reason``).
            JobCancelledError: the task was revoked.
            TimeoutError: ``timeout`` passed first.
        """
        task_id = await self.launch_task(name, payload, time_limit=time_limit)
        return await self.wait_task(task_id, timeout)

    async def wait_task(self, task_id: str, timeout: float | None = None) -> Any:
        """Wait for a launched task and return its result (errors as :meth:`launch_and_await_task`).

        Raises:
            TaskNotFoundError: unknown id.
        """
        check_number(timeout, "timeout")
        info = await self.backend.wait_task(task_id, timeout)
        return info.outcome()

    async def get_task(self, task_id: str) -> TaskInfo:
        """The task's status, and its result or failure (type, message, traceback).

        Raises:
            TaskNotFoundError: no task with this id was launched on this backend.
        """
        return await self.backend.get_task(task_id)

    def events(self, task_id: str, *, after: int | None = None) -> AsyncIterator[Event]:
        """The task's events after seq ``after``, in order, ending with its ``end``/``error``.

        ``async for event in tasks.events(task_id)``. In process these are the
        job's events (``service.events``); on Celery they come from the Redis
        bus (``CeleryBackend(..., bus=...)``), from whichever worker runs the
        task, numbered on across retries; a revoked task ends with ``end``
        whose data says ``cancelled``.

        Raises (when iterated):
            TaskNotFoundError: unknown id (Celery).
            JobNotFoundError: unknown id (in process).
            InvalidArgumentError: the backend does not stream events.
        """
        from jobqueue.tasks.inprocess import InProcessBackend

        backend = self.backend
        if isinstance(backend, InProcessBackend):
            return backend.service.events(task_id, after=after)
        stream = getattr(backend, "events", None)
        if stream is None:
            raise InvalidArgumentError(
                f"the {backend.name!r} backend does not stream events; use the in-process "
                "backend or CeleryBackend(..., bus='redis://...')"
            )
        return cast("AsyncIterator[Event]", stream(task_id, after=after))

    async def revoke_task(self, task_id: str) -> TaskInfo:
        """Cancel a task: a queued one never runs, a running one is cancelled.

        The task ends ``cancelled``. Revoking a finished task changes nothing.

        Raises:
            TaskNotFoundError: unknown id.
        """
        return await self.backend.revoke_task(task_id)

    async def aclose(self) -> None:
        """Release the backend's connections (see :meth:`TaskBackend.aclose`)."""
        await self.backend.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
