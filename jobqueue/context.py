"""What a handler receives as ``ctx``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from jobqueue.events import EventManager

__all__ = ["JobContext"]


class JobContext:
    """Per-run context handed to a handler: ``async def handler(ctx, payload)``.

    Attributes:
        job_id: the job's id.
        handler: the handler name the job was submitted with.
        attempt: 0 for the first run, then 1, 2, ... for retries.
    """

    __slots__ = ("_events", "_manager_factory", "attempt", "handler", "job_id")

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

    async def checkpoint(self) -> None:
        """A safe point to be paused or stopped at; also yields to the event loop.

        Long handlers should call it between units of work.
        """
        await asyncio.sleep(0)
