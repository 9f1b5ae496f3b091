"""``RedisJobQueueService``: Langflow 1.13's Redis job queue, with ends that say how.

Same constructor, methods, settings and stream format as Langflow's class, so
a Langflow deployment switches by import. Beyond it: the end entry carries the
outcome; a dead worker's jobs end as ``lost`` within ``lease_s``; a cancel
from any worker can be awaited until the owner confirms it; every reader
(:meth:`RedisJobQueueService.events`) has its own cursor; a trimmed stretch is
a ``gap`` event; the bridge buffer is bounded; an outage raises
:class:`~jobqueue.errors.BusUnavailableError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any, ClassVar

from jobqueue.errors import (
    BusUnavailableError,
    InvalidArgumentError,
    ServiceClosedError,
)
from jobqueue.events.manager import EventManager, EventQueue
from jobqueue.redis import keys as k
from jobqueue.redis.base import QueueData, _end
from jobqueue.redis.bridge import Bridge, BusStats
from jobqueue.redis.control import CancelsAndOwners
from jobqueue.redis.loops import cancel_dispatcher, heartbeat, polling_watchdog
from jobqueue.redis.reader import StreamReader
from jobqueue.redis.wrapper import RedisQueueWrapper

__all__ = ["RedisJobQueueService"]

log = logging.getLogger("jobqueue.redis")
_CANCEL_STATS = (
    "published", "marker_hit", "dispatched_owned", "dispatched_foreign", "publish_errors",
    "dispatcher_reconnects", "dispatcher_internal_errors", "polling_watchdog_kills",
    "activity_touch_errors", "activity_get_errors", "activity_parse_errors", "lease_errors",
    "confirmed",
)  # fmt: skip


class RedisJobQueueService(CancelsAndOwners):
    """Job queue for several workers: each job's events on a Redis stream any worker reads.

    The first ten parameters are Langflow 1.13's (``LANGFLOW_REDIS_QUEUE_*``).

    Args:
        lease_s: a worker that stops renewing its lease for this long has its
            running jobs' streams ended with outcome ``lost``.
        queue_size: bound of each job's local queue (the bridge buffer).
        maxlen: each stream is trimmed to about this many entries.
        outage_s: how long a reader waits out Redis errors before raising
            :class:`~jobqueue.errors.BusUnavailableError` (default ``startup_grace_s``).
        socket_timeout: seconds a Redis command may take before it counts as failed.
        worker_id: this worker's name on the bus (default: random).
    """

    STREAM_PREFIX: ClassVar[str] = k.STREAM_PREFIX
    OWNER_PREFIX: ClassVar[str] = k.OWNER_PREFIX
    CANCEL_CHANNEL_PREFIX: ClassVar[str] = k.CANCEL_CHANNEL_PREFIX
    ACTIVITY_PREFIX: ClassVar[str] = k.ACTIVITY_PREFIX
    PUBLIC_JOB_PREFIX: ClassVar[str] = k.PUBLIC_JOB_PREFIX
    _CANCEL_MARKER_PREFIX: ClassVar[str] = k.CANCEL_MARKER_PREFIX
    _backend_label: ClassVar[str] = "redis"
    _STARTUP_PROBE_ATTEMPTS = 5
    _STARTUP_PROBE_BACKOFF_S = 1.0
    _DISPATCHER_RECONNECT_INITIAL_BACKOFF_S = 0.5
    _DISPATCHER_RECONNECT_MAX_BACKOFF_S = 30.0

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        db: int = 1,
        url: str | None = None,
        ttl: int = 3600,
        startup_grace_s: float = 30.0,
        cancel_marker_ttl: int = 60,
        polling_stale_threshold_s: float = 90.0,
        polling_watchdog_interval_s: float = 15.0,
        *,
        cancel_channel_enabled: bool = True,
        lease_s: float = 5.0,
        queue_size: int = 10_000,
        maxlen: int = 10_000,
        outage_s: float | None = None,
        socket_timeout: float = 5.0,
        worker_id: str | None = None,
    ) -> None:
        for name, value in (("ttl", ttl), ("lease_s", lease_s), ("maxlen", maxlen)):
            if not value > 0:
                raise InvalidArgumentError(f"{name} must be > 0, got {value!r}")
        if socket_timeout <= 1.0:
            raise InvalidArgumentError(
                f"socket_timeout must be > 1 s (reads block up to 1 s), got {socket_timeout!r}"
            )
        super().__init__(queue_size=queue_size)
        self._redis_host, self._redis_port, self._redis_db, self._redis_url = host, port, db, url
        self._ttl = ttl
        self._startup_grace_s = startup_grace_s
        self._cancel_channel_enabled = cancel_channel_enabled
        self._cancel_marker_ttl = cancel_marker_ttl
        self._polling_stale_threshold_s = polling_stale_threshold_s
        self._polling_watchdog_interval_s = polling_watchdog_interval_s
        self.lease_s = lease_s
        self._maxlen = maxlen
        self._outage_s = startup_grace_s if outage_s is None else outage_s
        self._socket_timeout = socket_timeout
        #: This worker's name on the bus (its lease key and the runner of its jobs).
        self.worker_id = worker_id or uuid.uuid4().hex
        self._client: Any = None
        self._connection_check_task: asyncio.Task[None] | None = None
        self._cancel_dispatcher_task: asyncio.Task[None] | None = None
        self._polling_watchdog_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._dispatcher_ready = asyncio.Event()
        self._bridges: dict[str, Bridge] = {}
        self._bridge_tasks: dict[str, asyncio.Task[None]] = {}
        self._consumer_wrappers: dict[str, RedisQueueWrapper] = {}
        self._owner_refresh_tasks: dict[str, asyncio.Task[None]] = {}
        self._background_tasks: set[asyncio.Task[Any]] = set()
        self._cancel_stats: dict[str, int] = dict.fromkeys(_CANCEL_STATS, 0)
        self._job_start_times: dict[str, float] = {}
        self.bus_stats = BusStats()

    # -- connection ------------------------------------------------------------------------

    @property
    def cross_worker_cancel_enabled(self) -> bool:
        return self._cancel_channel_enabled

    @property
    def connection_target(self) -> str:
        """The Redis address, password left out (it goes into logs and errors)."""
        if self._redis_url:
            return k.redact_url(self._redis_url)
        return f"{self._redis_host}:{self._redis_port} db={self._redis_db}"

    def _backend_unavailable_message(self) -> str:
        return (
            f"Job queue backend (Redis) is unavailable at {self.connection_target}. "
            "Start Redis, fix the LANGFLOW_REDIS_QUEUE_* settings, or set "
            "LANGFLOW_JOB_QUEUE_TYPE=asyncio."
        )

    def _unavailable(self, exc: BaseException) -> BusUnavailableError:
        return BusUnavailableError(self.connection_target, exc)

    def _make_client(self) -> Any:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        # Two quick retries (a pooled link that broke), not redis-py's default seconds
        # of backoff: the bus's own loops wait and try again, and count the failures.
        opts: dict[str, Any] = {
            "socket_timeout": self._socket_timeout,
            "socket_connect_timeout": min(5.0, self._socket_timeout),
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        }
        if self._redis_url:
            return Redis.from_url(self._redis_url, **opts)
        return Redis(host=self._redis_host, port=self._redis_port, db=self._redis_db, **opts)

    async def is_connected(
        self, *, attempts: int | None = None, backoff_s: float | None = None
    ) -> bool:
        """Ping Redis up to ``attempts`` times, ``backoff_s`` apart."""
        attempts = self._STARTUP_PROBE_ATTEMPTS if attempts is None else attempts
        backoff_s = self._STARTUP_PROBE_BACKOFF_S if backoff_s is None else backoff_s
        client = self._client or self._make_client()
        try:
            for attempt in range(attempts):
                try:
                    await client.ping()
                    return True
                except Exception:
                    if attempt + 1 < attempts:
                        await asyncio.sleep(backoff_s)
            return False
        finally:
            if client is not self._client:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _check_connection(self) -> None:
        try:
            await self._client.ping()
        except Exception as exc:
            log.error("%s (%s)", self._backend_unavailable_message(), exc)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._client = self._make_client()
        super().start()
        self._connection_check_task = asyncio.create_task(self._check_connection())
        self._heartbeat_task = asyncio.create_task(heartbeat(self))
        if self._cancel_channel_enabled:
            self._cancel_dispatcher_task = asyncio.create_task(cancel_dispatcher(self))
        if self._polling_stale_threshold_s > 0:
            self._polling_watchdog_task = asyncio.create_task(polling_watchdog(self))

    async def stop(self, *, end_timeout: float = 2.0) -> None:
        """Cancel the jobs running here (their streams end ``cancelled``), then close."""
        self._closed = True
        for name in ("_connection_check_task", "_cancel_dispatcher_task", "_polling_watchdog_task"):
            await _cancel(getattr(self, name))
            setattr(self, name, None)
        for job_id, (queue, _, task, _) in list(self._queues.items()):
            if task is not None and not task.done():
                self._outcomes.setdefault(job_id, "cancelled")
                task.cancel()
            _end(queue)
        bridges = [t for t in self._bridge_tasks.values() if not t.done()]
        if bridges:
            await asyncio.wait(bridges, timeout=end_timeout)
        await _cancel(self._cleanup_task)
        for job_id in list(self._queues):
            await self._forget(job_id, delete_stream=False)
        for task in [*self._background_tasks, *self._owner_refresh_tasks.values()]:
            await _cancel(task)
        for wrapper in list(self._consumer_wrappers.values()):
            await wrapper.cancel()
        self._consumer_wrappers.clear()
        await _cancel(self._heartbeat_task)
        self._heartbeat_task = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.delete(k.LEASE_PREFIX + self.worker_id)
            await self._client.aclose()
            self._client = None

    # -- producing -----------------------------------------------------------------------------

    def create_queue(self, job_id: str) -> tuple[EventQueue, EventManager]:
        """A local queue and manager; a bridge copies the queue to the job's stream."""
        if self._client is None and not self._closed:
            raise ServiceClosedError(
                "RedisJobQueueService is not started: call start() (or set_ready()) first"
            )
        queue, manager = super().create_queue(job_id)
        bridge = Bridge(
            self._client,
            k.Keys(job_id),
            queue,
            worker_id=self.worker_id,
            ttl=self._ttl,
            maxlen=self._maxlen,
            outcome_of=lambda last: self._outcome(job_id, last),
            stats=self.bus_stats,
        )
        self._bridges[job_id] = bridge
        self._bridge_tasks[job_id] = asyncio.create_task(bridge.run())
        return queue, manager

    async def _outcome(self, job_id: str, last_event_id: str | None) -> str:
        """How the job ended, for its end entry (its task may still be returning)."""
        entry = self._queues.get(job_id)
        task = entry[2] if entry is not None else None
        if job_id not in self._outcomes and task is not None and not task.done():
            await asyncio.wait({task}, timeout=1.0)
        outcome = self._outcomes.get(job_id)
        if outcome == "completed" or outcome is None:
            # A run that sent "error" last and then ended its own stream failed.
            return "failed" if (last_event_id or "").startswith("error-") else "completed"
        return outcome

    def start_job(self, job_id: str, task_coro: Any) -> None:
        self._job_start_times[job_id] = time.monotonic()
        super().start_job(job_id, task_coro)
        if job_id in self._job_owners:
            self._ensure_owner_refresh_task(job_id)
        if self._cancel_channel_enabled and self._client is not None:
            self._spawn_background(self.touch_activity(job_id))
            self._spawn_background(self._check_pending_cancel_marker(job_id))

    def _spawn_background(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)
        return task

    # -- consuming -------------------------------------------------------------------------

    def get_queue_data(self, job_id: str) -> QueueData:
        """Langflow's call: a :class:`RedisQueueWrapper` (one per job here, its polls share it)."""
        if self._closed:
            raise RuntimeError(f"Queue service is closed for job_id: {job_id}")
        wrapper = self._consumer_wrappers.get(job_id)
        if wrapper is None:
            wrapper = RedisQueueWrapper(
                job_id,
                self._client,
                self._ttl,
                self._startup_grace_s,
                lease_s=self.lease_s,
                outage_s=self._outage_s,
                url=self.connection_target,
                stats=self.bus_stats,
            )
            self._consumer_wrappers[job_id] = wrapper
        entry = self._queues.get(job_id)
        if entry is not None:
            return (wrapper, entry[1], entry[2], entry[3])
        return (wrapper, EventManager(None), None, None)

    def events(self, job_id: str, *, after: int | str = 0) -> StreamReader:
        """A reader of its own over the job's stream: ``async for event in ...``.

        ``after``: the number of the last event already seen (or a stream id).
        """
        start = f"0-{after}" if isinstance(after, int) else after
        return StreamReader(
            self._client,
            job_id,
            url=self.connection_target,
            after=start,
            startup_grace_s=self._startup_grace_s,
            lease_s=self.lease_s,
            outage_s=self._outage_s,
            stats=self.bus_stats,
        )

    async def wait_end(self, job_id: str, timeout: float | None = None) -> str:
        """Wait until the job's stream ends; return its outcome.

        Raises:
            TimeoutError: no end within ``timeout`` seconds.
            BusUnavailableError: Redis did not answer for ``outage_s``.
        """
        async with asyncio.timeout(timeout):
            try:
                top = await self._client.xrevrange(k.Keys(job_id).stream, count=1)
            except Exception as exc:
                if k.is_connection_error(exc):
                    raise self._unavailable(exc) from exc
                raise
            after = "0-0"
            if top:
                raw_id, fields = top[0]
                if fields.get(b"data") == k.SENTINEL:
                    return (fields.get(b"outcome") or b"unknown").decode()
                after = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            reader = self.events(job_id, after=after)
            async for event in reader:
                if event.kind == "end":
                    break
            return reader.outcome or "unknown"

    # -- cleanup -------------------------------------------------------------------------------

    async def cleanup_job(self, job_id: str) -> None:
        """Langflow's cleanup: cancel the task and bridge, delete the job's keys (owner only)."""
        await self._forget(job_id, delete_stream=True)

    async def _forget(self, job_id: str, *, delete_stream: bool) -> None:
        is_owner = job_id in self._queues
        self._job_start_times.pop(job_id, None)
        await _cancel(self._owner_refresh_tasks.pop(job_id, None))
        wrapper = self._consumer_wrappers.pop(job_id, None)
        if wrapper is not None:
            await (wrapper.finish_with_sentinel() if is_owner else wrapper.cancel())
        await _cancel(self._bridge_tasks.pop(job_id, None))
        self._bridges.pop(job_id, None)
        try:
            await super().cleanup_job(job_id)
        finally:
            if is_owner and self._client is not None:
                keys = k.Keys(job_id)
                doomed = [keys.runner, keys.activity]
                if delete_stream:
                    doomed += [keys.stream, keys.owner, keys.public]
                try:
                    await self._client.delete(*doomed)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("deleting the Redis keys of %s failed: %r", job_id, exc)

    async def _cleanup_old_queues(self) -> None:
        await super()._cleanup_old_queues()
        for job_id, wrapper in list(self._consumer_wrappers.items()):
            if job_id not in self._queues and wrapper.fill_done():
                self._consumer_wrappers.pop(job_id, None)

    def metrics_snapshot(self) -> dict[str, Any]:
        snap = super().metrics_snapshot()
        dispatcher = self._cancel_dispatcher_task
        snap.update(
            bridge_count=len(self._bridge_tasks),
            consumer_wrapper_count=len(self._consumer_wrappers),
            background_task_count=len(self._background_tasks),
            cancel_dispatcher_running=dispatcher is not None and not dispatcher.done(),
            cancel_stats=dict(self._cancel_stats),
            bus={
                **self.bus_stats.as_dict(),
                "buffered": sum(b.queue.qsize() for b in self._bridges.values()),
                "coalesced": sum(b.queue.coalesced for b in self._bridges.values()),
                "worker_id": self.worker_id,
            },
        )
        return snap


async def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
