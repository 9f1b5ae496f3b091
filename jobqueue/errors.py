"""Every error jobqueue raises, under one base class :class:`JobQueueError`.

Errors raised by the Langflow-compatible calls also subclass the built-in
exception Langflow raised in the same place (``ValueError``, ``RuntimeError``),
so existing ``except`` clauses keep working.

Control-flow exceptions that a *handler* raises on purpose (``Retry``,
``Cancel``) are not errors and live in :mod:`jobqueue.errors`.

This module imports nothing from jobqueue.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousJobIdError",
    "BackendUnavailableError",
    "BusUnavailableError",
    "Cancel",
    "CancelNotConfirmedError",
    "ControlNotConfirmedError",
    "DuplicateJobError",
    "DuplicateStepError",
    "EventCallbackError",
    "EventError",
    "Interrupt",
    "InvalidArgumentError",
    "InvalidHandlerError",
    "InvalidLockKey",
    "InvalidStatusError",
    "InvalidTransition",
    "JobCancelledError",
    "JobFailedError",
    "JobNotFoundError",
    "JobQueueError",
    "JobQueueNotFoundError",
    "LockError",
    "LockTimeout",
    "MetricLabelError",
    "MetricsServerError",
    "NotRetryableError",
    "PayloadError",
    "PayloadTooLargeError",
    "QueueExistsError",
    "Retry",
    "ServiceClosedError",
    "StepError",
    "StepResultError",
    "StepTimeoutError",
    "StoreCorruptedError",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreReadOnlyError",
    "TaskFailedError",
    "TaskNotFoundError",
    "UnknownHandlerError",
    "WorkerAppError",
]


class JobQueueError(Exception):
    """Base class of every error raised by jobqueue."""


# --- jobs and queues --------------------------------------------------------


class JobNotFoundError(JobQueueError, LookupError):
    """No job with this id exists in the store."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"no job with id {job_id!r}; check the id (service.list() shows existing jobs)"
        )


class AmbiguousJobIdError(JobQueueError, LookupError):
    """Part of an id (a prefix or a suffix) that several jobs' ids start or end with.

    Attributes:
        text: what was given.
        candidates: the ids of the newest few of those jobs.
    """

    def __init__(self, text: str, candidates: list[str], *, more: bool = False) -> None:
        self.text = text
        self.candidates = list(candidates)
        count = f"{len(candidates)}{' or more' if more else ''}"
        super().__init__(
            f"job id {text!r} is ambiguous: the ids of {count} jobs start or end with it "
            f"({', '.join(candidates)}{', ...' if more else ''}); give more characters of "
            "the id, or the whole id (`jobqueue list` shows them)"
        )


class JobQueueNotFoundError(JobQueueError, LookupError, ValueError):
    """Langflow layer: no event queue is registered for this job id.

    Also a ``ValueError``, which is what Langflow's ``start_job`` raised here.
    The message starts with Langflow's own text (``get_queue_data``: "Job
    queue not found for job_id: <id>"; ``start_job``: "No queue found for
    job_id <id>"), then says what to do.
    """

    def __init__(self, job_id: str, *, starting: bool = False) -> None:
        self.job_id = job_id
        head = (
            f"No queue found for job_id {job_id}"
            if starting
            else f"Job queue not found for job_id: {job_id}"
        )
        super().__init__(
            f"{head}; call create_queue() first (queues of finished jobs are removed by the reaper)"
        )


class QueueExistsError(JobQueueError, ValueError):
    """Langflow layer: ``create_queue`` was called for an id that already has a queue."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"Queue for job_id {job_id} already exists; use get_queue_data() to reuse it "
            "or cleanup_job() to remove it first"
        )


class DuplicateJobError(JobQueueError, ValueError):
    """A job with this id already exists in the store."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"a job with id {job_id!r} already exists; pass a new job_id, omit it to get a "
            "generated one, or use idempotency_key to get the existing job back"
        )


