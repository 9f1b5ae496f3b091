"""What a Celery worker does with a jobqueue task: run the registered handler by name.

Each task runs its handler coroutine in a fresh event loop (``asyncio.run``),
so it works in every Celery pool (prefork, threads, solo). A supervisor on
that loop enforces the soft time limit and watches for a revoke:

* soft time limit: the handler is cancelled and the task retried, as
  Langflow's ``build_vertex`` did on ``SoftTimeLimitExceeded``, up to the
  backend's ``time_limit_tries`` tries in all; then it fails with
  ``SoftTimeLimitExceeded`` (reported with reason ``timeout``). A soft limit
  enforced by Celery itself (``--soft-time-limit`` on a prefork worker) is
  treated the same way.
* revoke: the backend's revoke flag is read every ``revoke_poll`` seconds;
  once set, the handler is cancelled and the task recorded ``REVOKED``.

With a bus (``CeleryBackend(..., bus=...)``), each try's events go to the
task's Redis stream (:mod:`jobqueue.redis.tasks`), and the worker ends the
stream with the outcome before Celery records it.

This module needs Celery; it is imported only by :mod:`jobqueue.tasks.celery`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, Protocol

from celery.exceptions import Ignore, SoftTimeLimitExceeded

from jobqueue import codec
from jobqueue.context import JobContext
from jobqueue.errors import InvalidArgumentError
from jobqueue.events.manager import EventManager, create_default_event_manager
from jobqueue.status import TaskStatus
from jobqueue.tasks.celery_results import _reason

__all__ = ["TASK_NAME", "CeleryJobContext", "HandlerFailed", "run_handler"]

log = logging.getLogger("jobqueue.tasks.celery")


class CeleryBackend(Protocol):
    """What a worker-side run needs of :class:`jobqueue.tasks.CeleryBackend`.

    A protocol rather than an import: the backend module imports this one.
    """

    time_limit_tries: int
    retry_countdown: float
    revoke_poll: float
    bus: str | None
    expires: int

    def handler_for(self, name: str) -> Callable[[Any, Any], Awaitable[Any]]: ...

    def is_revoked(self, task_id: str) -> bool: ...

    def record_revoked(self, task_id: str) -> bool: ...

    def record_started(self, task_id: str, hostname: str | None) -> bool: ...

    def end_stream(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        result: Any = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> bool: ...


#: The one Celery task every handler runs through.
TASK_NAME = "jobqueue.run_handler"
#: Seconds a cancelled handler gets to end before the task gives up waiting for it.
CANCEL_GRACE = 5.0


class CeleryJobContext(JobContext):
    """The ``ctx`` a handler gets on a Celery worker.

    ``ctx.job_id`` is the task id, ``ctx.attempt`` counts retries (0 first),
    ``ctx.checkpoint()`` works. Events (``ctx.events``, ``ctx.progress``,
    ``ctx.emit``) go to the task's stream when the backend has a bus, and are
    validated as JSON and dropped otherwise. ``ctx.effect()`` needs the SQLite
    store and raises here.
    """

    __slots__ = ()

    def effect(self, fn: Callable[..., Any], *args: Any) -> None:
        """Not available on a Celery worker: there is no job transaction to join.

        Raises:
            InvalidArgumentError: always.
        """
        raise InvalidArgumentError(
            "ctx.effect() writes in the SQLite transaction that completes a job; a "
            "Celery worker has none. Write the effect yourself (idempotently), or run "
            "this handler with the in-process backend"
        )


def _drop_events(job_id: str) -> EventManager:
    return create_default_event_manager(None)


def run_handler(
    task: Any, backend: CeleryBackend, name: str, payload: Any, time_limit: float | None
) -> Any:
    """Body of the Celery task: run handler ``name`` on ``payload`` and return its result.

    Args:
        task: the bound Celery task (``self`` of a ``bind=True`` task).
        backend: the :class:`~jobqueue.tasks.CeleryBackend` that registered it.
        name: the handler name.
        payload: the JSON payload.
        time_limit: soft time limit of one try, in seconds (``None``: none).

    Raises:
        UnknownHandlerError: the worker has no handler of that name.
        SoftTimeLimitExceeded: the last try ran out of time.
        celery.exceptions.Retry: a try ran out of time and another is scheduled.
        celery.exceptions.Ignore: the task was revoked (it is recorded ``REVOKED``).
        HandlerFailed: in place of any exception Celery could not pickle.
    """
    task_id: str = task.request.id
    if backend.is_revoked(task_id):
        _record_revoked(task, backend, task_id)
    if not backend.record_started(task_id, task.request.hostname):
        raise Ignore()  # it already ended (revoked before it got here): never run it
    try:
        fn = backend.handler_for(name)
        attempt = int(task.request.retries or 0)
        verdict, value = asyncio.run(_run(backend, fn, task_id, name, attempt, payload, time_limit))
        if verdict == "done":
            codec.encode(value, "result")  # PayloadError now, not a serializer error later
    except SoftTimeLimitExceeded:  # Celery's own soft limit (prefork --soft-time-limit)
        verdict, value = "timeout", None
    except Exception as exc:
        if backend.is_revoked(task_id):  # a revoke raced the failure: revoke wins
            _record_revoked(task, backend, task_id)
        portable = _portable(exc)
        kind = type(exc).__name__
        _end(backend, task_id, TaskStatus.FAILED, error=f"{kind}: {exc}", reason=_reason(kind))
        if portable is exc:
            raise
        raise portable from exc
    if verdict == "revoked" or backend.is_revoked(task_id):
        _record_revoked(task, backend, task_id)
    if verdict == "timeout":
        _retry_timeout(task, backend, name, time_limit)
    # The stream ends before Celery stores the result: a reader that saw the
    # end finds the result there a moment later, never an end still to come.
    _end(backend, task_id, TaskStatus.COMPLETED, result=value)
    return value


async def _run(
    backend: CeleryBackend,
    fn: Callable[[Any, Any], Awaitable[Any]],
    task_id: str,
    name: str,
    attempt: int,
    payload: Any,
    time_limit: float | None,
) -> tuple[str, Any]:
    """One try of the handler, its events on the bus if the backend has one."""

    def revoked() -> bool:
        return backend.is_revoked(task_id)

    if backend.bus is None:
        ctx = CeleryJobContext(task_id, name, attempt, _drop_events)
        return await _supervise(fn(ctx, payload), time_limit, revoked, backend.revoke_poll)
    from jobqueue.redis.tasks import TaskEvents

    async with TaskEvents(backend.bus, task_id, ttl=backend.expires) as events:
        ctx = CeleryJobContext(task_id, name, attempt, events.manager)
        return await _supervise(fn(ctx, payload), time_limit, revoked, backend.revoke_poll)


def _end(backend: CeleryBackend, task_id: str, status: TaskStatus, **outcome: Any) -> None:
    """End the task's stream; a bus that cannot be reached costs the stream, not the task."""
    try:
        backend.end_stream(task_id, status, **outcome)
    except Exception:
        log.warning("task %s: could not end its stream on the bus", task_id, exc_info=True)


