"""Tasks on a chosen backend: ``TaskService`` over the ``TaskBackend`` protocol.

``TaskService(service)`` runs registered handlers in this process, on a
:class:`~jobqueue.JobQueueService`; ``TaskService(CeleryBackend(service))`` runs
the same handlers on Celery workers (``pip install 'jobqueue[celery]'``).
Celery is imported only when ``CeleryBackend`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobqueue.tasks.backend import TaskBackend, TaskFailure, TaskInfo
from jobqueue.tasks.inprocess import InProcessBackend
from jobqueue.tasks.service import TaskService

if TYPE_CHECKING:
    from jobqueue.tasks.celery import CeleryBackend

__all__ = [
    "CeleryBackend",
    "InProcessBackend",
    "TaskBackend",
    "TaskFailure",
    "TaskInfo",
    "TaskService",
]


def __getattr__(name: str) -> Any:
    if name == "CeleryBackend":
        try:
            from jobqueue.tasks.celery import CeleryBackend
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.partition(".")[0] not in ("celery", "kombu", "redis"):
                raise
            raise ModuleNotFoundError(
                f"CeleryBackend needs Celery with Redis support ({exc}); install it with "
                "pip install 'jobqueue[celery]'",
                name=exc.name,
            ) from exc
        return CeleryBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
