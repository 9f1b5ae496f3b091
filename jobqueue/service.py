"""``JobQueueService``: the facade that builds the parts and delegates to them.

The parts, each with its own state: :class:`~jobqueue.settings.Settings`
(options), :class:`~jobqueue.handlers.HandlerTable` (handlers and limits),
:class:`~jobqueue.events.registry.QueueRegistry` (per-job event queues),
:class:`~jobqueue.runtime.engine.Runtime` (store, loops, outcomes),
:class:`~jobqueue.submission.Submitter` (new jobs),
:class:`~jobqueue.controls.Controller` (cancel/stop/pause/resume) and
:class:`~jobqueue.langflow.LangflowQueues` (Langflow's calls). Langflow's
members (``create_queue``, ``start_job``, ``_queues``, ...) are inherited
from :class:`~jobqueue.langflow.LangflowCompat`, which delegates to these parts.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from jobqueue import codec
from jobqueue.clock import SYSTEM, Clock, check_clock
from jobqueue.controls import Controller
from jobqueue.errors import JobCancelledError, JobFailedError, WorkerAppError
from jobqueue.events import stream
from jobqueue.events.manager import Event
from jobqueue.events.registry import QueueRegistry
from jobqueue.handlers import Handler, HandlerTable
from jobqueue.hooks import Hooks
from jobqueue.langflow import LangflowCompat, LangflowQueues
from jobqueue.runtime.counts import JobCounts
from jobqueue.runtime.engine import Runtime
from jobqueue.settings import Settings
from jobqueue.status import TaskStatus
from jobqueue.store import jobs, steps
from jobqueue.store import retry as retries
from jobqueue.store.jobs import Finished, Job
from jobqueue.store.recovery import SweepResult
from jobqueue.store.retry import RetryRecord
from jobqueue.store.steps import Step
from jobqueue.submission import Submitter
from jobqueue.validation import parse_status_arg

if TYPE_CHECKING:
    from jobqueue.locks import KeyedMemoryLockManager, KeyedWorkerLockManager
    from jobqueue.redis.durable import RedisBus
    from jobqueue.telemetry import JobMetrics

__all__ = ["JobQueueService"]

H = TypeVar("H", bound=Handler)


class JobQueueService(LangflowCompat):
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
        clock: where delays, retry backoffs, timeouts, rate-limit windows and durable
            sleeps read the time. The machine's clock by default; tests pass a
            :class:`jobqueue.testing.TestClock` so that they take no real time.
        bus: a Redis URL: publish the jobs this service runs (their event logs and
            records) and take controls from any machine (``jobqueue.redis.RemoteJobs``).
            Needs ``persist_events=True`` and ``pip install 'jobqueue[redis]'``; see
            docs/scale-out.md.
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
        clock: Clock | None = None,
        bus: str | None = None,
    ) -> None:
        settings = Settings.make(
            path,
            concurrency=concurrency,
            poll_interval=poll_interval,
            cleanup_interval=cleanup_interval,
            retention=retention,
            queue_size=queue_size,
            drain_timeout=drain_timeout,
            cancel_grace=cancel_grace,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            check_on_open=check_on_open,
            max_payload_bytes=max_payload_bytes,
            retry_backoff=retry_backoff,
            retry_backoff_max=retry_backoff_max,
            strict_events=strict_events,
            persist_events=persist_events,
            stop_timeout=stop_timeout,
        )
        #: The lifecycle bus: metrics and logs subscribe here.
        self.hooks = Hooks()
        self._handlers = HandlerTable(settings.path, locks)
        self.registry = QueueRegistry(
            queue_size=settings.queue_size,
            retention=settings.retention,
            strict_events=settings.strict_events,
        )
        self.runtime = Runtime(
            settings,
            handlers=self._handlers,
            registry=self.registry,
            hooks=self.hooks,
            clock=SYSTEM if clock is None else check_clock(clock),
        )
        self._handlers.on_change = self.runtime.want_claim
        self._submitter = Submitter(self.runtime, self._handlers)
        self._controller = Controller(self.runtime, self.registry)
        self._langflow = LangflowQueues(self.runtime, self.registry)
        self._metrics: JobMetrics | None = None
        if metrics is not False:
            if metrics is True:
                from jobqueue.telemetry import JobMetrics as _JobMetrics

                metrics = _JobMetrics()
                self.runtime.on_closed.append(metrics.shutdown)  # ours: unregister it
            self._metrics = metrics
            metrics.attach(
                self.hooks,
                queue_lengths=self.runtime.queue_lengths,
                active=self.runtime.active_counts,
            )
        #: The Redis bus the jobs run here are published on (``bus=``), else ``None``.
        self.bus: RedisBus | None = None
        if bus is not None:
            from jobqueue.redis.durable import RedisBus as _RedisBus

            self.bus = _RedisBus(self, bus)

    # -- configuration and state ---------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The checked options this service runs with."""
        return self.runtime.settings

    def configure(
        self, *, path: str | os.PathLike[str] | None = None, concurrency: int | None = None
    ) -> None:
        """Point a service that has not started at another file, or change its concurrency.

        What ``python -m jobqueue worker --db F --concurrency N`` does.

        Raises:
            WorkerAppError: the service already started.
            InvalidArgumentError: a value is out of range.
        """
        if self.runtime.state != "new":
            raise WorkerAppError(
                "the service",
                f"the service was already started ({self.runtime.state}); configure it "
                "before it starts",
            )
        changes: dict[str, Any] = {}
        if path is not None:
            changes["path"] = os.fspath(path)
        if concurrency is not None:
            changes["concurrency"] = concurrency
        self.runtime.settings = self.settings.replace(**changes)
        self._handlers.path = self.settings.path

    @property
    def path(self) -> str:
        """The database file (``":memory:"`` for an in-memory service)."""
        return self.settings.path

    @property
    def state(self) -> str:
        """``new``, ``starting``, ``open``, ``closing`` or ``closed``."""
        return self.runtime.state

    @property
    def owner(self) -> str:
        """This service's owner identity, written on the jobs it runs."""
        return self.runtime.owner

    @property
    def boot_at(self) -> float | None:
        """When the store was last opened (epoch seconds)."""
        return self.runtime.boot_at

    @property
    def recovered(self) -> SweepResult:
        """What the crash sweep at the last start did."""
        return self.runtime.recovered

    @property
    def tally(self) -> JobCounts:
        """Live job counts (see :meth:`stats`)."""
        return self.runtime.counts

    @property
    def concurrency(self) -> int:
        """Most jobs this process runs at once."""
        return self.settings.concurrency

    @property
    def cancel_grace(self) -> float:
        """Seconds a job may ignore cancellation before it is abandoned as unresponsive."""
        return self.settings.cancel_grace

    @property
    def drain_timeout(self) -> float:
        """Seconds ``close()`` lets running jobs finish by default."""
        return self.settings.drain_timeout

    # -- opening and closing -------------------------------------------------------------

    def start(self) -> None:
        """Start opening the store and the background loops (idempotent).

        Must be called with a running event loop. ``async with service`` calls
        it and also waits until the store is open.
        """
        self._langflow.refusing = False  # Langflow's start() reopens (_closed = False)
        self.runtime.start()
        if self.bus is not None:
            self.bus.begin()

    async def __aenter__(self) -> Self:
        self.start()
        await self.runtime.ready()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, drain_timeout: float | None = None) -> None:
        """Drain and close: stop claiming, let running jobs finish, then cancel and persist.

        Jobs still running after ``drain_timeout`` are cancelled and go back to
        ``pending`` (they run again at the next start). Langflow ``start_job``
        coroutines are cancelled at once, as Langflow's ``stop()`` does (they
        cannot run again), and their outcome is stored first. Idempotent and
        re-entrant: a call made while another is draining waits for it to
        finish, and with ``drain_timeout=0`` cuts its drain short (what a
        worker's second signal does).
        """
        await self.runtime.close(drain_timeout)
        if self.bus is not None:  # jobs that end in the drain: the next bus on the file
            await self.bus.close()

    async def run_until_idle(self, timeout: float | None = None) -> None:
        """Return once no job for this process's handlers is pending, delayed or running.

        Meant for tests: submit, ``await service.run_until_idle()``, assert.
        """
        await self.runtime.ready()
        async with asyncio.timeout(timeout):
            await self.runtime.until_idle()

    # -- handlers ------------------------------------------------------------------------

    def handler(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        lock_key: str | Callable[[Any], str] | None = None,
        lock_timeout: float | None = None,
        concurrency: int | None = None,
        rate_limit: tuple[int, float] | None = None,
        key_concurrency: int = 1,
        key_rate_limit: tuple[int, float] | None = None,
    ) -> Callable[[H], H]:
        """Decorator registering an ``async def handler(ctx, payload)`` under ``name``.

        ``lock_key`` (a string, or a function of the payload returning one) makes
        runs that share a key take turns, across processes by default (see
        ``locks``); waiting for the lock never blocks the event loop, and
        ``lock_timeout`` fails the run with ``LockTimeout`` (retried if allowed).

        Limits (none by default; jobs held back stay pending in the database):

        - ``concurrency``: at most this many of its jobs run at once in this process.
        - ``rate_limit=(n, seconds)``: at most ``n`` starts per ``seconds`` in this process.
        - ``key_concurrency``: at most this many of its jobs sharing one
          ``concurrency_key`` (given at submit) run at once, across all processes
          on the database file (default 1: one per user, browser profile, ...).
        - ``key_rate_limit=(n, seconds)``: at most ``n`` starts per ``seconds`` per
          ``concurrency_key``, in this process.
        """
        return self._handlers.handler(
            name,
            lock_key=lock_key,
            lock_timeout=lock_timeout,
            concurrency=concurrency,
            rate_limit=rate_limit,
            key_concurrency=key_concurrency,
            key_rate_limit=key_rate_limit,
        )

    def register(self, name: str, fn: Handler, **options: Any) -> None:
        """Register ``fn`` as the handler called ``name`` (options as :meth:`handler`).

        Raises:
            InvalidHandlerError: ``fn`` is not an ``async def`` function, or the name is taken.
            InvalidLockKey: a fixed ``lock_key`` that cannot be used.
            InvalidArgumentError: a limit is out of range.
        """
        self._handlers.register(name, fn, **options)

    def declare(self, *names: str) -> None:
        """Allow submitting jobs for handlers that another process runs.

        A producer (a web app, the CLI) declares the names it submits; a
        worker process registers the functions. Declared names are never
        claimed here, and an undeclared, unregistered name still raises
        :class:`~jobqueue.errors.UnknownHandlerError` at submit, so typos are caught.
        """
        self._handlers.declare(*names)

    @property
    def handlers(self) -> Mapping[str, Handler]:
        """The registered handlers by name (read-only; lock wrappers included)."""
        return self._handlers.registered

    @property
    def handler_names(self) -> tuple[str, ...]:
        """Names of the registered handlers, sorted."""
        return tuple(sorted(self._handlers.functions))

    @property
    def locks(self) -> KeyedMemoryLockManager | KeyedWorkerLockManager:
        """The lock manager used by ``lock_key`` handlers (created on first use)."""
        return self._handlers.locks

    @property
    def locks_made(self) -> bool:
        """A lock manager exists (given, or made for a lock-keyed handler)."""
        return self._handlers.locks_made

    @property
    def metrics(self) -> JobMetrics | None:
        """The attached :class:`~jobqueue.telemetry.JobMetrics` (``None`` when off)."""
        return self._metrics

    # -- jobs ----------------------------------------------------------------------------

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
        row = self._submitter.row(
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
            now=self.runtime.clock.time(),
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
        )
        return (await self._submitter.insert([row], [payload]))[0]

    async def submit_many(
        self, handler: str, payloads: Sequence[Any], **options: Any
    ) -> builtins.list[Job]:
        """Submit one job per payload in a single transaction (same options for all).

        ``job_id`` and ``idempotency_key`` are per job and cannot be given here.
        """
        rows = self._submitter.rows(handler, payloads, options, self.runtime.clock.time())
        return await self._submitter.insert(rows, payloads) if rows else []

    async def get(self, job_id: str) -> Job:
        """The stored job. Raises :class:`~jobqueue.errors.JobNotFoundError`."""
        return await self.runtime.read(jobs.fetch, job_id)

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
        return await self.runtime.read(jobs.list_jobs, statuses, handler, session_id, limit, offset)

    async def get_steps(self, job_id: str) -> builtins.list[Step]:
        """The job's workflow steps (``ctx.step``/``ctx.sleep``) in the order it reached them.

        Each :class:`~jobqueue.Step` has its status (pending, running,
        sleeping, completed, failed), attempts, timings, error and stored
        result. A job that uses no steps has none.

        Raises:
            JobNotFoundError: unknown id.
        """
        return await self.runtime.read(steps.list_steps, job_id)

    async def wait(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait until the job is finished and return its result.

        Raises:
            JobFailedError: the job failed (``.error``, ``.reason``).
            JobCancelledError: the job was cancelled or stopped.
            TimeoutError: ``timeout`` seconds passed first (the job keeps running).
        """
        # A job that finishes here is answered from its committed outcome; the others
        # share one read with every other waiter (another process may be running them).
        return _result_of(await self.runtime.outcome(job_id, timeout))

    def events(self, job_id: str, *, after: int | str | None = None) -> AsyncIterator[Event]:
        """Stream a job's events; ends after its ``end`` or ``error`` event.

        A job that already finished yields one final event built from its record.
        See :func:`jobqueue.events.stream.stream` (``after`` resumes a persisted log).
        """
        return stream.stream(self.runtime, job_id, after=after)

    def stats(self) -> dict[str, Any]:
        """Counts and health, under these keys (one per status, as the statuses are named):

        - ``pending``, ``running``, ``paused``, ``completed``, ``failed``,
          ``cancelled``, ``stopped``: jobs in each status (``cancelled`` and
          ``stopped`` are separate: a stopped job is not counted as cancelled);
        - ``done``: the same number as ``completed``, kept as an alias for
          code written before ``completed`` was added;
        - ``lag``: seconds the oldest due pending job has waited;
        - ``boot_at``, ``registry`` (event queues held), ``unresponsive``,
          ``recovered`` (jobs the crash sweep at start changed), ``owner``,
          ``concurrency``, ``path``.

        Counts come from the store at start and the reaper's refresh, kept
        current with this process's own changes in between.
        """
        rt = self.runtime
        c = rt.counts
        return {
            "pending": c["pending"],
            "running": rt.running,
            "paused": c["paused"],
            "completed": c["completed"],
            "done": c["completed"],  # alias of "completed"
            "failed": c["failed"],
            "cancelled": c["cancelled"],
            "stopped": c["stopped"],
            "lag": c.lag,
            "boot_at": rt.boot_at,
            "registry": len(self.registry),
            "unresponsive": rt.unresponsive,
            "recovered": rt.recovered.total,
            "owner": rt.owner,
            "concurrency": self.settings.concurrency,
            "path": self.settings.path,
        }

    async def refresh_stats(self) -> None:
        """Re-read job counts and lag from the store (the reaper does this periodically)."""
        await self.runtime.refresh_counts()

    def active_counts(self) -> dict[str, int]:
        """Running jobs by handler in this process (safe from another thread)."""
        return self.runtime.active_counts()

    def queue_lengths(self) -> dict[str, int]:
        """Pending jobs by handler, from in-memory counts (safe from another thread)."""
        return self.runtime.queue_lengths()

    # -- controls ------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job now: a running one gets ``CancelledError``; it ends ``cancelled``.

        A job that ignores cancellation for ``cancel_grace`` seconds is
        abandoned and recorded ``failed`` with reason ``unresponsive``.

        Raises:
            JobNotFoundError: unknown id.
            InvalidTransition: the job already finished.
        """
        return await self._controller.cancel(job_id)

    async def stop(self, job_id: str | None = None) -> Any:
        """Stop a job gracefully; with no argument, close the service (Langflow's ``stop()``).

        The running handler finishes its current step: its next
        ``await ctx.checkpoint()`` ends it ``stopped`` (so does finishing).
        One that does not within ``stop_timeout`` is cancelled (``cancelled``,
        reason ``stop_timeout``). A pending or paused job becomes ``stopped``.

        Raises:
            JobNotFoundError: unknown id.
            InvalidTransition: the job already finished.
        """
        if job_id is None:
            await self.close()
            return None
        return await self._controller.stop(job_id)

    async def pause(self, job_id: str) -> Job:
        """Pause a running job; once this returns, it holds no running task.

        A handler that calls ``await ctx.checkpoint()`` is paused at its next
        checkpoint (within ``stop_timeout``); any other is cancelled at once.
        A paused job stays paused across restarts. ``resume()`` runs it again
        from the start (workflows continue after their last completed step).
        Pausing a paused job keeps it paused and withdraws a ``resume()`` no
        worker has acted on yet.

        Raises:
            JobNotFoundError: unknown id.
            InvalidTransition: the job is pending or finished.
        """
        return await self._controller.pause(job_id)

    async def resume(self, job_id: str) -> Job:
        """Let a paused job run again: it is claimed like a due pending job.

        Resuming a pending or running job returns it unchanged.

        Raises:
            JobNotFoundError: unknown id.
            InvalidTransition: the job already finished.
        """
        return await self._controller.resume(job_id)

    async def retry(self, job_id: str) -> Job:
        """Run a failed, cancelled or stopped job again, as a new attempt under its id.

        The job goes back to ``pending``, due now, and returns as stored. It
        keeps its history: ``attempt`` counts on (a job that ran once runs
        attempt 2), the ended run is recorded (:meth:`get_retries`), its
        error stays on the record until the new run ends, steps completed by
        a workflow are not run again, and persisted events continue their
        seqs. A job whose retries were used up gets one more run
        (``max_retries`` grows to it); one with retries left keeps them.
        ``job_id`` may be a unique prefix or suffix of the id, as the command
        line takes.

        Raises:
            JobNotFoundError: unknown id (``AmbiguousJobIdError``: a part of several).
            NotRetryableError: the job is pending, running, paused or completed.
        """
        return await self._controller.retry(job_id)

    async def retry_where(
        self,
        *,
        status: TaskStatus | str | Sequence[TaskStatus | str] | None = None,
        handler: str | None = None,
        session_id: str | None = None,
    ) -> builtins.list[str]:
        """:meth:`retry` every job that matches, in one transaction; the ids retried.

        ``status`` is ``failed``, ``cancelled`` or ``stopped``, or several of
        them (default: all three). At least one filter is required.

        Raises:
            InvalidArgumentError: no filter, or a status that cannot be retried.
        """
        return await self._controller.retry_where(status, handler, session_id)

    async def cancel_where(
        self,
        *,
        status: TaskStatus | str | Sequence[TaskStatus | str] | None = None,
        handler: str | None = None,
        session_id: str | None = None,
    ) -> builtins.list[str]:
        """:meth:`cancel` every job that matches and has not ended; the ids cancelled.

        ``status`` is ``pending``, ``running`` or ``paused``, or several of
        them (default: all three). Pending and paused jobs are cancelled in
        one transaction; running ones where they run, as :meth:`cancel` does
        (one that finishes first is left as it ended, and not listed). At
        least one filter is required.

        Raises:
            InvalidArgumentError: no filter, or a status that cannot be cancelled.
        """
        return await self._controller.cancel_where(status, handler, session_id)

    async def get_retries(self, job_id: str) -> builtins.list[RetryRecord]:
        """How each run that :meth:`retry` followed had ended, oldest first.

        Raises:
            JobNotFoundError: unknown id.
        """
        return await self.runtime.read(retries.list_retries, job_id)

    def __del__(self) -> None:
        runtime = getattr(self, "runtime", None)
        if runtime is not None and runtime.state in ("starting", "open"):
            warnings.warn(
                f"JobQueueService({runtime.settings.path!r}) was not closed; use `async with` "
                "or `await service.close()`",
                ResourceWarning,
                stacklevel=2,
            )


def _result_of(job: Finished) -> Any:
    if job.status is TaskStatus.COMPLETED:
        return job.value()
    if job.status is TaskStatus.FAILED:
        raise JobFailedError(job.id, job.error, job.reason)
    raise JobCancelledError(job.id, job.status.value)
