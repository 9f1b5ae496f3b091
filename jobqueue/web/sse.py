"""Server-Sent Events of a job's event log: one shared reader per job, many viewers.

Each event goes out as one SSE message whose ``id`` is the event's seq, so
a browser that reconnects sends ``Last-Event-ID`` and the stream resumes
with ``service.events(job_id, after=that seq)``: no gap, no duplicate, also
after the server or the job's worker restarted (the log is the truth).

A :class:`Feed` reads a job's events once for all its viewers and keeps the
newest :data:`KEPT` of them. A viewer that asks for older events (a
reconnect from far behind) reads them from the log on its own until it
reaches what the feed keeps. A quiet stream sends a comment every
``heartbeat`` seconds (proxies and browsers keep it open); streams end when
the job's end event was sent (then an ``event: done`` message, so the page
stops reconnecting), when the service closes, or when the app shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from jobqueue.errors import JobQueueError
from jobqueue.events.manager import TERMINAL_EVENTS, Event
from jobqueue.web.changes import Changes

if TYPE_CHECKING:
    from jobqueue.service import JobQueueService

__all__ = ["KEPT", "Changes", "Feed", "Hub", "frame"]

#: Events a feed keeps for viewers that join or fall behind.
KEPT: Final = 2_000
#: How long the browser waits before reconnecting, in milliseconds.
RETRY_MS: Final = 500


def frame(event: Event) -> bytes:
    """One SSE message: ``id`` is the event's seq, ``data`` one line of JSON."""
    body = json.dumps(
        {"seq": event.seq, "type": event.type, "data": event.data, "time": event.put_time},
        default=str,
        separators=(",", ":"),
    )
    return f"id: {event.seq}\ndata: {body}\n\n".encode()


class Feed:
    """The one reader of a job's events after ``after``, shared by its viewers."""

    def __init__(self, service: JobQueueService, job_id: str, after: int) -> None:
        self.job_id = job_id
        self.start = after  # the feed carries the events with seq > start
        self.last = after
        self.kept: deque[tuple[int, bytes, bool]] = deque(maxlen=KEPT)
        self.ended = False
        self.error: str | None = None
        self.viewers = 0
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(service), name=f"jobqueue-web-feed-{job_id}")

    async def _read(self, service: JobQueueService) -> None:
        try:
            async for event in service.events(self.job_id, after=self.start):
                self.kept.append((event.seq, frame(event), event.type in TERMINAL_EVENTS))
                self.last = event.seq
                self.wake()
        except JobQueueError as exc:
            self.error = str(exc)
        finally:
            self.ended = True
            self.wake()

    def wake(self) -> None:
        """Tell every waiting viewer that something changed."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self, timeout: float) -> None:
        """Wait for the next change, at most ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    def after(self, seq: int) -> list[tuple[int, bytes, bool]] | None:
        """What it keeps after ``seq``; ``None`` when that starts before what it keeps."""
        first = self.kept[0][0] if self.kept else self.last + 1
        if seq + 1 < first or seq < self.start:
            return None
        return [item for item in self.kept if item[0] > seq]

    async def close(self) -> None:
        """Stop reading."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Hub:
    """The feeds of one dashboard app, by job id."""

    def __init__(
        self,
        service: JobQueueService,
        heartbeat: float,
        version: Callable[[], Awaitable[Any]],
    ) -> None:
        self.service = service
        self.heartbeat = heartbeat
        self.feeds: dict[str, Feed] = {}
        self.closed = False
        self._closing = asyncio.Event()
        #: The stream that tells pages the file changed (``api/changes``).
        self.changes = Changes(version, heartbeat, self._closing)

    async def follow(self, job_id: str, after: int) -> AsyncIterator[bytes]:
        """A viewer's stream: SSE messages of the job's events with seq > ``after``."""
        feed = self.feeds.get(job_id)
        if feed is None or (feed.ended and feed.error is not None):
            feed = self.feeds[job_id] = Feed(self.service, job_id, after)
        feed.viewers += 1
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            last = after
            while not self.closed:
                kept = feed.after(last)
                if kept is None:  # before what the feed keeps: read the log alone
                    before = last
                    async for seq, data, end in self._catch_up(feed, last):
                        last = seq
                        yield data
                        if end:
                            yield b"event: done\ndata: {}\n\n"
                            return
                    if last == before:
                        return  # the log ended first (the service closed)
                    continue
                if kept:  # one write for all that came since the last one
                    last, ended = kept[-1][0], kept[-1][2]
                    yield b"".join(data for _, data, _ in kept)
                    if ended:
                        yield b"event: done\ndata: {}\n\n"
                        return
                if feed.ended:
                    if feed.error is not None:
                        body = json.dumps({"error": feed.error})
                        yield f"event: failed\ndata: {body}\n\n".encode()
                    return  # the service closed: the browser reconnects and resumes
                waited = asyncio.ensure_future(feed.changed(self.heartbeat))
                closing = asyncio.ensure_future(self._closing.wait())
                try:
                    await asyncio.wait((waited, closing), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waited.cancel()
                    closing.cancel()
                if feed.after(last) == [] and not feed.ended and not self.closed:
                    yield b": ping\n\n"
        finally:
            feed.viewers -= 1
            if feed.viewers == 0 and self.feeds.get(job_id) is feed:
                del self.feeds[job_id]
                await feed.close()

    async def _catch_up(self, feed: Feed, last: int) -> AsyncIterator[tuple[int, bytes, bool]]:
        """The log after ``last`` until it meets what ``feed`` keeps (or the stream ends)."""
        source = self.service.events(feed.job_id, after=last)
        try:
            async for event in source:
                yield event.seq, frame(event), event.type in TERMINAL_EVENTS
                if self.closed or feed.after(event.seq) is not None:
                    return
        finally:
            close = getattr(source, "aclose", None)  # an async generator: end it now
            if close is not None:
                await close()

    async def close(self) -> None:
        """End every stream now (the app shuts down)."""
        self.closed = True
        self._closing.set()
        await self.changes.close()
        feeds, self.feeds = list(self.feeds.values()), {}
        for feed in feeds:
            await feed.close()
