"""Celery results in Redis: reading them as :class:`TaskInfo`, writing them safely.

Reading: Celery states map to the lowercase vocabulary (``STATUS_OF_STATE``),
and a failure's type, message and traceback are taken from the raw JSON
result, without importing the exception's module here.

Writing: Celery itself only refuses to overwrite a ``SUCCESS``. The
``STARTED`` and ``REVOKED`` results jobqueue writes go through one Lua script
that reads the current result and writes the new one only if the task has
not ended, so a finished task never changes again (a revoked task does not
flip back to ``STARTED`` when a worker picks up its message, and a revoke
never hides a result stored a moment earlier).

This module needs Celery (and JSON results); it is imported only by
:mod:`jobqueue.tasks.celery`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from celery.exceptions import TaskRevokedError

from jobqueue.status import TaskStatus
from jobqueue.tasks.backend import TaskFailure, TaskInfo

__all__ = ["STATUS_OF_STATE", "info_from_meta", "store_unless_done"]

NAME = "celery"

#: Celery state -> lowercase status. Other (custom) states count as running.
STATUS_OF_STATE: Final[dict[str, TaskStatus]] = {
    "PENDING": TaskStatus.PENDING,
    "RECEIVED": TaskStatus.PENDING,
    "STARTED": TaskStatus.RUNNING,
    "RETRY": TaskStatus.RUNNING,
    "SUCCESS": TaskStatus.COMPLETED,
    "FAILURE": TaskStatus.FAILED,
    "REJECTED": TaskStatus.FAILED,
    "REVOKED": TaskStatus.CANCELLED,
}
_TIMEOUT_TYPES: Final = frozenset({"SoftTimeLimitExceeded", "TimeLimitExceeded"})
_REASONS: Final = {"UnknownHandlerError": "unknown_handler", "PayloadError": "invalid_result"}

# KEYS[1] result key; ARGV[1] the new encoded meta (JSON); ARGV[2] expiry in seconds.
_STORE_UNLESS_DONE: Final = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  local done = {SUCCESS = true, FAILURE = true, REVOKED = true, REJECTED = true}
  if ok and type(meta) == 'table' and done[meta['status']] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


def info_from_meta(task_id: str, name: str | None, meta: Mapping[str, Any]) -> TaskInfo:
    """Describe a task from its decoded (but not deserialised) Celery result meta."""
    state = str(meta.get("status", "PENDING"))
    status = STATUS_OF_STATE.get(state, TaskStatus.RUNNING)
    value = meta.get("result")
    result, failure, reason = None, None, None
    if status is TaskStatus.COMPLETED:
        result = value
    elif status is TaskStatus.FAILED:
        failure = _failure(value, meta.get("traceback"))
        reason = "rejected" if state == "REJECTED" else _reason(failure.error_type)
    elif status is TaskStatus.CANCELLED:
        reason = "cancelled"
    return TaskInfo(task_id, name, status, NAME, result, failure, reason, state)


def _failure(value: Any, traceback: Any) -> TaskFailure:
    tb = traceback if isinstance(traceback, str) else None
    if not isinstance(value, Mapping) or "exc_type" not in value:
        return TaskFailure("Error", "" if value is None else str(value), tb)
    args = value.get("exc_message")
    if value["exc_type"] == "HandlerFailed" and isinstance(args, list | tuple) and len(args) == 2:
        return TaskFailure(str(args[0]), str(args[1]), tb)  # see celery_worker.HandlerFailed
    if isinstance(args, list | tuple):
        message = "" if not args else str(args[0]) if len(args) == 1 else str(tuple(args))
    else:
        message = "" if args is None else str(args)
    return TaskFailure(str(value["exc_type"]), message, tb)


def _reason(error_type: str) -> str:
    if error_type in _TIMEOUT_TYPES:
        return "timeout"
    return _REASONS.get(error_type, "error")


def store_unless_done(
    results: Any, task_id: str, state: str, expires: int, hostname: str | None = None
) -> bool:
    """Write a ``STARTED`` or ``REVOKED`` result unless the task already ended.

    Args:
        results: the app's Celery ``RedisBackend``.
        task_id: the task.
        state: ``"STARTED"`` or ``"REVOKED"``.
        expires: seconds the result is kept.
        hostname: the worker's name, for ``STARTED`` (as Celery records it).

    Returns:
        True if the result was written, False if the task had already ended.
    """
    if state == "REVOKED":
        value: Any = results.prepare_exception(TaskRevokedError("revoked"))
    else:
        value = {"pid": os.getpid(), "hostname": hostname}
    meta = {
        "status": state,
        "result": value,
        "traceback": None,
        "children": [],
        "date_done": datetime.now(UTC).isoformat() if state == "REVOKED" else None,
        "task_id": task_id,
    }
    key = results.get_key_for_task(task_id)
    return bool(results.client.eval(_STORE_UNLESS_DONE, 1, key, results.encode(meta), expires))
