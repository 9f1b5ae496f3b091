"""The dashboard's reads, on a read-only connection and a thread of their own.

A service runs its writes on one database thread; a slow read there (the
counts of a million jobs take tens of milliseconds) would hold up every
commit of the host application. The dashboard reads through its own
``mode=ro`` connection instead (:class:`~jobqueue.store.readonly.ReadOnlyStore`),
on its own thread, so it never waits for a writer nor makes one wait. An
in-memory service has no file to open: its reads go through the service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from jobqueue.store.readonly import ReadOnlyStore

if TYPE_CHECKING:
    from jobqueue.service import JobQueueService

__all__ = ["Reader"]

T = TypeVar("T")


class Reader:
    """Runs store functions ``fn(conn, *args)`` off the event loop, without the writer."""

    def __init__(self, service: JobQueueService) -> None:
        self._service = service
        self._pool: ThreadPoolExecutor | None = None
        self._store: ReadOnlyStore | None = None

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the dashboard's connection."""
        if self._service.path == ":memory:":
            return await self._service.runtime.read(fn, *args)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="jobqueue-web")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, fn, args)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._store is None:  # opened on the thread that uses it (sqlite3's rule)
            self._store = ReadOnlyStore(self._service.path, command="web", check=False)
        return self._store.read(fn, *args)

    async def close(self) -> None:
        """Close the connection and stop the thread (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, self._close_store)
        pool.shutdown(wait=False)

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()
