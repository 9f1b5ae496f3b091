"""The :class:`TaskBackend` protocol and what every backend reports.

A backend runs registered handlers by name: the in-process backend on a
:class:`~jobqueue.JobQueueService`, the Celery backend on Celery workers. Both
report a task as a :class:`TaskInfo` with the lowercase
:class:`~jobqueue.TaskStatus` vocabulary, so code written against
:class:`~jobqueue.tasks.TaskService` does not change with the backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from jobqueue.errors import JobCancelledError, TaskFailedError
from jobqueue.status import TERMINAL, TaskStatus

__all__ = ["TaskBackend", "TaskFailure", "TaskInfo", "poll_until_done"]


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """Why a task failed: the exception as the backend recorded it.

    Attributes:
        error_type: the exception's class name (``"ValueError"``).
        message: the exception's message (``str(exc)``).
        traceback: the formatted traceback text, when the backend kept one.
    """

    error_type: str
    message: str
    traceback: str | None = None

    @property
    def error(self) -> str:
        """``"ValueError: bad input"``: type and message on one line."""
        return f"{self.error_type}: {self.message}" if self.message else self.error_type


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A snapshot of one task, the same shape for every backend.

    Attributes:
        id: the task id (a uuid4 hex string unless the caller chose one).
        name: the handler name it was launched with (``None`` when unknown).
        status: lowercase status: pending, running, completed, failed, cancelled
            (the in-process backend may also report paused or stopped).
        backend: the backend's name, ``"inprocess"`` or ``"celery"``.
        result: the handler's return value once ``completed``.
        failure: the exception once ``failed``.
        reason: why it ended that way, when known (``"error"``, ``"timeout"``,
            ``"unknown_handler"``, ``"cancelled"``, ...).
        state: the backend's own word for the status (Celery's ``"RETRY"``,
            ``"STARTED"``, ...; for the in-process backend, the status again).
    """

    id: str
    name: str | None
    status: TaskStatus
    backend: str
    result: Any = None
    failure: TaskFailure | None = None
    reason: str | None = None
    state: str | None = None

    @property
    def done(self) -> bool:
        """True once the task is in a final status."""
        return self.status in TERMINAL

    def outcome(self) -> Any:
        """The result of a finished task, or the error it ended with.

        Raises:
            TaskFailedError: the task failed (``.error_type``, ``.traceback``, ``.reason``).
            JobCancelledError: the task was cancelled (revoked) or stopped.
            RuntimeError: the task is not finished yet.
        """
        if self.status is TaskStatus.COMPLETED:
            return self.result
        if self.status is TaskStatus.FAILED:
            f = self.failure
            raise TaskFailedError(
                self.id,
                f.error if f else None,
                self.reason,
                error_type=f.error_type if f else None,
                traceback=f.traceback if f else None,
            )
        if self.status in TERMINAL:
            raise JobCancelledError(self.id, self.status.value)
        raise RuntimeError(f"task {self.id!r} is still {self.status.value}")


@runtime_checkable
class TaskBackend(Protocol):
    """What :class:`~jobqueue.tasks.TaskService` needs from a backend.

    Every method is a coroutine; a backend whose client blocks (Celery) runs
    the blocking part in a thread, never on the event loop.
    """

    #: Short name reported in :attr:`TaskInfo.backend` (``"inprocess"``, ``"celery"``).
    name: str

    async def launch_task(
        self, name: str, payload: Any, *, task_id: str, time_limit: float | None
    ) -> None:
        """Queue handler ``name`` with ``payload`` under ``task_id``; return without waiting.

        Raises:
            UnknownHandlerError: no handler of that name is known here.
            PayloadError: the payload is not JSON or is too large.
            DuplicateJobError: ``task_id`` is taken.
            BackendUnavailableError: the broker cannot be reached.
        """
        ...

    async def get_task(self, task_id: str) -> TaskInfo:
        """The task's current state.

        Raises:
            TaskNotFoundError: no task with this id was launched here.
        """
        ...

    async def wait_task(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """Wait until the task is finished and return its final state.

        Raises:
            TaskNotFoundError: unknown id.
            TimeoutError: ``timeout`` seconds passed first (the task keeps running).
        """
        ...

    async def revoke_task(self, task_id: str) -> TaskInfo:
        """Cancel the task: a queued one never runs, a running one is cancelled.

        Revoking a finished task changes nothing and returns its state.

        Raises:
            TaskNotFoundError: unknown id.
        """
        ...

    async def aclose(self) -> None:
        """Release connections the backend opened (it may be used again afterwards)."""
        ...


async def poll_until_done(
    get: Callable[[str], Awaitable[TaskInfo]],
    task_id: str,
    timeout: float | None,
    *,
    first: float = 0.02,
    longest: float = 0.25,
) -> TaskInfo:
    """Poll ``get(task_id)`` until the task is done, backing off from ``first`` to ``longest``.

    For backends that cannot push a completion to this process. The wait is
    cancellable at every poll.

    Raises:
        TimeoutError: ``timeout`` seconds passed first.
    """
    delay = first
    async with asyncio.timeout(timeout):
        while True:
            info = await get(task_id)
            if info.done:
                return info
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, longest)
