"""``JobQueueService``: the Langflow-compatible layer and the durable layer in one facade."""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from jobqueue import codec
from jobqueue.controls import ControlLayer
from jobqueue.errors import (
    InvalidArgumentError,
    JobCancelledError,
    JobFailedError,
    UnknownHandlerError,
)
from jobqueue.events import stream as streams
from jobqueue.events.manager import Event, EventManager
from jobqueue.hooks import HookKind, Lifecycle
from jobqueue.ids import new_job_id
from jobqueue.status import TaskStatus
from jobqueue.store import jobs, steps
from jobqueue.store.connection import MEMORY
from jobqueue.store.jobs import Job, NewJob
from jobqueue.store.steps import Step
from jobqueue.validation import check_id, check_number, check_text, parse_status_arg

if TYPE_CHECKING:
    from jobqueue.locks import KeyedMemoryLockManager, KeyedWorkerLockManager
    from jobqueue.telemetry import JobMetrics

__all__ = ["JobQueueService"]

log = logging.getLogger("jobqueue.service")


class JobQueueService(ControlLayer):
    """Runs jobs in this process and keeps them in a SQLite file.

    Args:
        path: database file; ``None`` keeps everything in memory (as Langflow did).
        concurrency: at most this many jobs run at once.
        poll_interval: how often to look for jobs submitted by other processes.
        cleanup_interval: how often the reaper removes finished jobs' queues.
        retention: seconds a finished job's unconsumed events are kept.
        queue_size: bound of each job's event queue (see :mod:`jobqueue.events`).
        drain_timeout: on close, seconds running jobs get to finish before cancellation.
        cancel_grace: seconds a cancelled job gets to end before it is abandoned.
        busy_timeout: seconds to wait for another process's write lock.
        synchronous: ``"NORMAL"`` (default, WAL-safe) or ``"FULL"`` (fsync every commit).
        check_on_open: run ``PRAGMA quick_check`` when opening.
        max_payload_bytes: cap on an encoded payload or result.
        retry_backoff: base delay of exponential retry backoff, in seconds.
        retry_backoff_max: cap of a single backoff delay.
        strict_events: unknown ``on_*`` event names raise instead of warning once.
        persist_events: also write durable jobs' events to the database, so a consumer
            can resume after the last event id it saw (``events(job_id, after=...)``),
            even after the producing process restarted.
        stop_timeout: seconds ``stop()``/``pause()`` wait for a job to reach a
            checkpoint before cancelling it.
        metrics: ``True`` records OpenTelemetry metrics with a Prometheus reader (see
            ``serve_metrics``); a :class:`~jobqueue.telemetry.JobMetrics` uses that one.
            Off by default, and then the telemetry packages are not even imported.
        locks: the lock manager behind ``handler(..., lock_key=...)``; by default a
            ``KeyedWorkerLockManager`` in ``<path>.locks/`` (works across processes),
            or a ``KeyedMemoryLockManager`` for an in-memory service.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        concurrency: int = 8,
        poll_interval: float = 0.5,
        cleanup_interval: float = 60.0,
        retention: float = 300.0,
        queue_size: int = 10_000,
        drain_timeout: float = 10.0,
        cancel_grace: float = 5.0,
        busy_timeout: float = 5.0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        check_on_open: bool = True,
        max_payload_bytes: int = codec.DEFAULT_MAX_BYTES,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 300.0,
        strict_events: bool = False,
        persist_events: bool = False,
        stop_timeout: float = 10.0,
        metrics: JobMetrics | bool = False,
        locks: KeyedMemoryLockManager | KeyedWorkerLockManager | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be an int >= 1, got {concurrency!r}")
        for name, value in (
            ("poll_interval", poll_interval),
            ("cleanup_interval", cleanup_interval),
            ("queue_size", queue_size),
            ("max_payload_bytes", max_payload_bytes),
        ):
            check_number(value, name, positive=True)
        for name, value in (
            ("retention", retention),
            ("drain_timeout", drain_timeout),
            ("cancel_grace", cancel_grace),
            ("stop_timeout", stop_timeout),
            ("busy_timeout", busy_timeout),
            ("retry_backoff", retry_backoff),
            ("retry_backoff_max", retry_backoff_max),
        ):
            check_number(value, name)
        if synchronous not in ("NORMAL", "FULL"):
            raise InvalidArgumentError(
                f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}"
            )
        super().__init__(
            MEMORY if path is None else os.fspath(path),
            concurrency=concurrency,
            poll_interval=poll_interval,
            cleanup_interval=cleanup_interval,
            retention=retention,
            queue_size=int(queue_size),
            drain_timeout=drain_timeout,
            cancel_grace=cancel_grace,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            check_on_open=check_on_open,
            max_payload_bytes=int(max_payload_bytes),
            retry_backoff=retry_backoff,
            retry_backoff_max=retry_backoff_max,
            strict_events=strict_events,
            persist_events=bool(persist_events),
            stop_timeout=stop_timeout,
        )
        self._locks = locks
        self._metrics: JobMetrics | None = None
        self._owns_metrics = metrics is True
        if metrics is not False:
            if metrics is True:
                from jobqueue.telemetry import JobMetrics as _JobMetrics

                metrics = _JobMetrics()
            self._metrics = metrics
            metrics.attach(self.hooks, queue_lengths=self.queue_lengths, active=self.active_counts)

    # -- durable layer ---------------------------------------------------------------

    def _new_row(
        self,
        handler: str,
        payload: Any,
        *,
        job_id: str | None,
        priority: int,
        timeout: float | None,
        max_retries: int,
        delay: float,
        idempotency_key: str | None,
        session_id: str | None,
        description: str | None,
        now: float,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
    ) -> NewJob:
        check_id(handler, "handler name")
        if handler not in self._handlers and handler not in self._declared:
            raise UnknownHandlerError(handler, [*self._handlers, *self._declared])
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise InvalidArgumentError(f"priority must be an int, got {priority!r}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InvalidArgumentError(f"max_retries must be an int >= 0, got {max_retries!r}")
        check_number(timeout, "timeout", positive=True)
        check_number(delay, "delay")
        if idempotency_key is not None:
            check_id(idempotency_key, "idempotency_key")
        if session_id is not None:
            check_id(session_id, "session_id")
        if description is not None:
            check_text(description, "description")
        if concurrency_key is not None:
            check_id(concurrency_key, "concurrency_key")
            if concurrency_limit is None:
                limits = self._limits.get(handler)  # declared handlers: the default, 1
                concurrency_limit = 1 if limits is None else limits.key_concurrency
            elif (
                not isinstance(concurrency_limit, int)
                or isinstance(concurrency_limit, bool)
                or concurrency_limit < 1
            ):
                raise InvalidArgumentError(
                    f"concurrency_limit must be an int >= 1, got {concurrency_limit!r}"
                )
        elif concurrency_limit is not None:
            raise InvalidArgumentError("concurrency_limit needs a concurrency_key")
        text = codec.encode(payload, "payload", self._max_payload)
        return NewJob(
            new_job_id() if job_id is None else check_id(job_id, "job_id"),
            handler,
            text,
            TaskStatus.PENDING,
            now,
            now + delay,
            priority,
            max_retries,
            timeout,
            idempotency_key,
            session_id,
            description,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
        )

    async def submit(
        self,
        handler: str,
        payload: Any = None,
        *,
        job_id: str | None = None,
        priority: int = 0,
        timeout: float | None = None,
        max_retries: int = 0,
        delay: float = 0.0,
        idempotency_key: str | None = None,
        session_id: str | None = None,
        description: str | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
    ) -> Job:
        """Store a new pending job; returns once it is committed.

        Cancelling a ``submit`` does not withdraw the job once it is queued: it
        is stored all the same (submit again with the same ``idempotency_key``
        to find out which job it is).

        Higher ``priority`` runs first; ``delay`` postpones the first run; a
        job that raises is retried up to ``max_retries`` times with
        exponential backoff; ``timeout`` fails a run that takes longer. A
        second submit with the same ``idempotency_key`` returns the first job.
        At most ``concurrency_limit`` jobs sharing a ``concurrency_key`` run at
        once across all processes (default: the handler's ``key_concurrency``, 1).

        Raises:
            UnknownHandlerError: no handler registered under ``handler``.
            PayloadError: the payload is not JSON or is over the size cap.
            DuplicateJobError: ``job_id`` is taken.
            InvalidArgumentError: an option is out of range.
        """
        row = self._new_row(
            handler,
            payload,
            job_id=job_id,
            priority=priority,
            timeout=timeout,
            max_retries=max_retries,
            delay=delay,
            idempotency_key=idempotency_key,
            session_id=session_id,
            description=description,
            now=time.time(),
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
        )
        return (await self._insert([row], [payload]))[0]

    async def submit_many(
        self, handler: str, payloads: Sequence[Any], **options: Any
    ) -> builtins.list[Job]:
        """Submit one job per payload in a single transaction (same options for all).

        ``job_id`` and ``idempotency_key`` are per job and cannot be given here.
        """
        if "job_id" in options or "idempotency_key" in options:
            raise InvalidArgumentError("submit_many takes no job_id or idempotency_key; use submit")
        if isinstance(payloads, str | bytes | dict) or not isinstance(payloads, Sequence):
            raise InvalidArgumentError(
                f"payloads must be a list (or tuple) of payloads, one per job, got "
                f"{type(payloads).__name__}"
            )
        defaults: dict[str, Any] = {
            "priority": 0,
            "timeout": None,
            "max_retries": 0,
            "delay": 0.0,
            "session_id": None,
            "description": None,
            "concurrency_key": None,
            "concurrency_limit": None,
        }
        unknown = set(options) - set(defaults)
        if unknown:
            raise InvalidArgumentError(f"unknown option(s) for submit_many: {sorted(unknown)}")
        opts = {**defaults, **options}
        now = time.time()
        if not payloads:
            return []
        # The options are the same for every row: validate them once, with the first.
        first = self._new_row(
            handler, payloads[0], job_id=None, idempotency_key=None, now=now, **opts
        )
        rows = [first]
        encode, limit, template = codec.encode, self._max_payload, first.copy_with
        rows += [template(new_job_id(), encode(p, "payload", limit)) for p in payloads[1:]]
        return await self._insert(rows, payloads)

    async def _insert(self, rows: Sequence[NewJob], payloads: Sequence[Any]) -> builtins.list[Job]:
        writer = await self._ready()
        # Ask for a claim before the insert is queued: both go into the same
        # transaction, so a job submitted while a slot is free starts after one hop.
        self._want_claim()
        stored = writer.enqueue(jobs.insert_jobs, rows)
        # Counted when committed, even if our caller is cancelled meanwhile: once
        # queued, the insert is not withdrawn (shield), so the counts stay exact.
        stored.add_done_callback(partial(self._inserted, rows))
        existing = await asyncio.shield(stored)
        return [
            row.as_pending(payload) if old is None else old
            for row, payload, old in zip(rows, payloads, existing, strict=True)
        ]

    def _inserted(self, rows: Sequence[NewJob], stored: asyncio.Future[Any]) -> None:
        if stored.cancelled() or stored.exception() is not None:
            return
        added = [row for row, old in zip(rows, stored.result(), strict=True) if old is None]
        for handler, count in Counter(row.handler for row in added).items():
            self.tally.submitted(handler, count)
        if added and self.hooks.wants(HookKind.SUBMITTED):
            for row in added:
                self.hooks.emit(Lifecycle(HookKind.SUBMITTED, row.id, row.handler))

    async def list(
        self,
        *,
        status: TaskStatus | str | Sequence[TaskStatus | str] | None = None,
        handler: str | None = None,
        session_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Job]:
        """Stored jobs, newest first, optionally filtered."""
        wanted = [status] if isinstance(status, str) else status
        statuses = None if wanted is None else [parse_status_arg(s) for s in wanted]
        return await self._read(jobs.list_jobs, statuses, handler, session_id, limit, offset)

    async def get_steps(self, job_id: str) -> builtins.list[Step]:
        """The job's workflow steps (``ctx.step``/``ctx.sleep``) in the order it reached them.

        Each :class:`~jobqueue.Step` has its status (pending, running,
        sleeping, completed, failed), attempts, timings, error and stored
        result. A job that uses no steps has none.

        Raises:
            JobNotFoundError: unknown id.
        """
        return await self._read(steps.list_steps, job_id)

    async def wait(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait until the job is finished and return its result.

        Raises:
            JobFailedError: the job failed (``.error``, ``.reason``).
            JobCancelledError: the job was cancelled or stopped.
            TimeoutError: ``timeout`` seconds passed first (the job keeps running).
        """
        async with asyncio.timeout(timeout):
            while True:
                fut = asyncio.get_running_loop().create_future()
                self._waiters.setdefault(job_id, set()).add(fut)
                try:
                    job = await self.get(job_id)
                    if job.done:
                        return self._result_of(job)
                    # The store is polled too: another process may be running the job.
                    await asyncio.wait([fut], timeout=max(self._poll_interval, 0.05) * 4)
                finally:
                    self._forget_waiter(job_id, fut)

    @staticmethod
    def _result_of(job: Job) -> Any:
        if job.status is TaskStatus.COMPLETED:
            return job.result
        if job.status is TaskStatus.FAILED:
            raise JobFailedError(job.id, job.error, job.reason)
        raise JobCancelledError(job.id, job.status.value)

    def events(self, job_id: str, *, after: int | str | None = None) -> AsyncIterator[Event]:
        """Stream a job's events; ends after its ``end`` or ``error`` event.

        A job that already finished yields one final event built from its record.
        See :func:`jobqueue.events.stream.stream` (``after`` resumes a persisted log).
        """
        return streams.stream(self, job_id, after=after)

    async def run_until_idle(self, timeout: float | None = None) -> None:
        """Return once no job for this process's handlers is pending, delayed or running.

        Meant for tests: submit, ``await service.run_until_idle()``, assert.
        """
        await self._ready()
        async with asyncio.timeout(timeout):
            await self._until_idle()

    def stats(self) -> dict[str, Any]:
        """Counts and health: pending, running, done, failed, cancelled, lag, boot_at.

        Counts come from the store at start and the reaper's refresh, kept
        current with this process's own changes in between.
        """
        c = self.tally
        return {
            "pending": c["pending"],
            "running": len(self._runner.active) if self._runner else 0,
            "paused": c["paused"],
            "done": c["completed"],
            "failed": c["failed"],
            "cancelled": c["cancelled"] + c["stopped"],
            "lag": c.lag,
            "boot_at": self.boot_at,
            "registry": len(self._registry),
            "unresponsive": self._runner.unresponsive if self._runner else 0,
            "recovered": self.recovered.total,
            "owner": self.owner,
            "concurrency": self._concurrency,
            "path": self.path,
        }

    def __del__(self) -> None:
        if getattr(self, "_state", "new") in ("starting", "open"):
            warnings.warn(
                f"JobQueueService({self.path!r}) was not closed; use `async with` "
                "or `await service.close()`",
                ResourceWarning,
                stacklevel=2,
            )

    def _events_for(self, job_id: str) -> EventManager:
        return self._registry.ensure(job_id).manager
