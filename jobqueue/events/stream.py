"""Consuming a job's events: ``service.events(job_id, after=...)``.

Without the persisted log, events come from the job's in-memory queue.

With it (``persist_events=True``) the log is the truth and the queue a fast
path. The stream reads the log after the last seq it delivered, then, while
the job runs in this process, takes live items from the queue as long as
they continue that seq exactly; anything else (a gap left by a dropped live
copy, the job's end, a quiet ``poll_interval``) sends it back to the log,
after waiting until everything sent here so far is committed. A job running
in another process is followed by polling the log every ``poll_interval``.
The stream ends with the job's ``end``/``error`` event; if the job's record
is terminal and the log lacks one (the producer died first, or the job
ended without running), that event is built from the record with the next
seq, so every consumer sees the same id for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any, Final

from jobqueue import codec
from jobqueue.errors import InvalidArgumentError, ServiceClosedError
from jobqueue.events.manager import (
    EMPTY,
    TERMINAL_EVENTS,
    Empty,
    Event,
    EventQueue,
    QueueItem,
    decode_item,
    end_stream_with,
    final_event,
    seq_of,
)
from jobqueue.store import eventlog, jobs
from jobqueue.store.eventlog import LogRow

if TYPE_CHECKING:
    from jobqueue.runtime.engine import Runtime

__all__ = ["stream"]

#: Log rows read per round trip (bounds memory when replaying a long log).
PAGE: Final = 500


def stream(
    runtime: Runtime, job_id: str, *, after: int | str | None = None
) -> AsyncIterator[Event]:
    """Yield a job's events until its ``end`` or ``error`` event.

    Without the persisted log, a job that already finished yields one final
    event built from its record. With it, every logged event with a seq
    greater than ``after`` (an event's ``seq``, or its id such as
    ``"token-42"``) is yielded once, in order, across runs and restarts.

    Raises (when iterated):
        JobNotFoundError: no such job.
        InvalidArgumentError: ``after`` is not a seq or an event id, or is
            given while ``persist_events`` is off.
    """
    if not runtime.settings.persist_events:
        return _memory(runtime, job_id, 0, after)  # one generator between queue and caller
    return _persisted(runtime, job_id, after)


async def _persisted(
    runtime: Runtime, job_id: str, after: int | str | None
) -> AsyncGenerator[Event, None]:
    await runtime.ready()
    start = _parse_after(after)
    job = await runtime.read(jobs.fetch, job_id)
    # A Langflow start_job run has no handler to run again: its events are not logged.
    logged = job.handler is not None
    source = _logged(runtime, job_id, start) if logged else _memory(runtime, job_id, start)
    async with contextlib.aclosing(source):  # a consumer that stops early closes it now
        async for event in source:
            yield event


def _parse_after(after: int | str | None) -> int:
    if after is None:
        return 0
    if isinstance(after, str):
        try:
            return max(seq_of(after), 0)
        except ValueError:
            pass
    elif isinstance(after, int) and not isinstance(after, bool) and after >= 0:
        return after
    raise InvalidArgumentError(
        f"after must be an event seq (int >= 0) or an event id such as 'token-3', got {after!r}"
    )


async def _memory(
    runtime: Runtime, job_id: str, after: int, given: int | str | None = None
) -> AsyncGenerator[Event, None]:
    """The in-memory queue alone (no log, or a job whose events are not logged).

    ``given``: the ``after`` of a caller without the log, which cannot take one.
    """
    await runtime.ready()
    if given is not None:
        raise InvalidArgumentError(
            "events(after=...) needs the persisted event log: open the service "
            "with persist_events=True"
        )
    registry = runtime.registry
    created = registry.get(job_id) is None
    entry = registry.ensure(job_id)
    if isinstance(entry.queue, EventQueue):
        entry.queue.keep = True  # its events' data is kept beside them from now on
    try:
        job = await runtime.read(jobs.fetch, job_id)
    except BaseException:
        if created and entry.task is None and registry.get(job_id) is entry:
            del registry.entries[job_id]
        raise
    queue = entry.queue
    if job.done and not entry.ended:
        end_stream_with(entry.manager, job.status, job.result, job.error, job.reason)
        entry.finished = True
    elif job.done and queue.qsize() == 0:
        # Another reader took the finished run's items (a live queue is read once and
        # nothing is logged): what is left to tell is how the job ended, from its record.
        event_type, data = final_event(job.status, job.result, job.error, job.reason)
        put = job.completed_at or job.updated_at
        yield Event(f"{event_type}-0", event_type, data, put, time.time(), 0)
        return
    # What get() does when an item is there, in one call and with no coroutine.
    take = queue.take_event if isinstance(queue, EventQueue) else _nothing
    terminal = TERMINAL_EVENTS
    while True:
        event: Any = take()  # the hot path: an Event, None (the end) or EMPTY
        if event is EMPTY:
            item = await queue.get()
            # Read at once: get() returns right after taking the item, nothing runs
            # between. (A foreign queue registered through _queues has no seqs.)
            event = queue.event(item) if take is not _nothing else decode_item(item)  # type: ignore[attr-defined]
        if event is None:
            return
        if after and event.seq <= after:
            continue
        yield event
        if event.type in terminal:
            if isinstance(queue, EventQueue) and queue.ended and queue.qsize() == 1:
                queue.get_nowait()  # the sentinel: lets the reaper free the entry now
            return


def _nothing() -> Empty:
    """``take_event`` of a queue that is not jobqueue's: always ``await get()``."""
    return EMPTY


