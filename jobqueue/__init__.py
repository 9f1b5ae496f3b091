"""jobqueue: an embedded, crash-safe asyncio job queue on SQLite.

The names users need are re-exported here; everything else is internal.
"""

from __future__ import annotations

from jobqueue.context import JobContext
from jobqueue.control import Cancel, Retry
from jobqueue.errors import (
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobQueueError,
    JobQueueNotFoundError,
)
from jobqueue.events import Event, EventManager, create_default_event_manager
from jobqueue.service import JobQueueService
from jobqueue.status import ACTIVE, TERMINAL, TaskStatus
from jobqueue.store.jobs import Job

__version__ = "0.1.0"

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "Cancel",
    "Event",
    "EventManager",
    "Job",
    "JobCancelledError",
    "JobContext",
    "JobFailedError",
    "JobNotFoundError",
    "JobQueueError",
    "JobQueueNotFoundError",
    "JobQueueService",
    "Retry",
    "TaskStatus",
    "__version__",
    "create_default_event_manager",
]
