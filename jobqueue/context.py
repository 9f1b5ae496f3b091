"""What a handler receives as ``ctx``."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from jobqueue import codec
from jobqueue.clock import SYSTEM, Clock
from jobqueue.errors import Interrupt, InvalidArgumentError, StepError
from jobqueue.events.manager import EventManager
from jobqueue.status import stronger
from jobqueue.workflow import FailureCallback, Workflow

if TYPE_CHECKING:
    from jobqueue.store.writer import Writer

__all__ = ["Effect", "JobContext"]

#: ``fn(conn, *args)`` run in the transaction that records the job completed.
Effect = tuple[Callable[..., Any], tuple[Any, ...]]


class JobContext:
    """Per-run context handed to a handler: ``async def handler(ctx, payload)``.

    Attributes:
        job_id: the job's id.
        handler: the handler name the job was submitted with.
        attempt: 0 for the first run, then 1, 2, ... for retries and crash recoveries.
    """

    __slots__ = (
        "_checkpoints",
        "_clock",
        "_effects",
        "_events",
        "_manager_factory",
        "_max_result",
        "_on_failure",
        "_requested",
        "_wakeup",
        "_workflow",
        "_writer",
        "attempt",
        "handler",
        "job_id",
    )

    def __init__(
        self,
        job_id: str,
        handler: str,
        attempt: int,
        manager_factory: Callable[[str], EventManager],
        *,
        writer: Writer | None = None,
        max_result: int = codec.DEFAULT_MAX_BYTES,
        clock: Clock = SYSTEM,
    ) -> None:
        self.job_id = job_id
        self.handler = handler
        self.attempt = attempt
        self._manager_factory = manager_factory
        self._events: EventManager | None = None
        self._requested: str | None = None  # "stop" or "pause", set by the service
        self._checkpoints = 0
        self._effects: list[Effect] = []
        self._writer = writer
        self._max_result = max_result
        self._workflow: Workflow | None = None
        self._on_failure: list[FailureCallback] = []
        self._wakeup: asyncio.Event | None = None
        self._clock = clock

    @property
    def events(self) -> EventManager:
        """The job's :class:`EventManager` (``ctx.events.on_token(data=...)``).

        Created on first use, so a handler that sends no events costs no queue.
        """
        if self._events is None:
            self._events = self._manager_factory(self.job_id)
        return self._events

    @property
    def emit(self) -> Callable[[str, Any], Coroutine[Any, Any, None]]:
        """``await ctx.emit(event_type, data)``: send an event, waiting for room if the
        consumer is slow (back-pressure).

        It is the manager's own ``asend``, with no coroutine around it: this is
        the hot path of every streamed event.
        """
        return self.events.asend

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Send a ``progress`` event (a newer one replaces an unread older one)."""
        self.events.on_progress(data={"done": done, "total": total, "message": message})

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` or ``pause()`` was requested for this job."""
        return self._requested is not None

    async def checkpoint(self) -> None:
        """A safe point between units of work: where ``stop()`` and ``pause()`` take effect.

        Long handlers should call it between steps. When a stop or pause was
        requested it raises :class:`~jobqueue.errors.Interrupt` (let it
        propagate): the job then ends ``stopped``, or ``paused`` to run again
        from the start on ``resume()``. Otherwise it just yields to the loop.
        A handler that has called it at least once is given ``stop_timeout``
        seconds to reach the next one before it is cancelled.
        """
        self._checkpoints += 1
        if self._requested is not None:
            raise Interrupt(self._requested)
        await asyncio.sleep(0)

    def effect(self, fn: Callable[..., Any], *args: Any) -> None:
        """Write ``fn(conn, *args)`` in the same transaction that marks this job completed.

        ``conn`` is the service's ``sqlite3.Connection`` (the call runs on the
        database thread; keep it short and use only SQL). The effect is
        committed if and only if the job is recorded ``completed``: a crash or
        a retry before that leaves no trace, so an effect written this way
        happens exactly once even though the handler may run more than once.
        If ``fn`` raises, nothing of it is kept and the job fails.

        Raises:
            InvalidArgumentError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise InvalidArgumentError(f"effect() needs a callable fn(conn, ...), got {fn!r}")
        self._effects.append((fn, args))

    # -- durable workflows (see docs/workflows.md) ----------------------------------------

    async def step(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        retries: int = 0,
        timeout: float | None = None,
        backoff: float = 0.1,
    ) -> Any:
        """Run a durable step: ``fn()`` once, its JSON result stored; replayed afterwards.

        ``fn`` takes no arguments and may be a plain or an ``async`` function.
        Its result is committed to the database before this returns. When the
        handler runs again (crash recovery, a job retry, ``resume()``, the end
        of a durable sleep), a step that completed returns its stored result
        without calling ``fn``. What is returned is always the decoded JSON
        (tuples come back as lists), on the first run as on replays.

        Before ``fn`` starts, this is a :meth:`checkpoint`: after ``stop()`` or
        ``pause()`` no new step starts, while the running one finishes.

        Args:
            name: unique within the job; use a stable name (``f"fetch[{i}]"`` in loops).
            fn: the work, called with no arguments.
            retries: extra attempts after an exception, in place, with
                ``backoff * 2**n`` seconds between them (capped at 30 s).
            timeout: seconds per attempt; when every attempt runs past it,
                :class:`~jobqueue.errors.StepTimeoutError` is raised.
            backoff: base delay between attempts.

        Returns:
            The stored result.

        Raises:
            DuplicateStepError: ``name`` was already used in this run.
            StepResultError: ``fn`` returned something that is not JSON (or too large).
            StepTimeoutError: every attempt timed out.
            Exception: what ``fn`` raised on its last attempt.
        """
        return await self._steps(name).step(
            name, fn, retries=retries, timeout=timeout, backoff=backoff
        )

    async def sleep(self, name: str, seconds: float) -> None:
        """Durable sleep: wake ``seconds`` after the first call, across restarts.

        The deadline is stored on the first call. A sleep with more than
        :data:`jobqueue.workflow.SLEEP_IN_PLACE_MAX` (1 s) left ends this run
        and gives the job's slot back: the job waits ``pending`` until the
        deadline, then the handler runs again from the top, replays its
        finished steps, and continues after this sleep. A shorter one waits in
        place. After a restart the sleep ends at the original deadline, or at
        once if that has passed. Code outside steps runs again on each run.
        """
        await self._steps(name).sleep(name, seconds)

    async def gather(self, *steps: Awaitable[Any], limit: int | None = None) -> list[Any]:
        """Await step calls concurrently, at most ``limit`` at once; results in order.

        ``await ctx.gather(ctx.step("a", fa), ctx.step("b", fb), limit=2)``.
        Each step is memoised on its own, so after a crash only the unfinished
        ones run again. The first exception cancels the steps still running
        (each is then re-run on the next run) and is raised; after ``stop()``
        or ``pause()`` the running steps finish and no new one starts.
        """
        return await self._steps("gather").gather(*steps, limit=limit)

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
        """Run ``fn(item)`` for each item as its own step ``f"{name}[{i}]"``, in parallel.

        At most ``limit`` run at once; results come back in the order of
        ``items``. Items are matched to stored results by position, so
        ``items`` must be the same on every run (compute them in a step if
        they could change). ``retries``/``timeout``/``backoff`` apply to each
        item as in :meth:`step`; failures behave as in :meth:`gather`.
        """
        return await self._steps(name).map(
            name, items, fn, limit=limit, retries=retries, timeout=timeout, backoff=backoff
        )

    def on_failure(self, fn: Callable[[Any], Any]) -> None:
        """Call ``fn(failure)`` once if this run ends the job ``failed`` (GoTick's Fail).

        ``fn`` may be plain or ``async``; it gets a
        :class:`~jobqueue.workflow.Failure` (error, error_type, reason) and
        runs after the handler ended, before the failure is recorded (so it
        may run again if the process dies right then). It also runs for a
        job ``timeout`` or a step that failed for good, but not for a retry
        (the job is still going), a cancel or a stop. Register it at the top
        of the handler, so every run has it. Errors in it are logged.

        Raises:
            InvalidArgumentError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise InvalidArgumentError(f"on_failure() needs a callable, got {fn!r}")
        self._on_failure.append(fn)

    def _steps(self, name: str) -> Workflow:
        if self._workflow is None:
            if self._writer is None:
                raise StepError(
                    self.job_id,
                    name,
                    "durable steps need a job run by JobQueueService (submit it to a "
                    "registered handler); this context has no store",
                )
            self._workflow = Workflow(self, self._writer, self._max_result)
        return self._workflow

    @property
    def clock(self) -> Clock:
        """The service's clock (a ``TestClock`` in tests): ``ctx.clock.time()``."""
        return self._clock

    @property
    def checkpoints_seen(self) -> int:
        """How many times the handler called :meth:`checkpoint` in this run."""
        return self._checkpoints

    @property
    def failure_callbacks(self) -> tuple[FailureCallback, ...]:
        """The callbacks registered with :meth:`on_failure`, in order."""
        return tuple(self._on_failure)

    async def nap(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if ``stop()``/``pause()`` is requested meanwhile.

        Follow it with ``await ctx.checkpoint()`` to honour the request.
        """
        if self._requested is not None:
            return
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        await self._clock.sleep(seconds, self._wakeup)

    def request(self, kind: str) -> None:
        """Ask the handler to ``stop`` or ``pause`` at its next checkpoint (runner's call)."""
        self._requested = stronger(self._requested, kind)
        if self._wakeup is not None:
            self._wakeup.set()


def run_effects(conn: sqlite3.Connection, effects: list[Effect]) -> None:
    """Run a job's effects (on the database thread, inside the caller's transaction)."""
    for fn, args in effects:
        fn(conn, *args)
