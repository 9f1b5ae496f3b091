"""Durable workflows: memoised steps, durable sleeps, bounded parallel steps.

A handler is a workflow as soon as it calls ``ctx.step``/``ctx.sleep``. Every
step's JSON result is stored in the ``steps`` table before ``ctx.step``
returns; when the handler runs again (after a crash, a retry, ``resume()`` or
a durable sleep) it runs from the top, and each finished step returns its
stored result at once instead of running again. See ``docs/workflows.md``.

:class:`Workflow` is the per-run state behind those ``ctx`` methods (one per
run, created on first use); :class:`Suspend` is how a long durable sleep
unwinds the handler so that the runner can give its slot back.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol

from jobqueue import codec
from jobqueue.clock import Clock
from jobqueue.errors import (
    Cancel,
    DuplicateStepError,
    InvalidArgumentError,
    JobQueueError,
    PayloadError,
    Retry,
    StepError,
    StepResultError,
    StepTimeoutError,
)
from jobqueue.store import steps
from jobqueue.store.steps import StepRow
from jobqueue.validation import check_id, check_number

if TYPE_CHECKING:
    from jobqueue.store.outcomes import Outcome
    from jobqueue.store.writer import Writer

__all__ = ["SLEEP_IN_PLACE_MAX", "Failure", "Suspend", "Workflow", "run_failure_callbacks"]

log = logging.getLogger("jobqueue.workflow")

#: A durable sleep with at most this many seconds left waits in place, keeping
#: its slot; a longer one ends the run and the job is claimed again at its deadline.
SLEEP_IN_PLACE_MAX: float = 1.0
#: Cap on one in-place backoff delay between attempts of a step.
_BACKOFF_MAX: Final = 30.0

StepFn = Callable[[], Any]
FailureCallback = Callable[["Failure"], Any]


class StepHost(Protocol):
    """What a workflow needs of the run it belongs to (a :class:`~jobqueue.JobContext`).

    A protocol, so this module does not import the context that builds it.
    """

    @property
    def job_id(self) -> str: ...

    @property
    def clock(self) -> Clock: ...

    async def checkpoint(self) -> None: ...

    async def nap(self, seconds: float) -> None: ...


class Suspend(BaseException):
    """Raised by ``ctx.sleep`` to end the run until ``wake_at`` (handled by the runner).

    A ``BaseException`` so that a handler's ``except Exception`` does not stop it.
    """

    def __init__(self, wake_at: float, step: str) -> None:
        self.wake_at = wake_at
        self.step = step
        super().__init__(f"durable sleep {step!r} until {wake_at:.3f}")


@dataclass(frozen=True, slots=True)
class Failure:
    """What an ``on_failure`` callback receives when its workflow job ends ``failed``.

    Attributes:
        job_id: the job.
        handler: its handler name.
        error: ``"Type: message"`` of the failure.
        error_type: the exception class name (``"TimeoutError"`` for a job timeout).
        reason: ``error``, ``timeout``, ``step_timeout``, ``duplicate_step``, ...
    """

    job_id: str
    handler: str
    error: str | None
    error_type: str | None
    reason: str | None


class Workflow:
    """The durable-step state of one run of one job (created by ``JobContext`` on first use)."""

    __slots__ = ("_ctx", "_lock", "_max_result", "_next_seq", "_stored", "_used", "_writer")

    def __init__(self, ctx: StepHost, writer: Writer, max_result: int) -> None:
        self._ctx = ctx
        self._writer = writer
        self._max_result = max_result
        self._stored: dict[str, StepRow] | None = None
        self._lock: asyncio.Lock | None = None
        self._used: set[str] = set()
        self._next_seq = 0

    def _now(self) -> float:
        return self._ctx.clock.time()  # the service's clock: a TestClock in tests

    # -- steps -------------------------------------------------------------------------

    async def step(
        self,
        name: str,
        fn: StepFn,
        *,
        retries: int = 0,
        timeout: float | None = None,
        backoff: float = 0.1,
    ) -> Any:
        """Run ``fn()`` once and store its JSON result; replay the stored result later."""
        self._claim(name)
        if not callable(fn):
            raise InvalidArgumentError(f"step {name!r} needs a callable fn, got {fn!r:.80}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgumentError(f"retries must be an int >= 0, got {retries!r}")
        check_number(timeout, "timeout", positive=True)
        check_number(backoff, "backoff")
        stored = await self._rows()
        row = stored.get(name)
        if row is not None:
            self._same_kind(name, row, "step")
            if row.status == "completed":
                return codec.decode(row.result)
            seq = row.seq
        else:
            seq = self._new_seq()
        job = self._ctx.job_id
        attempt = 0
        while True:
            await self._ctx.checkpoint()  # stop/pause take effect before a step (re)starts
            attempt += 1
            self._later(steps.start_step, job, name, seq, self._now())
            limit = asyncio.timeout(timeout)
            try:
                async with limit:
                    value = fn()
                    if inspect.isawaitable(value):
                        value = await value
            except (Retry, Cancel) as exc:  # the step steers its job: no step retry
                self._later(
                    steps.mark_step, job, name, seq, "failed", None, _text(exc), self._now()
                )
                raise
            except Exception as exc:
                timed_out = timeout is not None and limit.expired()
                error: BaseException = exc
                if timed_out:
                    assert timeout is not None
                    error = StepTimeoutError(job, name, timeout, attempt)
                last = attempt > retries
                status = "failed" if last else "pending"
                self._later(
                    steps.mark_step, job, name, seq, status, None, _text(error), self._now()
                )
                if last:
                    if timed_out:
                        raise error from exc
                    raise
                log.info("step %r of job %r failed (%s); retrying", name, job, _text(error))
                await self._ctx.clock.sleep(min(backoff * 2 ** (attempt - 1), _BACKOFF_MAX))
                continue
            except BaseException:  # cancelled, or a control-flow unwind inside the step
                self._later(steps.mark_step, job, name, seq, "pending", None, None, self._now())
                raise
            break
        try:
            text = codec.encode(value, f"result of step {name!r}", self._max_result)
        except PayloadError as exc:
            err = StepResultError(job, name, str(exc))
            self._later(steps.mark_step, job, name, seq, "failed", None, _text(err), self._now())
            raise err from None
        try:
            await self._writer.write(
                steps.mark_step, job, name, seq, "completed", text, None, self._now()
            )
        except BaseException:  # cancelled before the commit: the step did not finish
            self._later(steps.mark_step, job, name, seq, "pending", None, None, self._now())
            raise
        stored[name] = StepRow(seq, "step", "completed", text, None)
        return codec.decode(text)  # the same value a replay returns

    async def sleep(self, name: str, seconds: float) -> None:
        """Sleep until a deadline stored on the first call (see ``JobContext.sleep``)."""
        self._claim(name)
        check_number(seconds, "seconds")
        if not math.isfinite(seconds):
            raise InvalidArgumentError(f"seconds must be finite, got {seconds!r}")
        stored = await self._rows()
        row = stored.get(name)
        job = self._ctx.job_id
        if row is not None:
            self._same_kind(name, row, "sleep")
            if row.status == "completed":
                return
        if row is not None and row.wake_at is not None:
            wake_at = row.wake_at  # the original deadline, whatever happened since
        else:
            await self._ctx.checkpoint()  # a new sleep is a new step: stop/pause apply here
            seq = row.seq if row is not None else self._new_seq()
            now = self._now()
            wake_at = await self._writer.write(
                steps.start_sleep, job, name, seq, now + seconds, now
            )
            stored[name] = StepRow(seq, "sleep", "sleeping", None, wake_at)
        remaining = wake_at - self._now()
        if remaining > SLEEP_IN_PLACE_MAX:
            raise Suspend(wake_at, name)
        if remaining > 0:
            await self._ctx.nap(remaining)  # returns early on stop()/pause()
            await self._ctx.checkpoint()
        self._later(steps.end_sleep, job, name, self._now())
        old = stored[name]
        stored[name] = StepRow(old.seq, "sleep", "completed", None, wake_at)

    async def gather(self, *calls: Awaitable[Any], limit: int | None = None) -> list[Any]:
        """Await step calls concurrently, at most ``limit`` at a time; results in order."""
        try:
            if limit is not None and (
                isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
            ):
                raise InvalidArgumentError(f"limit must be an int >= 1 or None, got {limit!r}")
            for aw in calls:
                if not inspect.isawaitable(aw):
                    raise InvalidArgumentError(
                        f"gather() takes step calls such as ctx.step(name, fn), got {aw!r:.80}"
                    )
        except InvalidArgumentError:
            _close_unstarted(calls)
            raise
        sem = asyncio.Semaphore(limit) if limit is not None else None
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(_limited(aw, sem)) for aw in calls]
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                failed = [
                    t
                    for t in tasks
                    if t in done and not t.cancelled() and isinstance(t.exception(), Exception)
                ]
                if failed:  # the first failure cancels the siblings still running
                    for t in pending:
                        t.cancel()
                    if pending:
                        await asyncio.wait(pending)
                    raise _exception(failed[0])
            for t in tasks:  # stop/pause/sleep in a member: the others finished first
                if t.cancelled():
                    raise asyncio.CancelledError
                exc = t.exception()
                if exc is not None:
                    raise exc
            return [t.result() for t in tasks]
        finally:
            rest = [t for t in tasks if not t.done()]
            for t in rest:
                t.cancel()
            if rest:
                await asyncio.wait(rest)
            for t in tasks:  # mark every exception retrieved
                if not t.cancelled():
                    t.exception()
            _close_unstarted(calls)

    async def map(
        self,
        name: str,
        items: Iterable[Any],
        fn: Callable[[Any], Any],
        *,
        limit: int | None = None,
        retries: int = 0,
        timeout: float | None = None,
        backoff: float = 0.1,
    ) -> list[Any]:
        """``fn(item)`` for each item as its own step ``"name[i]"``; results in order."""
        check_id(name, "step name")
        if not callable(fn):
            raise InvalidArgumentError(f"map {name!r} needs a callable fn, got {fn!r:.80}")
        calls = [
            self.step(
                f"{name}[{i}]",
                partial(fn, item),
                retries=retries,
                timeout=timeout,
                backoff=backoff,
            )
            for i, item in enumerate(items)
        ]
        return await self.gather(*calls, limit=limit)

    # -- implementation ----------------------------------------------------------------

    def _claim(self, name: str) -> None:
        check_id(name, "step name")
        if name in self._used:
            raise DuplicateStepError(self._ctx.job_id, name)
        self._used.add(name)

    async def _rows(self) -> dict[str, StepRow]:
        """The job's stored steps, read once per run (at its first step)."""
        if self._stored is not None:
            return self._stored
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._stored is None:
                rows = await self._writer.write(steps.load_steps, self._ctx.job_id)
                self._next_seq = max((r.seq for r in rows.values()), default=-1) + 1
                self._stored = rows
        return self._stored

    def _new_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _same_kind(self, name: str, row: StepRow, kind: str) -> None:
        if row.kind != kind:
            call = "ctx.sleep()" if row.kind == "sleep" else "ctx.step()"
            raise StepError(
                self._ctx.job_id,
                name,
                f"{name!r} was stored by {call} in an earlier run of job "
                f"{self._ctx.job_id!r}; keep step names and kinds stable between runs",
            )

    def _later(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue a step-state write that nothing waits for (written in order, logged if lost)."""
        try:
            self._writer.then(fn, args, _logged)
        except JobQueueError as exc:  # the store is closing: the state is informative only
            log.debug("step state not written: %s", exc)


async def run_failure_callbacks(
    callbacks: Iterable[FailureCallback],
    job_id: str,
    handler: str,
    out: Outcome,
    timeout: float,
) -> None:
    """Call a job's ``on_failure`` callbacks once, in order; never raises.

    Each gets ``timeout`` seconds; an error or a timeout is logged and the
    next callback still runs. The job's outcome is not changed by them.
    """
    failure = Failure(job_id, handler, out.error, out.error_type, out.reason)
    for cb in callbacks:
        try:
            async with asyncio.timeout(timeout):
                value = cb(failure)
                if inspect.isawaitable(value):
                    await value
        except (Exception, asyncio.CancelledError):
            log.exception("on_failure callback %r of job %r failed", cb, job_id)


async def _limited(aw: Awaitable[Any], sem: asyncio.Semaphore | None) -> Any:
    if sem is None:
        return await aw
    async with sem:
        return await aw


def _close_unstarted(calls: Iterable[Awaitable[Any]]) -> None:
    """Close step coroutines that never started (no 'never awaited' warning)."""
    for aw in calls:
        if inspect.iscoroutine(aw) and inspect.getcoroutinestate(aw) == inspect.CORO_CREATED:
            aw.close()


def _exception(task: asyncio.Task[Any]) -> BaseException:
    exc = task.exception()
    assert exc is not None
    return exc


def _text(exc: BaseException) -> str:
    return codec.storable(f"{type(exc).__name__}: {exc}")


def _logged(ok: bool, value: Any) -> None:
    if not ok:
        log.warning("could not record a step state: %s", value)
