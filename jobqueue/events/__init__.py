"""Events a running job sends to its consumers, in Langflow's shapes.

:mod:`jobqueue.events.manager` holds the queue and the manager,
:mod:`jobqueue.events.registry` the per-job queues of one service and
:mod:`jobqueue.events.stream` the reader behind ``service.events()``.
"""

from __future__ import annotations

from jobqueue.events.manager import (
    DEFAULT_EVENTS,
    DEFAULT_QUEUE_SIZE,
    STREAM_TOKENS_EVENTS,
    TERMINAL_EVENTS,
    Event,
    EventCallback,
    EventManager,
    EventQueue,
    EventQueueFull,
    PartialEventCallback,
    create_default_event_manager,
    create_stream_tokens_event_manager,
    decode_item,
    seq_of,
)

__all__ = [
    "DEFAULT_EVENTS",
    "DEFAULT_QUEUE_SIZE",
    "STREAM_TOKENS_EVENTS",
    "TERMINAL_EVENTS",
    "Event",
    "EventCallback",
    "EventManager",
    "EventQueue",
    "EventQueueFull",
    "PartialEventCallback",
    "create_default_event_manager",
    "create_stream_tokens_event_manager",
    "decode_item",
    "seq_of",
]
