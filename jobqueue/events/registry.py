"""The in-memory registry ``job_id -> (queue, EventManager, task, cleanup_at)``.

Only jobs that have a consumer or a running task are here; pending jobs
live in the database alone. Finished entries are reaped once their end
sentinel was consumed; otherwise a reaper pass marks them (the 4th element
of Langflow's tuple becomes the mark time, ``time.monotonic()``) and the
first pass ``retention`` seconds later reaps them, as Langflow's
``_cleanup_old_queues`` does with ``CLEANUP_GRACE_PERIOD``. A queue from
``create_queue`` that never got a task is marked on the first pass too.

With the persisted event log every running durable job has an entry whose
manager also appends to the log; such an entry is dropped as soon as its
stream ends (or at the next reaper pass after a retry or pause), since the
log holds everything its queue had.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from jobqueue.errors import JobQueueNotFoundError, QueueExistsError
from jobqueue.events.manager import EventManager, EventQueue, create_default_event_manager
from jobqueue.store.connection import Database
from jobqueue.store.eventlog import JobLog
from jobqueue.store.writer import Writer

__all__ = ["Entry", "QueueData", "QueueRegistry"]

log = logging.getLogger("jobqueue.events.registry")

#: Langflow's ``(queue, event_manager, task, cleanup_time)``.
QueueData = tuple["asyncio.Queue[Any]", EventManager, "asyncio.Future[Any] | None", float | None]


@dataclass(slots=True)
class Entry:
    """One registered job.

    ``queue`` is an :class:`EventQueue` unless a foreign queue (and manager, such
    as Langflow's own) was registered through ``service._queues``.
    """

    queue: asyncio.Queue[Any]
    manager: EventManager
    task: asyncio.Future[Any] | None = None
    #: When a reaper pass marked the finished entry (``time.monotonic()``), or ``None``.
    cleanup_at: float | None = None
    #: Created by ``create_queue`` (Langflow layer); reaped when idle too long.
    langflow: bool = False
    created: float = field(default_factory=time.monotonic)
    #: Set when the job reached a terminal status (durable jobs).
    finished: bool = False
    #: Done once the current bare run's outcome is stored (``start_job``), else ``None``.
    settled: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        """The job's work is over (task finished, or terminal status recorded)."""
        return self.finished or (self.task is not None and self.task.done())

    @property
    def logged(self) -> bool:
        """The manager also appends to the persisted log."""
        return isinstance(self.manager, EventManager) and self.manager.logging

    @property
    def ended(self) -> bool:
        """The end sentinel was put (known for an :class:`EventQueue` only)."""
        return isinstance(self.queue, EventQueue) and self.queue.ended

    @property
    def end_read(self) -> bool:
        """A consumer took the end sentinel (or the stream ended and nothing is left)."""
        q = self.queue
        return isinstance(q, EventQueue) and (q.sentinel_taken or (q.empty() and q.ended))

    def as_tuple(self) -> QueueData:
        """Langflow's tuple shape."""
        return self.queue, self.manager, self.task, self.cleanup_at


class QueueRegistry:
    """Holds the entries and decides which are ready to reap."""

    def __init__(
        self,
        *,
        queue_size: int,
        retention: float,
        strict_events: bool = False,
        on_consume: Callable[[float], None] | None = None,
    ) -> None:
        self.entries: dict[str, Entry] = {}
        self.queue_size = queue_size
        self.retention = retention
        self.strict_events = strict_events
        self.on_consume = on_consume
        #: Called with the job id when :meth:`cleanup` forgets a job (Langflow's owners).
        self.on_forget: list[Callable[[str], None]] = []
        #: The persisted event log's writer and database (see :meth:`attach_log`).
        self.writer: Writer | None = None
        self.db: Database | None = None
        self._runs: dict[str, set[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def attach_log(self, writer: Writer, db: Database) -> None:
        """Persist durable jobs' events through ``writer`` (the opt-in event log).

        Called by the service once its store is open, only when ``persist_events``
        is on. ``db`` is where consumers read the log back.
        """
        self.writer, self.db = writer, db

    @property
    def persisting(self) -> bool:
        """The persisted event log is on (:meth:`attach_log` was called)."""
        return self.writer is not None

    def begin_run(self, job_id: str, last_seq: int) -> None:
        """A durable job starts a run; its persisted log already holds ``last_seq`` events.

        Called by the service for every claimed job when ``persist_events`` is on,
        before the handler runs. The job gets an entry now (so its terminal
        event is logged even if its handler sends none); its events are
        numbered on from ``last_seq``. The entry is forgotten as soon as its
        stream ends: consumers read what they missed from the log.
        """
        writer = self.writer
        if writer is None:
            return
        entry = self.ensure(job_id)
        manager = entry.manager
        # A later run of a kept entry keeps its log; ids continue past both counts.
        manager.attach_log(manager.log or JobLog(writer, job_id), last_seq)
        manager.end_hook = partial(self._ended, job_id, entry)
        for fut in self._runs.pop(job_id, ()):
            if not fut.done():
                fut.set_result(None)

    def _ended(self, job_id: str, entry: Entry) -> None:
        if self.entries.get(job_id) is entry and not entry.langflow:
            del self.entries[job_id]

    async def wait_run(
        self, job_id: str, timeout: float, also: asyncio.Future[None] | None = None
    ) -> None:
        """Wait until the job starts a run here (:meth:`begin_run`) or ``also`` is done.

        Returns after ``timeout`` seconds at the latest.
        """
        fut = asyncio.get_running_loop().create_future()
        waiters = self._runs.setdefault(job_id, set())
        waiters.add(fut)
        try:
            wanted = [fut] if also is None else [fut, also]
            await asyncio.wait(wanted, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiters.discard(fut)
            if not waiters and self._runs.get(job_id) is waiters:
                del self._runs[job_id]

    def _new(self, langflow: bool) -> Entry:
        queue = EventQueue(self.queue_size)
        queue.on_consume = self.on_consume
        return Entry(
            queue, create_default_event_manager(queue, strict=self.strict_events), langflow=langflow
        )

    def create(self, job_id: str) -> Entry:
        """Register a new entry (Langflow ``create_queue``)."""
        if job_id in self.entries:
            raise QueueExistsError(job_id)
        entry = self.entries[job_id] = self._new(langflow=True)
        return entry

    def adopt(self, job_id: str, queue: asyncio.Queue[Any], manager: EventManager) -> Entry:
        """Register a queue and manager made elsewhere (``service._queues[job_id] = ...``)."""
        entry = self.entries[job_id] = Entry(queue, manager, langflow=True)
        return entry

    def ensure(self, job_id: str) -> Entry:
        """Return the entry, creating a durable one if missing."""
        entry = self.entries.get(job_id)
        if entry is None:
            entry = self.entries[job_id] = self._new(langflow=False)
        return entry

    def get(self, job_id: str) -> Entry | None:
        """The entry, or ``None``."""
        return self.entries.get(job_id)

    def data(self, job_id: str) -> QueueData:
        """Langflow ``get_queue_data``."""
        entry = self.entries.get(job_id)
        if entry is None:
            raise JobQueueNotFoundError(job_id)
        return entry.as_tuple()

    async def cleanup(self, job_id: str) -> None:
        """Cancel the task, drain the queue, forget the job.

        The job's own ``CancelledError`` never escapes; the entry is removed
        even if the caller is cancelled while waiting for the task.
        """
        entry = self.entries.get(job_id)
        if entry is None:
            log.debug("cleanup_job: no queue for job_id %r", job_id)
            return
        try:
            task = entry.task
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task])  # returns, never raises the task's outcome
            if task is not None and task.done() and not task.cancelled():
                task.exception()  # mark retrieved: its outcome was already recorded
            settled = entry.settled
            if settled is not None and not settled.done():
                await asyncio.wait([settled])  # its outcome is stored
        finally:
            queue = entry.queue
            with contextlib.suppress(asyncio.QueueEmpty):
                while not queue.empty():
                    queue.get_nowait()
            # A consumer still blocked on get() must see the end, not hang.
            manager = entry.manager
            if isinstance(manager, EventManager) and not (
                isinstance(queue, EventQueue) and queue.ended
            ):
                manager.end_stream()
            else:  # a foreign queue, or the end was drained just now: put it again
                with contextlib.suppress(Exception):
                    queue.put_nowait((None, None, time.time()))
            if self.entries.get(job_id) is entry:
                del self.entries[job_id]
            for forget in self.on_forget:
                forget(job_id)

    def due(self, now: float) -> list[str]:
        """Mark finished entries and return those whose time has come.

        A finished entry whose end was read (or whose events are all in the
        log) is due at once. Any other finished entry, and a ``create_queue``
        entry that never got a task, is marked at ``now`` by the first pass
        that sees it, and due once ``retention`` seconds passed since the mark.
        """
        out: list[str] = []
        retention = self.retention
        for job_id, entry in list(self.entries.items()):
            if entry.done:
                # A logged entry holds nothing the log lacks: free it on the next pass.
                if entry.logged or entry.end_read:
                    out.append(job_id)
                    continue
            elif entry.task is not None or not entry.langflow:
                continue  # running, or a durable entry waiting for its job
            if entry.cleanup_at is None:
                entry.cleanup_at = now
            elif now - entry.cleanup_at >= retention:
                out.append(job_id)
        return out

    async def reap(self) -> int:
        """One reaper pass; a failure on one job never stops the others."""
        n = 0
        for job_id in self.due(time.monotonic()):
            try:
                await self.cleanup(job_id)
                n += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reaper: cleanup of job %r failed; continuing", job_id)
                with contextlib.suppress(KeyError):
                    del self.entries[job_id]
        return n
