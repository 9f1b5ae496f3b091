"""``RedisBus``: a durable ``JobQueueService`` on the Redis bus.

Attached to a service opened with ``persist_events=True``, it publishes, for
every job this service runs:

* its persisted event log to ``langflow:queue:{job}``, entry ``0-<seq>`` for
  event ``seq`` (the log's own numbers: republishing is idempotent, and a
  reader resumes with ``after=seq`` anywhere), then the end entry with the
  job's final status as ``outcome``;
* its record (status, handler, attempt, result or error) to the hash
  ``jobqueue:job:{job}``, at every change this service makes.

The log is the outbox: each job's cursor is the last seq Redis acknowledged.
After a Redis error the publisher reads the log again from there; after Redis
restarted empty (the bus's ``jobqueue:epoch`` key is gone) it republishes the
recent jobs from seq 0. Control requests of :class:`~jobqueue.redis.remote.RemoteJobs`
(cancel, stop, pause, resume) arrive on ``jobqueue:control`` and are answered
on ``jobqueue:reply:{request}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final, Protocol

from jobqueue.errors import InvalidArgumentError, JobNotFoundError, ServiceClosedError
from jobqueue.hooks import HookKind, Lifecycle
from jobqueue.redis.keys import SENTINEL, Keys, is_connection_error, raise_if_cancelling
from jobqueue.redis.requests import serve_controls
from jobqueue.status import TaskStatus

if TYPE_CHECKING:
    import builtins
    from collections.abc import AsyncIterator

    from jobqueue.events.manager import Event
    from jobqueue.events.registry import QueueRegistry
    from jobqueue.hooks import Hooks
    from jobqueue.settings import Settings
    from jobqueue.store.jobs import Job


class DurableService(Protocol):
    """What a bus uses of :class:`~jobqueue.JobQueueService` (not imported: no cycle)."""

    hooks: Hooks
    runtime: Any
    registry: QueueRegistry

    @property
    def settings(self) -> Settings: ...
    @property
    def owner(self) -> str: ...
    @property
    def boot_at(self) -> float | None: ...
    @property
    def state(self) -> str: ...
    def events(self, job_id: str, *, after: int | str | None = None) -> AsyncIterator[Event]: ...
    async def get(self, job_id: str) -> Job: ...
    async def list(self, *, limit: int = 100) -> builtins.list[Job]: ...


__all__ = [
    "EPOCH_PREFIX",
    "JOB_PREFIX",
    "DurableService",
    "RedisBus",
    "job_fields",
]

log = logging.getLogger("jobqueue.redis")

JOB_PREFIX: Final = "jobqueue:job:"
#: ``jobqueue:epoch:{bus}``: set by each bus; gone means Redis restarted empty.
EPOCH_PREFIX: Final = "jobqueue:epoch:"
#: Jobs finished here whose streams are republished after Redis restarted empty.
_RECENT: Final = 1000


def job_fields(job: Job) -> dict[str, str]:
    """The hash fields of a job's record (``RemoteJobs.get`` reads them back)."""
    return {
        "id": job.id,
        "status": job.status.value,
        "handler": job.handler or "",
        "attempt": str(job.attempt),
        "max_retries": str(job.max_retries),
        "result": json.dumps(job.result),
        "error": job.error or "",
        "reason": job.reason or "",
        "owner": job.owner or "",
        "updated_at": repr(job.updated_at),
    }


