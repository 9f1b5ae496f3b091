"""Events a running job sends to its consumer, in Langflow's shapes.

Queue items are ``(event_id, data, put_time)`` as Langflow's: ``event_id`` is
``"<type>-<uuid4>"``, ``data`` is ``json.dumps({"event": type, "data": payload})
+ "\\n\\n"`` as UTF-8 bytes (byte for byte, ``json.dumps``' separators) and
``put_time`` is ``time.time()``; ``(None, None, put_time)`` ends the stream.
Each job's events are also numbered 1, 2, 3, ... (:attr:`Event.seq`, the
persisted log's ids): an :class:`EventQueue` keeps each item's number beside
it, so the Langflow item itself stays as Langflow makes it.

Full-queue policy of :class:`EventQueue` (bounded, 10,000 items by default):

* ``token`` events are coalesced into the newest queued token event (their
  ``chunk`` strings are joined), ``progress`` events replace the newest
  queued progress event: nothing is lost, the item count stays bounded;
* ``end``, ``error`` and the end sentinel are always admitted, so a consumer
  never hangs waiting for an end that was dropped;
* any other event raises :class:`EventQueueFull` from the synchronous
  ``send_event``; ``await manager.asend(...)`` (and ``ctx.emit``) instead
  waits for room, which applies back-pressure to the producer.

A queue whose events are also in the persisted event log (``backed``) never
coalesces: when it is full the live copy of a non-terminal event is dropped
(and counted), and ``service.events()`` reads it from the log instead, so
every event keeps its own id and nothing is lost or merged.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Protocol

from jobqueue import codec
from jobqueue.errors import EventCallbackError, EventError, JobQueueError, PayloadError
from jobqueue.ids import UUID4_MADE, uuid4_text
from jobqueue.status import TaskStatus

if TYPE_CHECKING:
    from jobqueue.store.eventlog import JobLog

__all__ = [
    "DEFAULT_EVENTS",
    "DEFAULT_QUEUE_SIZE",
    "STREAM_TOKENS_EVENTS",
    "Event",
    "EventCallback",
    "EventManager",
    "EventQueue",
    "EventQueueFull",
    "PartialEventCallback",
    "create_default_event_manager",
    "create_stream_tokens_event_manager",
    "decode_item",
    "end_stream_with",
    "final_event",
    "seq_of",
]

log = logging.getLogger("jobqueue.events")

DEFAULT_QUEUE_SIZE: Final = 10_000
#: Langflow's default events (in its order) plus ``on_progress``: attribute name -> event type.
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
TERMINAL_EVENTS: Final = frozenset({"end", "error"})
QueueItem = tuple[str | None, bytes | None, float]


class EventQueueFull(JobQueueError, asyncio.QueueFull):
    """A bounded event queue is full and the event cannot be coalesced."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event as a durable-layer consumer (``service.events()``) sees it.

    ``id`` is ``"<type>-<seq>"`` (the persisted log's id, what ``after=``
    takes); the Langflow queue item of the same event has a UUID instead.
    """

    id: str
    type: str
    data: Any
    put_time: float
    get_time: float
    #: The event's number within its job (1, 2, 3, ...; 0 when not known).
    seq: int = 0

    @property
    def time_in_queue(self) -> float:
        """Seconds the event waited in the queue (get - put)."""
        return self.get_time - self.put_time


def seq_of(event_id: str) -> int:
    """The sequence number at the end of an event id such as ``"token-42"``.

    Raises:
        ValueError: the id does not end with ``-<n>``.
    """
    return int(event_id.rpartition("-")[2])


def decode_item(
    item: QueueItem, get_time: float | None = None, seq: int | None = None
) -> Event | None:
    """Turn a queue item into an :class:`Event`; ``None`` for the end sentinel.

    With ``seq`` (what :attr:`EventQueue.taken_seq` says of the item just
    taken) the event's id is ``"<type>-<seq>"``; without it, the item's own id.
    """
    event_id, raw, put_time = item
    if event_id is None or raw is None:
        return None
    body = codec.decode(raw)
    event_type = body["event"]
    got = get_time or time.time()
    if seq is None:
        return Event(event_id, event_type, body["data"], put_time, got)
    return Event(f"{event_type}-{seq}", event_type, body["data"], put_time, got, seq)


class _NotKept:
    """An item whose data is not kept beside it: decode the item's bytes instead."""


NOT_KEPT: Final = _NotKept()


