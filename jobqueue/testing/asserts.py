"""Assertions for tests of handlers: a job's status, its events."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from jobqueue.events.manager import Event
from jobqueue.service import JobQueueService
from jobqueue.store.jobs import Job

__all__ = ["assert_events", "assert_status", "collect_events"]


async def assert_status(
    service: JobQueueService,
    job_id: str,
    status: str,
    *,
    reason: str | None = None,
    attempt: int | None = None,
) -> Job:
    """The job as stored, after checking its status (and ``reason``/``attempt`` if given).

    The message of the ``AssertionError`` names what differs and the job's error, so a
    failing test says why the handler did not get there.
    """
    job = await service.get(job_id)
    wrong = []
    if job.status != status:
        wrong.append(f"status {job.status.value!r}, expected {status!r}")
    if reason is not None and job.reason != reason:
        wrong.append(f"reason {job.reason!r}, expected {reason!r}")
    if attempt is not None and job.attempt != attempt:
        wrong.append(f"attempt {job.attempt}, expected {attempt}")
    if wrong:
        error = f"; its error: {job.error}" if job.error else ""
        raise AssertionError(f"job {job.id} ({job.handler}): {', '.join(wrong)}{error}")
    return job


async def collect_events(
    service: JobQueueService,
    job_id: str,
    *,
    after: int | str | None = None,
    timeout: float = 10.0,
) -> list[Event]:
    """Every event of the job (after ``after``) until its stream ends.

    Raises:
        TimeoutError: the stream did not end within ``timeout`` real seconds (the job is
            still running or delayed: ``await service.run_until_idle()`` first).
    """
    events: list[Event] = []

    async def read() -> None:
        async for event in service.events(job_id, after=after):
            events.append(event)

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise TimeoutError(
            f"the events of job {job_id} did not end within {timeout:g}s "
            f"({len(events)} read): is it still running or delayed?"
        ) from None
    return events


async def assert_events(
    service: JobQueueService, job_id: str, types: Sequence[str], **where: Any
) -> list[Event]:
    """The job's events, after checking their types in order (``"token"``, ``"end"``...).

    Keyword arguments are passed to :func:`collect_events`.
    """
    events = await collect_events(service, job_id, **where)
    got = [event.type for event in events]
    if got != list(types):
        raise AssertionError(f"job {job_id}: event types {got}, expected {list(types)}")
    return events