class RedisBus:
    """Publishes a durable service's jobs on Redis and applies controls sent there.

    ``async with RedisBus(service, url):`` (or ``await bus.start()`` / ``await bus.close()``).

    Args:
        service: a :class:`~jobqueue.JobQueueService` with ``persist_events=True``.
        url: the Redis URL.
        ttl: seconds a job's stream and hash live after their last write.
        socket_timeout: seconds a Redis command may take before it counts as failed.
    """

    def __init__(
        self, service: DurableService, url: str, *, ttl: int = 3600, socket_timeout: float = 5.0
    ) -> None:
        if not service.settings.persist_events:
            raise InvalidArgumentError(
                "RedisBus publishes the persisted event log: open the service with "
                "JobQueueService(path, persist_events=True)"
            )
        try:
            from redis.asyncio import Redis
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f"a Redis bus needs redis-py ({exc}): pip install 'jobqueue[redis]'", name=exc.name
            ) from exc

        self.service = service
        self.url = url
        self._ttl = ttl
        self._redis, self._socket_timeout = Redis, socket_timeout
        self._client: Any = self._connect()
        self._closed = False
        self._dirty: dict[str, int] = {}  # records to write: job -> change number
        self._changes = 0
        #: Control requests being applied (strong references until they finish).
        self.applying: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # every record written
        self._publishers: dict[str, asyncio.Task[None]] = {}
        self._cursors: dict[str, int] = {}  # job -> last seq Redis acknowledged
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self._attached: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None
        self._epoch_key = EPOCH_PREFIX + uuid.uuid4().hex
        self._fresh: set[str] = set()  # jobs whose stream is written again from seq 1
        #: Counters: events and records written, errors, republished jobs.
        self.stats = dict.fromkeys(("events", "records", "errors", "republished", "controls"), 0)

    async def __aenter__(self) -> RedisBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _connect(self) -> Any:
        return self._redis.from_url(self.url, socket_timeout=self._socket_timeout)

    def begin(self) -> None:
        """Subscribe to the service's lifecycle and start the loops (needs a running loop).

        What ``JobQueueService(..., bus=url)`` calls from ``start()``: every job
        the service runs from now on is published. Once the service is open,
        what happened on the file while no bus was attached is published too.
        """
        if self._tasks:
            return
        if self._closed:  # a service started again after close()
            self._client, self._closed = self._connect(), False
        kinds = (HookKind.SUBMITTED, HookKind.STARTED, HookKind.FINISHED, HookKind.RETRYING)
        self._unsubscribe = self.service.hooks.subscribe(self._on_change, kinds)
        self._tasks = [
            asyncio.create_task(self._write_records()),
            asyncio.create_task(serve_controls(self)),
            asyncio.create_task(self._watch_epoch()),
        ]
        self._attached = asyncio.create_task(self._attach())

    async def start(self) -> None:
        """:meth:`begin`, then wait until the file's past is published (if the service is open)."""
        self.begin()
        if self.service.state == "open" and self._attached is not None:
            await asyncio.shield(self._attached)

    async def _attach(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.set(self._epoch_key, 1)
        await self.service.runtime.ready()
        await self._catch_up()

    async def _catch_up(self) -> None:
        """Publish what happened on the file while no bus was attached.

        The file's newest jobs (1,000 at most) whose published status differs
        from the stored one, or that changed since the service opened: a job
        that ended during a drain, with the bus already closed, or that was
        swept back to pending at open and has run since. Publishing a job
        another process ran is harmless: the same log, the same ids.
        """
        svc = self.service
        since = svc.boot_at or 0.0
        jobs = await svc.list(limit=_RECENT)
        pipe = self._client.pipeline(transaction=False)
        for job in jobs:
            pipe.hget(JOB_PREFIX + job.id, "status")
        try:
            published = await pipe.execute()
        except Exception:
            raise_if_cancelling()
            return
        for job, status in zip(jobs, published, strict=True):
            if job.status is TaskStatus.RUNNING and job.owner != svc.owner:
                continue  # another process runs it: its bus publishes it
            if job.updated_at < since and status == job.status.value.encode():
                continue  # published as it is
            self.mark(job.id)
            if job.id not in self._publishers and job.status is not TaskStatus.PENDING:
                self._publish(job.id)

    async def close(self, timeout: float = 5.0) -> None:
        """Finish publishing what can be published within ``timeout``, then stop."""
        if self._closed or not self._tasks:
            return
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        pending = [t for t in self._publishers.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        if self._dirty:
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        attaching = [self._attached] if self._attached is not None else []
        for task in [*self._tasks, *attaching, *self._publishers.values()]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        with contextlib.suppress(Exception):
            await self._client.delete(self._epoch_key)
        await self._client.aclose()

    def published(self, job_id: str) -> int:
        """The last seq of ``job_id`` Redis acknowledged (0: none)."""
        return self._cursors.get(job_id, 0)

    # -- records -----------------------------------------------------------------------------

    def _on_change(self, record: Lifecycle) -> None:
        job_id = record.job_id
        if job_id is None:
            return
        self.mark(job_id)
        if record.kind is HookKind.STARTED and job_id not in self._publishers:
            self._publish(job_id)

    def mark(self, job_id: str) -> None:
        """The job's record changed: write it."""
        self._changes += 1
        self._dirty[job_id] = self._changes
        self._idle.clear()
        self._wake.set()

    async def _write_records(self) -> None:
        delay = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                job_id, change = next(iter(self._dirty.items()))
                try:
                    job = await self.service.get(job_id)
                    key = JOB_PREFIX + job_id
                    pipe = self._client.pipeline(transaction=False)
                    pipe.hset(key, mapping=job_fields(job))
                    pipe.expire(key, self._ttl)
                    await pipe.execute()
                except JobNotFoundError:
                    self._dirty.pop(job_id, None)
                    continue
                except ServiceClosedError:
                    self._dirty.clear()  # nothing can be read any more: the next bus catches up
                    break
                except Exception as exc:
                    raise_if_cancelling()
                    self.stats["errors"] += 1
                    log.warning(
                        "publishing job %s failed (%s); again in %.2f s", job_id, exc, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                delay = 0.05
                self.stats["records"] += 1
                if self._dirty.get(job_id) == change:  # else it changed again meanwhile
                    del self._dirty[job_id]
                else:
                    self._dirty[job_id] = self._dirty.pop(job_id)  # behind the others
            self._idle.set()

    # -- event logs -----------------------------------------------------------------------------

    def _publish(self, job_id: str) -> None:
        task = asyncio.create_task(self._publish_log(job_id))
        self._publishers[job_id] = task

        def done(_: asyncio.Task[None]) -> None:
            if self._publishers.get(job_id) is task:
                del self._publishers[job_id]

        task.add_done_callback(done)

    async def _publish_log(self, job_id: str) -> None:
        """Copy the job's log to its stream from the cursor on; again after an error."""
        stream = Keys(job_id).stream
        delay = 0.05
        while True:
            try:
                await self._copy(job_id, stream)
                self._recent[job_id] = None
                while len(self._recent) > _RECENT:
                    self._recent.popitem(last=False)
                return
            except asyncio.CancelledError:
                raise
            except _Restarted:
                continue  # from seq 1 again, into a new stream
            except Exception as exc:
                raise_if_cancelling()
                if not is_connection_error(exc):
                    log.exception("publishing the events of %s failed", job_id)
                    return
                self.stats["errors"] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _copy(self, job_id: str, stream: str) -> None:
        """The log from the cursor on, in batches of what is there when Redis is free."""
        taken: asyncio.Queue[Any] = asyncio.Queue(1024)

        async def feed() -> None:
            try:
                async for event in self.service.events(job_id, after=self.published(job_id)):
                    await taken.put(event)
                await taken.put(None)
            except Exception as exc:
                await taken.put(exc)

        feeder = asyncio.create_task(feed())
        try:
            while True:
                batch: list[Any] = []
                item = await taken.get()
                while True:
                    if item is None:
                        if batch:
                            await self._write(job_id, stream, batch)
                        return
                    if isinstance(item, Exception):
                        raise item
                    batch.append(_entry(item))
                    if item.type in ("end", "error"):
                        end = {"event_id": SENTINEL, "data": SENTINEL, "ts": repr(time.time())}
                        batch.append((item.seq + 1, {**end, "outcome": _outcome(item)}))
                        # The final record goes first, in the same round trip: a reader
                        # that saw the end then asks get() must not find it running.
                        await self._write(job_id, stream, batch, await self._record(job_id))
                        return
                    if len(batch) >= 256 or taken.empty():
                        break
                    item = taken.get_nowait()
                await self._write(job_id, stream, batch)
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder

    async def _record(self, job_id: str) -> Job | None:
        """The job as stored now, or None when it cannot be read (closing, gone)."""
        try:
            return await self.service.get(job_id)
        except (JobNotFoundError, ServiceClosedError):
            return None

    async def _write(
        self, job_id: str, stream: str, batch: list[Any], record: Job | None = None
    ) -> None:
        # A job running here is streamed live, before its events are committed. Publish
        # none that a crash could still take back: after one, the rerun numbers on from
        # the log's last committed seq, and Redis would refuse its event as a resend.
        entry = self.service.registry.get(job_id)
        if entry is not None:
            await entry.manager.flush()
        fresh = job_id in self._fresh
        pipe = self._client.pipeline(transaction=False)
        pipe.exists(self._epoch_key)
        if record is not None:
            key = JOB_PREFIX + job_id
            pipe.hset(key, mapping=job_fields(record))
            pipe.expire(key, self._ttl)
        if fresh:  # after a restart: entries of the new stream may be ahead of ours
            pipe.delete(stream)
        for seq, fields in batch:
            pipe.xadd(stream, fields, id=f"0-{seq}")
        pipe.expire(stream, self._ttl)
        replies = await pipe.execute(raise_on_error=False)
        if replies[0] == 0:  # Redis lost everything since our last write
            await self._restarted()
            raise _Restarted
        for reply in replies:
            if isinstance(reply, Exception) and "equal or smaller" not in str(reply):
                raise reply  # a resent entry is refused as already there: that is fine
        self._fresh.discard(job_id)
        self._cursors[job_id] = max(self._cursors.get(job_id, 0), batch[-1][0])
        self.stats["events"] += len(batch)

    async def _watch_epoch(self) -> None:
        """Republish recent jobs when Redis comes back empty (our epoch key is gone)."""
        while True:
            await asyncio.sleep(0.5)
            try:
                if not await self._client.exists(self._epoch_key):
                    await self._restarted()
            except Exception:
                raise_if_cancelling()

    async def _restarted(self) -> None:
        if await self._client.set(self._epoch_key, 1, nx=True):
            self._republish()

    def _republish(self) -> None:
        """Every recent job's log again from seq 1 into a new stream, and its record."""
        me = asyncio.current_task()
        jobs = {*self._recent, *self._publishers, *self._cursors}
        for job_id in jobs:
            self._cursors[job_id] = 0
            self._fresh.add(job_id)
            self.mark(job_id)
            running = self._publishers.get(job_id)
            if running is not me:  # the caller starts over by itself (_Restarted)
                if running is not None:
                    running.cancel()
                self._publish(job_id)
        self.stats["republished"] += len(jobs)


class _Restarted(Exception):
    """Redis restarted empty while this job was being published: start over."""


def _entry(event: Event) -> tuple[int, dict[str, Any]]:
    """``(seq, fields)`` of an event's stream entry, in Langflow's format."""
    body = json.dumps({"event": event.type, "data": event.data})
    return event.seq, {"event_id": event.id, "data": body + "\n\n", "ts": repr(event.put_time)}


def _outcome(event: Event) -> str:
    if event.type == "error":
        return "failed"
    status = event.data.get("status") if isinstance(event.data, dict) else None
    return str(status) if status else "completed"
