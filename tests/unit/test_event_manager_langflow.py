"""EventManager as Langflow 1.13's: callbacks, unknown names, foreign queues, ids and bytes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from jobqueue import ids
from jobqueue.errors import EventCallbackError, EventError
from jobqueue.events import (
    DEFAULT_EVENTS,
    STREAM_TOKENS_EVENTS,
    EventManager,
    EventQueue,
    create_default_event_manager,
    create_stream_tokens_event_manager,
    decode_item,
)

ROOT = Path(__file__).resolve().parents[2]
LANGFLOW_DEFAULT_ORDER = [
    "on_token",
    "on_vertices_sorted",
    "on_error",
    "on_end",
    "on_message",
    "on_remove_message",
    "on_end_vertex",
    "on_build_start",
    "on_build_end",
    "on_log",
]


class ListQueue:
    """A foreign queue: anything with ``put_nowait``."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def put_nowait(self, item: tuple[Any, ...]) -> None:
        self.items.append(item)


def test_register_event_takes_any_callback() -> None:
    em = EventManager(None)

    def two(event_type: str, data: Any) -> None: ...

    async def coro(event_type: str, data: Any) -> None: ...

    em.register_event("on_two", "t", two)  # type: ignore[arg-type]
    em.register_event("on_coro", "t", coro)  # type: ignore[arg-type]
    em.register_event("on_noop", "t", em.noop)  # type: ignore[arg-type]
    assert em.events["on_two"].func is two  # type: ignore[attr-defined]
    assert em.on_coro.func is coro  # type: ignore[attr-defined]
    assert em.events["on_noop"].keywords == {"manager": em, "event_type": "t"}  # type: ignore[attr-defined]
    with pytest.raises(EventError, match="Event name cannot be empty"):
        em.register_event("", "t")
    with pytest.raises(ValueError, match="Event name must start with 'on_'"):
        em.register_event("token", "t")


def test_validate_callback_as_langflow() -> None:
    with pytest.raises(TypeError, match=r"^Callback must be callable$") as ei:
        EventManager._validate_callback("nope")
    assert isinstance(ei.value, EventCallbackError)
    assert not isinstance(ei.value, ValueError)  # as Langflow's plain TypeError
    message = "^Callback must have exactly 3 parameters: manager, event_type, and data$"
    for bad in (
        lambda manager, event_type: None,
        lambda manager, event_type, data, extra: None,
        lambda manager, kind, data: None,
        lambda **kwargs: None,
    ):
        with pytest.raises(ValueError, match=message):
            EventManager._validate_callback(bad)
    EventManager._validate_callback(lambda data, manager, event_type: None)


def test_unknown_names_are_noop(caplog: pytest.LogCaptureFixture) -> None:
    em = create_default_event_manager(ListQueue())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="jobqueue.events"):
        assert em.some_name == em.noop
        assert em.on_missing.__name__ == "noop"
        em.some_name(data=1)
    assert len(caplog.records) == 2  # one warning per name
    with pytest.raises(AttributeError):
        em.__wrapped__  # noqa: B018
    strict = EventManager(None, strict=True)
    with pytest.raises(AttributeError, match="unknown event 'some_name'"):
        strict.some_name  # noqa: B018


def test_foreign_queue_errors_are_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def put_nowait(self, item: Any) -> None:
            raise RuntimeError("queue error")

    em = EventManager(Broken())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="jobqueue.events"):
        em.send_event(event_type="x", data={"a": 1})  # does not raise
    assert "refused" in caplog.records[-1].getMessage()
    assert caplog.records[-1].exc_info is not None
    full: asyncio.Queue[Any] = asyncio.Queue(1)
    em = EventManager(full)
    em.send_event(event_type="x", data=1)
    with caplog.at_level(logging.WARNING, logger="jobqueue.events"):
        em.send_event(event_type="x", data=2)  # QueueFull: dropped with a warning
    assert full.qsize() == 1
    assert "full" in caplog.records[-1].getMessage()


def test_own_queue_still_raises_when_full() -> None:
    em = create_default_event_manager(EventQueue(1))
    em.on_message(data=1)
    with pytest.raises(asyncio.QueueFull):
        em.on_message(data=2)


def test_items_are_langflow_bytes_with_uuid4_ids() -> None:
    queue = ListQueue()
    em = EventManager(queue)  # type: ignore[arg-type]
    data = {"text": "h\u00e9llo", "n": [1, 2.5, None, True], "nested": {"k": "v"}}
    em.send_event(event_type="add_message", data=data)
    em.send_event(event_type="add_message", data=data)
    (id1, raw, put_time), (id2, _, _) = queue.items
    assert raw == (json.dumps({"event": "add_message", "data": data}) + "\n\n").encode("utf-8")
    assert isinstance(put_time, float)
    for event_id in (id1, id2):
        kind, _, rest = event_id.partition("-")
        assert kind == "add_message"
        parsed = uuid.UUID(rest)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == rest
    assert id1 != id2
    assert em.last_seq == 2


async def test_event_queue_keeps_each_items_seq() -> None:
    queue = EventQueue()
    em = create_default_event_manager(queue)
    em.on_token(data={"chunk": "a"})
    await em.asend("progress", {"done": 1})
    em.on_end(data={})
    seen = []
    for _ in range(3):
        event = decode_item(queue.get_nowait(), seq=queue.taken_seq)
        assert event is not None
        seen.append((event.id, event.seq))
    assert seen == [("token-1", 1), ("progress-2", 2), ("end-3", 3)]


async def test_asend_waiting_for_room_keeps_the_seq() -> None:
    queue = EventQueue(1)
    em = EventManager(queue)
    em.send_event(event_type="a", data=1)
    sender = asyncio.create_task(em.asend("b", 2))
    await asyncio.sleep(0.01)
    queue.get_nowait()
    await asyncio.wait_for(sender, 5)
    queue.get_nowait()
    assert queue.taken_seq == 2


def test_factories() -> None:
    default = create_default_event_manager()
    assert default.queue is None
    assert list(default.events)[:10] == LANGFLOW_DEFAULT_ORDER
    assert list(default.events)[10:] == ["on_progress"]
    assert DEFAULT_EVENTS["on_log"] == "log"
    stream = create_stream_tokens_event_manager(ListQueue())  # type: ignore[arg-type]
    assert list(stream.events) == [
        "on_message",
        "on_token",
        "on_end",
        "on_end_vertex",
        "on_error",
        "on_build_start",
        "on_build_end",
        "on_log",
    ]
    assert dict(STREAM_TOKENS_EVENTS)["on_message"] == "add_message"
    stream.on_message(data={"text": "x"})
    stream.on_token(data={"chunk": "y"})
    stream.on_log(data={"line": "z"})
    assert [json.loads(raw)["event"] for _, raw, _ in stream.queue.items] == [  # type: ignore[union-attr]
        "add_message",
        "token",
        "log",
    ]


def test_uuid4_text() -> None:
    made = {ids.uuid4_text() for _ in range(3000)}
    assert len(made) == 3000
    for text in list(made)[:500]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_makes_its_own_uuids() -> None:
    script = textwrap.dedent(
        """
        import os
        from jobqueue import ids
        ids.uuid4_text()  # the parent has a batch ready
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, ids.uuid4_text().encode())
            os._exit(0)
        os.waitpid(pid, 0)
        child = os.read(read, 100).decode()
        print(child != ids.uuid4_text() and len(child) == 36)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.stdout.strip() == "True", out.stderr
