"""``api/changes``: one SSE message whenever the database file changed, for every page.

One task per app looks at the file every :data:`INTERVAL` seconds (``PRAGMA
data_version`` on the dashboard's read connection: it moves when any other
connection commits, in this process or another) while at least one page
listens; each listening page gets a message after a change and refetches
what it shows. Nothing is sent while nothing changes but a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from jobqueue.errors import JobQueueError

__all__ = ["INTERVAL", "Changes"]

#: Seconds between two looks at the file.
INTERVAL: Final = 0.25


class Changes:
    """Tells listening pages that the file changed.

    Args:
        version: an awaitable read of the file's version (any value that moves
            on every commit).
        heartbeat: seconds between keep-alive comments.
        closing: set when the app shuts down (every stream ends).
    """

    def __init__(
        self,
        version: Callable[[], Awaitable[Any]],
        heartbeat: float,
        closing: asyncio.Event,
    ) -> None:
        self._version = version
        self._heartbeat = heartbeat
        self._closing = closing
        self.current: Any = None
        self.listeners = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def follow(self) -> AsyncIterator[bytes]:
        """One page's stream: a ``data`` message after each change, comments in between."""
        self.listeners += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch(), name="jobqueue-web-changes")
        try:
            yield b"retry: 1000\n\n"
            seen = self.current
            while not self._closing.is_set():
                changed = asyncio.ensure_future(self._changed.wait())
                closing = asyncio.ensure_future(self._closing.wait())
                try:
                    await asyncio.wait(
                        (changed, closing),
                        timeout=self._heartbeat,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    changed.cancel()
                    closing.cancel()
                if self.current != seen:
                    seen = self.current
                    yield b"data: {}\n\n"
                elif not self._closing.is_set():
                    yield b": ping\n\n"
        finally:
            self.listeners -= 1
            if self.listeners == 0:
                await self.close()

    async def _watch(self) -> None:
        while True:
            try:
                version = await self._version()
            except (JobQueueError, sqlite3.Error):  # the page's own requests say what is wrong
                version = self.current
            if version != self.current:
                self.current = version
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()
            await asyncio.sleep(INTERVAL)

    async def close(self) -> None:
        """Stop looking at the file."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
