"""Helpers of the unit tests: real store rows, bounded waits. No mocks of the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from jobqueue import codec
from jobqueue.status import TaskStatus
from jobqueue.store import jobs
from jobqueue.store.claim import ClaimRequest, claim
from jobqueue.store.connection import Database
from jobqueue.store.jobs import Claimed, Job, NewJob
from jobqueue.store.writer import Writer

#: The longest any single wait of these tests may take.
WAIT = 5.0


def new_job(
    job_id: str,
    handler: str = "h",
    payload: Any = None,
    *,
    delay: float = 0.0,
    priority: int = 0,
    max_retries: int = 0,
    timeout: float | None = None,
    status: TaskStatus = TaskStatus.PENDING,
    owner: str | None = None,
) -> NewJob:
    """A row ready for :func:`jobqueue.store.jobs.insert_jobs`."""
    now = time.time()
    return NewJob(
        job_id,
        handler,
        codec.encode(payload, "payload", codec.DEFAULT_MAX_BYTES),
        status,
        now,
        now + delay,
        priority,
        max_retries,
        timeout,
        owner=owner,
    )


async def insert(writer: Writer, *rows: NewJob) -> None:
    """Store ``rows`` through the writer (committed on return)."""
    await writer.write(jobs.insert_jobs, list(rows))


async def fetch(db: Database, job_id: str) -> Job:
    return await db.run(jobs.fetch, job_id)


async def claim_now(
    writer: Writer, owner: str, handlers: list[str], limit: int = 10
) -> list[Claimed]:
    """Claim due jobs for ``owner`` in one committed transaction (as the scheduler does)."""
    req = ClaimRequest(handlers, limit, owner, time.time())
    rows, _ = await writer.write(partial(claim, req=req))
    return rows


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = WAIT
) -> None:
    """Poll ``check`` (sync or async) every few ms until it is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if isinstance(got, Awaitable):
            got = await got
        if got:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check!r}")
        await asyncio.sleep(0.005)


async def status_becomes(db: Database, job_id: str, status: TaskStatus) -> Job:
    """Read the job until it has ``status``; fail after :data:`WAIT` seconds."""
    job: Job | None = None

    async def check() -> bool:
        nonlocal job
        job = await fetch(db, job_id)
        return job.status is status

    try:
        await eventually(check)
    except AssertionError:
        raise AssertionError(f"{job_id} is {job and job.status}, never became {status}") from None
    assert job is not None
    return job
