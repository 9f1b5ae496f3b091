"""A job's bounded event queue.

Full-queue policy of this queue (bounded, 10,000 items by default):

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
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

# The slot setters too: take_event builds an Event inline, its hottest path.
from jobqueue.events.items import (
    _ID_TAIL,
    DEFAULT_QUEUE_SIZE,
    EMPTY,
    NOT_KEPT,
    TERMINAL_EVENTS,
    Empty,
    Event,
    EventQueueFull,
    QueueItem,
    _new,
    _set_data,
    _set_get,
    _set_id,
    _set_put,
    _set_seq,
    _set_type,
    decode_item,
    encode_event,
    make_event,
)

if TYPE_CHECKING:
    pass

__all__ = ["EventQueue", "kept_data"]


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
        # Merges into the newest item are noted, not encoded: it is encoded once, when it
        # is taken or another item follows it (else a stalled consumer costs each token
        # the whole growing chunk: quadratic). _chunks: the token chunks to join then.
        self._dirty = False
        self._chunks: list[str] = []
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
        if self._dirty:
            self._settle()
        self._queue.append(item)
        self._stamps.append(time.monotonic())
        self._seqs.append(self._seq_in)
        self._kept.append(self._kept_in)
        self._seq_in = 0
        self._kept_in = NOT_KEPT

    def _get(self) -> QueueItem:
        if self._dirty and len(self._queue) == 1:
            self._settle()
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
        if self._dirty and len(queue) == 1:
            self._settle()
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
        event = _new(Event)  # Event(...) without the frozen dataclass's __init__ (see make_event)
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
        return make_event(
            f"{event_type}-{seq}", event_type, data, item[2], get_time or time.time(), seq
        )

    def _append(self, item: QueueItem, seq: int, kept: Any) -> None:
        """``put_nowait(item)`` of a non-terminal event when there is room, in one call.

        What asyncio's ``put_nowait`` and :meth:`_put` do, inline: this is the
        hot path of every event.
        """
        if self._is_shutdown:  # Python 3.13: let asyncio raise QueueShutDown
            super().put_nowait(item)
        if self._dirty:
            self._settle()
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
        if not self._merge(event_type, data):
            raise EventQueueFull(
                f"event queue is full ({self.maxsize} items) and a {event_type!r} event cannot "
                "be coalesced; the consumer is too slow. Use `await manager.asend(...)` "
                "(or ctx.emit) to wait for room, or raise queue_size."
            )
        self.coalesced += 1

    def _merge(self, event_type: str, data: Any) -> bool:
        """Note ``data`` merged into the newest item (encoded later, by :meth:`_settle`)."""
        old = self._tail_data
        if self._tail_type != event_type:
            return False
        if event_type == "progress":
            self._tail_data = data  # the newest progress replaces the queued one
            self._chunks = []
        elif (
            event_type == "token"
            and isinstance(old, dict)
            and isinstance(data, dict)
            and isinstance(old.get("chunk"), str)
            and isinstance(data.get("chunk"), str)
        ):
            if not self._chunks:
                self._chunks.append(old["chunk"])
            self._chunks.append(data["chunk"])
            self._tail_data = {**old, **data}  # its "chunk" is set from _chunks when settled
        else:
            return False
        self._dirty = True
        return True

    def _settle(self) -> None:
        """Encode the newest item once, with every merge noted since it was put."""
        self._dirty = False
        data = self._tail_data
        if self._chunks:
            data = self._tail_data = {**data, "chunk": "".join(self._chunks)}
            self._chunks = []
        assert self._tail_type is not None  # a merge needs one
        old_id, _, put_time = self._queue[-1]
        _, raw, plain = encode_event(self._tail_type, data)
        self._queue[-1] = (old_id, raw, put_time)
        self._kept[-1] = kept_data(self, data, plain)


def kept_data(queue: asyncio.Queue[Any] | None, data: Any, plain: bool) -> Any:
    """The data to keep beside an item: only for a queue a durable stream reads."""
    if plain and isinstance(queue, EventQueue) and queue.keep:
        return data.copy() if type(data) is dict else data
    return NOT_KEPT