class HandlerFailed(Exception):
    """Stands in for a handler exception Celery could not rebuild: ``(type name, message)``.

    Celery stores an exception it cannot round-trip (a class whose
    ``__init__`` takes other arguments than its ``args``, such as most of
    :mod:`jobqueue.errors`; a class defined inside a function; unpicklable
    attributes) as its nearest such base class, losing its name. This carries
    the name and message; the original is chained as the cause, so the
    traceback text still shows it.
    """


def _portable(exc: Exception) -> Exception:
    """``exc`` itself if Celery can store it under its own name, else a ``HandlerFailed``.

    Checked without pickle: the class must be importable by its qualified
    name, and the exception must survive ``copy.deepcopy``, which rebuilds it
    through the same ``__reduce_ex__`` protocol (``cls(*args)`` plus state).
    """
    cls = type(exc)
    found: Any = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    if found is cls:
        try:
            copy.deepcopy(exc)
        except Exception:
            pass
        else:
            return exc
    return HandlerFailed(cls.__name__, str(exc))


def _retry_timeout(task: Any, backend: CeleryBackend, name: str, limit: float | None) -> NoReturn:
    tries = backend.time_limit_tries
    attempt = int(task.request.retries or 0) + 1
    limit_txt = f"its {limit:g}s soft time limit" if limit is not None else "its soft time limit"
    final = attempt >= tries
    exc = SoftTimeLimitExceeded(
        f"handler {name!r} ran past {limit_txt} (try {attempt} of {tries}"
        + ("; giving up)" if final else "; trying again)")
    )
    log.warning("task %s: %s", task.request.id, exc)
    if final:
        _end(
            backend,
            task.request.id,
            TaskStatus.FAILED,
            error=f"SoftTimeLimitExceeded: {exc}",
            reason="timeout",
        )
    raise task.retry(exc=exc, countdown=backend.retry_countdown, max_retries=tries - 1)


def _record_revoked(task: Any, backend: CeleryBackend, task_id: str) -> NoReturn:
    _end(backend, task_id, TaskStatus.CANCELLED, reason="cancelled")  # first, as in run_handler
    backend.record_revoked(task_id)
    raise Ignore()  # nothing more to store: the result is REVOKED


async def _supervise(
    coro: Awaitable[Any],
    time_limit: float | None,
    revoked: Callable[[], bool],
    poll: float,
) -> tuple[str, Any]:
    """Run ``coro`` until it ends, ``time_limit`` passes, or ``revoked()`` turns true.

    Returns ``("done", result)``, ``("timeout", None)`` or ``("revoked", None)``;
    the handler's own exception propagates.
    """
    loop = asyncio.get_running_loop()
    job = asyncio.ensure_future(coro)
    deadline = None if time_limit is None else loop.time() + time_limit
    while True:
        wait = poll if deadline is None else max(0.0, min(poll, deadline - loop.time()))
        await asyncio.wait({job}, timeout=wait)
        if job.done():
            return "done", job.result()
        if deadline is not None and loop.time() >= deadline:
            verdict = "timeout"
        elif revoked():
            verdict = "revoked"
        else:
            continue
        job.cancel()
        await asyncio.wait({job}, timeout=CANCEL_GRACE)
        if not job.done():
            log.error("handler ignored cancellation for %gs; giving up on it", CANCEL_GRACE)
        elif not job.cancelled():
            job.exception()  # retrieved: it was cancelled anyway
        return verdict, None