class UnknownHandlerError(JobQueueError, LookupError):
    """No handler is registered under this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        known_txt = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"no handler registered as {name!r} (registered: {known_txt}); "
            "register it with @service.handler(name) before submitting, or "
            "service.declare(name) if another process runs it"
        )


class InvalidArgumentError(JobQueueError, ValueError):
    """An option or identifier has an unusable value; the message says which and why."""


class InvalidHandlerError(JobQueueError, TypeError):
    """A handler that cannot be registered (not ``async def``, or a bad name)."""


class InvalidTransition(JobQueueError, ValueError):
    """A status change that the lifecycle table does not allow; nothing was written.

    Attributes:
        job_id, current, target: the job, its status and the status asked for.
        allowed: the controls a caller can still ask for from ``current``
            (``cancel``, ``stop``, ``pause``, ``resume``); empty for a finished job.
            Changes only the runtime makes (claiming, completing, retrying) are
            never listed: no one can request them.
    """

    def __init__(self, job_id: str, current: str, target: str, allowed: list[str]) -> None:
        self.job_id = job_id
        self.current = current
        self.target = target
        self.allowed = list(allowed)
        super().__init__(
            f"job {job_id!r} cannot go from {current!r} to {target!r}: "
            f"{_why_not(current, target, self.allowed)}; {_instead(current, self.allowed)}; "
            "nothing was changed"
        )


#: What a control turns a job into, in words ("cannot be paused").
_DONE_BY = {
    "paused": ("pause", "only a running job can be paused"),
    "running": ("resume", "only a paused job can be resumed"),
    "cancelled": ("cancel", "only a job that has not finished can be cancelled"),
    "stopped": ("stop", "only a job that has not finished can be stopped"),
}
_PAST = {"cancel": "cancelled", "stop": "stopped", "pause": "paused", "resume": "resumed"}


def _why_not(current: str, target: str, allowed: list[str]) -> str:
    if not allowed:
        return f"{current!r} is a final status"
    control = _DONE_BY.get(target)
    if control is None:  # completed, failed, pending: only the job's own run gets there
        return f"a job reaches {target!r} by running, not on request"
    return control[1]


def _instead(current: str, allowed: list[str]) -> str:
    if not allowed:
        if current in ("failed", "cancelled", "stopped"):
            return "retry it to run it again under its id (retry), or submit a new job"
        return "submit a new job to run it again"
    words = [_PAST.get(a, a) for a in allowed]
    said = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    return f"a {current} job can be {said} instead ({', '.join(allowed)})"


class NotRetryableError(InvalidTransition):
    """``retry()`` of a job that is not failed, cancelled or stopped; nothing was changed.

    A pending, running or paused job has not ended yet, and a completed job is
    not run again (submit a new one). ``current`` says which it is.
    """

    def __init__(self, job_id: str, current: str, allowed: list[str]) -> None:
        self.job_id = job_id
        self.current = current
        self.target = "pending"
        self.allowed = list(allowed)
        JobQueueError.__init__(
            self,
            f"job {job_id!r} is {current}: only a failed, cancelled or stopped job can be "
            f"retried; {_RETRY_INSTEAD.get(current, 'submit a new job to run it again')}; "
            "nothing was changed",
        )


_RETRY_INSTEAD = {
    "pending": "it is waiting to run already: wait for it to finish, or cancel it first, "
    "then retry it",
    "running": "wait for it to finish or cancel it first, then retry it",
    "paused": "resume it to run it again, or cancel it first, then retry it",
}


class InvalidStatusError(JobQueueError, ValueError):
    """The database holds a status value that is not a known status."""

    def __init__(self, value: object, job_id: str | None = None) -> None:
        self.value = value
        where = f" for job {job_id!r}" if job_id is not None else ""
        super().__init__(
            f"unknown job status {value!r}{where}; valid statuses are pending, running, "
            "paused, completed, failed, cancelled, stopped. The file may have been written "
            "by another program: run `python -m jobqueue check --db FILE`"
        )


class JobFailedError(JobQueueError):
    """``wait()`` on a job that ended ``failed``."""

    def __init__(self, job_id: str, error: str | None, reason: str | None = None) -> None:
        self.job_id = job_id
        self.error = error
        self.reason = reason
        why = f" ({reason})" if reason else ""
        super().__init__(f"job {job_id!r} failed{why}: {error}")


class JobCancelledError(JobQueueError):
    """``wait()`` on a job that ended ``cancelled`` or ``stopped``."""

    def __init__(self, job_id: str, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f"job {job_id!r} ended {status} before producing a result")


class PayloadError(JobQueueError, ValueError):
    """A payload, result or event is not plain JSON (no NaN/Infinity, no custom types)."""


class PayloadTooLargeError(PayloadError):
    """An encoded payload or result is over the size cap."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"{what} is {size} bytes of JSON, over the {limit}-byte cap; store large data "
            "in a file and pass its path, or raise max_payload_bytes"
        )


class ServiceClosedError(JobQueueError, RuntimeError):
    """The service is closed (or was never started)."""

    def __init__(self, what: str = "the job queue service is closed") -> None:
        super().__init__(
            f"{what}; start it with `async with JobQueueService(...)` or service.start()"
        )


