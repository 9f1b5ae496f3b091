"""The in-process engine: opens the store, runs the loops, reports outcomes, closes.

:class:`Runtime` owns the database, the group-commit writer, the WAL
checkpointer, the scheduler, the runner, the supervisor and the reaper, and
the state that follows from what they report: job counts and the futures of
callers waiting on a job. The public calls live in
:class:`~jobqueue.service.JobQueueService`, which delegates here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from jobqueue.clock import SYSTEM, Clock
from jobqueue.errors import JobNotFoundError, JobQueueError, ServiceClosedError
from jobqueue.events.manager import EventManager, EventQueue, end_stream_with
from jobqueue.events.registry import QueueRegistry
from jobqueue.handlers import HandlerTable
from jobqueue.hooks import HookKind, Hooks, Lifecycle
from jobqueue.limits import Limiter
from jobqueue.runtime.bare import BareRuns
from jobqueue.runtime.counts import JobCounts
from jobqueue.runtime.owner import owner_identity
from jobqueue.runtime.runner import Runner
from jobqueue.runtime.scheduler import Scheduler
from jobqueue.runtime.supervisor import Supervisor, recover_on_open
from jobqueue.runtime.waiters import Waiters
from jobqueue.settings import Settings
from jobqueue.status import TaskStatus
from jobqueue.store.checkpointer import Checkpointer
from jobqueue.store.connection import Database
from jobqueue.store.eventlog import JobLog
from jobqueue.store.initlock import init_lock
from jobqueue.store.jobs import Claimed, Finished, finished_or_status
from jobqueue.store.outcomes import Outcome
from jobqueue.store.recovery import SweepResult
from jobqueue.store.schema import apply_migrations
from jobqueue.store.writer import Writer

__all__ = ["Runtime"]

log = logging.getLogger("jobqueue.service")
_FINISHED, _EVENT_CONSUMED = HookKind.FINISHED, HookKind.EVENT_CONSUMED
T = TypeVar("T")
_warned_memory = False


class Runtime:
    """Opening, running and closing one service's engine.

    Args:
        settings: the checked options (read at each open).
        handlers: the handler table the scheduler claims for and the runner calls.
        registry: per-job event queues; durable runs get their managers here.
        hooks: the lifecycle bus (metrics subscribe to it).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        handlers: HandlerTable,
        registry: QueueRegistry,
        hooks: Hooks,
        clock: Clock = SYSTEM,
    ) -> None:
        self.settings = settings
        #: Where delays, backoffs and timeouts read the time (a ``TestClock`` in tests).
        self.clock = clock
        self.handlers = handlers
        self.registry = registry
        self.hooks = hooks
        self.counts = JobCounts()
        self.waiters = Waiters(self.read)
        #: Called with ``(job_id, kind)`` when another process asks for a control on a
        #: job running here; the controller sets it.
        self.apply_control: Callable[[str, str], None] = _no_control
        #: Called once the engine has closed (or failed to open): release extras.
        self.on_closed: list[Callable[[], None]] = []
        self.state = "new"  # new -> starting -> open -> closing -> closed (-> starting)
        self._drain_now = asyncio.Event()  # a second close(drain_timeout=0) sets it
        self.closed = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None  # close()'s teardown task
        self._opening: asyncio.Task[Writer] | None = None
        self.db: Database | None = None
        self.writer: Writer | None = None
        self.scheduler: Scheduler | None = None
        self.runner: Runner | None = None
        self.checkpointer: Checkpointer | None = None
        self.supervisor: Supervisor | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()  # outcomes waiting for their event log
        #: What the crash sweep at the last start did.
        self.recovered = SweepResult()
        self.owner = ""
        self.boot_at: float | None = None
        #: Langflow ``start_job`` coroutines (and tasks registered through ``_queues``).
        self.bare = BareRuns(self)
        hooks.on_change = self._hooks_changed
        self._hooks_changed()
        handlers.on_change = self.want_claim  # a handler registered later claims at once

    # -- opening -----------------------------------------------------------------------

    def start(self) -> None:
        """Start opening the store and the loops (idempotent; needs a running loop)."""
        if self.state in ("starting", "open"):
            return
        if self.state == "closing":
            raise ServiceClosedError("the service is closing")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ServiceClosedError("start() needs a running event loop") from None
        self.owner = owner_identity()
        self.state = "starting"
        self._drain_now.clear()
        self.closed.clear()
        self._opening = loop.create_task(self._open(), name="jobqueue-open")

    async def _open(self) -> Writer:
        try:
            return await self._open_store()
        except BaseException:
            self.state = "closed"  # nothing is left open; close() has nothing to do
            self._run_on_closed()
            self.closed.set()
            raise

    async def _open_store(self) -> Writer:
        s = self.settings
        memory = s.in_memory
        async with init_lock(s.path, max(s.busy_timeout, 30.0)):
            db = await Database.open(
                s.path,
                busy_timeout=s.busy_timeout,
                synchronous=s.synchronous,
                check=s.check_on_open,
                autocheckpoint=memory,
            )
            try:
                await db.run(apply_migrations, s.path)
                boot = time.time()
                self.recovered = await db.run(recover_on_open, self.owner, boot)
                if not memory:
                    wal = await Database.open(s.path, busy_timeout=s.busy_timeout, check=False)
            except BaseException:
                await db.close()
                raise
        self.db = db
        self.waiters.poll = max(s.poll_interval, 0.05) * 4
        await self.counts.refresh(db, self.clock.time())
        writer = self.writer = Writer(db)
        if s.persist_events:
            self.registry.attach_log(writer, db)
        if not memory:
            db.companions.append(wal)  # no write on the loop's thread while it checkpoints
            self.checkpointer = Checkpointer(wal, lambda: writer.batches)
            self.checkpointer.start()
        scheduler = self.scheduler = Scheduler(
            writer,
            handlers=self.handlers.names,
            concurrency=s.concurrency,
            owner=self.owner,
            start=self._start_claimed,
            poll_interval=s.poll_interval,
            limiter=Limiter(self.handlers.limits),
            event_seq=s.persist_events,
            clock=self.clock,
        )
        self.runner = Runner(
            writer,
            handlers=self.handlers.functions,
            hooks=self.hooks,
            manager_for=self.manager_for,
            release=scheduler.release,
            finished=self._runner_finished,
            retried=self._retried,
            paused=self._paused,
            changed=self.waiters.wake,  # its waiters read what the other process stored
            max_result_bytes=s.max_payload_bytes,
            backoff=s.retry_backoff,
            backoff_max=s.retry_backoff_max,
            cancel_grace=s.cancel_grace,
            clock=self.clock,
        )
        writer.planner = scheduler
        writer.start()
        scheduler.start()
        self._reaper = asyncio.get_running_loop().create_task(
            self.reap_loop(), name="jobqueue-reaper"
        )
        self.boot_at = boot
        self.supervisor = Supervisor(
            db,
            writer,
            owner=self.owner,
            boot_at=boot,
            poll_interval=s.poll_interval,
            apply=lambda job_id, kind: self.apply_control(job_id, kind),
            swept=self._swept,
        )
        self.supervisor.start()
        self.state = "open"
        if self.clock.virtual:
            self.clock.attach(self.settle)
            self.on_closed.append(lambda: self.clock.detach(self.settle))
        global _warned_memory
        if memory and not _warned_memory:
            _warned_memory = True
            log.info(
                "JobQueueService() without a path keeps jobs in memory only; they are "
                "lost when the process exits. Pass a file path to persist them."
            )
        return writer

    async def ready(self) -> Writer:
        """The writer of the open store, opening it first if needed.

        Raises:
            ServiceClosedError: the service is closing or closed.
            StoreError: opening the store failed (why, exactly).
        """
        if self.state == "open" and self.writer is not None:
            return self.writer  # the common case: no future to build and await
        if self.state == "new":
            self.start()
        opening = self._opening
        failed = opening is not None and opening.done() and not opening.cancelled()
        if failed and opening is not None and (exc := opening.exception()) is not None:
            raise exc  # why the open failed
        if self.state in ("closing", "closed") or opening is None:
            raise ServiceClosedError()
        return await asyncio.shield(opening)

    async def outcome(self, job_id: str, timeout: float | None = None) -> Finished:
        """The job's terminal record, once it has one (what ``wait()`` returns or raises).

        A job that finishes in this process resolves it from its committed
        outcome, and one that finished here lately is answered from memory;
        the others are read from the store, batched with every other waiter
        (see :class:`~jobqueue.runtime.waiters.Waiters`).

        Raises:
            JobNotFoundError: no such job.
            TimeoutError: ``timeout`` seconds passed first.
            ServiceClosedError: the service closed meanwhile.
        """
        writer = await self.ready()
        fin = self.waiters.recent(job_id)
        if fin is not None:
            return fin
        # A job running here ends here: its outcome, or a wake-up to read what else
        # happened to it (paused, changed by another process), always arrives.
        runner = self.runner
        read = runner is None or job_id not in runner.active
        if read:  # a lone caller reads at once, on the loop; the others share a read
            got = writer.read_now(finished_or_status, (job_id,))
            if got is not None:
                ok, found = got
                if not ok:
                    raise found
                state = found.get(job_id)
                if state is None:
                    raise JobNotFoundError(job_id)
                if isinstance(state, Finished):
                    return state
                read = False  # not finished: the poll and its outcome will tell
        fut = self.waiters.watch(job_id, read=read)
        try:
            if timeout is None:
                return await fut
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self.waiters.unwatch(job_id, fut)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the store's thread (a read of committed state)."""
        await self.ready()
        assert self.db is not None
        return await self.db.run(fn, *args)

    async def live_writer(self) -> Writer | None:
        """The writer, also while closing (bare runs store their ends before it closes).

        ``None`` when the service was never started: a Langflow ``start_job`` run is
        then not recorded, and opens nothing that would need closing (as Langflow's).
        """
        if self.writer is not None and self.state in ("open", "closing"):
            return self.writer
        if self.state == "new":
            return None
        return await self.ready()

    def check_usable(self) -> None:
        if self.state in ("closing", "closed"):
            raise ServiceClosedError()

    def reopen(self) -> None:
        """Let a closed runtime take work again: the next :meth:`start` opens it anew."""
        if self.state == "closed":
            self.state = "new"

    def want_claim(self) -> None:
        """Ask the scheduler to look for due jobs soon (a slot, a job or a handler appeared)."""
        if self.scheduler is not None:
            self.scheduler.want()

    # -- what the scheduler, runner and supervisor report -------------------------------

    def _start_claimed(self, claimed: Claimed) -> None:
        assert self.runner is not None
        self.counts.claimed(claimed.handler)
        self.waiters.forget(claimed.id)  # retried (maybe elsewhere): a new outcome comes
        old = self.registry.get(claimed.id)
        if old is not None and old.ended and not old.langflow:  # a run before a retry
            del self.registry.entries[claimed.id]
        if self.settings.persist_events:
            self.registry.begin_run(claimed.id, claimed.event_seq)
        entry = self.registry.get(claimed.id)
        task = self.runner.start(claimed)
        if entry is not None:
            entry.task, entry.finished = task, False

    def _runner_finished(self, job_id: str, out: Outcome, value: Any, handler: str) -> None:
        self.counts.removed(TaskStatus.RUNNING, None)
        self.job_finished(job_id, out, value, handler, hook=False)  # the runner emits its own

    def _retried(self, run_at: float, handler: str) -> None:
        self.counts.moved(TaskStatus.RUNNING, TaskStatus.PENDING, handler)
        self.want_claim()

    def _paused(self, job_id: str, handler: str) -> None:
        self.counts.moved(TaskStatus.RUNNING, TaskStatus.PAUSED)
        self.waiters.wake(job_id)  # pause() waits for this

    def _swept(self, result: SweepResult) -> None:
        """The supervisor settled a dead process's jobs: recount, and claim them."""
        self.want_claim()
        asyncio.get_running_loop().create_task(self.refresh_counts(), name="jobqueue-recount")

    def bare_finished(self, job_id: str, out: Outcome, value: Any) -> None:
        """A Langflow ``start_job`` coroutine ended (its outcome is committed)."""
        self.counts.added(out.status)
        self.waiters.wake(job_id)

    def job_finished(
        self, job_id: str, out: Outcome, value: Any, handler: str | None, *, hook: bool = True
    ) -> None:
        """A durable job reached a terminal status (already committed, as ``out`` says).

        Its waiters get the outcome itself: nobody reads the row back.
        """
        self.counts.added(out.status)
        entry = self.registry.get(job_id)
        sink = None
        if entry is not None and isinstance(entry.manager, EventManager):
            if not entry.ended:
                end_stream_with(entry.manager, out.status, value, out.error, out.reason)
                entry.finished = True
            sink = entry.manager.log
        fin = Finished(
            job_id,
            handler,
            out.status,
            out.result,
            out.error,
            out.error_type,
            out.traceback,
            out.reason,
        )
        if sink is not None and sink.inflight:
            # Persisted events: wait() returns once the job's log holds its end event too.
            task = asyncio.get_running_loop().create_task(self._finished_after(sink, fin))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
        else:
            self.waiters.finished(fin)
        if hook and handler is not None and self.hooks.wants(_FINISHED):
            self.hooks.emit(Lifecycle(_FINISHED, job_id, handler, out.status.value, out.reason))

    async def _finished_after(self, sink: JobLog, fin: Finished) -> None:
        try:
            await sink.flush()
        finally:
            self.waiters.finished(fin)

    def _hooks_changed(self) -> None:
        """Time in queue is measured for each event taken only while someone wants it."""
        report = self._event_consumed if self.hooks.wants(_EVENT_CONSUMED) else None
        self.registry.on_consume = report
        for entry in self.registry.entries.values():
            if isinstance(entry.queue, EventQueue):
                entry.queue.on_consume = report

    def _event_consumed(self, seconds: float) -> None:
        if self.hooks.wants(_EVENT_CONSUMED):
            self.hooks.emit(Lifecycle(_EVENT_CONSUMED, wait_s=seconds))

    def manager_for(self, job_id: str) -> EventManager:
        """The event manager of a job running here (registered on first use)."""
        return self.registry.ensure(job_id).manager

    # -- live state (safe to read from another thread) -----------------------------------

    def active_counts(self) -> dict[str, int]:
        """Running jobs by handler in this process."""
        runner = self.runner
        if runner is None:
            return {}
        counts: dict[str, int] = {}
        for run in list(runner.active.values()):  # one C-level copy under the GIL
            if not run.abandoned:
                counts[run.claimed.handler] = counts.get(run.claimed.handler, 0) + 1
        return counts

    def queue_lengths(self) -> dict[str, int]:
        """Pending jobs by handler, from in-memory counts."""
        return self.counts.queue_lengths()

    @property
    def running(self) -> int:
        """Jobs running in this process now."""
        return len(self.runner.active) if self.runner is not None else 0

    @property
    def unresponsive(self) -> int:
        """Jobs abandoned because they ignored cancellation."""
        return self.runner.unresponsive if self.runner is not None else 0

    # -- idle, reaper ------------------------------------------------------------------

    async def until_idle(self) -> None:
        """Return once no job for this process's handlers is pending, delayed or running."""
        await self.ready()
        while True:
            scheduler, runner = self.scheduler, self.runner
            if scheduler is None or runner is None:
                raise ServiceClosedError()
            scheduler.want()
            if self.clock.virtual:
                if await self._idle_on_virtual_clock(scheduler, runner):
                    return
                continue
            await scheduler.idle.wait()
            if not runner.drained.is_set():
                await runner.drained.wait()  # outcomes committed; retries may be pending
                continue
            if scheduler.idle.is_set():
                return

    async def _idle_on_virtual_clock(self, scheduler: Scheduler, runner: Runner) -> bool:
        """One step of ``until_idle`` on a test clock: True once idle, else move time on."""
        await self.settle()
        if scheduler.idle.is_set() and runner.drained.is_set():
            return True
        if self.calm() and await self.clock.jump() is not None:
            return False  # a deadline came: see what it started
        # Something runs in real time (a handler awaiting I/O): give it a moment.
        idle = asyncio.ensure_future(scheduler.idle.wait())
        await asyncio.wait([idle], timeout=0.005)
        idle.cancel()
        return False

    def calm(self) -> bool:
        """Nothing here can move on until the clock does (see ``TestClock``)."""
        s, r, w = self.scheduler, self.runner, self.writer
        if s is None or r is None or w is None:
            return True
        if self._settling or not s.quiet or not w.quiet:
            return False
        return len(r.active) <= self.clock.sleepers

    async def settle(self) -> None:
        """Return once :meth:`calm` holds for a few loop turns (a test clock awaits this)."""
        calm = 0
        while calm < 3 and self.state == "open":
            await asyncio.sleep(0 if calm else 0.0002)  # a thread hop needs real time
            calm = calm + 1 if self.calm() else 0

    @property
    def reaper(self) -> asyncio.Task[None] | None:
        """The task running :meth:`reap_loop` while the store is open."""
        return self._reaper

    async def reap_loop(self) -> None:
        """Every ``cleanup_interval``: one reaper pass, then a recount (until cancelled)."""
        while True:
            await asyncio.sleep(self.settings.cleanup_interval)
            try:
                await self.registry.reap()
                await self.refresh_counts()
            except JobQueueError as exc:
                log.warning("reaper pass failed: %s", exc)
            except Exception:
                log.exception("reaper pass failed; it will run again")

    async def refresh_counts(self) -> None:
        """Re-read job counts and lag from the store (the reaper does this periodically)."""
        if self.db is not None:
            await self.counts.refresh(self.db, self.clock.time())

    # -- closing -----------------------------------------------------------------------

    async def close(self, drain_timeout: float | None = None) -> None:
        """Stop claiming, let running jobs finish, then cancel, persist and close the store.

        Idempotent and re-entrant: a call made while another is draining waits
        for it, and with ``drain_timeout=0`` cuts its drain short.
        """
        if self.state == "closing":
            if drain_timeout is not None and drain_timeout <= 0:
                self._drain_now.set()
            # Wait on the teardown task, as the first caller does, not on `closed`: both
            # callers then resume from the task's end, in the order they called.
            if self._closing is not None:
                await asyncio.shield(self._closing)
            else:
                await self.closed.wait()
            return
        if self.state in ("new", "closed"):
            self.state = "closed"
            for job_id in list(self.registry.entries):  # create_queue() before any start
                await self.registry.cleanup(job_id)
            return
        self.state = "closing"
        # The teardown runs in its own task: a caller cancelled halfway leaves it to
        # finish (a half-closed store would leak its thread and hold the write lock).
        task = asyncio.get_running_loop().create_task(
            self._close(drain_timeout), name="jobqueue-close"
        )
        task.add_done_callback(_log_close_error)
        self._closing = task
        await asyncio.shield(task)

    async def _close(self, drain_timeout: float | None) -> None:
        opening = self._opening
        try:
            if opening is not None and not opening.done():
                await asyncio.wait([opening])
            if opening is not None and not opening.cancelled() and opening.exception() is None:
                timeout = self.settings.drain_timeout if drain_timeout is None else drain_timeout
                await self._drain(timeout)
        finally:
            if self._reaper is not None:
                self._reaper.cancel()
                await asyncio.wait([self._reaper])
            for job_id in list(self.registry.entries):
                await self.registry.cleanup(job_id)
            await self.bare.wait_settled(self.settings.cancel_grace)  # replaced runs too
            if self.supervisor is not None:
                await self.supervisor.close()
            if self.writer is not None:
                await self.writer.close()
            if self.checkpointer is not None:
                await self.checkpointer.close()
            self._run_on_closed()
            if self.db is not None:
                await self.db.close()
            self.waiters.wake_all()  # they re-check and get ServiceClosedError
            self.db = self.writer = self.scheduler = self.runner = None
            self._reaper = self._opening = self.checkpointer = self.supervisor = None
            self.state = "closed"
            self.closed.set()

    def _run_on_closed(self) -> None:
        for fn in self.on_closed:
            try:
                fn()
            except Exception:
                log.exception("releasing %r on close failed", fn)

    async def _drain(self, timeout: float) -> None:
        assert self.scheduler is not None
        assert self.runner is not None
        self.scheduler.stop()
        # Langflow's coroutines are cancelled at once, as its stop() does: they cannot
        # run again, and their outcome is stored while the store is still open.
        bare = self.bare.cancel_all()
        if bare:
            await asyncio.wait(bare, timeout=self.settings.cancel_grace)
        tasks: list[asyncio.Task[Any]] = [
            r.task for r in self.runner.active.values() if r.task is not None
        ]
        if not tasks:
            return
        started = time.monotonic()
        if not self._drain_now.is_set() and timeout > 0:
            everything = asyncio.ensure_future(asyncio.wait(tasks))
            cut_short = asyncio.ensure_future(self._drain_now.wait())
            await asyncio.wait(
                [everything, cut_short], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in (everything, cut_short):
                waiter.cancel()
            await asyncio.gather(everything, cut_short, return_exceptions=True)
        pending = {t for t in tasks if not t.done()}
        # A claim that was in flight when the scheduler stopped may have started one more.
        pending |= {r.task for r in self.runner.active.values() if r.task and not r.task.done()}
        if not pending:
            return
        log.warning(
            "close: %d job(s) still running after %.1fs; cancelling",
            len(pending),
            time.monotonic() - started,
        )
        for job_id in list(self.runner.active):
            self.runner.cancel(job_id, "shutdown")
        for task in pending:
            task.cancel()
        grace = self.settings.cancel_grace
        _, stuck = await asyncio.wait(pending, timeout=grace)
        for task in stuck:
            log.error(
                "close: task %s ignored cancellation for %.1fs; abandoning it",
                task.get_name(),
                grace,
            )


def _no_control(job_id: str, kind: str) -> None:
    log.warning("a %s request for job %r arrived with no controller attached", kind, job_id)


def _log_close_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("closing the service failed: %s", exc, exc_info=exc)
