"""Langflow's ``start_job``: run a bare coroutine for a job, recorded in the store.

A bare coroutine cannot be persisted, so after a crash such a job cannot be
restarted; it is recorded all the same so that its fate is visible.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from jobqueue import codec
from jobqueue.errors import JobQueueError
from jobqueue.events.registry import Entry
from jobqueue.status import TaskStatus
from jobqueue.store import jobs
from jobqueue.store.jobs import NewJob
from jobqueue.store.outcomes import FINISH, Outcome
from jobqueue.store.writer import Writer

__all__ = ["run_bare"]

log = logging.getLogger("jobqueue.service")


async def run_bare(
    job_id: str,
    entry: Entry,
    coro: Coroutine[Any, Any, Any],
    previous: asyncio.Task[Any] | None,
    writer: Callable[[], Awaitable[Writer]],
    owner: str,
    finished: Callable[[str, Outcome, Any], None],
) -> Any:
    """The task body behind ``start_job``.

    Waits for a replaced task to finish before the new coroutine can write
    to the queue, records the run, and ends the event stream on every
    outcome so no consumer hangs. The coroutine's own outcome (its value,
    exception or cancellation) is re-raised, as Langflow callers expect.
    """
    started = False
    try:
        if previous is not None and not previous.done():
            previous.cancel()
            await asyncio.wait([previous])
        desc = getattr(coro, "__qualname__", type(coro).__name__)
        now = time.time()
        row = NewJob(
            job_id, None, None, TaskStatus.RUNNING, now, now, description=desc, owner=owner
        )
        await _record(writer, jobs.upsert_running, row)
        started = True
        value = await coro
    except asyncio.CancelledError:
        await _end(
            writer, job_id, entry, Outcome(TaskStatus.CANCELLED, reason="cancelled"), finished
        )
        raise
    except Exception as exc:
        out = Outcome(
            TaskStatus.FAILED,
            error=codec.storable(f"{type(exc).__name__}: {exc}"),
            error_type=type(exc).__name__,
            traceback=codec.storable("".join(traceback.format_exception(exc))[-8192:]),
            reason="error",
        )
        await _end(writer, job_id, entry, out, finished)
        raise
    finally:
        if not started:
            coro.close()  # never awaited: close it so Python does not warn
    await _end(writer, job_id, entry, Outcome(TaskStatus.COMPLETED), finished, value)
    return value


async def _record(
    writer: Callable[[], Awaitable[Writer]], fn: Callable[..., Any], *args: Any
) -> None:
    try:
        w = await writer()
        await asyncio.shield(w.write(fn, *args))
    except JobQueueError as exc:  # the coroutine still runs; its record is best effort
        log.error("could not record job: %s", exc)


async def _end(
    writer: Callable[[], Awaitable[Writer]],
    job_id: str,
    entry: Entry,
    out: Outcome,
    finished: Callable[[str, Outcome, Any], None],
    value: Any = None,
) -> None:
    """Record the outcome, then end the stream: a consumer that saw the end reads it stored."""
    try:
        await _record(writer, FINISH, job_id, out, time.time())
    except asyncio.CancelledError:
        log.warning("recording the end of job %r was interrupted", job_id)
    finally:
        finished(job_id, out, value)
        if entry.task is asyncio.current_task():  # a run replaced by start_job ends no stream
            entry.manager.end_stream()