class Empty:
    """:meth:`EventQueue.take_event` found nothing queued."""


EMPTY: Final = Empty()
#: Characters after the event type in an item's id: ``"-"`` and a UUID.
_ID_TAIL: Final = 37


def _event(
    event_id: str, event_type: str, data: Any, put_time: float, get_time: float, seq: int
) -> Event:
    """``Event(...)``, each slot set once without the frozen dataclass's ``__init__``.

    That ``__init__`` goes through ``object.__setattr__`` for every field, which
    is most of what building an event costs on the consumer's side.
    """
    event = _new(Event)
    _set_id(event, event_id)
    _set_type(event, event_type)
    _set_data(event, data)
    _set_put(event, put_time)
    _set_get(event, get_time)
    _set_seq(event, seq)
    return event


_new = object.__new__
# The slots' own setters (``vars``: mypy sees the fields, not the slot descriptors).
_set_id, _set_type, _set_data, _set_put, _set_get, _set_seq = (
    vars(Event)[name].__set__ for name in ("id", "type", "data", "put_time", "get_time", "seq")
)


class EventQueue(asyncio.Queue[QueueItem]):
    """A bounded ``asyncio.Queue`` with the coalescing policy described above."""

    def __init__(self, maxsize: int = DEFAULT_QUEUE_SIZE) -> None:
        super().__init__(maxsize)
        # Forced items (end, error, the sentinel) may take the queue past its bound: >=.
        self._limit = maxsize if maxsize > 0 else sys.maxsize
        self._force = 0
        # Event type and data of the newest item, for coalescing (no type: none to merge).
        self._tail_type: str | None = None
        self._tail_data: Any = None
        self.ended = False  # the end sentinel was put
        self.sentinel_taken = False  # ... and a consumer took it
        self.on_consume: Callable[[float], None] | None = None
        self.coalesced = 0
        #: The events are also in the persisted log: when full, drop instead of coalescing.
        self.backed = False
        self.dropped = 0
        #: A durable stream (``service.events()``) reads this queue: from now on each
        #: event's data is kept beside its item (a copy taken at send), not decoded again.
        self.keep = False

    def _init(self, maxsize: int) -> None:
        self._queue: collections.deque[QueueItem] = collections.deque()
        # Monotonic put stamps beside the items (whose put_time is wall-clock, as
        # Langflow's are): time in queue must not jump with the wall clock.
        self._stamps: collections.deque[float] = collections.deque()
        self._taken_stamp = 0.0
        # Each item's event seq (0: put without one) and its data (a copy taken when it
        # was sent and checked, when decoding the item would give exactly that; NOT_KEPT:
        # decode the item) beside it, so the item keeps Langflow's shape while the
        # durable stream knows the event's number and does not decode what this process
        # has just encoded. Deques of their own, not a tuple per item: nothing more for
        # the GC to track.
        self._seqs: collections.deque[int] = collections.deque()
        self._kept: collections.deque[Any] = collections.deque()
        self._seq_in = 0  # the seq of the item being put (set by the manager)
        self._kept_in: Any = NOT_KEPT  # ... and its data, as a consumer may have it
        #: The seq of the item taken last (read it right after ``get``/``get_nowait``).
        self.taken_seq = 0
        self._taken_data: Any = NOT_KEPT

    def _put(self, item: QueueItem) -> None:
        self._queue.append(item)
        self._stamps.append(time.monotonic())
        self._seqs.append(self._seq_in)
        self._kept.append(self._kept_in)
        self._seq_in = 0
        self._kept_in = NOT_KEPT

    def _get(self) -> QueueItem:
        self._taken_stamp = self._stamps.popleft()
        self.taken_seq = self._seqs.popleft()
        self._taken_data = self._kept.popleft()
        return self._queue.popleft()

    def take_event(self) -> Event | Empty | None:
        """``get_nowait()`` and :meth:`event` in one step: the next event.

        ``None`` for the end sentinel; :data:`EMPTY` when nothing is queued
        (then ``await get()``). What the durable stream calls for each event it
        yields, so the common case costs one call.
        """
        queue = self._queue
        if not queue:
            return EMPTY
        item = queue.popleft()
        stamp = self._stamps.popleft()
        seq = self.taken_seq = self._seqs.popleft()
        data = self._kept.popleft()
        putters = self._putters
        if putters:  # as get_nowait(): room for a producer waiting in put()
            self._wakeup_next(putters)
        if not queue:
            self._tail_type = None
        event_id = item[0]
        if event_id is None:
            self.sentinel_taken = True
            return None
        if self.on_consume is not None:
            self.on_consume(time.monotonic() - stamp)
        if data is NOT_KEPT or not seq:
            return decode_item(item, None, seq or None)
        event_type = event_id[:-_ID_TAIL]  # "<type>-<uuid4>"
        event = _new(Event)  # Event(...) without the frozen dataclass's __init__ (see _event)
        _set_id(event, f"{event_type}-{seq}")
        _set_type(event, event_type)
        _set_data(event, data)
        _set_put(event, item[2])
        _set_get(event, time.time())
        _set_seq(event, seq)
        return event

    def event(self, item: QueueItem, get_time: float | None = None) -> Event | None:
        """The :class:`Event` of the item just taken (``None`` for the end sentinel).

        Call it right after ``get``/``get_nowait`` returned ``item``: its id is
        ``"<type>-<seq>"``, and its data is what was kept beside it when it was
        sent, else what the item's bytes decode to.
        """
        data = self._taken_data
        seq = self.taken_seq
        event_id = item[0]
        if data is NOT_KEPT or not seq or event_id is None:
            return decode_item(item, get_time, seq or None)
        event_type = event_id[:-_ID_TAIL]  # "<type>-<uuid4>"
        return _event(
            f"{event_type}-{seq}", event_type, data, item[2], get_time or time.time(), seq
        )

    def _append(self, item: QueueItem, seq: int, kept: Any) -> None:
        """``put_nowait(item)`` of a non-terminal event when there is room, in one call.

        What asyncio's ``put_nowait`` and :meth:`_put` do, inline: this is the
        hot path of every event.
        """
        if self._is_shutdown:  # Python 3.13: let asyncio raise QueueShutDown
            super().put_nowait(item)
        self._queue.append(item)
        self._stamps.append(time.monotonic())
        self._seqs.append(seq)
        self._kept.append(kept)
        if not self._unfinished_tasks:  # else it is cleared already (join() waits)
            self._finished.clear()
        self._unfinished_tasks += 1
        getters = self._getters
        if getters:
            self._wakeup_next(getters)

    #: Python 3.13's asyncio.Queue sets its own; before, a queue is never shut down.
    _is_shutdown = False
    # asyncio.Queue's own state, which the inline put and take use (set by its __init__).
    _unfinished_tasks: int
    _finished: asyncio.Event
    _getters: collections.deque[asyncio.Future[None]]
    _putters: collections.deque[asyncio.Future[None]]
    _wakeup_next: Callable[[collections.deque[asyncio.Future[None]]], None]

    def full(self) -> bool:
        """Full, unless a terminal item is being forced in."""
        return self._force == 0 and len(self._queue) >= self._limit

    def has_room(self) -> bool:
        """A non-terminal item can be put now without waiting or coalescing."""
        return len(self._queue) < self._limit

    def put_nowait(self, item: QueueItem) -> None:
        """Put an item; the end sentinel is always admitted."""
        if item[0] is None:
            self.ended = True
            self._force_put(item)
            return
        super().put_nowait(item)
        self._tail_type = None

    def get_nowait(self) -> QueueItem:
        """Take an item and report its time in queue to ``on_consume``."""
        item = super().get_nowait()
        if not self._queue:
            self._tail_type = None
        if item[0] is None:
            self.sentinel_taken = True
        elif self.on_consume is not None:
            self.on_consume(time.monotonic() - self._taken_stamp)
        return item

    def _force_put(self, item: QueueItem) -> None:
        self._force += 1
        try:
            super().put_nowait(item)
        finally:
            self._force -= 1
        self._tail_type = None

    def offer(
        self, event_type: str, data: Any, item: QueueItem, seq: int = 0, kept: Any = NOT_KEPT
    ) -> None:
        """Put event number ``seq``'s item applying the full-queue policy.

        ``kept``: the event's data as decoding ``item`` would give it, or :data:`NOT_KEPT`.
        """
        self._seq_in = seq
        self._kept_in = kept
        if event_type in TERMINAL_EVENTS:
            self._force_put(item)
            return
        if len(self._queue) < self._limit:
            self._append(item, seq, kept)
            self._tail_type, self._tail_data = event_type, data
            return
        self._seq_in = 0
        self._kept_in = NOT_KEPT
        if self.backed:  # the log holds it; a merge would give two events one id
            self.dropped += 1
            return
        tail = None if self._tail_type is None else (self._tail_type, self._tail_data)
        merged = _coalesce(tail, event_type, data)
        if merged is None:
            raise EventQueueFull(
                f"event queue is full ({self.maxsize} items) and a {event_type!r} event cannot "
                "be coalesced; the consumer is too slow. Use `await manager.asend(...)` "
                "(or ctx.emit) to wait for room, or raise queue_size."
            )
        old_id, _, put_time = self._queue[-1]
        _, raw, plain = _encode(event_type, merged)
        self._queue[-1] = (old_id, raw, put_time)
        self._kept[-1] = _kept(self, merged, plain)
        self._tail_type, self._tail_data = event_type, merged
        self.coalesced += 1


