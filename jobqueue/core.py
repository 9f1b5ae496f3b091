"""The service's machinery: opening and closing, wiring store, scheduler and runner.

:class:`~jobqueue.service.JobQueueService` adds the public calls on top.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from jobqueue.bookkeeping import Bookkeeping
from jobqueue.errors import ServiceClosedError
from jobqueue.events.registry import QueueRegistry
from jobqueue.hooks import HookKind, Hooks
from jobqueue.limits import Limiter, Limits
from jobqueue.runtime.counts import JobCounts
from jobqueue.runtime.runner import Handler, Runner
from jobqueue.runtime.scheduler import Scheduler
from jobqueue.runtime.supervisor import Supervisor, recover_on_open
from jobqueue.store.checkpointer import Checkpointer
from jobqueue.store.connection import MEMORY, Database
from jobqueue.store.initlock import init_lock
from jobqueue.store.recovery import SweepResult
from jobqueue.store.schema import apply_migrations
from jobqueue.store.writer import Writer

__all__ = ["ServiceCore"]

log = logging.getLogger("jobqueue.service")
_FINISHED, _EVENT_CONSUMED = HookKind.FINISHED, HookKind.EVENT_CONSUMED
T = TypeVar("T")
_warned_memory = False


class ServiceCore(Bookkeeping):
    """State and lifecycle shared by the public calls."""

    def __init__(self, path: str, **opts: Any) -> None:
        self.path = path
        self._concurrency: int = opts["concurrency"]
        self._poll_interval: float = opts["poll_interval"]
        self._cleanup_interval: float = opts["cleanup_interval"]
        self._drain_timeout: float = opts["drain_timeout"]
        self._cancel_grace: float = opts["cancel_grace"]
        self._max_payload: int = opts["max_payload_bytes"]
        self._opts = opts
        self.hooks = Hooks()
        self._handlers: dict[str, Handler] = {}
        self._declared: set[str] = set()  # submitted here, run by another process
        self._limits: dict[str, Limits] = {}
        self._registry = QueueRegistry(
            queue_size=opts["queue_size"],
            retention=opts["retention"],
            strict_events=opts["strict_events"],
            on_consume=self._event_consumed,
        )
        self.tally = JobCounts()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._state = "new"  # new -> starting -> open -> closing -> closed (-> starting)
        self._drain_now = asyncio.Event()  # a second close(drain_timeout=0) sets it
        self._closed = asyncio.Event()
        self._opening: asyncio.Task[Writer] | None = None
        self._db: Database | None = None
        self._writer: Writer | None = None
        self._scheduler: Scheduler | None = None
        self._runner: Runner | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._checkpointer: Checkpointer | None = None
        self._supervisor: Supervisor | None = None
        #: What the crash sweep at the last start did.
        self.recovered = SweepResult()
        self.owner = ""
        self.boot_at: float | None = None

    # -- opening -----------------------------------------------------------------------

    def start(self) -> None:
        """Start opening the store and the background loops (idempotent).

        Must be called with a running event loop. ``async with service`` calls
        it and also waits until the store is open.
        """
        if self._state in ("starting", "open"):
            return
        if self._state == "closing":
            raise ServiceClosedError("the service is closing")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ServiceClosedError("start() needs a running event loop") from None
        from jobqueue.runtime.owner import owner_identity

        self.owner = owner_identity()
        self._state = "starting"
        self._drain_now.clear()
        self._closed.clear()
        self._opening = loop.create_task(self._open(), name="jobqueue-open")

    async def _open(self) -> Writer:
        try:
            return await self._open_store()
        except BaseException:
            self._state = "closed"  # nothing is left open; close() has nothing to do
            self._close_extras()  # e.g. unregister the metrics' Prometheus collector
            self._closed.set()
            raise

    async def _open_store(self) -> Writer:
        opts = self._opts
        memory = self.path == MEMORY
        async with init_lock(self.path, max(opts["busy_timeout"], 30.0)):
            db = await Database.open(
                self.path,
                busy_timeout=opts["busy_timeout"],
                synchronous=opts["synchronous"],
                check=opts["check_on_open"],
                autocheckpoint=memory,
            )
            try:
                await db.run(apply_migrations, self.path)
                boot = time.time()
                self.recovered = await db.run(recover_on_open, self.owner, boot)
                if not memory:
                    wal = await Database.open(
                        self.path, busy_timeout=opts["busy_timeout"], check=False
                    )
            except BaseException:
                await db.close()
                raise
        self._db = db
        await self.tally.refresh(db)
        writer = self._writer = Writer(db)
        if opts["persist_events"]:
            self._registry.attach_log(writer, db)
        if not memory:
            self._checkpointer = Checkpointer(wal, lambda: writer.batches)
            self._checkpointer.start()
        scheduler = self._scheduler = Scheduler(
            writer,
            handlers=lambda: list(self._handlers),
            concurrency=self._concurrency,
            owner=self.owner,
            start=self._start_claimed,
            poll_interval=self._poll_interval,
            limiter=Limiter(self._limits),
            event_seq=opts["persist_events"],
        )
        self._runner = Runner(
            writer,
            handlers=self._handlers,
            hooks=self.hooks,
            manager_for=self._events_for,
            release=scheduler.release,
            finished=self._runner_finished,
            retried=self._retried,
            paused=self._paused,
            max_result_bytes=self._max_payload,
            backoff=opts["retry_backoff"],
            backoff_max=opts["retry_backoff_max"],
            cancel_grace=self._cancel_grace,
        )
        writer.planner = scheduler
        writer.start()
        scheduler.start()
        self._reaper = asyncio.get_running_loop().create_task(
            self._reap_loop(), name="jobqueue-reaper"
        )
        self.boot_at = boot
        self._supervisor = Supervisor(
            db,
            writer,
            owner=self.owner,
            boot_at=boot,
            poll_interval=self._poll_interval,
            apply=self._apply_control,
            swept=self._swept,
        )
        self._supervisor.start()
        self._state = "open"
        global _warned_memory
        if self.path == MEMORY and not _warned_memory:
            _warned_memory = True
            log.info(
                "JobQueueService() without a path keeps jobs in memory only; they are "
                "lost when the process exits. Pass a file path to persist them."
            )
        return writer

    @property
    def state(self) -> str:
        """``new``, ``starting``, ``open``, ``closing`` or ``closed``."""
        return self._state

    @property
    def handler_names(self) -> tuple[str, ...]:
        """Names of the registered handlers, sorted."""
        return tuple(sorted(self._handlers))

    @property
    def cancel_grace(self) -> float:
        """Seconds a job may ignore cancellation before it is abandoned as unresponsive."""
        return self._cancel_grace

    @property
    def drain_timeout(self) -> float:
        """Seconds ``close()`` lets running jobs finish by default."""
        return self._drain_timeout

    @property
    def concurrency(self) -> int:
        """Most jobs this process runs at once."""
        return self._concurrency

    async def _ready(self) -> Writer:
        if self._state == "new":
            self.start()
        opening = self._opening
        failed = opening is not None and opening.done() and not opening.cancelled()
        if failed and opening is not None and (exc := opening.exception()) is not None:
            raise exc  # why the open failed
        if self._state in ("closing", "closed") or opening is None:
            raise ServiceClosedError()
        return await asyncio.shield(opening)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        await self._ready()
        assert self._db is not None
        return await self._db.run(fn, *args)

    def _check_usable(self) -> None:
        if self._state in ("closing", "closed"):
            raise ServiceClosedError()

    async def __aenter__(self) -> Self:
        self.start()
        await self._ready()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- closing -----------------------------------------------------------------------

    async def stop(self) -> None:
        """Langflow's name for :meth:`close`."""
        await self.close()

    async def close(self, drain_timeout: float | None = None) -> None:
        """Drain and close: stop claiming, let running jobs finish, then cancel and persist.

        Jobs still running after ``drain_timeout`` are cancelled and go back to
        ``pending`` (they run again at the next start). Idempotent and
        re-entrant: a call made while another is draining waits for it to
        finish, and with ``drain_timeout=0`` cuts its drain short (what a
        worker's second signal does).
        """
        if self._state == "closing":
            if drain_timeout is not None and drain_timeout <= 0:
                self._drain_now.set()
            await self._closed.wait()
            return
        if self._state in ("new", "closed"):
            self._state = "closed"
            return
        self._state = "closing"
        # The teardown runs in its own task: a caller cancelled halfway leaves it to
        # finish (a half-closed store would leak its thread and hold the write lock).
        task = asyncio.get_running_loop().create_task(
            self._close(drain_timeout), name="jobqueue-close"
        )
        task.add_done_callback(_log_close_error)
        await asyncio.shield(task)

    async def _close(self, drain_timeout: float | None) -> None:
        try:
            if self._opening is not None and not self._opening.done():
                await asyncio.wait([self._opening])
            if (
                self._opening is not None
                and not self._opening.cancelled()
                and (self._opening.exception() is None)
            ):
                await self._drain(self._drain_timeout if drain_timeout is None else drain_timeout)
        finally:
            if self._reaper is not None:
                self._reaper.cancel()
                await asyncio.wait([self._reaper])
            for job_id in list(self._registry.entries):
                await self._registry.cleanup(job_id)
            if self._supervisor is not None:
                await self._supervisor.close()
            if self._writer is not None:
                await self._writer.close()
            if self._checkpointer is not None:
                await self._checkpointer.close()
            self._close_extras()
            if self._db is not None:
                await self._db.close()
            for futs in self._waiters.values():
                for fut in futs:
                    if not fut.done():
                        fut.set_result(None)  # waiters re-check and get ServiceClosedError
            self._db = self._writer = self._scheduler = self._runner = None
            self._reaper = self._opening = self._checkpointer = self._supervisor = None
            self._state = "closed"
            self._closed.set()

    async def _drain(self, timeout: float) -> None:
        assert self._scheduler is not None
        assert self._runner is not None
        self._scheduler.stop()
        runs = [r.task for r in self._runner.active.values() if r.task is not None]
        bare = [e.task for e in self._registry.entries.values() if e.task and not e.task.done()]
        tasks: list[asyncio.Task[Any]] = [*runs, *bare]
        if not tasks:
            return
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
        pending |= {r.task for r in self._runner.active.values() if r.task and not r.task.done()}
        if not pending:
            return
        log.warning("close: %d job(s) still running after %.1fs; cancelling", len(pending), timeout)
        for job_id in list(self._runner.active):
            self._runner.cancel(job_id, "shutdown")
        for task in pending:
            task.cancel()
        _, stuck = await asyncio.wait(pending, timeout=self._cancel_grace)
        for task in stuck:
            log.error(
                "close: task %s ignored cancellation for %.1fs; abandoning it",
                task.get_name(),
                self._cancel_grace,
            )


def _log_close_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("closing the service failed: %s", exc, exc_info=exc)
