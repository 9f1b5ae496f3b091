"""Celery tasks on the Redis bus: a run's events go to the task's stream.

The stream format is :class:`~jobqueue.redis.durable.RedisBus`'s, so every
reader of the bus (:class:`~jobqueue.redis.reader.StreamReader`,
``RemoteJobs.events``, Langflow's wrapper) reads a task as it reads a job:

* each event is entry ``0-<seq>`` of ``langflow:queue:{task_id}``, with
  ``event_id`` ``"<type>-<seq>"`` and Langflow's ``data`` bytes;
* a run numbers on from the stream's last entry, so a retried task (or one
  a second worker picks up) continues the numbering instead of restarting it;
* the task's last event is ``end`` (or ``error``), then the end entry with
  the outcome (``completed``, ``failed``, ``cancelled``), both appended by one
  script that does nothing if the stream already ended. The worker writes it,
  and so does the client that records a revoke the worker did not act on:
  whichever comes first ends the stream, once.

:class:`TaskEvents` is the worker side of one run; :func:`end_task_stream`
writes the end (a blocking call: Celery's client side and the worker's task
body are threads, not event loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Final, cast

from jobqueue.events.manager import Event, EventManager, create_default_event_manager, final_event
from jobqueue.redis.keys import SENTINEL, Keys, entry_seq, is_connection_error, redact_url
from jobqueue.redis.reader import StreamReader
from jobqueue.status import TaskStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from jobqueue.store.eventlog import JobLog
    from jobqueue.tasks.backend import TaskInfo

__all__ = ["END_TASK", "TaskEvents", "end_task_stream", "read_task_events", "stream_ended"]

log = logging.getLogger("jobqueue.redis")

# Appends the task's terminal event and the end entry after the stream's last
# entry, unless the stream already ended. KEYS: stream. ARGV: event type,
# Langflow data bytes, ts, outcome, ttl. Returns the end entry's seq, or 0.
END_TASK: Final = """
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local n = 1
if top[1] then
  local f = top[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'data' and f[i + 1] == '__sentinel__' then return 0 end
  end
  local ms, seq = string.match(top[1][1], '^(%d+)-(%d+)$')
  if ms ~= '0' then return redis.error_reply('not a jobqueue stream: ' .. top[1][1]) end
  n = tonumber(seq) + 1
end
redis.call('XADD', KEYS[1], '0-' .. n, 'event_id', ARGV[1] .. '-' .. n, 'data', ARGV[2],
  'ts', ARGV[3])
redis.call('XADD', KEYS[1], '0-' .. (n + 1), 'event_id', '__sentinel__', 'data', '__sentinel__',
  'ts', ARGV[3], 'outcome', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return n + 1
"""

#: Events sent but not acknowledged by Redis before ``ctx.emit`` waits (back-pressure).
INFLIGHT: Final = 1000
#: Events per pipeline.
BATCH: Final = 256


def end_task_stream(
    client: Any,
    task_id: str,
    status: TaskStatus,
    *,
    result: Any = None,
    error: str | None = None,
    reason: str | None = None,
    ttl: int = 86_400,
) -> bool:
    """End the task's stream with its terminal event and ``outcome`` = ``status``.

    Args:
        client: a blocking ``redis.Redis``.

    Returns:
        True if this call ended the stream, False if it had ended already.
    """
    event_type, data = final_event(status, result, error, reason)
    body = json.dumps({"event": event_type, "data": data}) + "\n\n"
    stream = Keys(task_id).stream
    done = client.eval(END_TASK, 1, stream, event_type, body, repr(time.time()), status.value, ttl)
    return int(done) > 0


def stream_ended(fields: dict[bytes, bytes]) -> bool:
    """The entry with these fields is a stream's end entry."""
    return fields.get(b"data") == SENTINEL


class _Discard(asyncio.Queue[Any]):
    """The live queue of a worker's manager: nobody reads it on a worker, Redis is the log."""

    def put_nowait(self, item: Any) -> None:
        return None


class TaskEvents:
    """One run of a task on a Celery worker, publishing its events to the bus.

    ``async with TaskEvents(url, task_id) as events:`` then hand
    ``events.manager`` to the handler's context as its manager factory. The
    events are written in order, in batches, by a task of their own; leaving
    the block waits until Redis has them (up to ``outage_s``).

    Args:
        url: the bus's Redis URL.
        task_id: the Celery task id (the stream is ``langflow:queue:{task_id}``).
        ttl: seconds the stream lives after its last write.
        outage_s: how long Redis may fail before the run's unwritten events are dropped.
    """

    def __init__(
        self, url: str, task_id: str, *, ttl: int = 86_400, outage_s: float = 30.0
    ) -> None:
        from redis.asyncio import Redis

        self.url = url
        self.task_id = task_id
        self._stream = Keys(task_id).stream
        self._ttl = ttl
        self._outage_s = outage_s
        self._client: Any = Redis.from_url(url, socket_timeout=5.0)
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._sent = 0  # seq of the newest event appended
        self._written = 0  # ... and of the newest one Redis has (or that was dropped)
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        #: The seq this run numbered on from (the stream's last entry when it began).
        self.first_seq = 0
        #: The stream ended before this run's events were all written (a revoke recorded
        #: by the client); later events are dropped.
        self.ended = False
        #: Counters: events written, events dropped, Redis errors.
        self.stats = dict.fromkeys(("written", "dropped", "errors"), 0)

    async def __aenter__(self) -> TaskEvents:
        try:
            top = await self._client.xrevrange(self._stream, count=1)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            # Without the stream's last seq this try cannot number its events: it runs
            # without them (a bus outage costs the stream, not the task).
            where = redact_url(self.url)
            log.warning("task %s: bus %s unreachable (%s); no events", self.task_id, where, exc)
            top, self.ended = [], True
        if top:
            raw_id, fields = top[0]
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            self.first_seq = entry_seq(entry_id) or 0
            self.ended = stream_ended(fields)
        self._sent = self._written = self.first_seq
        self._pump = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            async with asyncio.timeout(self._outage_s):
                await self.flush()
        except TimeoutError:
            log.warning(
                "task %s: %d events not written to %s; dropped",
                self.task_id,
                self._sent - self._written,
                redact_url(self.url),
            )
        finally:
            if self._pump is not None:
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump
            await self._client.aclose()

    def manager(self, job_id: str) -> EventManager:
        """The run's event manager (what ``ctx.events`` is): numbering on from the stream."""
        manager = create_default_event_manager(_Discard(INFLIGHT))
        # The manager's persisted-log hook is what numbers events and waits for
        # them: this object plays the log, with Redis as the store.
        manager.attach_log(cast("JobLog", self), self.first_seq)
        return manager

    # -- what EventManager uses of a log ----------------------------------------------------

    @property
    def inflight(self) -> int:
        """Events appended that Redis has not acknowledged yet."""
        return self._sent - self._written

    def append(self, seq: int, event_type: str, data: str, created_at: float) -> None:
        """Queue event ``seq`` for the stream (called on the run's event loop)."""
        self._sent = seq
        body = f'{{"event": {json.dumps(event_type)}, "data": {data}}}\n\n'  # Langflow's bytes
        fields = {"event_id": f"{event_type}-{seq}", "data": body, "ts": repr(created_at)}
        self._pending.append((seq, fields))
        self._wake.set()

    async def flush(self) -> None:
        """Return once every event appended so far is written (or dropped)."""
        target = self._sent
        while self._written < target:
            self._progress.clear()
            if self._pump is None or self._pump.done():
                return
            await self._progress.wait()

    # -- the writer ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[:BATCH]
                try:
                    await self._write(batch)
                except Exception:
                    # The handler goes on without its stream rather than fail for it.
                    log.exception("task %s: writing events to the bus failed", self.task_id)
                    self.ended = True
                    self.stats["dropped"] += len(batch)
                del self._pending[: len(batch)]
                self._written = batch[-1][0]
                self._progress.set()

    async def _write(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        if self.ended:
            self.stats["dropped"] += len(batch)
            return
        delay = 0.05
        failing_since: float | None = None
        while True:
            pipe = self._client.pipeline(transaction=False)
            for seq, fields in batch:
                pipe.xadd(self._stream, fields, id=f"0-{seq}")
            pipe.expire(self._stream, self._ttl)
            try:
                replies = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                self.stats["errors"] += 1
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= self._outage_s:
                    log.warning("task %s: bus unreachable (%s); events dropped", self.task_id, exc)
                    self.stats["dropped"] += len(batch)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            break
        for reply in replies[:-1]:
            if isinstance(reply, Exception):
                # "equal or smaller": the stream has an end already, written by a revoke.
                if "equal or smaller" not in str(reply):
                    raise reply
                self.ended = True
                self.stats["dropped"] += 1
            else:
                self.stats["written"] += 1


async def read_task_events(
    client: Any,
    task_id: str,
    info: Callable[[str], Awaitable[TaskInfo]],
    *,
    url: str,
    after: int = 0,
    poll_s: float = 2.0,
    outage_s: float = 30.0,
) -> AsyncIterator[Event]:
    """Yield the task's events after seq ``after``, ending with its ``end`` or ``error`` event.

    A task that has sent nothing yet (queued, or between tries) has no stream:
    every ``poll_s`` without one, ``info(task_id)`` tells whether it ended
    meanwhile without a stream end (then the terminal event is built from
    its record, with the next seq, as ``service.events`` does).

    Args:
        client: a ``redis.asyncio.Redis`` on the bus.
        info: the backend's ``get_task``.
    """
    last = after
    while True:
        reader = StreamReader(
            client,
            task_id,
            url=url,
            after=f"0-{last}",
            startup_grace_s=poll_s,
            outage_s=outage_s,
        )
        async for item in reader:
            if item.kind == "event":
                body = item.decoded()
                last = max(last, item.seq)
                event_type = str(body.get("event", ""))
                yield Event(
                    f"{event_type}-{item.seq}",
                    event_type,
                    body.get("data"),
                    item.ts,
                    time.time(),
                    item.seq,
                )
            elif item.kind == "gap":
                first = item.seq - item.missed
                gap = {"missed": item.missed, "after": first}
                yield Event(f"gap-{item.seq}", "gap", gap, item.ts, time.time(), item.seq)
        if reader.outcome in ("completed", "failed", "cancelled"):
            return  # the task's own end event came before the end entry
        task = await info(task_id)
        if task.done:
            status = task.status
            error = task.failure.error if task.failure is not None else None
            event_type, data = final_event(status, task.result, error, task.reason)
            now = time.time()
            yield Event(f"{event_type}-{last + 1}", event_type, data, now, now, last + 1)
            return
        if reader.outcome != "missing":  # lost or deleted while it still runs: say so
            why = str(reader.outcome)
            data = {"status": "unknown", "error": f"the task's stream ended {why}", "reason": why}
            now = time.time()
            yield Event(f"error-{last + 1}", "error", data, now, now, last + 1)
            return
