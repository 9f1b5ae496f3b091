"""What a handler receives as ``ctx``."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

from jobqueue.control import Interrupt
from jobqueue.errors import InvalidArgumentError
from jobqueue.events import EventManager

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
        "_effects",
        "_events",
        "_manager_factory",
        "_requested",
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
    ) -> None:
        self.job_id = job_id
        self.handler = handler
        self.attempt = attempt
        self._manager_factory = manager_factory
        self._events: EventManager | None = None
        self._requested: str | None = None  # "stop" or "pause", set by the service
        self._checkpoints = 0
        self._effects: list[Effect] = []

    @property
    def events(self) -> EventManager:
        """The job's :class:`EventManager` (``ctx.events.on_token(data=...)``).

        Created on first use, so a handler that sends no events costs no queue.
        """
        if self._events is None:
            self._events = self._manager_factory(self.job_id)
        return self._events

    async def emit(self, event_type: str, data: Any) -> None:
        """Send an event, waiting for room if the consumer is slow (back-pressure)."""
        await self.events.asend(event_type, data)

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
        requested it raises :class:`~jobqueue.control.Interrupt` (let it
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

    def _request(self, kind: str) -> None:
        self._requested = kind


def run_effects(conn: sqlite3.Connection, effects: list[Effect]) -> None:
    """Run a job's effects (on the database thread, inside the caller's transaction)."""
    for fn, args in effects:
        fn(conn, *args)
