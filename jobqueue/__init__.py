"""jobqueue: an embedded, crash-safe asyncio job queue on SQLite.

The names users need are re-exported here; everything else is internal.
"""

from __future__ import annotations

from jobqueue.context import JobContext
from jobqueue.errors import (
    Cancel,
    DuplicateStepError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobQueueError,
    JobQueueNotFoundError,
    Retry,
    StepError,
    StepResultError,
    StepTimeoutError,
)
from jobqueue.events.manager import (
    Event,
    EventManager,
    create_default_event_manager,
    create_stream_tokens_event_manager,
)
from jobqueue.service import JobQueueService
from jobqueue.status import ACTIVE, TERMINAL, TaskStatus
from jobqueue.store.jobs import Job
from jobqueue.store.retry import RetryRecord
from jobqueue.store.steps import Step
from jobqueue.tasks import TaskService
from jobqueue.version import __version__
from jobqueue.workflow import Failure

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "Cancel",
    "DuplicateStepError",
    "Event",
    "EventManager",
    "Failure",
    "Job",
    "JobCancelledError",
    "JobContext",
    "JobFailedError",
    "JobNotFoundError",
    "JobQueueError",
    "JobQueueNotFoundError",
    "JobQueueService",
    "Retry",
    "RetryRecord",
    "Step",
    "StepError",
    "StepResultError",
    "StepTimeoutError",
    "TaskService",
    "TaskStatus",
    "__version__",
    "create_default_event_manager",
    "create_stream_tokens_event_manager",
]
