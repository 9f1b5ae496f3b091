"""The lifecycle event bus: metrics and logs subscribe here.

The service emits one :class:`Lifecycle` record at each point of a job's life;
subscribers (the metrics recorder, a logger, a test) receive them
synchronously on the event-loop thread. A subscriber that raises is logged
and skipped: observers must never break jobs. With no subscriber the bus is
falsy and emit sites skip building records, so telemetry off costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["HookKind", "Hooks", "Lifecycle"]

log = logging.getLogger("jobqueue.hooks")


class HookKind(StrEnum):
    """What happened."""

    SUBMITTED = "submitted"  #: job stored as pending
    STARTED = "started"  #: job claimed and its handler started (``wait_s`` set)
    FINISHED = "finished"  #: job reached a terminal status (``status``, ``run_s``)
    RETRYING = "retrying"  #: job went back to pending for another attempt
    EVENT_CONSUMED = "event_consumed"  #: a consumer took an event (``wait_s`` = time in queue)


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """One lifecycle record. Fields that do not apply to ``kind`` are ``None``."""

    kind: HookKind
    job_id: str | None = None
    handler: str | None = None
    status: str | None = None
    reason: str | None = None
    error_type: str | None = None
    wait_s: float | None = None
    run_s: float | None = None


Subscriber = Callable[[Lifecycle], None]


class Hooks:
    """A tiny synchronous publish/subscribe bus."""

    __slots__ = ("_subs",)

    def __init__(self) -> None:
        self._subs: tuple[Subscriber, ...] = ()

    def __bool__(self) -> bool:
        return bool(self._subs)

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it again."""
        self._subs = (*self._subs, fn)

        def unsubscribe() -> None:
            self._subs = tuple(s for s in self._subs if s is not fn)

        return unsubscribe

    def emit(self, record: Lifecycle) -> None:
        """Deliver ``record`` to every subscriber; their errors are logged, not raised."""
        for fn in self._subs:
            try:
                fn(record)
            except Exception:
                log.exception("lifecycle subscriber %r failed on %s", fn, record.kind)