async def _logged(runtime: Runtime, job_id: str, last: int) -> AsyncGenerator[Event, None]:
    """Replay the log after ``last``, then follow the job live or by polling the log."""
    registry = runtime.registry
    poll = max(runtime.settings.poll_interval, 0.01)
    manager = None  # the local manager whose events we took live, if any
    behind = -1  # manager seq at which an empty queue last sent us to the log
    while True:
        try:
            if manager is not None:
                await manager.flush()  # what we skipped or stopped at is committed now
            events, ended = await runtime.read(_poll, job_id, last, PAGE)
        except ServiceClosedError:
            return  # as without the log: closing ends streams; resume with after=
        for event in events:
            last = event.seq
            yield event
        if ended:
            return
        if events:
            continue
        entry = registry.get(job_id)
        queue = entry.queue if entry is not None else None
        if entry is None or not entry.logged or not isinstance(queue, EventQueue):
            manager = None  # not running here
            await _idle(runtime, job_id, poll)
            continue
        manager = entry.manager
        queue.keep = True  # its events' data is kept beside them from now on
        while True:
            if queue.empty() and last < manager.last_seq != behind:
                # Live copies were dropped (full queue) or taken by another consumer.
                # Once per seq: if the log lacks them (a failed batch), wait instead of spinning.
                behind = manager.last_seq
                break
            taken = await _next(queue, poll)
            if taken is None:
                break  # quiet: look at the log (the job may have moved on elsewhere)
            item, seq, live = taken
            if item[0] is None:  # the run's stream ended (or the entry was reaped)
                if runtime.state in ("closing", "closed"):
                    return
                break
            if seq <= last:
                continue  # already delivered from the log
            if live is None or seq != last + 1 or live.type in TERMINAL_EVENTS:
                break  # a gap, or the end: take it from the log, once committed
            last = seq
            yield live


async def _next(queue: EventQueue, timeout: float) -> tuple[QueueItem, int, Event | None] | None:
    """The next live item, its seq and its event, or ``None`` after ``timeout`` seconds."""
    if not queue.empty():
        item = queue.get_nowait()
        return item, queue.taken_seq, queue.event(item)
    try:
        async with asyncio.timeout(timeout):
            item = await queue.get()
            return item, queue.taken_seq, queue.event(item)  # get() returns right after
    except TimeoutError:
        return None


async def _idle(runtime: Runtime, job_id: str, timeout: float) -> None:
    """Wait for the job to start a run here or finish here, at most ``timeout``."""
    ended = runtime.waiters.add(job_id)
    try:
        await runtime.registry.wait_run(job_id, timeout, ended)
    finally:
        runtime.waiters.discard(job_id, ended)


def _poll(
    conn: sqlite3.Connection, job_id: str, after: int, limit: int
) -> tuple[list[Event], bool]:
    """The job's logged events after ``after``; True when they end its stream.

    The stream ends with the job's last run's end: the end of a run that a retry
    followed is left out (more events follow it, or the job is not done).
    One read transaction: if the job is seen finished, every event sent
    before it finished is in the same snapshot (committed in the same or an
    earlier batch). If the log then ends without a terminal event, one is
    built from the record.
    """
    job, rows, tail = eventlog.read_with_job(conn, job_id, after, limit)
    now = time.time()
    events: list[Event] = []
    for i, row in enumerate(rows):
        event = _from_row(row, now)
        if event.type not in TERMINAL_EVENTS:
            events.append(event)
        elif i < len(rows) - 1:
            pass  # a run's end that more events follow: a retry ran the job again
        elif len(rows) == limit and events:
            return events, False  # the page ends on it: read again from just before it
        elif job.done:
            return [*events, event], True
        # else the job is pending or running again (retried): this was an earlier run's end
    if len(rows) == limit or not job.done:
        return events, False
    if rows:
        return events, False  # look again: the end may follow these
    if tail is not None and tail[1] in TERMINAL_EVENTS:
        return [], True  # logged at or before ``after``: the consumer has it
    seq = (tail[0] if tail is not None else 0) + 1
    if seq <= after:
        return [], True  # built before with this same id, and delivered
    event_type, data = final_event(job.status, job.result, job.error, job.reason)
    put = job.completed_at or job.updated_at
    return [Event(f"{event_type}-{seq}", event_type, data, put, now, seq)], True


def _from_row(row: LogRow, now: float) -> Event:
    seq, event_type, data, created_at = row
    return Event(f"{event_type}-{seq}", event_type, codec.decode(data), created_at, now, seq)
