"""Several machines on one Redis: job events on streams any worker reads.

``pip install 'jobqueue[redis]'``. :class:`RedisJobQueueService` is Langflow
1.13's class of the same name (same constructor, methods and stream format),
with ends that carry the outcome, leases that end a dead worker's jobs as
``lost``, confirmed cancels, a cursor per reader, explicit gaps, a bounded
bridge buffer and a typed error for an outage. :class:`RedisBus` puts a durable
``JobQueueService`` on the same bus, and :class:`RemoteJobs` reads and controls
its jobs from anywhere. See docs/scale-out.md.
"""

from __future__ import annotations

from jobqueue.errors import (
    BusUnavailableError,
    CancelNotConfirmedError,
    ControlNotConfirmedError,
    JobQueueNotFoundError,
)
from jobqueue.redis.durable import RedisBus
from jobqueue.redis.keys import OUTCOMES, SENTINEL, Keys
from jobqueue.redis.reader import BusEvent, StreamReader
from jobqueue.redis.remote import RemoteJob, RemoteJobs
from jobqueue.redis.service import RedisJobQueueService
from jobqueue.redis.wrapper import RedisQueueWrapper

#: Langflow's name for the error an unreachable Redis raises.
JobQueueBackendUnavailableError = BusUnavailableError
#: Langflow's name for the end-of-stream marker's bytes.
_STREAM_SENTINEL_DATA = SENTINEL

__all__ = [
    "OUTCOMES",
    "BusEvent",
    "BusUnavailableError",
    "CancelNotConfirmedError",
    "ControlNotConfirmedError",
    "JobQueueBackendUnavailableError",
    "JobQueueNotFoundError",
    "Keys",
    "RedisBus",
    "RedisJobQueueService",
    "RedisQueueWrapper",
    "RemoteJob",
    "RemoteJobs",
    "StreamReader",
]