class EventError(JobQueueError, ValueError):
    """An event name, type or callback that EventManager cannot use (the message says why)."""


class EventCallbackError(JobQueueError, TypeError):
    """A callback that is not callable: a ``TypeError``, not a ``ValueError`` (as Langflow)."""


class WorkerAppError(JobQueueError):
    """``python -m jobqueue worker module:attr`` cannot use ``module:attr``.

    The module is missing or failed to import, the attribute is missing, or it
    is not a :class:`~jobqueue.JobQueueService` (or a function returning one)
    with handlers registered. The message says which, and what to do.
    """

    def __init__(self, target: str, message: str) -> None:
        self.target = target
        super().__init__(message)


# --- store ------------------------------------------------------------------


class StoreError(JobQueueError):
    """The SQLite store failed; the message names the file."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class StoreCorruptedError(StoreError):
    """The file is damaged or is not a jobqueue SQLite database. It was not modified."""


class StoreFullError(StoreError):
    """The disk (or file size limit) is full; the write was rolled back."""


class StoreReadOnlyError(StoreError):
    """The database file or its directory cannot be written."""


class StoreLockedError(StoreError):
    """Another connection held the write lock past ``busy_timeout``."""


# --- locks ------------------------------------------------------------------


class LockError(JobQueueError):
    """A keyed lock could not be used."""


class InvalidLockKey(LockError, ValueError):
    """A lock key that cannot be used (empty, too long, or unsafe as a file name)."""


class LockTimeout(LockError, TimeoutError):
    """A lock was not acquired within its timeout."""


# --- telemetry --------------------------------------------------------------


class MetricLabelError(JobQueueError, ValueError):
    """A metric was recorded with a missing or unknown label."""


class MetricsServerError(JobQueueError, OSError):
    """The Prometheus endpoint could not be started (for example, the port is taken)."""


# --- task backends (jobqueue.tasks) -------------------------------------------


class TaskNotFoundError(JobNotFoundError):
    """``TaskService``: no task with this id was launched through this backend.

    Also a :class:`JobNotFoundError` (and so a ``LookupError``).
    """

    def __init__(self, task_id: str, backend: str) -> None:
        super().__init__(task_id)
        self.backend = backend
        self.args = (
            f"no task with id {task_id!r} on the {backend} backend; use the id returned by "
            "launch_task() (records of finished tasks expire with their results)",
        )


class TaskFailedError(JobFailedError):
    """``launch_and_await_task()``/``wait_task()`` on a task that ended ``failed``.

    ``error_type`` names the exception class and ``traceback`` holds its text,
    as the backend recorded them (``TaskService.get_task()`` has them too).
    """

    def __init__(
        self,
        task_id: str,
        error: str | None,
        reason: str | None = None,
        *,
        error_type: str | None = None,
        traceback: str | None = None,
    ) -> None:
        super().__init__(task_id, error, reason)
        self.error_type = error_type
        self.traceback = traceback
        why = f" ({reason})" if reason else ""
        self.args = (f"task {task_id!r} failed{why}: {error}",)


class BackendUnavailableError(JobQueueError, ConnectionError):
    """A task backend cannot reach its broker or result store (for example Redis)."""

    def __init__(self, backend: str, url: str, cause: BaseException) -> None:
        self.backend = backend
        self.url = url
        super().__init__(
            f"the {backend} backend cannot reach {url} ({type(cause).__name__}: {cause}); "
            "start the broker (Redis: `redis-server --daemonize yes` or "
            "`docker run -p 6379:6379 redis`) or fix the URL"
        )


# --- the Redis event bus (jobqueue.redis) ---------------------------------------


class BusUnavailableError(BackendUnavailableError):
    """The Redis event bus cannot be reached: nothing was read or written.

    A reader raises it after Redis failed for its whole ``outage_s`` budget,
    instead of ending the stream as if the job had finished. ``url`` is the
    bus's address with any password left out.
    """

    def __init__(self, url: str, cause: BaseException, *, waited: float | None = None) -> None:
        self.backend = "redis bus"
        self.url = url
        self.waited = waited
        during = f" for {waited:.1f} s" if waited is not None else ""
        ConnectionError.__init__(
            self,
            f"the Redis event bus at {url} did not answer{during} "
            f"({type(cause).__name__}: {cause}); the job's stream is not over: start Redis "
            "(`redis-server --daemonize yes`) or fix the URL (the host, port and db given to "
            "RedisJobQueueService, or url=), then read again from the last event you saw",
        )


class CancelNotConfirmedError(JobQueueError, TimeoutError):
    """A cancel was sent, but no end of the job's stream arrived in time.

    The cancel marker stays in Redis for ``cancel_marker_ttl`` seconds, so a
    worker that starts the job later still cancels it.
    """

    def __init__(self, job_id: str, timeout: float, receivers: int) -> None:
        self.job_id = job_id
        self.timeout = timeout
        self.receivers = receivers
        super().__init__(
            f"job {job_id!r}: no worker confirmed the cancel within {timeout:g} s "
            f"({receivers} worker(s) got the signal); the job may not have started yet, "
            "or its worker is busy: call wait_end(job_id) to wait longer, or check that a "
            "worker with cancel_channel_enabled=True runs it"
        )


class ControlNotConfirmedError(JobQueueError, TimeoutError):
    """No service on the Redis bus answered a control request (``RemoteJobs``) in time."""

    def __init__(self, job_id: str, op: str, timeout: float, receivers: int) -> None:
        self.job_id = job_id
        self.op = op
        self.timeout = timeout
        self.receivers = receivers
        super().__init__(
            f"job {job_id!r}: no service answered {op!r} within {timeout:g} s "
            f"({receivers} service(s) on the bus got it); the job's service must run a "
            "RedisBus on this Redis: attach one (async with RedisBus(service, url)), "
            "or pass a longer timeout"
        )


# --- durable workflows (ctx.step / ctx.sleep) ---------------------------------


class StepError(JobQueueError):
    """A durable workflow step could not be used as written.

    Attributes:
        job_id: the job whose handler called the step.
        step: the step name.
        reason: the job's failure reason when this error ends the run.
    """

    reason = "invalid_workflow"

    def __init__(self, job_id: str, step: str, message: str) -> None:
        self.job_id = job_id
        self.step = step
        super().__init__(message)


class DuplicateStepError(StepError, ValueError):
    """A step name was used twice in one run of a job (step names are unique per job)."""

    reason = "duplicate_step"

    def __init__(self, job_id: str, step: str) -> None:
        super().__init__(
            job_id,
            step,
            f"step {step!r} was already used in this run of job {job_id!r}; give each "
            "ctx.step()/ctx.sleep() call its own name, e.g. f'fetch[{i}]' inside a loop "
            "(a restarted run replays the same names: that is not a duplicate)",
        )


class StepResultError(StepError, PayloadError):
    """A step returned a value that cannot be stored as JSON (or is over the size cap)."""

    reason = "invalid_result"

    def __init__(self, job_id: str, step: str, cause: str) -> None:
        super().__init__(
            job_id,
            step,
            f"step {step!r} of job {job_id!r} returned a value that cannot be stored: "
            f"{cause}. Return plain JSON (dict, list, str, int, float, bool, None); "
            "store large data in a file and return its path",
        )


class StepTimeoutError(StepError, TimeoutError):
    """Every attempt of a step ran past its ``timeout``.

    The job fails with reason ``step_timeout``, or is retried if it has
    ``max_retries`` left (the retry replays the finished steps).
    """

    reason = "step_timeout"

    def __init__(self, job_id: str, step: str, timeout: float, attempts: int) -> None:
        self.timeout = timeout
        self.attempts = attempts
        super().__init__(
            job_id,
            step,
            f"step {step!r} of job {job_id!r} ran past its timeout of {timeout:g}s in each "
            f"of {attempts} attempt(s); raise timeout= or retries= on ctx.step(), or make "
            "the step do less",
        )


# -- control flow ------------------------------------------------------------------------
# Raised by handlers (or at a checkpoint) on purpose to steer their own job. They are
# control flow, not errors, so they do not subclass JobQueueError.


class Retry(Exception):
    """Ask for another attempt of this job after ``delay`` seconds.

    The attempt counts against ``max_retries``; once they are used up the job
    fails with the reason ``retries_exhausted``.
    """

    def __init__(self, delay: float | None = None, message: str = "") -> None:
        self.delay = delay
        super().__init__(message or f"retry requested (delay={delay})")


class Cancel(Exception):
    """End this job now with status ``cancelled`` (no retry)."""


class Interrupt(BaseException):
    """Raised inside a handler at ``await ctx.checkpoint()`` after ``stop()`` or ``pause()``.

    A ``BaseException`` (like ``CancelledError``) so that a handler's
    ``except Exception`` does not swallow it. Handlers should let it propagate.

    Attributes:
        kind: ``"stop"`` or ``"pause"``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"job {kind} requested")
