"""The bus's names in Redis and the shape of a stream entry.

Langflow 1.13's keys are kept as they are (``langflow:queue:{job}``,
``langflow:owner:{job}``, ...), so a Langflow worker and a jobqueue worker
read each other's streams. What Langflow lacks lives under ``jobqueue:``:
the worker leases and the runner of each job.

A stream entry is ``event_id``, ``data``, ``ts`` as Langflow writes it; the
end entry has ``data == b"__sentinel__"`` and, from jobqueue, an ``outcome``
field. jobqueue writes entry ids ``0-1``, ``0-2``, ... (the event's number),
so a reader can tell a trimmed stretch from a quiet one and a republished
entry is refused by Redis instead of stored twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlparse, urlunparse

__all__ = [
    "ACTIVITY_PREFIX",
    "CANCEL_CHANNEL_PREFIX",
    "CANCEL_MARKER_PREFIX",
    "LEASE_PREFIX",
    "OUTCOMES",
    "OWNER_PREFIX",
    "PUBLIC_JOB_PREFIX",
    "RUNNER_PREFIX",
    "SENTINEL",
    "STREAM_PREFIX",
    "Keys",
    "entry_seq",
    "is_connection_error",
    "raise_if_cancelling",
    "redact_url",
]

STREAM_PREFIX: Final = "langflow:queue:"
OWNER_PREFIX: Final = "langflow:owner:"
CANCEL_CHANNEL_PREFIX: Final = "langflow:cancel:"
CANCEL_MARKER_PREFIX: Final = "langflow:cancel-marker:"
ACTIVITY_PREFIX: Final = "langflow:activity:"
PUBLIC_JOB_PREFIX: Final = "langflow:public_job:"
#: ``jobqueue:lease:{worker}``: exists while the worker is alive (a short expiry, refreshed).
LEASE_PREFIX: Final = "jobqueue:lease:"
#: ``jobqueue:runner:{job}``: the worker running the job, while it runs.
RUNNER_PREFIX: Final = "jobqueue:runner:"
#: ``data`` (and ``event_id``) of the entry that ends a stream.
SENTINEL: Final = b"__sentinel__"
#: How a stream can end (the end entry's ``outcome``, or what a reader concluded).
OUTCOMES: Final = frozenset(
    {"completed", "failed", "cancelled", "lost", "deleted", "missing", "unknown"}
)


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one job."""

    job_id: str

    @property
    def stream(self) -> str:
        return STREAM_PREFIX + self.job_id

    @property
    def owner(self) -> str:
        return OWNER_PREFIX + self.job_id

    @property
    def channel(self) -> str:
        return CANCEL_CHANNEL_PREFIX + self.job_id

    @property
    def marker(self) -> str:
        return CANCEL_MARKER_PREFIX + self.job_id

    @property
    def activity(self) -> str:
        return ACTIVITY_PREFIX + self.job_id

    @property
    def public(self) -> str:
        return PUBLIC_JOB_PREFIX + self.job_id

    @property
    def runner(self) -> str:
        return RUNNER_PREFIX + self.job_id


def entry_seq(entry_id: str) -> int | None:
    """The event number of a jobqueue entry id ``0-<n>``; ``None`` for any other id."""
    ms, _, seq = entry_id.partition("-")
    if ms != "0" or not seq.isdigit():
        return None
    return int(seq)


def redact_url(url: str) -> str:
    """``url`` without its user and password (it goes into logs and error messages)."""
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError:
        return "<unreadable Redis URL>"
    if parsed.username is None and parsed.password is None:
        return url
    host = parsed.hostname or ""
    netloc = f"***@{host}:{port}" if port else f"***@{host}"
    return urlunparse(parsed._replace(netloc=netloc))


def is_connection_error(exc: BaseException) -> bool:
    """``exc`` says Redis cannot be reached (not that a command was wrong)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(
        exc, ConnectionError | TimeoutError | OSError | RedisConnectionError | RedisTimeoutError
    )


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` if this task was asked to stop.

    redis-py can turn a cancel that lands inside a command into a connection
    error; a loop that retries on errors must not swallow the cancel with it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
