"""Events a running job sends to its consumer, in Langflow's shapes.

Queue items are ``(event_id, data, put_time)`` as Langflow's: ``event_id`` is
``"<type>-<uuid4>"``, ``data`` is ``json.dumps({"event": type, "data": payload})
+ "\\n\\n"`` as UTF-8 bytes (byte for byte, ``json.dumps``' separators) and
``put_time`` is ``time.time()``; ``(None, None, put_time)`` ends the stream.
Each job's events are also numbered 1, 2, 3, ... (:attr:`Event.seq`, the
persisted log's ids): an :class:`EventQueue` keeps each item's number beside
it, so the Langflow item itself stays as Langflow makes it.

The queue and its full-queue policy are in :mod:`jobqueue.events.queue`, the
items and :class:`Event` in :mod:`jobqueue.events.items`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol

from jobqueue.errors import EventCallbackError, EventError
from jobqueue.events.items import (
    DEFAULT_QUEUE_SIZE,
    EMPTY,
    NOT_KEPT,
    TERMINAL_EVENTS,
    Empty,
    Event,
    EventQueueFull,
    QueueItem,
    decode_item,
    encode_event,
    seq_of,
)
from jobqueue.events.queue import EventQueue, kept_data
from jobqueue.ids import UUID4_MADE, uuid4_text
from jobqueue.status import TaskStatus

if TYPE_CHECKING:
    from jobqueue.store.eventlog import JobLog

# Re-exported: the names Langflow's event module has, and what the stream reads.
__all__ = [
    "DEFAULT_EVENTS",
    "DEFAULT_QUEUE_SIZE",
    "EMPTY",
    "STREAM_TOKENS_EVENTS",
    "TERMINAL_EVENTS",
    "Empty",
    "Event",
    "EventCallback",
    "EventManager",
    "EventQueue",
    "EventQueueFull",
    "PartialEventCallback",
    "QueueItem",
    "create_default_event_manager",
    "create_stream_tokens_event_manager",
    "decode_item",
    "end_stream_with",
    "final_event",
    "seq_of",
]

log = logging.getLogger("jobqueue.events")

DEFAULT_EVENTS: Final[dict[str, str]] = {
    "on_token": "token",
    "on_vertices_sorted": "vertices_sorted",
    "on_error": "error",
    "on_end": "end",
    "on_message": "add_message",
    "on_remove_message": "remove_message",
    "on_end_vertex": "end_vertex",
    "on_build_start": "build_start",
    "on_build_end": "build_end",
    "on_log": "log",
    "on_progress": "progress",
}
#: The events of Langflow's token-streaming manager, in its order.
STREAM_TOKENS_EVENTS: Final[dict[str, str]] = {
    "on_message": "add_message",
    "on_token": "token",
    "on_end": "end",
    "on_end_vertex": "end_vertex",
    "on_error": "error",
    "on_build_start": "build_start",
    "on_build_end": "build_end",
    "on_log": "log",
}
#: The parameters a ``register_event`` callback takes (Langflow's ``_validate_callback``).
_CALLBACK_PARAMS: Final = frozenset({"manager", "event_type", "data"})


class EventCallback(Protocol):
    """A callback given to ``register_event``: called with the manager, the type and the data."""

    def __call__(self, *, manager: EventManager, event_type: str, data: Any) -> None: ...


class PartialEventCallback(Protocol):
    """What ``manager.on_token`` and friends are: call with ``data=...``."""

    def __call__(self, *, data: Any) -> None: ...


class EventManager:
    """Registers named events and puts their items on a job's queue.

    As Langflow's: ``register_event`` takes any callback (it is called with
    ``manager=``, ``event_type=`` and ``data=``; nothing checks its signature
    until it is called), ``manager.<unknown name>`` is :meth:`noop`, and an
    error from a foreign queue's ``put_nowait`` is logged and the event dropped.

    Args:
        queue: the job's queue (an :class:`EventQueue` gets the full-queue policy).
        strict: unknown names raise ``AttributeError`` instead of being a
            no-op that logs one warning per name.
    """

    def __init__(self, queue: asyncio.Queue[Any] | None, *, strict: bool = False) -> None:
        self.queue = queue
        self.events: dict[str, PartialEventCallback] = {}
        self.strict = strict
        self._warned: set[str] = set()
        self._seq = 0
        self._log: JobLog | None = None  # kept after the end, for flush()
        self._logging = False
        #: Called once when the end sentinel is put (the registry forgets logged entries).
        self.end_hook: Callable[[], None] | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._thread = threading.get_ident()

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest event put (event ids end with it)."""
        return self._seq

    @property
    def log(self) -> JobLog | None:
        """The persisted log events are (or were, until the end) also appended to."""
        return self._log

    @property
    def logging(self) -> bool:
        """Events are also appended to the persisted log (ids are then log seqs)."""
        return self._logging

    def attach_log(self, sink: JobLog, last_seq: int) -> None:
        """Also write every later event to ``sink``, numbering on from ``last_seq``.

        Called before each run of a durable job; ``last_seq`` is the job's
        highest persisted seq, so ids continue across runs and processes.
        """
        self._seq = max(self._seq, last_seq)
        self._log, self._logging = sink, True
        if isinstance(self.queue, EventQueue):
            self.queue.backed = True

    async def flush(self) -> None:
        """Return once every event sent so far is in the persisted log (no-op without it)."""
        if self._log is not None:
            await self._log.flush()

    @staticmethod
    def _validate_callback(callback: Any) -> None:
        """Check a callback's shape as Langflow does: exactly ``manager, event_type, data``.

        ``register_event`` does not call it (nor does Langflow's): a callback is
        taken as given.

        Raises:
            EventCallbackError: (a ``TypeError``) ``callback`` is not callable.
            EventError: (a ``ValueError``) it does not take exactly those three parameters.
        """
        if not callable(callback):
            raise EventCallbackError("Callback must be callable")
        params = inspect.signature(callback).parameters
        if len(params) != len(_CALLBACK_PARAMS) or not _CALLBACK_PARAMS.issuperset(params):
            raise EventError(
                "Callback must have exactly 3 parameters: manager, event_type, and data"
            )

    def register_event(
        self, name: str, event_type: str, callback: EventCallback | None = None
    ) -> None:
        """Register ``name`` (``on_*``) so ``manager.<name>(data=...)`` sends ``event_type``.

        With ``callback``, ``manager.<name>(data=d)`` calls
        ``callback(manager=self, event_type=event_type, data=d)`` instead.

        Raises:
            EventError: (a ``ValueError``) the name is empty or does not start with ``on_``.
        """
        if not name:
            raise EventError("Event name cannot be empty")
        if not name.startswith("on_"):
            raise EventError(f"Event name must start with 'on_', got {name!r}")
        if callback is None:
            self.events[name] = partial(self.send_event, event_type=event_type)
        else:
            self.events[name] = partial(callback, manager=self, event_type=event_type)

    def send_event(self, *, event_type: str, data: Any) -> None:
        """Put one event on the queue. Safe to call from any thread.

        A queue that is not an :class:`EventQueue` gets the item with its own
        ``put_nowait``; if that raises (``QueueFull`` or anything else), the
        error is logged and the event dropped, as Langflow does.

        Raises:
            PayloadError: ``data`` is not JSON.
            EventQueueFull: the :class:`EventQueue` is full and the event cannot be coalesced.
        """
        # Validate in the caller's thread: errors surface there.
        text, raw, plain = encode_event(event_type, data)
        kept = kept_data(self.queue, data, plain)  # now, in the caller's thread
        loop = self._loop
        if loop is not None and threading.get_ident() != self._thread and not loop.is_closed():
            loop.call_soon_threadsafe(self._put, event_type, data, text, raw, kept)
        else:
            self._put(event_type, data, text, raw, kept)

    async def asend(self, event_type: str, data: Any) -> None:
        """Put one event, waiting for room when the queue is full (back-pressure).

        With the persisted log the log is the buffer: this waits while too many
        of the job's events are not committed yet, never for a slow consumer.
        """
        text, raw, plain = encode_event(event_type, data)
        queue = self.queue
        sink = self._log
        if sink is not None and self._logging:
            kept = kept_data(queue, data, plain)
            self._put(event_type, data, text, raw, kept)
            limit = queue.maxsize if queue is not None and queue.maxsize > 0 else DEFAULT_QUEUE_SIZE
            if sink.inflight >= limit:
                await sink.flush()
            return
        if queue is None or event_type in TERMINAL_EVENTS:
            self._put(event_type, data, text, raw, kept_data(queue, data, plain))
            return
        self._seq += 1
        try:
            uid = UUID4_MADE.pop()
        except IndexError:
            uid = uuid4_text()
        item = (f"{event_type}-{uid}", raw, time.time())
        if not isinstance(queue, EventQueue):
            await queue.put(item)
        elif queue.has_room():  # no coroutine to build and run: the common case
            kept = NOT_KEPT
            if plain and queue.keep:
                kept = data.copy() if type(data) is dict else data
            queue._append(item, self._seq, kept)
            queue._tail_type = None
        else:
            # asyncio.Queue.put waits (without polling) until a get() makes room,
            # then puts with nothing run in between: the newest item is this one.
            seq = self._seq
            kept = kept_data(queue, data, plain)
            await queue.put(item)
            queue._seqs[-1] = seq
            queue._kept[-1] = kept

    def _put(self, event_type: str, data: Any, text: str, raw: bytes, kept: Any = NOT_KEPT) -> None:
        queue = self.queue
        if queue is None:
            return
        self._seq += 1
        now = time.time()
        try:  # uuid4_text() inlined: this is the hot path of every event
            uid = UUID4_MADE.pop()
        except IndexError:
            uid = uuid4_text()
        item: QueueItem = (f"{event_type}-{uid}", raw, now)
        sink = self._log
        if self._logging and sink is not None:
            sink.append(self._seq, event_type, text, now)
        if isinstance(queue, EventQueue):
            queue.offer(event_type, data, item, self._seq, kept)
            return
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("event queue full; dropping a %r event", event_type)
        except Exception:
            log.error("the event queue refused a %r event; dropped", event_type, exc_info=True)

    def end_stream(self) -> None:
        """Put the end sentinel ``(None, None, t)`` once; later calls do nothing.

        The persisted log, if any, takes no events after this.
        """
        q = self.queue
        if q is None or (isinstance(q, EventQueue) and q.ended):
            return
        q.put_nowait((None, None, time.time()))
        self._logging = False
        hook, self.end_hook = self.end_hook, None
        if hook is not None:
            hook()

    def noop(self, *, data: Any) -> None:
        """What an unknown name does outside strict mode (``manager.on_typo(data=...)``)."""

    def __getattr__(self, name: str) -> PartialEventCallback:
        events = self.__dict__.get("events")
        if events is not None and name in events:
            return events[name]  # type: ignore[no-any-return]
        if events is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)  # copy, pickle and friends probe these
        if self.strict:
            raise AttributeError(
                f"unknown event {name!r}; known events: {', '.join(sorted(events))}. "
                "Register it with register_event()."
            )
        if name not in self._warned:
            self._warned.add(name)
            log.warning(
                "unknown event %r ignored (known: %s); register it or fix the name",
                name,
                ", ".join(sorted(events)),
            )
        return self.noop


