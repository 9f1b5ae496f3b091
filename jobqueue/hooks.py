"""The lifecycle event bus: metrics and logs subscribe here.

The service emits one :class:`Lifecycle` record at each point of a job's life;
subscribers (the metrics recorder, a logger, a test) receive them
synchronously on the event-loop thread. A subscriber that raises is logged
and skipped: observers must never break jobs. With no subscriber the bus is
falsy, and emit sites skip building records of a kind no subscriber asked for
(:meth:`Hooks.wants`), so telemetry off costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["HookKind", "Hooks", "Lifecycle"]

log = logging.getLogger("jobqueue.hooks")


class HookKind(StrEnum):
    """What happened."""

    SUBMITTED = "submitted"  #: job stored as pending
    STARTED = "started"  #: job claimed and its handler started (``wait_s`` set)
    #: job reached a terminal status (``status``, ``run_s``; ``wait_s`` if it ran here)
    FINISHED = "finished"
    #: job went back to pending for another attempt (``wait_s``, ``run_s`` of that run)
    RETRYING = "retrying"
    EVENT_CONSUMED = "event_consumed"  #: a consumer took an event (``wait_s`` = time in queue)


@dataclass(slots=True)
class Lifecycle:
    """One lifecycle record. Fields that do not apply to ``kind`` are ``None``.

    Not frozen (a frozen dataclass's ``__init__`` costs several times more, and
    records are built on every job's hot path); subscribers must not modify it.
    """

    kind: HookKind
    job_id: str | None = None
    handler: str | None = None
    status: str | None = None
    reason: str | None = None
    error_type: str | None = None
    wait_s: float | None = None
    run_s: float | None = None
    #: For a run that ended (``FINISHED``, ``RETRYING`` from the runner): the stored
    #: ``attempt`` of that run (earlier attempts that counted, from 0) and the
    #: job's ``max_retries``: it was attempt ``attempt + 1`` of ``max_retries + 1``.
    attempt: int | None = None
    max_retries: int | None = None
    #: The error message of a failed run (``FINISHED`` failed, ``RETRYING``).
    error: str | None = None


Subscriber = Callable[[Lifecycle], None]


class Hooks:
    """A tiny synchronous publish/subscribe bus.

    Subscribers may ask for some kinds only; emit sites test
    :meth:`wants` before building a record, so a kind nobody asked for costs
    one set lookup.
    """

    __slots__ = ("_subs", "_wanted", "on_change")

    def __init__(self) -> None:
        self._subs: tuple[tuple[Subscriber, frozenset[HookKind]], ...] = ()
        self._wanted: frozenset[HookKind] = frozenset()
        #: Called after the kinds wanted changed (a subscriber came or went).
        self.on_change: Callable[[], None] | None = None

    def __bool__(self) -> bool:
        return bool(self._subs)

    def wants(self, kind: HookKind) -> bool:
        """True if some subscriber receives records of ``kind``."""
        return kind in self._wanted

    def subscribe(
        self, fn: Subscriber, kinds: Iterable[HookKind] | None = None
    ) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it again.

        Args:
            fn: Called with each record, on the event-loop thread.
            kinds: The kinds ``fn`` receives (default: all).
        """
        entry = (fn, frozenset(HookKind) if kinds is None else frozenset(kinds))
        self._subs = (*self._subs, entry)
        self._rewant()

        def unsubscribe() -> None:
            self._subs = tuple(s for s in self._subs if s is not entry)
            self._rewant()

        return unsubscribe

    def _rewant(self) -> None:
        self._wanted = frozenset().union(*(kinds for _, kinds in self._subs))
        if self.on_change is not None:
            self.on_change()

    def emit(self, record: Lifecycle) -> None:
        """Deliver ``record`` to every subscriber of its kind; their errors are logged."""
        kind = record.kind
        for fn, kinds in self._subs:
            if kind in kinds:
                try:
                    fn(record)
                except Exception:
                    log.exception("lifecycle subscriber %r failed on %s", fn, kind)
