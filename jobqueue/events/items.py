"""A job's events as values: queue items in Langflow's shapes, and :class:`Event`.

Queue items are ``(event_id, data, put_time)`` as Langflow's: ``event_id`` is
``"<type>-<uuid4>"``, ``data`` is ``json.dumps({"event": type, "data": payload})
+ "\\n\\n"`` as UTF-8 bytes (byte for byte, ``json.dumps``' separators) and
``put_time`` is ``time.time()``; ``(None, None, put_time)`` ends the stream.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import Any, Final

from jobqueue import codec
from jobqueue.errors import EventError, JobQueueError, PayloadError

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "EMPTY",
    "MAX_EVENT_TYPE",
    "NOT_KEPT",
    "TERMINAL_EVENTS",
    "Empty",
    "Event",
    "EventQueueFull",
    "QueueItem",
    "decode_item",
    "encode_event",
    "make_event",
    "seq_of",
]

DEFAULT_QUEUE_SIZE: Final = 10_000
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


def make_event(
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


def encode_event(event_type: str, data: Any) -> tuple[str, bytes, bool]:
    """``(data JSON, queue bytes, plain)``, bytes as ``json.dumps({"event": .., "data": ..})``.

    ``plain``: decoding the bytes would give ``data`` back exactly (a plain
    value, or a flat dict of plain values), so a copy of it, taken now, can be
    kept beside the item for a consumer in this process (see ``EventQueue.keep``).
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
    return text, f'{{"event": {event_head(event_type)}, "data": {text}}}\n\n'.encode(), plain


#: Longest event type accepted; types name kinds of events, not carry data.
MAX_EVENT_TYPE = 200


@functools.lru_cache(maxsize=256)
def event_head(event_type: str) -> str:
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