def _coalesce(tail: tuple[str, Any] | None, event_type: str, data: Any) -> Any:
    if tail is None or tail[0] != event_type:
        return None
    old = tail[1]
    if event_type == "progress":
        return data
    if (
        event_type == "token"
        and isinstance(old, dict)
        and isinstance(data, dict)
        and isinstance(old.get("chunk"), str)
        and isinstance(data.get("chunk"), str)
    ):
        return {**old, **data, "chunk": old["chunk"] + data["chunk"]}
    return None


def _encode(event_type: str, data: Any) -> tuple[str, bytes, bool]:
    """``(data JSON, queue bytes, plain)``, bytes as ``json.dumps({"event": .., "data": ..})``.

    ``plain``: decoding the bytes would give ``data`` back exactly (a plain
    value, or a flat dict of plain values), so a copy of it, taken now, can be
    kept beside the item for a consumer in this process (see :func:`_kept`).
    """
    try:
        text, plain = codec.encode_plain(data, "event data", spaced=True)
    except PayloadError:  # again, to name the event in the message (the rare path)
        text, plain = codec.encode_plain(data, f"{event_type!r} event", spaced=True)
    # Built around the data text so the log stores it without a second encoding.
    if type(event_type) is not str:
        raise EventError(
            f"an event type must be a string such as 'token' or 'progress', got "
            f"{type(event_type).__name__} {event_type!r}"
        )
    return text, f'{{"event": {_head(event_type)}, "data": {text}}}\n\n'.encode(), plain


