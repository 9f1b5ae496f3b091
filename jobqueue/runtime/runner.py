"""Runs one claimed job: calls its handler, maps how it ended, records the outcome."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from jobqueue import codec
from jobqueue.clock import SYSTEM, Clock, Timer
from jobqueue.context import JobContext
from jobqueue.errors import (
    Cancel,
    Interrupt,
    JobQueueError,
    Retry,
    ServiceClosedError,
    StepError,
    StepTimeoutError,
    StoreFullError,
    StoreLockedError,
    StoreReadOnlyError,
)
from jobqueue.events.manager import EventManager
from jobqueue.hooks import HookKind, Hooks, Lifecycle
from jobqueue.status import TaskStatus, stronger
from jobqueue.store.jobs import Claimed
from jobqueue.store.outcomes import FINISH, Outcome
from jobqueue.store.writer import Writer
from jobqueue.workflow import Suspend, run_failure_callbacks

__all__ = ["Handler", "Runner"]

log = logging.getLogger("jobqueue.runtime.runner")
_STARTED, _RETRYING, _FINISHED = HookKind.STARTED, HookKind.RETRYING, HookKind.FINISHED

Handler = Callable[[JobContext, Any], Awaitable[Any]]
_TRACEBACK_LIMIT = 8192
#: What a run that would go back to pending (a retry, a durable sleep) becomes when a
#: control was asked for while it ran: ``(status, reason)``.
_CONTROLLED = {
    "cancel": (TaskStatus.CANCELLED, "cancelled"),
    "stop": (TaskStatus.STOPPED, "stopped"),
    "pause": (TaskStatus.PAUSED, "paused"),
}


@dataclass(slots=True)
class Run:
    """A job running in this process."""

    claimed: Claimed
    task: asyncio.Task[None] | None = None
    ctx: JobContext | None = None
    #: Why we cancelled the task: "cancel" (user), "timeout", "pause", "stop_timeout",
    #: "shutdown" (close past its drain time).
    cancel_reason: str | None = None
    started: float = field(default_factory=time.time)
    #: Monotonic start: run time must not jump with the wall clock.
    mono: float = field(default_factory=time.monotonic)
    released: bool = False
    #: It ignored cancellation past ``cancel_grace``: recorded failed, task left behind.
    abandoned: bool = False
    timer: Timer | None = None
    watchdog: asyncio.TimerHandle | None = None
    #: Seconds from due (``run_at``) to start; carried on the end-of-run records.
    wait: float = 0.0
    #: Failed attempts to commit the outcome (disk full, locked): retried with backoff.
    record_tries: int = 0
    #: The strongest control asked for during this run (cancel > stop > pause): it
    #: wins over a retry, so a control sent while the run fails is never lost.
    requested: str | None = None


class Runner:
    """Starts handler tasks for claimed jobs and records their outcomes."""

    def __init__(
        self,
        writer: Writer,
        *,
        handlers: dict[str, Handler],
        hooks: Hooks,
        manager_for: Callable[[str], EventManager],
        release: Callable[[str], None],
        finished: Callable[[str, Outcome, Any, str], None],
        retried: Callable[[float, str], None],
        paused: Callable[[str, str], None],
        max_result_bytes: int,
        changed: Callable[[str], None] = lambda job_id: None,
        backoff: float,
        backoff_max: float,
        cancel_grace: float,
        clock: Clock = SYSTEM,
    ) -> None:
        self._writer = writer
        self._clock = clock
        self._handlers = handlers
        self._hooks = hooks
        self._manager_for = manager_for
        self._release = release
        self._finished = finished
        self._retried = retried
        self._paused = paused
        self._changed = changed
        self._max_result = max_result_bytes
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._cancel_grace = cancel_grace
        self.active: dict[str, Run] = {}
        #: Jobs abandoned because they ignored cancellation (see ``cancel_grace``).
        self.unresponsive = 0
        #: Set whenever no job of this runner is running or awaiting its commit.
        self.drained = asyncio.Event()
        self.drained.set()

    def start(self, claimed: Claimed) -> asyncio.Task[None]:
        """Start the job's task (called by the scheduler for each claimed row)."""
        run = Run(claimed)
        self.active[claimed.id] = run
        self.drained.clear()
        loop = asyncio.get_running_loop()
        run.task = loop.create_task(self._execute(run), name=f"jobqueue-job-{claimed.id}")
        if claimed.timeout:
            run.timer = self._clock.call_later(claimed.timeout, self.cancel, claimed.id, "timeout")
        return run.task

    def cancel(self, job_id: str, reason: str) -> asyncio.Task[None] | None:
        """Cancel a running job's task; returns it (to await) or None if not here.

        If the task has not ended ``cancel_grace`` seconds later, the job is
        abandoned: recorded ``failed`` with reason ``unresponsive``.
        """
        run = self.active.get(job_id)
        if run is None or run.task is None or run.abandoned:
            return None
        if run.task.done():
            return run.task
        if run.cancel_reason is None or reason == "cancel":
            run.cancel_reason = reason
        if reason == "cancel":
            run.requested = "cancel"
        run.task.cancel()
        if run.watchdog is None:
            run.watchdog = asyncio.get_running_loop().call_later(
                self._cancel_grace, self._abandon, run
            )
        return run.task

    def request(self, job_id: str, kind: str) -> Run | None:
        """Ask a running job to ``stop`` or ``pause`` at its next checkpoint."""
        run = self.active.get(job_id)
        if run is None or run.abandoned or run.task is None or run.task.done():
            return None
        run.requested = stronger(run.requested, kind)
        if run.ctx is not None:
            run.ctx.request(run.requested)
        return run

    def _abandon(self, run: Run) -> None:
        if run.task is None or run.task.done() or run.abandoned:
            return
        run.abandoned = True
        self.unresponsive += 1
        c = run.claimed
        log.error(
            "job %r (%r) ignored cancellation for %.1fs; abandoning it as failed/unresponsive",
            c.id,
            c.handler,
            self._cancel_grace,
        )
        self._give_back(run)
        out = Outcome(
            TaskStatus.FAILED,
            error=f"the job ignored cancellation for {self._cancel_grace:g}s",
            error_type="Unresponsive",
            reason="unresponsive",
        )
        self._record(run, out, None)

    def _give_back(self, run: Run) -> None:
        if run.timer is not None:
            run.timer.cancel()
        if not run.released:
            run.released = True
            self._release(run.claimed.handler)

    async def _execute(self, run: Run) -> None:
        c = run.claimed
        wait = run.started - c.run_at
        run.wait = wait if wait > 0.0 else 0.0
        if self._hooks.wants(_STARTED):
            self._hooks.emit(Lifecycle(_STARTED, c.id, c.handler, None, None, None, run.wait))
        value: Any = None
        try:
            out, value = await self._call(run)
            # Any way back to pending (a retry, a durable sleep, close() cutting the run
            # short) gives way to a control asked for during the run.
            if run.requested and out.status is TaskStatus.PENDING:
                status, reason = _CONTROLLED[run.requested]
                out = Outcome(status, error=out.error, reason=reason)
            ctx = run.ctx
            if out.status is TaskStatus.FAILED and ctx is not None and ctx.failure_callbacks:
                if run.watchdog is not None:  # the handler has ended: only the callbacks run
                    run.watchdog.cancel()
                    run.watchdog = None
                if not run.abandoned:
                    await run_failure_callbacks(
                        ctx.failure_callbacks, c.id, c.handler, out, self._cancel_grace
                    )
        finally:
            if run.watchdog is not None:
                run.watchdog.cancel()
            self._give_back(run)
        if not run.abandoned:
            self._record(run, out, value)

    def _record(self, run: Run, out: Outcome, value: Any) -> None:
        # The task ends here; the commit callback finishes the job's bookkeeping.
        now, ran = self._clock.time(), time.monotonic() - run.mono
        try:
            self._writer.then(
                FINISH,
                (run.claimed.id, out, now),
                partial(self._recorded, run, out, value, now, ran),
                weight=0 if out.effects else 1,  # effects are the caller's code: thread
            )
        except JobQueueError as exc:  # closed under a job that ignored cancellation
            self._recorded(run, out, value, now, ran, False, exc)

    def _recorded(
        self, run: Run, out: Outcome, value: Any, now: float, ran: float, ok: bool, stored: Any
    ) -> None:
        c = run.claimed
        if not ok and not _transient(stored) and out.reason != _UNSTORABLE:
            # This outcome itself cannot be written (retrying would loop forever): fail
            # the job with a record that says why, which can be.
            log.error("the outcome of job %r cannot be stored: %s", c.id, stored)
            failed = Outcome(
                TaskStatus.FAILED,
                error=codec.storable(f"its outcome could not be stored: {stored}"),
                error_type=type(stored).__name__,
                reason=_UNSTORABLE,
            )
            self._record(run, failed, None)
            return
        if not ok and not isinstance(stored, ServiceClosedError):
            # Disk full, lock held too long...: the row still says running under this
            # live owner, so nobody else would settle it. Keep the slot and try again.
            run.record_tries += 1
            delay = min(0.1 * 2**run.record_tries, 5.0)
            log.error(
                "could not record the outcome of job %r (%s); retrying in %.1fs",
                c.id,
                stored,
                delay,
            )
            asyncio.get_running_loop().call_later(delay, self._record, run, out, value)
            return
        self.active.pop(c.id, None)
        if not self.active:
            self.drained.set()
        if not ok:  # closed: the row stays running; recovery at the next start redoes it
            log.error("could not record the outcome of job %r: %s", c.id, stored)
            return
        if not stored:
            log.info(
                "job %r was changed elsewhere while running; outcome %s not stored",
                c.id,
                out.status,
            )
            self._changed(c.id)
            return
        if isinstance(stored, Outcome):  # stored differently: its effect failed
            out, value = stored, None
        if out.status is TaskStatus.PAUSED:
            self._paused(c.id, c.handler)
            return
        if out.status is TaskStatus.PENDING:
            self._retried(out.run_at or now, c.handler)
            if out.reason != "sleeping" and self._hooks.wants(_RETRYING):
                self._hooks.emit(
                    Lifecycle(
                        _RETRYING,
                        c.id,
                        c.handler,
                        None,
                        out.reason,
                        out.error_type,
                        run.wait,
                        ran,
                        c.attempt,
                        c.max_retries,
                        out.error,
                    )
                )
            return
        self._finished(c.id, out, value, c.handler)
        if self._hooks.wants(_FINISHED):
            self._hooks.emit(
                Lifecycle(
                    _FINISHED,
                    c.id,
                    c.handler,
                    out.status._value_,  # not .value: a descriptor call per job
                    out.reason,
                    out.error_type,
                    run.wait,
                    ran,
                    c.attempt,
                    c.max_retries,
                    out.error,
                )
            )

    async def _call(self, run: Run) -> tuple[Outcome, Any]:
        c = run.claimed
        fn = self._handlers.get(c.handler)
        if fn is None:  # unregistered between claim and start
            return Outcome(
                TaskStatus.FAILED,
                error=f"no handler {c.handler!r}",
                error_type="UnknownHandlerError",
                reason="unknown_handler",
            ), None
        ctx = run.ctx = JobContext(
            c.id,
            c.handler,
            c.attempt,
            self._manager_for,
            writer=self._writer,
            max_result=self._max_result,
            clock=self._clock,
        )
        try:
            value = await fn(ctx, codec.decode(c.payload))
            if run.cancel_reason is not None:  # it swallowed our CancelledError
                raise asyncio.CancelledError
            text = (
                "null"
                if value is None
                else codec.encode(value, f"result of job {c.id!r}", self._max_result)
            )
            return Outcome(TaskStatus.COMPLETED, result=text, effects=tuple(ctx._effects)), value
        except asyncio.CancelledError:
            return self._cancelled(run), None
        except Suspend as exc:  # a durable sleep: give the slot back until its deadline
            if run.cancel_reason is not None:
                return self._cancelled(run), None
            return Outcome(
                TaskStatus.PENDING, run_at=exc.wake_at, count_attempt=False, reason="sleeping"
            ), None
        except Interrupt as exc:
            if exc.kind == "pause":
                return Outcome(TaskStatus.PAUSED, reason="paused"), None
            return Outcome(TaskStatus.STOPPED, reason="stopped"), None
        except Cancel as exc:
            return Outcome(
                TaskStatus.CANCELLED, error=codec.storable(str(exc)) or None, reason="handler"
            ), None
        except Retry as exc:
            return self._failure(c, exc, "retry", exc.delay), None
        except Exception as exc:
            return self._failure(c, exc, "error"), None

    def _cancelled(self, run: Run) -> Outcome:
        """Map why we cancelled the task to its outcome."""
        reason = run.cancel_reason
        if reason == "shutdown":  # close() ran out of drain time: run it again next start
            return Outcome(
                TaskStatus.PENDING,
                reason="shutdown",
                run_at=self._clock.time(),
                count_attempt=False,
            )
        if reason == "timeout":
            exc = TimeoutError(f"job exceeded its timeout of {run.claimed.timeout:g}s")
            return self._failure(run.claimed, exc, "timeout")
        if reason == "pause":
            return Outcome(TaskStatus.PAUSED, reason="paused")
        if reason is None or reason == "cancel":
            reason = "cancelled"
        return Outcome(TaskStatus.CANCELLED, reason=reason)

    def _failure(
        self, c: Claimed, exc: BaseException, reason: str, delay: float | None = None
    ) -> Outcome:
        error = codec.storable(f"{type(exc).__name__}: {exc}")
        tb = codec.storable("".join(traceback.format_exception(exc))[-_TRACEBACK_LIMIT:])
        etype = codec.storable(type(exc).__name__)
        if isinstance(exc, StepError) and reason == "error":
            reason = exc.reason  # a workflow written wrongly: retrying won't help ...
            if not isinstance(exc, StepTimeoutError):  # ... but a slow step may pass next time
                return Outcome(
                    TaskStatus.FAILED, error=error, error_type=etype, traceback=tb, reason=reason
                )
        elif isinstance(exc, JobQueueError) and reason == "error":
            reason = "invalid_result"  # e.g. a result that is not JSON: retrying won't help
            return Outcome(
                TaskStatus.FAILED, error=error, error_type=etype, traceback=tb, reason=reason
            )
        if c.attempt < c.max_retries:
            if delay is None:
                delay = min(self._backoff * 2**c.attempt, self._backoff_max)
                delay *= random.uniform(0.5, 1.5)  # jitter: retries of a burst spread out
            return Outcome(
                TaskStatus.PENDING,
                error=error,
                error_type=etype,
                traceback=tb,
                reason=reason,
                run_at=self._clock.time() + max(0.0, delay),
            )
        if reason == "retry":
            reason = "retries_exhausted"
        return Outcome(
            TaskStatus.FAILED, error=error, error_type=etype, traceback=tb, reason=reason
        )


_UNSTORABLE = "unstorable_outcome"


def _transient(error: Any) -> bool:
    """A write error that may pass if tried again (full disk, a lock, the store closing)."""
    if isinstance(
        error, StoreFullError | StoreLockedError | StoreReadOnlyError | ServiceClosedError
    ):
        return True
    return not isinstance(error, JobQueueError)  # a whole batch failed: I/O, say
