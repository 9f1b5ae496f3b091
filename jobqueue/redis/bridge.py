"""The producer side: one job's local event queue, copied to its Redis stream.

The local queue is a bounded :class:`~jobqueue.events.manager.EventQueue`
with the library's full-queue policy, so while Redis is slow or down the
producer's memory stays bounded: token and progress events coalesce, ``end``,
``error`` and the end sentinel always get in, and any other event raises
``EventQueueFull`` from ``send_event`` or waits in ``await asend(...)``.

Entries are written with ids ``0-1``, ``0-2``, ... in one pipeline per batch.
A batch whose reply was lost (the connection broke after Redis applied it) is
sent again as it was; Redis refuses the ids it already holds, so no event is
stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from jobqueue.events.manager import EventQueue, QueueItem
from jobqueue.redis.keys import SENTINEL, Keys, raise_if_cancelling

__all__ = ["Bridge", "BusStats"]

log = logging.getLogger("jobqueue.redis")

#: Items taken from the local queue per pipeline: one round trip for many events.
BATCH: Final = 256
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MOST: Final = 2.0
_DUPLICATE: Final = "equal or smaller"


@dataclass(slots=True)
class BusStats:
    """Counters of one service's bus traffic (``metrics_snapshot()["bus"]``)."""

    published: int = 0
    duplicates: int = 0
    batches: int = 0
    bridge_errors: int = 0
    ends_written: int = 0
    lost_declared: int = 0
    gaps: int = 0
    missed: int = 0
    last_error: str = ""
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "duplicates": self.duplicates,
            "batches": self.batches,
            "bridge_errors": self.bridge_errors,
            "ends_written": self.ends_written,
            "lost_declared": self.lost_declared,
            "gaps": self.gaps,
            "missed": self.missed,
            "last_error": self.last_error,
        }


class Bridge:
    """Copies one job's local queue to its stream until the end entry is written.

    Args:
        client: the service's ``redis.asyncio.Redis``.
        keys: the job's keys.
        queue: the job's local queue (its only reader is this bridge).
        worker_id: this worker's id, written as the job's runner.
        ttl: seconds the stream and runner keys live after the last write.
        maxlen: the stream is trimmed (approximately) to this many entries.
        outcome_of: called with the last event's id when the end sentinel is taken:
            how the job ended.
        stats: the service's counters.
    """

    def __init__(
        self,
        client: Any,
        keys: Keys,
        queue: EventQueue,
        *,
        worker_id: str,
        ttl: int,
        maxlen: int,
        outcome_of: Callable[[str | None], Awaitable[str]],
        stats: BusStats,
    ) -> None:
        self._client = client
        self._keys = keys
        self.queue = queue
        self._worker_id = worker_id
        self._ttl = ttl
        self._maxlen = maxlen
        self._outcome_of = outcome_of
        self._stats = stats
        #: The number of the last entry written (0: none yet).
        self.seq = 0
        #: The end entry is in Redis.
        self.ended = False
        #: Set on every successful write: the stream TTL was refreshed then.
        self.last_write = 0.0
        self._last_event_id: str | None = None

    async def run(self) -> None:
        """Claim the job, then copy batches until the end entry is written."""
        await self._write([], claim=True, end=False)
        taken: list[QueueItem] = []
        queue = self.queue
        try:
            while True:
                item = await queue.get()
                taken = [item]
                while len(taken) < BATCH and item[0] is not None:
                    try:
                        item = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    taken.append(item)
                entries, end = await self._entries(taken)
                await self._write(entries, claim=False, end=end)
                self.seq += len(entries)
                taken = []
                if end:
                    self.ended = True
                    return
        except asyncio.CancelledError:
            # What was taken but not written goes back, so a later bridge or a
            # reader of the local queue still finds it (the sentinel always fits).
            for lost in taken:
                with contextlib.suppress(Exception):
                    queue.put_nowait(lost)
            raise

    async def _entries(self, taken: list[QueueItem]) -> tuple[list[tuple[str, Any]], bool]:
        entries: list[tuple[str, Any]] = []
        seq = self.seq
        for event_id, data, put_time in taken:
            seq += 1
            if event_id is None or data is None:
                outcome = await self._outcome_of(self._last_event_id)
                fields = {
                    "event_id": SENTINEL,
                    "data": SENTINEL,
                    "ts": repr(put_time),
                    "outcome": outcome,
                }
                entries.append((f"0-{seq}", fields))
                return entries, True
            self._last_event_id = event_id
            entries.append((f"0-{seq}", {"event_id": event_id, "data": data, "ts": repr(put_time)}))
        return entries, False

    async def _write(self, entries: list[tuple[str, Any]], *, claim: bool, end: bool) -> None:
        """One pipeline: the entries, the TTLs, the runner key; again until Redis takes it."""
        keys = self._keys
        delay = _BACKOFF_FIRST
        while True:
            pipe = self._client.pipeline(transaction=False)
            if claim:
                # A new run: a stream left by an earlier job of the same id is not ours.
                pipe.delete(keys.stream)
                pipe.set(keys.runner, self._worker_id, ex=self._ttl)
            for entry_id, fields in entries:
                pipe.xadd(keys.stream, fields, id=entry_id, maxlen=self._maxlen, approximate=True)
            if entries:
                pipe.expire(keys.stream, self._ttl)
                if end:  # no longer running: nobody may declare it lost
                    pipe.delete(keys.runner)
                else:
                    pipe.expire(keys.runner, self._ttl)
            try:
                results = await pipe.execute(raise_on_error=False)
                raise_if_cancelling()
                self._check(results, entries)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                self._stats.bridge_errors += 1
                self._stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "job %s: writing %d event(s) to Redis failed (%s); retrying in %.2f s",
                    keys.job_id,
                    len(entries),
                    exc,
                    delay,
                )
                raise_if_cancelling()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MOST)
                continue
            self.last_write = time.monotonic()
            self._stats.batches += 1
            if end:
                self._stats.ends_written += 1
            return

    def _check(self, results: list[Any], entries: list[tuple[str, Any]]) -> None:
        start = 2 if len(results) > len(entries) + 2 else 0  # the claim's two replies
        for i, reply in enumerate(results):
            if not isinstance(reply, Exception):
                if start <= i < start + len(entries):
                    self._stats.published += 1
                continue
            if start <= i < start + len(entries) and _DUPLICATE in str(reply):
                self._stats.duplicates += 1  # written by an earlier try whose reply was lost
                continue
            raise reply
