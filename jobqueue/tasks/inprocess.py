"""The in-process backend: tasks are durable jobs on a :class:`~jobqueue.JobQueueService`.

Unlike Langflow's ``AnyIOBackend`` (which awaited the task inside
``launch_task`` and numbered tasks with ``id()``, so ids could repeat),
``launch_task`` returns as soon as the job is committed to the store and the
service's scheduler runs it in the background; ids are uuid4 hex strings.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from jobqueue.errors import (
    InvalidTransition,
    JobNotFoundError,
    TaskNotFoundError,
)
from jobqueue.status import TaskStatus
from jobqueue.store.jobs import Finished, Job
from jobqueue.tasks.backend import TaskFailure, TaskInfo

if TYPE_CHECKING:
    from jobqueue.service import JobQueueService

__all__ = ["InProcessBackend", "info_from_job"]

NAME = "inprocess"


def info_from_job(job: Job | Finished) -> TaskInfo:
    """Describe a stored job (or its terminal record) as a :class:`~jobqueue.tasks.TaskInfo`."""
    failure = None
    if job.error is not None or job.error_type is not None:
        etype = job.error_type or "Error"
        message = job.error or ""
        if message.startswith(etype + ": "):  # the runner stores "Type: message"
            message = message[len(etype) + 2 :]
        failure = TaskFailure(etype, message, job.traceback)
    return TaskInfo(
        id=job.id,
        name=job.handler,
        status=job.status,
        backend=NAME,
        result=job.value() if isinstance(job, Finished) else job.result,
        failure=failure if job.status is TaskStatus.FAILED else None,
        reason=job.reason,
        state=job.status.value,
    )


class InProcessBackend:
    """Run tasks as jobs of ``service`` (which you open and close yourself).

    Args:
        service: the service whose registered handlers run the tasks. Tasks are
            ordinary jobs: ``service.get(task_id)``, ``service.events(task_id)``
            and the CLI see them too, and they survive a restart when the
            service has a database file.
        revoke_wait: seconds ``revoke_task`` waits for a cancelled run to be
            recorded before it returns the task as it stands.
    """

    name = NAME

    def __init__(self, service: JobQueueService, *, revoke_wait: float = 10.0) -> None:
        self.service = service
        self.revoke_wait = revoke_wait

    async def launch_task(
        self, name: str, payload: Any, *, task_id: str, time_limit: float | None
    ) -> None:
        """Submit a job for handler ``name``; returns once it is committed, not when it ends.

        ``time_limit`` becomes the job's ``timeout``: a run that takes longer is
        cancelled and the task fails with reason ``timeout``.
        """
        await self.service.submit(name, payload, job_id=task_id, timeout=time_limit)

    async def get_task(self, task_id: str) -> TaskInfo:
        """The job's current state (see :class:`~jobqueue.tasks.TaskBackend`)."""
        try:
            return info_from_job(await self.service.get(task_id))
        except JobNotFoundError:
            raise TaskNotFoundError(task_id, NAME) from None

    async def wait_task(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """Wait for the job's terminal record, as ``service.wait()`` does.

        A job that finishes in this process is described from its committed
        outcome (with its traceback), without reading it back.
        """
        try:
            return info_from_job(await self.service.runtime.outcome(task_id, timeout))
        except JobNotFoundError:
            raise TaskNotFoundError(task_id, NAME) from None

    async def revoke_task(self, task_id: str) -> TaskInfo:
        """Cancel the job (``service.cancel``); a finished one is left as it is."""
        if (await self.get_task(task_id)).done:
            return await self.get_task(task_id)
        with contextlib.suppress(InvalidTransition):  # it finished meanwhile: nothing to do
            await self.service.cancel(task_id)
        # cancel() can return before the cancelled run is recorded (a job claimed
        # a moment ago): wait for the record, as the Celery backend does.
        try:
            return await self.wait_task(task_id, self.revoke_wait)
        except TimeoutError:
            return await self.get_task(task_id)

    async def aclose(self) -> None:
        """Nothing to release: the service belongs to the caller."""
