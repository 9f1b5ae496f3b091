"""The Celery backend: the same registered handlers, run on Celery workers.

Install the extra (``pip install 'jobqueue[celery]'``), then define the
backend next to your handlers, in a module both your app and the workers import::

    service = JobQueueService("jobs.db")

    @service.handler("resize")
    async def resize(ctx, payload): ...

    backend = CeleryBackend(service, broker="redis://127.0.0.1:6379/0")
    celery_app = backend.app          # celery -A myapp.jobs:celery_app worker

and launch with ``TaskService(backend)``. Workers look handlers up by name in
the service's registry (the service itself is never opened on a worker).

Celery states are reported in the lowercase vocabulary: ``PENDING``/``RECEIVED``
-> pending, ``STARTED``/``RETRY`` -> running, ``SUCCESS`` -> completed,
``FAILURE``/``REJECTED`` -> failed, ``REVOKED`` -> cancelled.

Unknown ids: Celery answers ``PENDING`` for any id it never saw, so
``launch_task`` also writes a small record per task (``SET NX``, expiring with
the results). An id with neither a record nor a result raises
:class:`~jobqueue.errors.TaskNotFoundError`, and a reused id raises
:class:`~jobqueue.errors.DuplicateJobError`. This needs the Redis result
backend.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from celery import Celery
from celery.backends.redis import RedisBackend
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobqueue import codec
from jobqueue.errors import (
    BackendUnavailableError,
    DuplicateJobError,
    InvalidArgumentError,
    TaskNotFoundError,
    UnknownHandlerError,
)
from jobqueue.status import TaskStatus
from jobqueue.tasks.backend import TaskInfo, poll_until_done
from jobqueue.tasks.celery_results import STATUS_OF_STATE, info_from_meta, store_unless_done
from jobqueue.tasks.celery_worker import TASK_NAME, run_handler
from jobqueue.validation import check_number

if TYPE_CHECKING:
    from jobqueue.events.manager import Event
    from jobqueue.runtime.runner import Handler
    from jobqueue.service import JobQueueService

__all__ = ["STATUS_OF_STATE", "CeleryBackend", "info_from_meta"]

NAME = "celery"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
_UNAVAILABLE: Final = (OperationalError, RedisConnectionError, RedisTimeoutError, OSError)


class CeleryBackend:
    """Run registered handlers as Celery tasks (broker and results in Redis).

    Args:
        handlers: where workers (and launchers, to check names early) find
            handlers: a :class:`~jobqueue.JobQueueService` with handlers
            registered, or a mapping of name to ``async def handler(ctx, payload)``.
            ``None`` on a launcher that does not import them (names are then
            only checked on the worker).
        broker: broker URL, Redis by default.
        result_backend: result backend URL (Redis); by default the broker's.
        app: an existing Celery app to register the task on instead of
            creating one (``broker``/``result_backend``/``key_prefix`` then do
            not configure it); its result backend must be Redis.
        queue: the Celery queue tasks are sent to (the app's default queue).
        key_prefix: prefix of every Redis key, for several apps (or test runs)
            on one Redis database.
        time_limit_tries: tries in all of a task whose runs exceed their soft
            time limit (Langflow's ``build_vertex`` retried such tasks).
        retry_countdown: seconds between such tries (Langflow used 2).
        revoke_poll: how often a running task looks for a revoke, in seconds.
        revoke_wait: seconds ``revoke_task`` waits for a running task to stop
            before recording it revoked anyway.
        result_expires: seconds results and task records are kept.
        bus: a Redis URL (``True``: the broker's) to put tasks on the Redis bus:
            a handler's events then go to the task's stream
            ``langflow:queue:{task_id}``, which :meth:`events` (and any reader
            of the bus) streams from any machine. ``None``: events are dropped.
    """

    name = NAME

    def __init__(
        self,
        handlers: JobQueueService | Mapping[str, Handler] | None = None,
        *,
        broker: str = DEFAULT_BROKER,
        result_backend: str | None = None,
        app: Any = None,
        queue: str = "jobqueue",
        key_prefix: str = "",
        time_limit_tries: int = 3,
        retry_countdown: float = 2.0,
        revoke_poll: float = 0.2,
        revoke_wait: float = 5.0,
        result_expires: float = 86_400.0,
        bus: str | bool | None = None,
    ) -> None:
        if isinstance(time_limit_tries, bool) or not isinstance(time_limit_tries, int):
            raise InvalidArgumentError(f"time_limit_tries must be an int, got {time_limit_tries!r}")
        if time_limit_tries < 1:
            raise InvalidArgumentError(f"time_limit_tries must be >= 1, got {time_limit_tries}")
        for label, value in (("revoke_poll", revoke_poll), ("result_expires", result_expires)):
            if not isinstance(value, int | float) or value <= 0:
                raise InvalidArgumentError(f"{label} must be a number > 0, got {value!r}")
        self._handlers = handlers
        self.time_limit_tries = time_limit_tries
        self.retry_countdown = float(retry_countdown)
        self.revoke_poll = float(revoke_poll)
        self.revoke_wait = float(revoke_wait)
        self.key_prefix = key_prefix
        self.expires = int(result_expires)
        if app is None:
            app = _make_app(broker, result_backend or broker, queue, key_prefix, self.expires)
        self.app: Any = app
        self.url: str = maybe_sanitize_url(str(app.conf.broker_url or broker))
        self.bus: str | None = _bus_url(bus, str(app.conf.broker_url or broker))
        self._bus_client: Any = None
        backend = self

        def run(task: Any, name: str, payload: Any, time_limit: float | None = None) -> Any:
            return run_handler(task, backend, name, payload, time_limit)

        self.task: Any = app.task(
            name=TASK_NAME,
            bind=True,
            shared=False,
            track_started=False,  # run_handler records STARTED, unless already revoked
            acks_late=True,  # a worker that dies mid-task leaves it for another one
            reject_on_worker_lost=True,
            max_retries=time_limit_tries - 1,
        )(run)

    # -- worker side -------------------------------------------------------------------

    def handler_for(self, name: str) -> Handler:
        """The handler registered as ``name``.

        Raises:
            UnknownHandlerError: none is registered under that name.
        """
        table = self._table()
        fn = table.get(name)
        if fn is None:
            raise UnknownHandlerError(name, list(table))
        return fn

    def _table(self) -> Mapping[str, Handler]:
        from jobqueue.service import JobQueueService

        src = self._handlers
        if src is None:
            return {}
        if isinstance(src, JobQueueService):
            return src.handlers
        return src

    @property
    def results(self) -> Any:
        """The app's Celery result backend (a ``RedisBackend``)."""
        results = self.app.backend
        if not isinstance(results, RedisBackend):
            raise InvalidArgumentError(
                f"CeleryBackend needs Celery's Redis result backend, got "
                f"{type(results).__name__}; set result_backend='redis://...'"
            )
        return results

    def _key(self, kind: str, task_id: str) -> str:
        return f"{self.key_prefix}jobqueue-{kind}-{task_id}"

    def end_stream(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        result: Any = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> bool:
        """End the task's stream on the bus with ``status`` unless it ended (blocking).

        Returns False without a bus, or when the stream had ended already.
        """
        if self.bus is None:
            return False
        from jobqueue.redis.tasks import end_task_stream

        if self._bus_client is None:
            import redis

            self._bus_client = redis.Redis.from_url(self.bus, socket_timeout=5.0)
        return end_task_stream(
            self._bus_client,
            task_id,
            status,
            result=result,
            error=error,
            reason=reason,
            ttl=self.expires,
        )

    def is_revoked(self, task_id: str) -> bool:
        """True once :meth:`revoke_task` was called for ``task_id`` (a blocking Redis read)."""
        return self.results.client.get(self._key("revoked", task_id)) is not None

    # -- client side -------------------------------------------------------------------

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except _UNAVAILABLE as exc:
            raise BackendUnavailableError(NAME, self.url, exc) from exc

    async def launch_task(
        self, name: str, payload: Any, *, task_id: str, time_limit: float | None
    ) -> None:
        """Publish the task to the broker (the payload is checked as JSON first)."""
        if self._handlers is not None:
            self.handler_for(name)
        codec.encode(payload, "payload")
        await asyncio.to_thread(self._launch, name, payload, task_id, time_limit)

    def _launch(self, name: str, payload: Any, task_id: str, time_limit: float | None) -> None:
        record = json.dumps({"name": name, "launched_at": time.time()})
        key = self._key("task", task_id)
        with self._reaching():
            client = self.results.client
            if not client.set(key, record, nx=True, ex=self.expires):
                raise DuplicateJobError(task_id)
            try:
                self.task.apply_async(
                    args=(name, payload), kwargs={"time_limit": time_limit}, task_id=task_id
                )
            except BaseException:
                client.delete(key)
                raise

    async def get_task(self, task_id: str) -> TaskInfo:
        """Read the task's Celery result meta (and its launch record) from Redis."""
        return await asyncio.to_thread(self._get, task_id)

    def _get(self, task_id: str) -> TaskInfo:
        results = self.results
        with self._reaching():
            raw_meta, raw_record = results.client.mget(
                [results.get_key_for_task(task_id), self._key("task", task_id)]
            )
        if raw_meta is None and raw_record is None:
            raise TaskNotFoundError(task_id, NAME)
        record = json.loads(raw_record) if raw_record else {}
        meta = results.decode(raw_meta) if raw_meta else {"status": "PENDING"}
        return info_from_meta(task_id, record.get("name"), meta)

    async def wait_task(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """Poll the result backend until the task is finished."""
        return await poll_until_done(self.get_task, task_id, timeout)

    def events(self, task_id: str, *, after: int | None = None) -> AsyncIterator[Event]:
        """The task's events after seq ``after``, from the bus, until its end event.

        Raises (when iterated):
            InvalidArgumentError: the backend has no bus (``CeleryBackend(..., bus=...)``).
            TaskNotFoundError: unknown id.
            BusUnavailableError: the bus did not answer for 30 s.
        """
        if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
            raise InvalidArgumentError(f"after must be an event's seq (an int >= 0), got {after!r}")
        check_number(after, "after")
        return self._events(task_id, after or 0)

    async def _events(self, task_id: str, after: int) -> AsyncIterator[Event]:
        if self.bus is None:
            raise InvalidArgumentError(
                "this CeleryBackend has no bus, so its workers drop events: create it with "
                "CeleryBackend(..., bus='redis://...') (or bus=True for the broker's Redis)"
            )
        from redis.asyncio import Redis

        from jobqueue.redis.tasks import read_task_events

        await self.get_task(task_id)  # TaskNotFoundError now, not a wait for a stream
        client = Redis.from_url(self.bus, socket_timeout=5.0)
        try:
            where = maybe_sanitize_url(self.bus)
            async for event in read_task_events(
                client, task_id, self.get_task, url=where, after=after
            ):
                yield event
        finally:
            await client.aclose()

    async def revoke_task(self, task_id: str) -> TaskInfo:
        """Revoke: flag it, tell the workers, and record ``REVOKED`` unless it is running.

        A queued (or retry-waiting) task is recorded revoked at once and never
        runs. A running one is cancelled by its worker within ``revoke_poll``;
        if it has not stopped after ``revoke_wait`` it is recorded revoked anyway.
        """
        info = await self.get_task(task_id)
        if info.done:
            if info.status is TaskStatus.CANCELLED:  # revoked by Celery's own revoke, say
                await asyncio.to_thread(self._end_revoked, task_id)
            return info
        started = info.state == "STARTED"
        await asyncio.to_thread(self._revoke, task_id, not started)
        if started:
            try:
                return await poll_until_done(self.get_task, task_id, self.revoke_wait)
            except TimeoutError:
                await asyncio.to_thread(self._revoke, task_id, True)
        return await self.get_task(task_id)

    def _revoke(self, task_id: str, record: bool) -> None:
        with self._reaching():
            self.results.client.set(self._key("revoked", task_id), "1", ex=self.expires)
            self.app.control.revoke(task_id)  # workers drop it if queued or reserved
            if record:
                self.record_revoked(task_id)
                self._end_revoked(task_id)

    def _end_revoked(self, task_id: str) -> None:
        """End a revoked task's stream, which its worker did not (it never ran, or did not stop).

        Whoever recorded ``REVOKED``: a Celery worker that hears the revoke
        broadcast records it for a task it has not started, maybe before we do.
        """
        if self.bus is not None and self._get(task_id).status is TaskStatus.CANCELLED:
            with self._reaching():
                self.end_stream(task_id, TaskStatus.CANCELLED, reason="cancelled")

    def record_revoked(self, task_id: str) -> bool:
        """Store ``REVOKED`` for ``task_id`` unless it already ended; True if written."""
        return store_unless_done(self.results, task_id, "REVOKED", self.expires)

    def record_started(self, task_id: str, hostname: str | None) -> bool:
        """Store ``STARTED`` for ``task_id`` unless it already ended; True if written."""
        return store_unless_done(self.results, task_id, "STARTED", self.expires, hostname)

    async def aclose(self) -> None:
        """Close idle result-backend connections (they reopen if used again).

        The broker connections stay in Celery's pool, which is shared by every
        app on the same broker; ``app.close()`` or the process's exit ends them.
        """
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self.results.client.connection_pool.disconnect(inuse_connections=False)
        if self._bus_client is not None:
            self._bus_client.connection_pool.disconnect(inuse_connections=False)


def _bus_url(bus: str | bool | None, broker: str) -> str | None:
    if bus is None or bus is False:
        return None
    url = broker if bus is True else bus
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidArgumentError(
            f"bus must be a Redis URL ('redis://host:6379/0') or True for the broker's, "
            f"got {maybe_sanitize_url(str(url))!r}"
        )
    return url


def _make_app(broker: str, results: str, queue: str, key_prefix: str, expires: int) -> Any:
    app = Celery("jobqueue", broker=broker, backend=results, set_as_current=False)
    options = {"global_keyprefix": key_prefix} if key_prefix else {}
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        result_expires=timedelta(seconds=expires),
        result_backend_thread_safe=True,  # one Redis client shared by every thread
        broker_transport_options=dict(options),
        result_backend_transport_options=dict(options),
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,  # long handlers: do not hoard queued tasks
        redis_socket_connect_timeout=5,
    )
    return app