def create_default_event_manager(
    queue: asyncio.Queue[Any] | None = None, *, strict: bool = False
) -> EventManager:
    """An :class:`EventManager` with Langflow's default events and ``on_progress``."""
    manager = EventManager(queue, strict=strict)
    for name, event_type in DEFAULT_EVENTS.items():
        manager.register_event(name, event_type)
    return manager


def create_stream_tokens_event_manager(
    queue: asyncio.Queue[Any] | None = None, *, strict: bool = False
) -> EventManager:
    """An :class:`EventManager` with Langflow's token-streaming events, in its order."""
    manager = EventManager(queue, strict=strict)
    for name, event_type in STREAM_TOKENS_EVENTS.items():
        manager.register_event(name, event_type)
    return manager


def final_event(
    status: TaskStatus, result: Any, error: str | None, reason: str | None
) -> tuple[str, dict[str, Any]]:
    """``(type, data)`` of a job's terminal event: ``error`` for a failure, else ``end``."""
    if status is TaskStatus.FAILED:
        return "error", {"status": status.value, "error": error, "reason": reason}
    data: dict[str, Any] = {"status": status.value}
    if status is TaskStatus.COMPLETED:
        data["result"] = result
    elif reason:
        data["reason"] = reason
    return "end", data


def end_stream_with(
    manager: EventManager, status: TaskStatus, result: Any, error: str | None, reason: str | None
) -> None:
    """Put a job's terminal event and the end sentinel on its manager's queue."""
    event_type, data = final_event(status, result, error, reason)
    manager.send_event(event_type=event_type, data=data)
    manager.end_stream()