def _kept(queue: asyncio.Queue[Any] | None, data: Any, plain: bool) -> Any:
    """The data to keep beside an item: only for a queue a durable stream reads."""
    if plain and isinstance(queue, EventQueue) and queue.keep:
        return data.copy() if type(data) is dict else data
    return NOT_KEPT


#: Longest event type accepted; types name kinds of events, not carry data.
MAX_EVENT_TYPE = 200
#: The parameters a ``register_event`` callback takes (Langflow's ``_validate_callback``).
_CALLBACK_PARAMS: Final = frozenset({"manager", "event_type", "data"})


@functools.lru_cache(maxsize=256)
def _head(event_type: str) -> str:
    """The checked, encoded event type; a job emits few distinct types, many times each."""
    if not event_type or len(event_type) > MAX_EVENT_TYPE:
        raise EventError(
            f"an event type must be 1 to {MAX_EVENT_TYPE} characters, got {len(event_type)}"
        )
    try:
        event_type.encode("utf-8")
    except UnicodeEncodeError:
        raise EventError(
            f"event type {event_type!r} is not valid text (a lone surrogate?); "
            "use plain names such as 'token'"
        ) from None
    if not event_type.isprintable():
        raise EventError(f"event type {event_type!r} holds control characters; use a plain name")
    return codec.encode(event_type, "event type")


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
        text, raw, plain = _encode(event_type, data)
        kept = _kept(self.queue, data, plain)  # now, in the caller's thread
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
        text, raw, plain = _encode(event_type, data)
        queue = self.queue
        sink = self._log
        if sink is not None and self._logging:
            kept = _kept(queue, data, plain)
            self._put(event_type, data, text, raw, kept)
            limit = queue.maxsize if queue is not None and queue.maxsize > 0 else DEFAULT_QUEUE_SIZE
            if sink.inflight >= limit:
                await sink.flush()
            return
        if queue is None or event_type in TERMINAL_EVENTS:
            self._put(event_type, data, text, raw, _kept(queue, data, plain))
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
            kept = _kept(queue, data, plain)
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
