"""The job status lifecycle: lowercase values, derived sets, one transition table.

::

    pending -> running -> completed | failed | cancelled | stopped
    running <-> paused            pending -> cancelled | stopped
    paused  -> cancelled | stopped
    running -> pending            (only for a retry or crash recovery)

This module imports nothing from jobqueue but :mod:`jobqueue.errors`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from jobqueue.errors import InvalidStatusError, InvalidTransition

__all__ = [
    "ACTIVE",
    "CONTROL_RANK",
    "REQUESTS",
    "TERMINAL",
    "TRANSITIONS",
    "TaskStatus",
    "check_transition",
    "parse_status",
    "requestable",
    "stronger",
]


class TaskStatus(StrEnum):
    """Status of a job. Values are lowercase and are what the database stores."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STOPPED = "stopped"


S = TaskStatus

#: The one table of allowed status changes. Everything else is an illegal transition.
TRANSITIONS: Final[dict[TaskStatus, frozenset[TaskStatus]]] = {
    # pending -> stopped: stop() on a job waiting (e.g. in retry backoff) ends it, no new run.
    S.PENDING: frozenset({S.RUNNING, S.CANCELLED, S.STOPPED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.STOPPED, S.PAUSED, S.PENDING}),
    S.PAUSED: frozenset({S.RUNNING, S.CANCELLED, S.STOPPED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.STOPPED: frozenset(),
}

#: What a caller can ask for from each status (``service.cancel()``, ``jobqueue stop``...):
#: the control and the status it leads to. The other changes of :data:`TRANSITIONS`
#: (claiming, completing, retrying, recovery) are the runtime's, never requested.
REQUESTS: Final[dict[TaskStatus, dict[str, TaskStatus]]] = {
    S.PENDING: {"cancel": S.CANCELLED, "stop": S.STOPPED},
    S.RUNNING: {"cancel": S.CANCELLED, "stop": S.STOPPED, "pause": S.PAUSED},
    S.PAUSED: {"cancel": S.CANCELLED, "stop": S.STOPPED, "resume": S.RUNNING},
    S.COMPLETED: {},
    S.FAILED: {},
    S.CANCELLED: {},
    S.STOPPED: {},
}

#: Final statuses: the job will never change again.
TERMINAL: Final[frozenset[TaskStatus]] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
#: Statuses of jobs that are not finished yet (pending, running, paused).
ACTIVE: Final[frozenset[TaskStatus]] = frozenset(TaskStatus) - TERMINAL

#: For each target status, the statuses it may be reached from (used in SQL guards).
SOURCES: Final[dict[TaskStatus, tuple[TaskStatus, ...]]] = {
    target: tuple(sorted(s for s, nxt in TRANSITIONS.items() if target in nxt))
    for target in TaskStatus
}


def parse_status(value: object, job_id: str | None = None) -> TaskStatus:
    """Turn a stored value into a :class:`TaskStatus`.

    Raises:
        InvalidStatusError: the value is not one of the lowercase statuses.
    """
    try:
        return TaskStatus(value if isinstance(value, str) else repr(value))
    except ValueError:
        raise InvalidStatusError(value, job_id) from None


def requestable(current: TaskStatus) -> list[str]:
    """The controls a caller can ask for from ``current`` (what an error suggests instead)."""
    return list(REQUESTS[current])


def check_transition(job_id: str, current: TaskStatus, target: TaskStatus) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> target`` is in the table."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(job_id, current.value, target.value, requestable(current))


#: Controls by precedence: a cancel wins over a stop or pause sent before or after
#: it, and a stop over a pause.
CONTROL_RANK: Final = {"pause": 1, "stop": 2, "cancel": 3}


def stronger(current: str | None, kind: str) -> str:
    """The control that wins when ``kind`` is asked for while ``current`` is pending."""
    if current is None or CONTROL_RANK.get(kind, 0) >= CONTROL_RANK.get(current, 0):
        return kind
    return current
