"""``RedisQueueWrapper``: Langflow's queue-like view of a job's stream.

What ``get_queue_data`` returns: ``await queue.get()`` gives Langflow's items,
``(event_id, data, ts)``, and ``(None, None, ts)`` at the end. A background
task fills a bounded buffer from a :class:`~jobqueue.redis.reader.StreamReader`.
Beyond Langflow's: a trimmed stretch arrives as a ``gap`` event (Langflow's
item shape, ``{"event": "gap", "data": {"missed": n, "after": seq}}``), the
end's outcome is :attr:`RedisQueueWrapper.outcome`, and when Redis stays
unreachable or the fill task fails, ``get()`` raises instead of handing out a
fake end of stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any, ClassVar, Final

from jobqueue.errors import BusUnavailableError
from jobqueue.events.manager import QueueItem
from jobqueue.redis.bridge import BusStats
from jobqueue.redis.keys import STREAM_PREFIX, redact_url
from jobqueue.redis.reader import BusEvent, StreamReader

__all__ = ["RedisQueueWrapper", "item_of"]

_FAILED: Final = object()


def item_of(event: BusEvent) -> QueueItem:
    """The Langflow queue item of a :class:`BusEvent` (the end: the sentinel)."""
    if event.kind == "event":
        return (event.event_id, event.data, event.ts)
    if event.kind == "gap":
        body = {"event": "gap", "data": {"missed": event.missed, "after": event.seq - event.missed}}
        return (f"gap-{uuid.uuid4()}", (json.dumps(body) + "\n\n").encode(), event.ts)
    return (None, None, event.ts)


class RedisQueueWrapper:
    """Consumer-side ``asyncio.Queue`` interface over one job's Redis stream.

    Args:
        job_id: the job.
        client: a ``redis.asyncio.Redis``.
        ttl: kept for Langflow's signature (the producer sets the stream's TTL).
        startup_grace_s: how long a stream that does not exist yet is waited for.
        lease_s: see :class:`~jobqueue.redis.reader.StreamReader`.
        outage_s: how long Redis may fail before ``get()`` raises
            :class:`~jobqueue.errors.BusUnavailableError` (default: ``startup_grace_s``).
        url: the bus's address, for error messages.
    """

    STREAM_PREFIX: ClassVar[str] = STREAM_PREFIX
    _BUFFER_MAXSIZE: ClassVar[int] = 10_000
    _STARTUP_GRACE_S: float = 30.0

    def __init__(
        self,
        job_id: str,
        client: Any,
        ttl: int = 3600,
        startup_grace_s: float | None = None,
        *,
        lease_s: float = 5.0,
        outage_s: float | None = None,
        url: str | None = None,
        stats: BusStats | None = None,
    ) -> None:
        self._job_id = job_id
        self._client = client
        self._ttl = ttl
        if startup_grace_s is not None:
            self._STARTUP_GRACE_S = startup_grace_s
        self._buffer: asyncio.Queue[Any] = asyncio.Queue(maxsize=self._BUFFER_MAXSIZE)
        self._error: BaseException | None = None
        self._reader = StreamReader(
            client,
            job_id,
            url=url or _describe(client),
            startup_grace_s=self._STARTUP_GRACE_S,
            lease_s=lease_s,
            outage_s=self._STARTUP_GRACE_S if outage_s is None else outage_s,
            stats=stats,
        )
        self._fill_task: asyncio.Task[None] = asyncio.create_task(self._fill_from_redis())
        self._fill_task.add_done_callback(self._on_fill_done)

    @property
    def outcome(self) -> str | None:
        """How the job ended (the end entry's outcome), once the end was read."""
        return self._reader.outcome

    @property
    def _stream_key(self) -> str:
        return f"{self.STREAM_PREFIX}{self._job_id}"

    @property
    def _last_id(self) -> str:
        return self._reader.cursor

    async def _fill_from_redis(self) -> None:
        reader = self._reader
        while reader.outcome is None:
            for event in await reader.read():
                # The cursor moved already; an item cut off here by cancel() is
                # not needed: nobody reads a cancelled wrapper.
                await self._buffer.put(item_of(event))

    def _on_fill_done(self, task: asyncio.Task[None]) -> None:
        """A fill task that failed makes ``get()`` raise; one that ended cleanly put the end."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        self._error = exc
        if self._buffer.full():  # the consumer must learn of it: make room for the marker
            with contextlib.suppress(asyncio.QueueEmpty):
                self._buffer.get_nowait()
        with contextlib.suppress(asyncio.QueueFull):
            self._buffer.put_nowait(_FAILED)

    # -- asyncio.Queue's calls that Langflow's build.py uses ---------------------------

    def empty(self) -> bool:
        """``False`` until the first read returned (so a drain loop waits for it)."""
        return self._reader.first_read_done and self._buffer.empty()

    def qsize(self) -> int:
        return self._buffer.qsize()

    async def get(self) -> QueueItem:
        """The next item; raises what stopped the stream if Redis could not be read."""
        return self._unwrap(await self._buffer.get())

    def get_nowait(self) -> QueueItem:
        return self._unwrap(self._buffer.get_nowait())

    def _unwrap(self, item: Any) -> QueueItem:
        if item is _FAILED:
            self._buffer.put_nowait(_FAILED)  # every later get() raises too
            assert self._error is not None
            if isinstance(self._error, BusUnavailableError):
                raise self._error
            raise BusUnavailableError(self._reader._url, self._error, waited=None) from self._error
        return item  # type: ignore[no-any-return]

    def put_nowait(self, item: QueueItem) -> None:
        """Does nothing: this queue is read-only (the producer writes through its bridge)."""

    def fill_done(self) -> bool:
        """The fill task has finished."""
        return self._fill_task.done()

    async def cancel(self) -> None:
        """Stop reading (the buffered items stay)."""
        if not self._fill_task.done():
            self._fill_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fill_task

    async def finish_with_sentinel(self) -> None:
        """Stop reading and put an end sentinel for consumers still waiting in ``get()``."""
        await self.cancel()
        if self._buffer.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._buffer.get_nowait()
        with contextlib.suppress(asyncio.QueueFull):
            self._buffer.put_nowait((None, None, time.time()))


def _describe(client: Any) -> str:
    """The address of a ``redis.asyncio.Redis`` client, for messages."""
    try:
        kw = client.connection_pool.connection_kwargs
        return redact_url(f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}")
    except AttributeError:
        return "<redis client>"
